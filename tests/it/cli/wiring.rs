//! Wiring any client in one command (issue 17): `exec`, `env`, `ca`, `trust` and `doctor`, run as
//! the `credproxy` binary and driving real programs (curl, Python requests, Node's undici, bash).
//!
//! The upstream is an in-process TLS server (the test CA, which credproxy trusts as `ca_file`)
//! on 127.0.0.1 that echoes the path and the `Authorization` it got. A `static` provider claims
//! the made-up `api.test` and sends it there: a client calls `https://api.test/...` through
//! `HTTPS_PROXY`, so it sends `CONNECT api.test:443` and never resolves the name; credproxy
//! intercepts with its local CA, which the client trusts only through the variables `exec` and
//! `env` set (or, in the trust test, the system store).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};
use support::external::{python, works};
use support::{TestCa, TestServer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const TOKEN: &str = "wired-token-7f3a";
const DEADLINE: Duration = Duration::from_secs(60);

/// Variables a test's parent environment must not leak into the binary or a client.
const CLEARED: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "CREDPROXY_LOG",
    "CREDPROXY_CONFIG",
];

struct Wired {
    _ca: TestCa,
    dir: tempfile::TempDir,
    _upstream: TestServer,
    config: PathBuf,
}

/// The echo upstream and a config claiming `api.test` for it; `proxy_extra` goes in `[proxy]`,
/// `providers_extra` after the provider.
async fn wired(proxy_extra: &str, providers_extra: &str) -> Wired {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca_file(dir.path());
    let upstream = TestServer::start(
        Some(ca.server_config(&[], support::Alpn::Http1Only)),
        support::server::handler(|req: Request<Incoming>| async move {
            let auth: Vec<&str> = req
                .headers()
                .get_all("authorization")
                .iter()
                .map(|v| v.to_str().unwrap_or("?"))
                .collect();
            let v = json!({"path": req.uri().path(), "authorization": auth});
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(v.to_string())))
                .unwrap()
        }),
    )
    .await;
    let config = dir.path().join("credproxy.toml");
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{state}\"\nca_file = \"{ca}\"\n{proxy_extra}\n\n\
         [providers.echo]\npreset = \"static\"\nhosts = [\"api.test\"]\n\
         upstream = \"https://127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n\n{providers_extra}\n",
        state = dir.path().join("state").display(),
        ca = ca_file.display(),
        port = upstream.port(),
    );
    std::fs::write(&config, text).unwrap();
    Wired {
        _ca: ca,
        dir,
        _upstream: upstream,
        config,
    }
}

