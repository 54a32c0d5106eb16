//! A small HTTPS load client for `bench/intercept.sh`: the same client measures credproxy's
//! interception (`CONNECT` + TLS with a leaf from its local CA) and nginx terminating TLS
//! directly, so the two differ only in what sits behind the socket. Not part of credproxy.
//!
//! ```text
//! # through credproxy: per connection CONNECT once, then TLS, then keep-alive GETs
//! cargo run --release --example tls_load -- --proxy 127.0.0.1:8080 --authority api.bench:443 \
//!     --ca STATE_DIR/ca/ca.pem -c 64 -d 10 --path /small
//! # direct TLS to nginx, the same SNI and Host
//! cargo run --release --example tls_load -- --target 127.0.0.1:8443 --authority api.bench:443 \
//!     --ca bench-ca.pem -c 64 -d 10 --path /small
//! # a full TLS handshake per request (no session resumption), 16 at a time
//! ... --new-conn -c 16
//! ```
//!
//! Prints one JSON line: `{"requests", "errors", "secs", "rps", "p50_us", "p99_us",
//! "connections", "first_error"}`. A request counts when its answer is complete and 2xx; any other
//! status, a broken connection or a failed `CONNECT` or handshake is an error (the connection is
//! then opened again). Latency is per request; with `--new-conn` it includes the TCP connect, the
//! `CONNECT` and the handshake. HTTP/1.1 only (ALPN offers `http/1.1`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

#[derive(Parser, Debug)]
#[command(
    name = "tls_load",
    about = "HTTPS load client: CONNECT + TLS through a proxy, or direct TLS, keep-alive or a \
             new connection per request; prints JSON"
)]
struct Args {
    /// An HTTP proxy (credproxy's main listener): each connection sends `CONNECT AUTHORITY`
    /// there first.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "target")]
    proxy: Option<SocketAddr>,
    /// Without --proxy: the TLS server to connect to (nginx).
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "proxy")]
    target: Option<SocketAddr>,
    /// The origin: `CONNECT` target, SNI and `Host` (`:443` is left out of `Host`).
    #[arg(long, value_name = "HOST:PORT", default_value = "api.bench:443")]
    authority: String,
    /// PEM file with the CA certificate(s) to trust (the only roots).
    #[arg(long, value_name = "FILE")]
    ca: std::path::PathBuf,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 64)]
    connections: usize,
    /// Seconds to run.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests in all (with -d as a bound too); for quick checks.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// The path of every GET.
    #[arg(long, default_value = "/small")]
    path: String,
    /// A new TCP connection and a full TLS handshake for every request (the client keeps no
    /// session cache, so nothing is resumed).
    #[arg(long)]
    new_conn: bool,
    /// Runtime worker threads.
    #[arg(short = 't', long, default_value_t = 2)]
    threads: usize,
}

