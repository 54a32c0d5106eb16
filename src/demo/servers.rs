//! The demo token server and API, started together on free ports of 127.0.0.1 and sharing one
//! [`TokenBook`]: the token server writes it, the API reads it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::tokens::TokenBook;
use super::{DemoError, TOKEN_PATH, api, serve, token_server};

/// The demo token server and API, without credproxy (tests talk to them directly).
pub struct Servers {
    token_addr: SocketAddr,
    api_addr: SocketAddr,
    book: Arc<TokenBook>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Servers {
    /// Start the token server and the API on free ports of 127.0.0.1; tokens live `lifetime`.
    pub async fn start(lifetime: Duration) -> Result<Servers, DemoError> {
        if lifetime.is_zero() || lifetime.subsec_nanos() != 0 {
            return Err(DemoError::Lifetime);
        }
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let bind = |what| async move {
            let l = TcpListener::bind(local)
                .await
                .map_err(|source| DemoError::Bind { what, source })?;
            let addr = l
                .local_addr()
                .map_err(|source| DemoError::Bind { what, source })?;
            Ok::<_, DemoError>((l, addr))
        };
        let (token_listener, token_addr) = bind("token server").await?;
        let (api_listener, api_addr) = bind("API").await?;
        let book = Arc::new(TokenBook::new(lifetime));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();

        let handler = {
            let book = book.clone();
            Arc::new(move |req| token_server::handle(book.clone(), req))
        };
        tracker.spawn(
            serve::serve(token_listener, handler, cancel.clone(), tracker.clone())
                .instrument(tracing::info_span!("demo_token_server")),
        );
        let handler = {
            let book = book.clone();
            Arc::new(move |req| api::handle(book.clone(), req))
        };
        tracker.spawn(
            serve::serve(api_listener, handler, cancel.clone(), tracker.clone())
                .instrument(tracing::info_span!("demo_api")),
        );
        Ok(Servers {
            token_addr,
            api_addr,
            book,
            cancel,
            tracker,
        })
    }

    /// `http://127.0.0.1:PORT/oauth/token`
    pub fn token_url(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.token_addr)
    }

    /// `http://127.0.0.1:PORT`: the API's origin, credproxy's upstream.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub fn token_addr(&self) -> SocketAddr {
        self.token_addr
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn token_lifetime(&self) -> Duration {
        self.book.lifetime()
    }

    /// How many tokens the token server has issued.
    pub fn tokens_issued(&self) -> u64 {
        self.book.issued()
    }

    /// Stop accepting and let requests in flight finish (within `grace`).
    pub async fn shutdown(self, grace: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
    }
}