impl Wired {
    /// `credproxy ARGS` with `--config` first, the parent's proxy and CA variables cleared.
    fn credproxy(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_credproxy"));
        let (sub, rest) = args.split_first().unwrap();
        c.arg(sub).arg("--config").arg(&self.config).args(rest);
        clean(&mut c);
        c
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The config, checked, as an in-process credproxy runs it.
    fn loaded(&self) -> credproxy::config::Config {
        credproxy::config::load(&self.config).unwrap()
    }
}

fn clean(c: &mut Command) {
    for v in CLEARED {
        c.env_remove(v);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn output(mut c: Command) -> Out {
    let out = tokio::time::timeout(DEADLINE, c.output())
        .await
        .expect("finished within the deadline")
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The echo's JSON on stdout: it saw `path` and exactly credproxy's credential.
fn assert_echoed(out: &Out, path: &str) {
    assert_eq!(
        out.code,
        Some(0),
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    let v: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|_| panic!("not the echo: {}\nstderr: {}", out.stdout, out.stderr));
    assert_eq!(v["path"], path);
    assert_eq!(v["authorization"], json!([format!("Bearer {TOKEN}")]));
}

#[tokio::test]
async fn exec_curl_reaches_a_claimed_host_over_https_with_the_credential() {
    if !works("curl", &["--version"]) {
        eprintln!("curl not installed; skipping");
        return;
    }
    let w = wired("", "").await;
    let mut c = w.credproxy(&[
        "exec",
        "--",
        "curl",
        "-sS",
        "--max-time",
        "20",
        "-H",
        "authorization: Bearer the-apps-own",
        "https://api.test/v1/curl",
    ]);
    // The parent's own values of those names are replaced, not kept.
    c.env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("https_proxy", "http://127.0.0.1:9")
        .env("CURL_CA_BUNDLE", "/nonexistent/bundle.pem");
    let out = output(c).await;
    assert_echoed(&out, "/v1/curl");
    assert!(
        !out.stderr.contains("INFO"),
        "the in-process proxy logs at warn: {}",
        out.stderr
    );
    assert!(w.state().join("ca/bundle.pem").exists());
}

#[tokio::test]
async fn exec_python_requests_reaches_a_claimed_host_over_https() {
    if !python(&["requests"]) {
        return;
    }
    let w = wired("", "").await;
    let script = "import requests\nr = requests.get('https://api.test/py', timeout=20)\nprint(r.text)\nassert r.status_code == 200";
    let c = w.credproxy(&["exec", "--", "python3", "-c", script]);
    assert_echoed(&output(c).await, "/py");
}

/// Node 20 has no env proxy: undici's `ProxyAgent` is given `HTTPS_PROXY`; the CA comes from
/// `NODE_EXTRA_CA_CERTS`, both as `exec` set them.
#[tokio::test]
async fn exec_node_undici_reaches_a_claimed_host_over_https() {
    let Some(undici) = support::external::undici() else {
        return;
    };
    let w = wired("", "").await;
    let script = r#"
const { ProxyAgent, fetch } = require(process.env.UNDICI_DIR + '/node_modules/undici');
fetch('https://api.test/node', { dispatcher: new ProxyAgent(process.env.HTTPS_PROXY) })
  .then(async (r) => { console.log(await r.text()); process.exit(r.status === 200 ? 0 : 1); })
  .catch((e) => { console.error(e); process.exit(1); });
"#;
    let mut c = w.credproxy(&["exec", "--", "node", "-e", script]);
    c.env("UNDICI_DIR", &undici);
    assert_echoed(&output(c).await, "/node");
}

#[tokio::test]
async fn exec_exits_with_the_commands_status_or_128_plus_its_signal() {
    let w = wired("", "").await;
    let seven = output(w.credproxy(&["exec", "--", "sh", "-c", "exit 7"])).await;
    assert_eq!(seven.code, Some(7), "{}", seven.stderr);
    let killed = output(w.credproxy(&["exec", "--", "sh", "-c", "kill -TERM $$"])).await;
    assert_eq!(killed.code, Some(128 + 15), "{}", killed.stderr);
    let missing = output(w.credproxy(&["exec", "--", "no-such-program-credproxy"])).await;
    assert_eq!(missing.code, Some(127));
    assert!(
        missing.stderr.contains("no-such-program-credproxy"),
        "{}",
        missing.stderr
    );
}

/// SIGTERM, and SIGINT not from a terminal, to `exec` reach CMD, which decides how to end
/// (here: the exit code its trap gives).
#[tokio::test]
async fn exec_forwards_sigterm_and_sigint_to_the_command() {
    let w = wired("", "").await;
    signalled(&w, "TERM", 42).await;
    signalled(&w, "INT", 43).await;
}

async fn signalled(w: &Wired, signal: &str, code: i32) {
    let script = format!("trap 'exit {code}' {signal}; echo ready; while :; do sleep 0.1; done");
    let mut child = w
        .credproxy(&["exec", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_deref(), Some("ready"));
    let pid = child.id().unwrap().to_string();
    assert!(works("kill", &[&format!("-{signal}"), &pid]));
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(code), "SIG{signal}");
}

/// The variables replace the parent's, once each: `env` of the child shows each name once,
/// with exec's value.
#[tokio::test]
async fn exec_gives_the_command_each_variable_once_with_its_own_value() {
    let w = wired("", "").await;
    let mut c = w.credproxy(&["exec", "--", "env"]);
    c.env("SSL_CERT_FILE", w.dir.path().join("test-ca.pem"))
        .env("NO_PROXY", "parent.example");
    let out = output(c).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let bundle = w.state().join("ca/bundle.pem");
    for (name, want) in [
        ("SSL_CERT_FILE", bundle.display().to_string()),
        ("NO_PROXY", "localhost,127.0.0.1,::1".to_owned()),
        ("NODE_USE_ENV_PROXY", "1".to_owned()),
    ] {
        let values: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}=")))
            .collect();
        assert_eq!(values, vec![want.as_str()], "{name}");
    }
}

/// The variable a secret is read from (`token = "${WIRED_KEY}"`) is not in the command's
/// environment: the key stays with credproxy. Other variables of the parent are.
#[tokio::test]
async fn exec_keeps_the_variables_secrets_come_from_out_of_the_command() {
    let w = wired(
        "",
        "[providers.keyed]\npreset = \"static\"\nhosts = [\"keyed.test\"]\n\
         token = \"${WIRED_KEY}\"\n",
    )
    .await;
    let mut c = w.credproxy(&["exec", "--", "env"]);
    c.env("WIRED_KEY", "sk-wired-secret")
        .env("WIRED_OTHER", "kept");
    let out = output(c).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stdout.contains("sk-wired-secret"), "{}", out.stdout);
    assert!(!out.stdout.contains("WIRED_KEY="), "{}", out.stdout);
    assert!(out.stdout.contains("WIRED_OTHER=kept"), "{}", out.stdout);
}

/// A provider that needs `credproxy login` and has nothing stored: named, with the command, and
/// CMD never runs.
#[tokio::test]
async fn exec_names_a_provider_needing_login_before_running_the_command() {
    let w = wired(
        "",
        "[providers.coded]\npreset = \"oauth2\"\nhosts = [\"coded.test\"]\n\
         token_url = \"https://127.0.0.1:9/token\"\nauthorize_url = \"https://127.0.0.1:9/authorize\"\n\
         grant = \"authorization_code\"\nclient_id = \"c\"\n",
    )
    .await;
    let marker = w.dir.path().join("ran");
    let script = format!("touch {}", marker.display());
    let out = output(w.credproxy(&["exec", "--", "sh", "-c", &script])).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("credproxy login coded"),
        "says what to run: {}",
        out.stderr
    );
    assert!(!marker.exists(), "the command must not run");
}

/// `eval "$(credproxy env)"` in bash against a running credproxy (in-process here) whose
/// `proxy_auth` secret has a quote, a space, `$` and `@`: curl, with nothing but what `env`
/// printed, reaches the claimed host over intercepted HTTPS.
#[tokio::test]
async fn eval_of_env_in_bash_points_curl_at_a_running_credproxy() {
    if !works("curl", &["--version"]) || !works("bash", &["--version"]) {
        eprintln!("curl or bash not installed; skipping");
        return;
    }
    let port = support::server::free_port();
    let w = wired(
        &format!(
            "intercept = \"claimed\"\nproxy_auth = \"it's a $ecret@x\"\nlisten = \"127.0.0.1:{port}\""
        ),
        "",
    )
    .await;
    // `listen` twice in [proxy] would be an error: the first one is replaced.
    let text =
        std::fs::read_to_string(&w.config)
            .unwrap()
            .replacen("listen = \"127.0.0.1:0\"\n", "", 1);
    std::fs::write(&w.config, text).unwrap();
    let running = credproxy::app::start(w.loaded()).await.unwrap();
    let exe = env!("CARGO_BIN_EXE_credproxy");
    let script = format!(
        "set -e; eval \"$('{exe}' env --config '{}')\"; curl -sS --max-time 20 https://api.test/from-bash",
        w.config.display()
    );
    let mut c = Command::new("bash");
    c.args(["-c", &script]);
    clean(&mut c);
    assert_echoed(&output(c).await, "/from-bash");
    // Without the secret, the same proxy says 407: the userinfo is what got curl in.
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &format!("http://127.0.0.1:{port}"),
        "http://api.test/",
    ]);
    clean(&mut c);
    assert_eq!(output(c).await.stdout, "407");
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn env_quotes_for_fish_and_powershell_and_needs_a_port() {
    let w = wired("proxy_auth = \"a'b\"", "").await;
    let out =
        output(w.credproxy(&["env", "--proxy", "http://127.0.0.1:1", "--shell", "fish"])).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("set -gx HTTPS_PROXY 'http://credproxy:a%27b@127.0.0.1:1';"),
        "{}",
        out.stdout
    );
    let out = output(w.credproxy(&[
        "env",
        "--proxy",
        "http://127.0.0.1:1",
        "--shell",
        "powershell",
    ]))
    .await;
    assert!(
        out.stdout.contains("$env:NODE_USE_ENV_PROXY = '1'"),
        "{}",
        out.stdout
    );
    // listen = 127.0.0.1:0: the running proxy's port can't be known from the config.
    let out = output(w.credproxy(&["env"])).await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--proxy"), "{}", out.stderr);
}