struct Shared {
    args: Args,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    request: Vec<u8>,
    connect: Vec<u8>,
    deadline: Instant,
    issued: AtomicU64,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    connections: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, e: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.connections == 0 || args.threads == 0 || args.duration <= 0.0 {
        bail!("-c, -t and -d must be positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let (host, port) = args
        .authority
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--authority {}: expected HOST:PORT", args.authority))?;
    let host_header = if port == "443" {
        host.to_string()
    } else {
        args.authority.clone()
    };
    let server_name = ServerName::try_from(host.to_string())
        .with_context(|| format!("--authority {}: not a DNS name", args.authority))?;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca)
        .with_context(|| format!("--ca {}: can't read it", args.ca.display()))?
    {
        roots
            .add(cert.with_context(|| format!("--ca {}: bad PEM", args.ca.display()))?)
            .with_context(|| format!("--ca {}: not a usable CA certificate", args.ca.display()))?;
    }
    if roots.is_empty() {
        bail!("--ca {}: no certificate in it", args.ca.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if args.new_conn {
        // Every handshake full: no tickets or session IDs kept.
        config.resumption = rustls::client::Resumption::disabled();
    }

    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {host_header}\r\nuser-agent: tls_load\r\n\r\n",
        args.path
    )
    .into_bytes();
    let connect = format!(
        "CONNECT {a} HTTP/1.1\r\nhost: {a}\r\nuser-agent: tls_load\r\n\r\n",
        a = args.authority
    )
    .into_bytes();
    let started = Instant::now();
    let shared = Arc::new(Shared {
        deadline: started + Duration::from_secs_f64(args.duration),
        tls: TlsConnector::from(Arc::new(config)),
        server_name,
        request,
        connect,
        issued: AtomicU64::new(0),
        args,
    });

    let mut tasks = Vec::new();
    for _ in 0..shared.args.connections {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move { worker(&shared).await }));
    }
    let mut total = Tally::default();
    for t in tasks {
        let t = t.await?;
        total.ok += t.ok;
        total.errors += t.errors;
        total.connections += t.connections;
        total.latencies_us.extend(t.latencies_us);
        if total.first_error.is_none() {
            total.first_error = t.first_error;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        let l = &total.latencies_us;
        if l.is_empty() {
            return 0;
        }
        l[(((l.len() as f64) * p).ceil() as usize).clamp(1, l.len()) - 1]
    };
    println!(
        "{}",
        serde_json::json!({
            "requests": total.ok,
            "errors": total.errors,
            "secs": (secs * 1000.0).round() / 1000.0,
            "rps": ((total.ok as f64 / secs) * 10.0).round() / 10.0,
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
            "connections": total.connections,
            "first_error": total.first_error,
        })
    );
    Ok(())
}

/// May another request start? Counts it when so.
fn take_one(s: &Shared) -> bool {
    if Instant::now() >= s.deadline {
        return false;
    }
    match s.args.requests {
        Some(n) => s.issued.fetch_add(1, Ordering::Relaxed) < n,
        None => true,
    }
}

async fn worker(s: &Shared) -> Tally {
    let mut tally = Tally::default();
    let mut buf = Vec::with_capacity(16 * 1024);
    'conns: while take_one(s) {
        let t0 = Instant::now();
        buf.clear();
        let mut stream = match open(s).await {
            Ok(c) => c,
            Err(e) => {
                tally.error(e);
                // Not a spin against a server that is down.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tally.connections += 1;
        let mut first = true;
        loop {
            let start = if first && s.args.new_conn {
                t0
            } else {
                Instant::now()
            };
            first = false;
            match exchange(s, &mut stream, &mut buf).await {
                Ok(keep) => {
                    tally.ok += 1;
                    tally
                        .latencies_us
                        .push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    if s.args.new_conn || !keep {
                        let _ = stream.shutdown().await;
                        continue 'conns;
                    }
                }
                Err(e) => {
                    tally.error(e);
                    continue 'conns;
                }
            }
            if !take_one(s) {
                break 'conns;
            }
        }
    }
    tally
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn open(s: &Shared) -> Result<Tls> {
    let addr = s.args.proxy.or(s.args.target).expect("clap requires one");
    let mut tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    if s.args.proxy.is_some() {
        tcp.write_all(&s.connect).await?;
        let mut head = Vec::with_capacity(256);
        let mut chunk = [0u8; 1024];
        // The proxy sends nothing after its answer until the ClientHello, so reading in chunks
        // can't swallow TLS bytes; anything past the head is a protocol error.
        let end = loop {
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                bail!("the proxy closed the connection during CONNECT");
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(i) = find(&head, b"\r\n\r\n") {
                break i + 4;
            }
            if head.len() > 16 * 1024 {
                bail!("CONNECT answer head over 16 KiB");
            }
        };
        if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
            let line = String::from_utf8_lossy(&head);
            bail!("CONNECT refused: {}", line.lines().next().unwrap_or(""));
        }
        if end != head.len() {
            bail!("the proxy sent bytes after its CONNECT answer");
        }
    }
    s.tls
        .connect(s.server_name.clone(), tcp)
        .await
        .context("TLS handshake")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One GET and its complete answer. Ok(whether the connection may be reused).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &Shared,
    io: &mut S,
    buf: &mut Vec<u8>,
) -> Result<bool> {
    io.write_all(&s.request).await?;
    // The head.
    let (status, head_len, body, keep) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp.parse(buf)? {
            let status = resp.code.unwrap_or(0);
            let mut body = Body::Close;
            let mut keep = resp.version == Some(1);
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    let v = std::str::from_utf8(h.value)?.trim().parse::<usize>()?;
                    body = Body::Length(v);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    if h.value.eq_ignore_ascii_case(b"chunked") {
                        body = Body::Chunked;
                    }
                } else if h.name.eq_ignore_ascii_case("connection") {
                    keep = !h.value.eq_ignore_ascii_case(b"close");
                }
            }
            if status == 204 || status == 304 || (100..200).contains(&status) {
                body = Body::Length(0);
            }
            break (status, n, body, keep);
        }
        read_more(io, buf).await?;
    };
    buf.drain(..head_len);
    let keep = match body {
        Body::Length(n) => {
            while buf.len() < n {
                read_more(io, buf).await?;
            }
            buf.drain(..n);
            keep
        }
        Body::Chunked => {
            read_chunked(io, buf).await?;
            keep
        }
        Body::Close => {
            while read_more(io, buf).await.is_ok() {}
            buf.clear();
            false
        }
    };
    if !(200..300).contains(&status) {
        bail!("HTTP status {status}");
    }
    Ok(keep)
}

enum Body {
    Length(usize),
    Chunked,
    Close,
}

async fn read_more<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = io.read(&mut chunk).await?;
    if n == 0 {
        bail!("the server closed the connection mid-answer");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Consumes a chunked body (and its trailers) from the front of `buf`.
async fn read_chunked<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> Result<()> {
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            read_more(io, buf).await?;
        };
        let line = std::str::from_utf8(&buf[..line_end])?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size line {line:?}"))?;
        if size == 0 {
            // Trailers, then an empty line.
            buf.drain(..line_end + 2);
            loop {
                if buf.starts_with(b"\r\n") {
                    buf.drain(..2);
                    return Ok(());
                }
                if let Some(i) = find(buf, b"\r\n\r\n") {
                    buf.drain(..i + 4);
                    return Ok(());
                }
                read_more(io, buf).await?;
            }
        }
        let need = line_end + 2 + size + 2;
        while buf.len() < need {
            read_more(io, buf).await?;
        }
        buf.drain(..need);
    }
}
