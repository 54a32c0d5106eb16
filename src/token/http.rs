//! The HTTP client for token endpoints (and the few other calls the engine makes: introspection,
//! revocation, Baselime's workspaces, BlendVision's login, mint and organizations).
//!
//! Deliberately small and strict: HTTP/1.1 over TLS (or plain HTTP, which tests use on loopback),
//! one overall timeout per request, reply bodies capped at 1 MiB, and redirects never followed: a
//! 3xx is an error, so client secrets, passwords and refresh tokens are only ever sent to the URL
//! the configuration names.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;

use crate::tls;

/// Default time allowed for one request, from sending to the last byte of the reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest reply body read: token replies are a few hundred bytes; anything near this is not one.
pub const MAX_BODY: usize = 1024 * 1024;
/// Idle connections are closed after this: token calls are minutes or hours apart, and a pooled
/// connection the server has long since dropped would only fail the next refresh.
const POOL_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("can't build the TLS configuration")]
    Tls(#[source] tls::TlsError),
    #[error("request failed")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("answered with a redirect ({0}); credentials are never sent on a redirect")]
    Redirect(StatusCode),
    #[error("the reply body is over {MAX_BODY} bytes")]
    TooLarge,
    #[error("reading the reply failed")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An answer: status, headers and the whole (capped) body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A client for token endpoints. Cheap to clone (connections are shared).
#[derive(Clone)]
pub struct TokenHttp {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for TokenHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenHttp")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl TokenHttp {
    /// A client trusting `roots` (`tls::roots(ca_file)` in production, a test CA in tests).
    pub fn new(roots: RootCertStore) -> Result<Self, HttpError> {
        // hyper-rustls sets ALPN itself from the enabled protocols (and panics if it is preset).
        let config = tls::client_config(roots, &[]).map_err(HttpError::Tls)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(DEFAULT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*config).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(TokenHttp {
            client,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send `req` and read the whole reply, within the timeout. A 3xx is an error.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<HttpReply, HttpError> {
        let call = async {
            let resp = self.client.request(req).await.map_err(HttpError::Request)?;
            let status = resp.status();
            if status.is_redirection() {
                return Err(HttpError::Redirect(status));
            }
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpError::TooLarge
                    } else {
                        HttpError::Body(e)
                    }
                })?
                .to_bytes();
            Ok(HttpReply {
                status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(self.timeout)),
        }
    }
}