/// The bundle adds credproxy's CA to the parent's `SSL_CERT_FILE` (else to the system roots),
/// never replaces them.
#[tokio::test]
async fn ca_bundle_is_additive() {
    let w = wired("", "").await;
    let init = output(w.credproxy(&["ca", "init"])).await;
    assert_eq!(init.code, Some(0), "{}", init.stderr);
    assert!(init.stdout.contains("sha256:"), "{}", init.stdout);
    let show = output(w.credproxy(&["ca", "show"])).await;
    assert!(show.stdout.contains("constraints: none"), "{}", show.stdout);
    assert!(show.stdout.contains("(up to date)"), "{}", show.stdout);
    let ours = std::fs::read_to_string(w.state().join("ca/ca.pem")).unwrap();
    let test_ca = std::fs::read_to_string(w.dir.path().join("test-ca.pem")).unwrap();

    let out = w.dir.path().join("from-parent.pem");
    let mut c = w.credproxy(&["ca", "bundle", "--out", out.to_str().unwrap()]);
    c.env("SSL_CERT_FILE", w.dir.path().join("test-ca.pem"));
    assert_eq!(output(c).await.code, Some(0));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains(test_ca.trim()), "the parent's roots are kept");
    assert!(text.contains(ours.trim()), "credproxy's CA is added");
    assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2);

    let system = w.dir.path().join("from-system.pem");
    let c = w.credproxy(&["ca", "bundle", "--out", system.to_str().unwrap()]);
    assert_eq!(output(c).await.code, Some(0));
    let text = std::fs::read_to_string(&system).unwrap();
    assert!(text.contains(ours.trim()));
    assert!(
        text.matches("BEGIN CERTIFICATE").count() > 10,
        "the system roots are in it"
    );
}

