//! A TCP relay for benchmarks whose load client can't use a proxy (`h2load`): every connection
//! accepted on LISTEN is relayed to TARGET, after `CONNECT AUTHORITY` when an authority is
//! given (credproxy's interception), or as it is (the same relay in front of nginx, so both
//! targets pay for it alike). Used by `bench/h2.sh`; not part of credproxy.
//!
//! ```text
//! cargo run --release --example connect_shim -- 127.0.0.1:9001 127.0.0.1:8080 api.bench.test:443
//! cargo run --release --example connect_shim -- 127.0.0.1:9002 127.0.0.1:8443
//! ```

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, target, authority) = match args.as_slice() {
        [l, t] => (l.clone(), t.clone(), None),
        [l, t, a] => (l.clone(), t.clone(), Some(a.clone())),
        _ => {
            eprintln!("usage: connect_shim LISTEN TARGET [CONNECT_AUTHORITY]");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(&listen).await?;
    loop {
        let (mut client, _) = listener.accept().await?;
        let (target, authority) = (target.clone(), authority.clone());
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let mut server = match open(&target, authority.as_deref()).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("connect_shim: {target}: {e}");
                    return;
                }
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}

async fn open(target: &str, authority: Option<&str>) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(target).await?;
    s.set_nodelay(true)?;
    let Some(authority) = authority else {
        return Ok(s);
    };
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n\r\n").as_bytes())
        .await?;
    // Byte by byte up to the end of the head: nothing after it may be consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 || head.len() > 8192 {
            return Err(std::io::Error::other("the proxy closed during CONNECT"));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "CONNECT refused: {}",
            String::from_utf8_lossy(&head).lines().next().unwrap_or("")
        )));
    }
    Ok(s)
}
