//! Hardening (issue 14): the failures an adversarial review found, each shown by a real process
//! or a real socket.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::support::server::free_port;

/// A config with one static provider whose main listener is on `port`.
fn static_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\n\
             [providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t0k3n\"\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    config
}

/// Wait until `child` accepts connections on `port` (failing if it exits first).
async fn wait_listening(child: &mut tokio::process::Child, port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "credproxy did not start listening"
        );
        assert!(child.try_wait().unwrap().is_none(), "credproxy exited");
        tokio::task::yield_now().await;
    }
}

/// Item 7: a second `credproxy run` on the same config must not share the port (SO_REUSEPORT
/// would let it, splitting traffic between the two in silence): it exits 1 and says why.
#[tokio::test]
async fn a_second_run_on_the_same_port_fails_with_address_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = static_config(dir.path(), port);
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
    wait_listening(&mut first, port).await;
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

/// A credproxy in this process with one static provider and an admin listener; its admin address.
async fn with_admin() -> (
    credproxy::app::Running,
    std::net::SocketAddr,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\n\
         [providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t0k3n\"\n",
        dir.path().join("state").display()
    );
    let config = credproxy::config::load_str(&text, "t.toml", &|_| None).unwrap();
    let running = credproxy::app::start(config).await.unwrap();
    let admin = running.admin.as_ref().and_then(|a| a.tcp()).unwrap();
    (running, admin, dir)
}

/// One raw HTTP/1.1 request on a fresh connection; the status code and the whole answer.
async fn raw_get(addr: std::net::SocketAddr, path: &str, host: &str) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

/// Item 6: a web page that rebinds its own name to 127.0.0.1 sends that name as `Host`; the admin
/// listener answers 421 with the JSON error instead of `/status`.
#[tokio::test]
async fn the_admin_listener_answers_only_loopback_and_its_own_host() {
    let (_running, admin, _dir) = with_admin().await;
    let port = admin.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        format!("[::1]:{port}"),
        "127.0.0.2".to_owned(),
    ] {
        let (status, out) = raw_get(admin, "/status", &host).await;
        assert_eq!(status, 200, "Host {host}: {out}");
    }
    for host in [
        format!("rebind.attacker.example:{port}"),
        "127.0.0.1.nip.io".to_owned(),
        "localhost.attacker.example".to_owned(),
        "10.1.2.3".to_owned(),
    ] {
        let (status, out) = raw_get(admin, "/status", &host).await;
        assert_eq!(status, 421, "Host {host}: {out}");
        assert!(out.contains("\"error\":\"misdirected\""), "{out}");
        assert!(!out.contains("providers"), "no status leaks: {out}");
    }
}

/// Item 5: a thousand idle sockets on the admin port (the cap is 64, each would hold its slot
/// for the 10 s header timeout) must not make `/healthz` wait: the oldest connections are closed
/// to make room. Without that, the probe waits behind ~15 rounds of header timeouts (minutes),
/// far past this test's bound.
#[tokio::test]
async fn a_thousand_idle_admin_connections_do_not_starve_healthz() {
    let (_running, admin, _dir) = with_admin().await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(tokio::net::TcpStream::connect(admin).await.unwrap());
    }
    for path in ["/healthz", "/readyz"] {
        let started = tokio::time::Instant::now();
        let (status, out) =
            tokio::time::timeout(Duration::from_secs(5), raw_get(admin, path, "127.0.0.1"))
                .await
                .unwrap_or_else(|_| {
                    panic!("{path} did not answer with 1000 idle connections open")
                });
        assert_eq!(status, 200, "{out}");
        eprintln!(
            "{path} answered in {:?} with 1000 idle sockets",
            started.elapsed()
        );
    }
    drop(idle);
}

/// Item 8: the soft open-file limit is raised to the hard one at start (a few hundred clients
/// would exhaust the common soft default of 1024).
#[tokio::test]
async fn run_raises_the_open_file_limit_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = static_config(dir.path(), port);
    let script = format!(
        "ulimit -Sn 256 && exec {} run --config {}",
        env!("CARGO_BIN_EXE_credproxy"),
        config.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_listening(&mut child, port).await;
    let pid = child.id().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_ne!(soft, "256", "{line}");
    assert_eq!(soft, hard, "{line}");
    child.start_kill().unwrap();
}

/// Item 14: a secret `file` over 64 KiB (here `/dev/zero`, which never ends) is a config error
/// with the key and line, at load and so at `check`.
#[test]
fn a_secret_file_over_64_kib_is_a_config_error() {
    let text = "[proxy]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"/nonexistent\"\n\n\
                [providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\n\
                token = { file = \"/dev/zero\" }\n";
    let Err(err) = credproxy::config::load_str(text, "t.toml", &|_| None) else {
        panic!("a 64 KiB+ secret file was accepted")
    };
    let err = err.to_string();
    assert!(
        err.contains("secret file larger than 64 KiB: /dev/zero"),
        "{err}"
    );
    assert!(err.contains("t.toml:8"), "{err}");
    assert!(err.contains("providers.gh.token"), "{err}");
}

/// Review finding: a secret written as an array (`client_secret = ["abc"]`) was taken as
/// `{ file = "abc" }` and the error said "can't read secret file abc". Now it is a type error
/// that says what to write, and no error shows the value: nor for a header value, `proxy_auth`
/// or a nested array.
#[test]
fn a_secret_written_as_an_array_is_a_type_error_that_never_shows_it() {
    let value = "VALUE-SECRET-9";
    let base = "[proxy]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"/nonexistent\"\n";
    let cases = [
        format!(
            "{base}\n[providers.o]\npreset = \"oauth2\"\nhosts = [\"api.example\"]\n\
             token_url = \"https://auth.example/token\"\nclient_id = \"c\"\n\
             client_secret = [\"{value}\"]\n"
        ),
        format!(
            "{base}\n[providers.o]\npreset = \"oauth2\"\nhosts = [\"api.example\"]\n\
             token_url = \"https://auth.example/token\"\nclient_id = \"c\"\n\
             client_secret = [[\"{value}\"]]\n"
        ),
        format!(
            "{base}\n[providers.h]\npreset = \"static\"\nhosts = [\"api.example\"]\n\
             token = \"t\"\nheaders = {{ x-api-key = [\"{value}\"] }}\n"
        ),
        format!("{base}proxy_auth = [\"{value}\"]\n"),
    ];
    for text in cases {
        let Err(err) = credproxy::config::load_str(&text, "t.toml", &|_| None) else {
            panic!("an array secret was accepted:\n{text}")
        };
        let (plain, debug) = (err.to_string(), format!("{err:?}"));
        assert!(
            !plain.contains(value) && !debug.contains(value),
            "{plain}\n{debug}"
        );
        assert!(plain.contains("must be a string"), "{plain}");
    }
}