/// Removes credproxy's CA from the system store when dropped, whatever happened.
struct Uninstall<'a>(&'a Path);

impl Drop for Uninstall<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_credproxy"))
            .args(["trust", "uninstall", "--ca"])
            .arg(self.0)
            .output();
    }
}

/// `trust install`, then a plain `curl https://...` with only `HTTPS_PROXY` (no `--cacert`, no
/// CA variable) works; after `trust uninstall` the same curl fails.
#[tokio::test]
async fn trust_install_lets_plain_curl_through_and_uninstall_takes_it_back() {
    if !works("curl", &["--version"]) {
        eprintln!("curl not installed; skipping");
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: skipping the system trust store test (run it as root)");
        return;
    }
    if Path::new("/usr/local/share/ca-certificates/credproxy.crt").exists()
        || !works("sh", &["-c", "command -v update-ca-certificates"])
    {
        eprintln!(
            "a credproxy CA is already installed, or this is no Debian-like system: skipping"
        );
        return;
    }
    let w = wired("intercept = \"claimed\"", "").await;
    let running = credproxy::app::start(w.loaded()).await.unwrap();
    let ca = w.state().join("ca/ca.pem");
    let plain_curl = || {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "20", "https://api.test/trusted"]);
        clean(&mut c);
        c.env("HTTPS_PROXY", format!("http://{}", running.main_addr()));
        c
    };
    let before = output(plain_curl()).await;
    assert_ne!(before.code, Some(0), "untrusted yet: {}", before.stdout);

    let _guard = Uninstall(&ca);
    let install = output(w.credproxy(&["trust", "install"])).await;
    assert_eq!(
        install.code,
        Some(0),
        "{}{}",
        install.stdout,
        install.stderr
    );
    assert!(install.stdout.contains("keytool"), "{}", install.stdout);
    let status = output(w.credproxy(&["trust", "status"])).await;
    assert_eq!(status.code, Some(0), "{}", status.stdout);
    assert_echoed(&output(plain_curl()).await, "/trusted");

    let uninstall = output(w.credproxy(&["trust", "uninstall"])).await;
    assert_eq!(uninstall.code, Some(0), "{}", uninstall.stderr);
    assert_ne!(
        output(plain_curl()).await.code,
        Some(0),
        "no longer trusted"
    );
    assert_eq!(
        output(w.credproxy(&["trust", "status"])).await.code,
        Some(1)
    );
    running.shutdown(Duration::from_secs(1)).await;
}

