//! Hardening (issue 14): the failures an adversarial review found, each shown by a real process
//! or a real socket.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// A port that was free a moment ago (bound and closed).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Item 7: a second `credproxy run` on the same config must not share the port (SO_REUSEPORT
/// would let it, splitting traffic between the two in silence): it exits 1 and says why.
#[tokio::test]
async fn a_second_run_on_the_same_port_fails_with_address_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\n\
             [providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t0k3n\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let run = |workers: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_credproxy"));
        c.args(["run", "--config"])
            .arg(&config)
            .args(["--workers", workers])
            .env("CREDPROXY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    };
    // The first one, with two workers (two SO_REUSEPORT sockets on the port).
    let mut first = run("2").spawn().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first credproxy did not start listening"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first credproxy exited"
        );
        tokio::task::yield_now().await;
    }
    for workers in ["1", "2"] {
        let second = run(workers).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert_eq!(second.status.code(), Some(1), "workers={workers}: {stderr}");
        assert!(
            stderr.contains("address in use by another process"),
            "workers={workers}: {stderr}"
        );
    }
    // The first is unharmed.
    assert!(first.try_wait().unwrap().is_none());
    first.start_kill().unwrap();
    let mut rest = String::new();
    first
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .await
        .unwrap();
}
