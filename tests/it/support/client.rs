//! A plain hyper client for tests: one fresh connection per request, TLS trusting only the
//! [`TestCa`], ALPN chosen by the test. Deliberately not credproxy's own client, so a fake's
//! self-test cannot share a bug with the code under test.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::tls::{Alpn, TestCa};

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
pub struct TestClient {
    tls: Arc<ClientConfig>,
}

impl TestClient {
    /// Offers h2 and http/1.1.
    pub fn new(ca: &TestCa) -> Self {
        Self::with_alpn(ca, Alpn::H2AndHttp1)
    }

    pub fn with_alpn(ca: &TestCa, alpn: Alpn) -> Self {
        let mut config = ca.client_config();
        config.alpn_protocols = match alpn {
            Alpn::Http1Only => vec![b"http/1.1".to_vec()],
            Alpn::H2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::H2Only => vec![b"h2".to_vec()],
        };
        TestClient {
            tls: Arc::new(config),
        }
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> TestResponse {
        self.send(build("GET", url, headers, Bytes::new())).await
    }

    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut all = vec![("content-type", content_type)];
        all.extend_from_slice(headers);
        self.send(build("POST", url, &all, body.into())).await
    }

    /// Sends `req` (absolute URI) over a new connection: TLS for `https`, plain for `http`.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> TestResponse {
        let uri = req.uri().clone();
        let host = uri.host().expect("absolute URI").to_owned();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        // `localhost` is mapped by hand: the system resolver runs on a blocking thread, which a
        // paused tokio clock does not wait for.
        let ip: IpAddr = if host == "localhost" {
            Ipv4Addr::LOCALHOST.into()
        } else {
            host.trim_matches(['[', ']'])
                .parse()
                .expect("an IP or localhost")
        };
        let tcp = TcpStream::connect((ip, port)).await.expect("connect");
        if !https {
            return send_http1(tcp, req).await;
        }
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .expect("valid server name");
        let tls = TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            send_http2(tls, req).await
        } else {
            send_http1(tls, req).await
        }
    }
}

pub fn build(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body)).expect("valid request")
}

async fn send_http1<S>(io: S, mut req: Request<Full<Bytes>>) -> TestResponse
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    // HTTP/1.1 origin-form: path in the request line, authority in Host (RFC 9112 §3.2.1).
    let uri = req.uri().clone();
    if !req.headers().contains_key(HOST) {
        let authority = uri.authority().expect("absolute URI").as_str();
        req.headers_mut()
            .insert(HOST, authority.parse().expect("valid Host"));
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = path.parse::<Uri>().expect("valid path");
    collect(sender.send_request(req).await.expect("HTTP/1.1 exchange")).await
}

async fn send_http2<S>(io: S, req: Request<Full<Bytes>>) -> TestResponse
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    collect(sender.send_request(req).await.expect("HTTP/2 exchange")).await
}

async fn collect(resp: http::Response<hyper::body::Incoming>) -> TestResponse {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("read response body").to_bytes();
    TestResponse {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// A `multipart/form-data` body of text parts (RFC 7578): `(content_type, body)`.
pub fn multipart(fields: &[(&str, &str)]) -> (String, Bytes) {
    let boundary = "credproxy-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

/// `application/x-www-form-urlencoded` body.
pub fn form(fields: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

/// One decoded query parameter of a URL (e.g. a redirect's `Location`).
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