/// Not root: the sudo line, naming the CA file, and exit 1.
#[tokio::test]
async fn trust_install_without_root_prints_the_sudo_line() {
    if !works("setpriv", &["--version"]) || !rustix::process::geteuid().is_root() {
        eprintln!("needs root and setpriv to act as another user; skipping");
        return;
    }
    let w = wired("", "").await;
    assert_eq!(output(w.credproxy(&["ca", "init"])).await.code, Some(0));
    let public = w.dir.path().join("public-ca.pem");
    std::fs::copy(w.state().join("ca/ca.pem"), &public).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_credproxy"))
        .args(["trust", "install", "--ca"])
        .arg(&public);
    clean(&mut c);
    let out = output(c).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("needs root"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "sudo {} trust install --ca {}",
            env!("CARGO_BIN_EXE_credproxy"),
            public.display()
        )),
        "{}",
        out.stderr
    );
}

/// doctor: all well for a reachable provider (exit 0); an unreachable upstream is a problem with
/// advice (exit 1).
#[tokio::test]
async fn doctor_says_all_is_well_or_names_the_problem() {
    let w = wired("", "").await;
    let out = output(w.credproxy(&["doctor"])).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("provider echo: GET https://127.0.0.1:")
            && out.stdout.contains("reachable (answered 200)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("all is well"), "{}", out.stdout);

    let closed = support::server::free_port();
    let w = wired(
        "",
        &format!(
            "[providers.down]\npreset = \"static\"\nhosts = [\"down.test\"]\n\
             upstream = \"https://127.0.0.1:{closed}\"\ntoken = \"t\"\n"
        ),
    )
    .await;
    let out = output(w.credproxy(&["doctor"])).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("PROBLEM provider down:")
            && out.stdout.contains("upstream_unreachable"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("-> check providers.down.upstream"),
        "{}",
        out.stdout
    );
}

/// A stored refresh token is enough: the command runs (the refresh itself is the proxy's job).
#[tokio::test]
async fn exec_runs_the_command_when_a_refresh_token_is_stored() {
    use credproxy::token::{FileStore, StoredToken, TokenStore};
    let w = wired(
        "",
        "[providers.coded]\npreset = \"oauth2\"\nhosts = [\"coded.test\"]\n\
         token_url = \"https://127.0.0.1:9/token\"\nauthorize_url = \"https://127.0.0.1:9/authorize\"\n\
         grant = \"authorization_code\"\nclient_id = \"c\"\n",
    )
    .await;
    let store = FileStore::open(w.state()).unwrap();
    store
        .save(
            "coded",
            &StoredToken {
                access_token: "old-access".into(),
                refresh_token: Some("a-refresh-token".into()),
                expires_at: Some(1),
                obtained_at: 0,
                fingerprint: String::new(),
                secrets: Default::default(),
                details: Default::default(),
                expiry_assumed: false,
            },
        )
        .unwrap();
    let out = output(w.credproxy(&["exec", "--", "sh", "-c", "echo ran"])).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "ran\n");
}

/// `ca init --force` makes a new CA, and the bundle follows it: the new certificate in, the
/// old one out.
#[tokio::test]
async fn ca_init_force_replaces_the_ca_and_its_bundle() {
    let w = wired("", "").await;
    assert_eq!(output(w.credproxy(&["ca", "init"])).await.code, Some(0));
    let old = std::fs::read_to_string(w.state().join("ca/ca.pem")).unwrap();
    let again = output(w.credproxy(&["ca", "init"])).await;
    assert!(again.stdout.contains("already there"), "{}", again.stdout);
    assert_eq!(
        std::fs::read_to_string(w.state().join("ca/ca.pem")).unwrap(),
        old
    );
    let forced = output(w.credproxy(&["ca", "init", "--force"])).await;
    assert_eq!(forced.code, Some(0), "{}", forced.stderr);
    assert!(
        forced.stdout.contains("trust it again"),
        "{}",
        forced.stdout
    );
    let new = std::fs::read_to_string(w.state().join("ca/ca.pem")).unwrap();
    assert_ne!(new, old);
    let bundle = std::fs::read_to_string(w.state().join("ca/bundle.pem")).unwrap();
    assert!(bundle.contains(new.trim()));
    assert!(!bundle.contains(old.trim()));
}

/// `credproxy env | head -0`: a reader that is already gone. The command exits quietly with 141
/// (128 + SIGPIPE, as a shell tool would), not with a panic and a backtrace on stderr.
#[tokio::test]
async fn a_closed_stdout_ends_a_command_quietly() {
    let w = wired("", "").await;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = w.credproxy(&["env", "--proxy", "http://127.0.0.1:9"]);
    c.stdout(Stdio::from(writer)).stderr(Stdio::piped());
    // Not `output()`: tokio's sets its own pipe for stdout.
    let child = c.spawn().unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("env ends")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
