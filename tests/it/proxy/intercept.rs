//! Interception (`intercept = "claimed"`, DESIGN.md "HTTPS clients"): `CONNECT` to a claimed
//! host, TLS terminated with a leaf from the local CA, the requests inside served by the request
//! core. Real clients (curl, Python requests and httpx, Go where installed) trust `ca.pem` and
//! see their request arrive at the upstream with the injected credential; the CA's files, its
//! certificates and its name constraints are checked as the clients see them.

use super::e2e::{Setup, TOKEN, header_values, setup_with};
use super::tunnel::connect;
use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value;
use support::external::{python, works};
use support::{Alpn, TestServer};
use tokio::net::TcpStream;
use x509_parser::extensions::ParsedExtension;

const INTERCEPT: &str = "intercept = \"claimed\"";

impl Setup {
    pub(super) fn ca_dir(&self) -> PathBuf {
        self._dir.path().join("state").join("ca")
    }
    pub(super) fn ca_pem(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }
}

async fn intercepting(extra_proxy: &str) -> Setup {
    setup_with(Alpn::Http1Only, &format!("{INTERCEPT}\n{extra_proxy}"), "").await
}

/// Run `program args` with no proxy variables of the parent's; (success, stdout, stderr).
pub(super) async fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("the client finished within 60 s")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(super) fn echoed(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not the echo: {stdout}"))
}

#[tokio::test]
async fn curl_over_intercepted_https_gets_the_credential_injected() {
    if !works("curl", &["--version"]) {
        eprintln!("curl not installed; skipping");
        return;
    }
    let s = intercepting("").await;
    let proxy = format!("http://{}", s.main());
    let ca = s.ca_pem();
    let (ok, out, err) = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            "-x",
            &proxy,
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            "authorization: Bearer the-apps-own",
            "https://api.echo.test/v1/curl?x=1",
        ],
        &[],
    )
    .await;
    assert!(ok, "curl failed: {err}");
    let v = echoed(&out);
    assert_eq!(v["path"], "/v1/curl?x=1");
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
    assert_eq!(header_values(&v, "x-bv-org-id"), vec!["org-42"]);
}

#[tokio::test]
async fn python_requests_and_httpx_over_intercepted_https_get_the_credential() {
    if !python(&["requests", "httpx"]) {
        return;
    }
    let s = intercepting("").await;
    let proxy = format!("http://{}", s.main());
    let ca = s.ca_pem();
    let script = r#"
import json, os, sys
import requests, httpx
proxy, ca = os.environ["PROXY"], os.environ["CA"]
url = "https://api.echo.test/py/%s"
r = requests.get(url % "requests", proxies={"https": proxy}, verify=ca, timeout=20)
with httpx.Client(proxy=proxy, verify=ca, timeout=20) as c:
    h = c.get(url % "httpx")
print(json.dumps({"requests": [r.status_code, r.json()], "httpx": [h.status_code, h.json()]}))
"#;
    let (ok, out, err) = run(
        "python3",
        &["-c", script],
        &[("PROXY", &proxy), ("CA", ca.to_str().unwrap())],
    )
    .await;
    assert!(ok, "python failed: {err}");
    let v = echoed(&out);
    for client in ["requests", "httpx"] {
        assert_eq!(v[client][0], 200, "{client}: {v}");
        let echo = &v[client][1];
        assert_eq!(echo["path"], format!("/py/{client}"));
        assert_eq!(
            header_values(echo, "authorization"),
            vec![format!("Bearer {TOKEN}")],
            "{client}"
        );
    }
}

/// A rustls client trusting only credproxy's CA, over an opened tunnel, asking for `sni`.
async fn tls_in_tunnel(
    tcp: TcpStream,
    ca: &Path,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
}

#[tokio::test]
async fn a_server_name_that_differs_from_the_connect_authority_is_refused() {
    let s = intercepting("").await;
    let (head, tcp) = connect(s.main(), "api.echo.test:443", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        tls_in_tunnel(tcp, &s.ca_pem(), "x.wild.test")
            .await
            .is_err(),
        "no certificate for a name the CONNECT did not ask for"
    );
    // The same client, asking for the tunnel's own name, is served.
    let (_, tcp) = connect(s.main(), "api.echo.test:443", "").await;
    let tls = tls_in_tunnel(tcp, &s.ca_pem(), "api.echo.test")
        .await
        .expect("handshake for the tunnel's own host");
    let resp = support::proxy::send_on(tls, get_host("/sni-ok", "api.echo.test")).await;
    assert_eq!(resp.status, 200);
}

fn get_host(path: &str, host: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn inside_intercepted_tls_another_host_is_421_and_a_wildcard_host_gets_its_own_leaf() {
    let s = intercepting("").await;
    let (_, tcp) = connect(s.main(), "a.wild.test:443", "").await;
    let tls = tls_in_tunnel(tcp, &s.ca_pem(), "a.wild.test")
        .await
        .expect("a leaf minted for a wildcard match");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let ok = sender
        .send_request(get_host("/w", "a.wild.test"))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    http_body_util::BodyExt::collect(ok.into_body())
        .await
        .unwrap();
    let other = sender
        .send_request(get_host("/w", "api.echo.test"))
        .await
        .unwrap();
    assert_eq!(other.status(), 421);
}

#[tokio::test]
async fn an_unclaimed_host_is_never_intercepted() {
    let s = intercepting("unknown_hosts = \"pass\"\npass_private = [\"127.0.0.1/32\"]").await;
    // An unclaimed TLS server with a certificate from the test CA (not credproxy's).
    let other = TestServer::start(
        Some(s._ca.server_config(&["localhost"], Alpn::Http1Only)),
        support::server::handler(|_req: Request<Incoming>| async move {
            Response::new(Full::new(Bytes::from_static(b"the real server")))
        }),
    )
    .await;
    let target = format!("127.0.0.1:{}", other.port());
    let (head, tcp) = connect(s.main(), &target, "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Trusting only credproxy's CA, the handshake fails: the certificate is the real server's.
    assert!(
        tls_in_tunnel(tcp, &s.ca_pem(), "localhost").await.is_err(),
        "credproxy did not terminate TLS for an unclaimed host"
    );
    let (_, tcp) = connect(s.main(), &target, "").await;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(s._ca.client_config()))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the real server's certificate, end to end");
    let resp = support::proxy::send_on(tls, get_host("/", "localhost")).await;
    assert_eq!(resp.text(), "the real server");

    // With unknown_hosts = "reject", the unclaimed host is refused outright.
    let s = intercepting("").await;
    let (head, _) = connect(s.main(), &target, "").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_counted_per_host_in_status_and_metrics() {
    if !works("curl", &["--version"]) {
        eprintln!("curl not installed; skipping");
        return;
    }
    let s = intercepting("").await;
    let proxy = format!("http://{}", s.main());
    for _ in 0..2 {
        // The system's roots only: credproxy's CA is not among them.
        let (ok, _, err) = run(
            "curl",
            &[
                "-sS",
                "--max-time",
                "20",
                "-x",
                &proxy,
                "https://api.echo.test/",
            ],
            &[],
        )
        .await;
        assert!(!ok, "curl must refuse an untrusted certificate");
        assert!(
            err.contains("certificate") || err.contains("issuer"),
            "{err}"
        );
    }
    let admin = s.proxy.admin.clone().unwrap().tcp().unwrap();
    let status = support::proxy::send(admin, get_host("/status", &admin.to_string()))
        .await
        .json();
    let echo = status["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "echo")
        .unwrap()
        .clone();
    assert_eq!(echo["tls_rejected"]["api.echo.test"], 2, "{echo}");
    let metrics = support::proxy::send(admin, get_host("/metrics", &admin.to_string()))
        .await
        .text();
    assert!(
        metrics.contains(
            "credproxy_intercept_tls_rejected_total{provider=\"echo\",host=\"api.echo.test\"} 2"
        ),
        "{metrics}"
    );
}

/// The leaf a client sees for `host` through the proxy at `s`.
async fn leaf_seen(s: &Setup, host: &str) -> CertificateDer<'static> {
    let (_, tcp) = connect(s.main(), &format!("{host}:443"), "").await;
    let tls = tls_in_tunnel(tcp, &s.ca_pem(), host).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test]
async fn the_ca_is_made_on_first_need_with_its_modes_and_its_leaves_are_as_designed() {
    let s = intercepting("").await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.ca_dir()), 0o700);
    assert_eq!(mode(&s.ca_pem()), 0o644);
    assert_eq!(mode(&s.ca_dir().join("ca-key.pem")), 0o600);

    let ca_pem = std::fs::read(s.ca_pem()).unwrap();
    let ca_der: CertificateDer =
        rustls::pki_types::pem::PemObject::from_pem_slice(&ca_pem).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    let ca_ski = ca
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("the CA has a SubjectKeyIdentifier");
    let ca_years = (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp())
        / (365 * 24 * 3600);
    assert!((9..=10).contains(&ca_years), "{ca_years} years");
    assert_eq!(
        ca.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );

    let a = leaf_seen(&s, "api.echo.test").await;
    let b = leaf_seen(&s, "b.wild.test").await;
    let mut serials = Vec::new();
    for der in [&a, &b] {
        let (_, leaf) = x509_parser::parse_x509_certificate(der).unwrap();
        let aki = leaf
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .expect("the leaf has an AuthorityKeyIdentifier");
        assert_eq!(aki, ca_ski, "AKI = the CA's SKI");
        let v = leaf.validity();
        let life = v.not_after.timestamp() - v.not_before.timestamp();
        assert!(life <= 30 * 24 * 3600, "{life} s");
        let backdated = jiff::Timestamp::now().as_second() - v.not_before.timestamp();
        assert!(
            (3500..=3700).contains(&backdated),
            "backdated {backdated} s"
        );
        assert!(leaf.raw_serial().len() >= 15, "a 128-bit serial");
        serials.push(leaf.raw_serial().to_vec());
        assert!(!leaf.is_ca());
    }
    assert_ne!(serials[0], serials[1]);
    assert_ne!(
        x509_parser::parse_x509_certificate(&a)
            .unwrap()
            .1
            .public_key()
            .raw,
        x509_parser::parse_x509_certificate(&b)
            .unwrap()
            .1
            .public_key()
            .raw,
        "every leaf has its own key"
    );

    // A second start finds the same CA (clients trust it once).
    let dir = s._dir.path().to_owned();
    let cfg = std::fs::read_to_string(s.ca_pem()).unwrap();
    drop(s.proxy);
    let again = credproxy::ca::LocalCa::open(&dir.join("state").join("ca"), None).unwrap();
    assert_eq!(again.cert_der().as_ref(), ca_der.as_ref());
    assert_eq!(
        std::fs::read_to_string(dir.join("state/ca/ca.pem")).unwrap(),
        cfg
    );
}

/// A TLS server presenting a certificate for `name`, signed with the key in `ca_dir` (as an
/// attacker holding the CA's key would).
async fn signed_with_the_ca_key(ca_dir: &Path, name: &str) -> TestServer {
    let key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca-key.pem")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap(),
        key,
    )
    .unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.use_authority_key_identifier_extension = true;
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .unwrap();
    TestServer::start(
        Some(Arc::new(config)),
        support::server::handler(|_req: Request<Incoming>| async move {
            Response::new(Full::new(Bytes::from_static(b"reached")))
        }),
    )
    .await
}

const GO_CLIENT: &str = r#"package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
)

func main() {
	pem, _ := os.ReadFile(os.Args[1])
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", os.Args[3]), &tls.Config{RootCAs: roots, ServerName: os.Args[2]})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	conn.Close()
	fmt.Println("ok")
}
"#;

/// `ca_name_constraints = true`: a certificate for an unclaimed name signed with the CA's own key
/// is refused by curl, Python's `ssl` and Go's `crypto/tls`; one for a claimed name signed the
/// same way is accepted (so the refusal is the constraint's doing).
#[tokio::test]
async fn a_name_constrained_ca_signs_for_claimed_hosts_only_as_curl_python_and_go_see_it() {
    let s = intercepting("ca_name_constraints = true").await;
    let dir = s.ca_dir();
    let ca = s.ca_pem();
    let ca = ca.to_str().unwrap();
    let evil = signed_with_the_ca_key(&dir, "evil.test").await;
    let claimed = signed_with_the_ca_key(&dir, "api.echo.test").await;
    let ip = signed_with_the_ca_key(&dir, "127.0.0.1").await;

    let mut clients = 0;
    if works("curl", &["--version"]) {
        clients += 1;
        let curl = |name: &'static str, port: u16| {
            let resolve = format!("{name}:{port}:127.0.0.1");
            let url = format!("https://{name}:{port}/");
            async move {
                run(
                    "curl",
                    &[
                        "-sS",
                        "--max-time",
                        "10",
                        "--cacert",
                        ca,
                        "--resolve",
                        &resolve,
                        &url,
                    ],
                    &[],
                )
                .await
            }
        };
        let (ok, out, err) = curl("api.echo.test", claimed.port()).await;
        assert!(ok && out == "reached", "claimed name accepted: {err}");
        let (ok, _, err) = curl("evil.test", evil.port()).await;
        assert!(!ok, "curl accepted an unclaimed name");
        assert!(
            err.to_lowercase().contains("constraint") || err.contains("certificate"),
            "{err}"
        );
        let (ok, _, err) = run(
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                ca,
                &format!("https://127.0.0.1:{}/", ip.port()),
            ],
            &[],
        )
        .await;
        assert!(
            !ok,
            "curl accepted an IP address the CA may not sign for: {err}"
        );
    }
    if works("python3", &["--version"]) {
        clients += 1;
        let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
for name, port in [(sys.argv[2], int(sys.argv[3])), (sys.argv[4], int(sys.argv[5]))]:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=name):
                print(name, "ok")
    except ssl.SSLError as e:
        print(name, "refused", e)
"#;
        let (ok, out, err) = run(
            "python3",
            &[
                "-c",
                script,
                ca,
                "api.echo.test",
                &claimed.port().to_string(),
                "evil.test",
                &evil.port().to_string(),
            ],
            &[],
        )
        .await;
        assert!(ok, "{err}");
        assert!(out.contains("api.echo.test ok"), "{out}");
        assert!(out.contains("evil.test refused"), "{out}");
    }
    if works("go", &["version"]) {
        clients += 1;
        let tmp = tempfile::tempdir().unwrap();
        let main = tmp.path().join("main.go");
        std::fs::write(&main, GO_CLIENT).unwrap();
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-cache");
        let env = [
            ("GOCACHE", cache.to_str().unwrap()),
            ("GOPATH", tmp.path().to_str().unwrap()),
            ("GOFLAGS", "-mod=mod"),
        ];
        let go = |name: &'static str, port: u16| {
            let main = main.to_str().unwrap().to_owned();
            let port = port.to_string();
            async move { run("go", &["run", &main, ca, name, &port], &env).await }
        };
        let (ok, out, err) = go("api.echo.test", claimed.port()).await;
        assert!(ok, "go refused a claimed name: {out} {err}");
        let (ok, out, _) = go("evil.test", evil.port()).await;
        assert!(!ok, "go accepted an unclaimed name");
        assert!(
            out.contains("constraint") || out.contains("certificate"),
            "{out}"
        );
    } else {
        eprintln!("go not installed (apt-get install golang-go); skipping its part");
    }
    assert!(clients > 0, "no client to test with");
}

/// Node: undici's `ProxyAgent` with `NODE_EXTRA_CA_CERTS` pointing at `ca.pem`.
#[tokio::test]
async fn undici_over_intercepted_https_with_node_extra_ca_certs_gets_the_credential() {
    let Some(dir) = support::external::undici() else {
        return;
    };
    let s = intercepting("").await;
    let script = r#"
const { ProxyAgent, fetch } = require(process.env.UNDICI_DIR + '/node_modules/undici');
fetch('https://api.echo.test/node?tls=1', { dispatcher: new ProxyAgent(process.env.PROXY_URL) })
  .then(async (r) => { console.log(await r.text()); process.exit(r.status === 200 ? 0 : 1); })
  .catch((e) => { console.error(e); process.exit(1); });
"#;
    let proxy = format!("http://{}", s.main());
    let ca = s.ca_pem();
    let (ok, out, err) = run(
        "node",
        &["-e", script],
        &[
            ("UNDICI_DIR", dir.to_str().unwrap()),
            ("PROXY_URL", &proxy),
            ("NODE_EXTRA_CA_CERTS", ca.to_str().unwrap()),
        ],
    )
    .await;
    assert!(ok, "node failed: {out} {err}");
    let v = echoed(&out);
    assert_eq!(v["path"], "/node?tls=1");
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
}

/// A reload that claims a new host: its CONNECT is intercepted with the same CA, and its requests
/// get its own credential.
#[tokio::test]
async fn a_host_claimed_by_a_reload_is_intercepted_with_the_same_ca() {
    let s = intercepting("").await;
    let before = std::fs::read(s.ca_pem()).unwrap();
    let dir = s._dir.path();
    let text = format!(
        "{proxy}{INTERCEPT}\n\n[providers.echo]\npreset = \"static\"\nhosts = [\"api.echo.test\"]\nupstream = \"https://localhost:{port}\"\ntoken = \"{TOKEN}\"\n\n[providers.fresh]\npreset = \"static\"\nhosts = [\"fresh.test\"]\nupstream = \"https://localhost:{port}\"\ntoken = \"fresh-token\"\n",
        proxy = support::proxy::proxy_section(&dir.join("state"), &dir.join("test-ca.pem")),
        port = s.upstream.port(),
    );
    let config = credproxy::config::load_str(&text, "reload.toml", &|_| None).unwrap();
    s.proxy.reload(config).await.unwrap();
    let (head, tcp) = connect(s.main(), "fresh.test:443", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let tls = tls_in_tunnel(tcp, &s.ca_pem(), "fresh.test")
        .await
        .expect("a leaf for the newly claimed host");
    let resp = support::proxy::send_on(tls, get_host("/fresh", "fresh.test")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        header_values(&resp.json(), "authorization"),
        vec!["Bearer fresh-token"]
    );
    assert_eq!(std::fs::read(s.ca_pem()).unwrap(), before, "the same CA");
}

/// Every log line at TRACE through interception, a refused certificate (twice) and an
/// intercepted request: the CA's key appears nowhere, nor the token; the refusal is logged once
/// for its host, saying what to do.
#[tokio::test]
async fn the_ca_key_is_never_logged_and_a_refusal_is_logged_once_per_host() {
    if !support::alone::own_process(
        module_path!(),
        "the_ca_key_is_never_logged_and_a_refusal_is_logged_once_per_host",
    ) {
        return;
    }
    if !works("curl", &["--version"]) {
        eprintln!("curl not installed; skipping");
        return;
    }
    let logs = support::logs::capture_trace();
    let s = intercepting("").await;
    let proxy = format!("http://{}", s.main());
    let ca = s.ca_pem();
    for _ in 0..2 {
        let (ok, _, _) = run(
            "curl",
            &[
                "-sS",
                "--max-time",
                "20",
                "-x",
                &proxy,
                "https://api.echo.test/",
            ],
            &[],
        )
        .await;
        assert!(!ok);
    }
    let (ok, _, err) = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            "-x",
            &proxy,
            "--cacert",
            ca.to_str().unwrap(),
            "https://api.echo.test/logged",
        ],
        &[],
    )
    .await;
    assert!(ok, "{err}");
    let text = logs.text();
    let refusals = text
        .matches("a client refused credproxy's certificate for api.echo.test")
        .count();
    assert_eq!(refusals, 1, "{text}");
    assert!(text.contains("credproxy trust install"), "says what to do");
    let key = std::fs::read_to_string(s.ca_dir().join("ca-key.pem")).unwrap();
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line), "a line of the CA key is in the logs");
    }
    assert!(!text.contains(TOKEN), "the token is in the logs");
}

/// The audit log (issue 19): a tunnel whose TLS could not be intercepted is `intercept_failed`
/// with why, and a request inside intercepted TLS is `injected` like any other.
#[tokio::test]
async fn the_audit_log_records_an_intercept_that_failed_and_one_that_served() {
    let log = tempfile::tempdir().unwrap();
    let path = log.path().join("audit.jsonl");
    let s = intercepting(&format!("audit_log = \"{}\"", path.display())).await;
    let (_, tcp) = connect(s.main(), "api.echo.test:443", "").await;
    assert!(
        tls_in_tunnel(tcp, &s.ca_pem(), "x.wild.test")
            .await
            .is_err()
    );
    let (_, tcp) = connect(s.main(), "api.echo.test:443", "").await;
    let tls = tls_in_tunnel(tcp, &s.ca_pem(), "api.echo.test")
        .await
        .unwrap();
    let resp = support::proxy::send_on(tls, get_host("/in-tls?q=1", "api.echo.test")).await;
    assert_eq!(resp.status, 200);
    let audit = s.proxy.audit().expect("audit on");
    // The refused handshake's record is queued by the tunnel's own task: wait for it.
    let mut lines: Vec<Value> = Vec::new();
    for _ in 0..100 {
        audit.flush().await;
        lines = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.iter().any(|v| v["decision"] == "intercept_failed")
            && lines.iter().any(|v| v["path"] == "/in-tls")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let failed = lines
        .iter()
        .find(|v| v["decision"] == "intercept_failed")
        .unwrap_or_else(|| panic!("no intercept_failed: {lines:#?}"));
    assert_eq!(failed["code"], "sni_mismatch");
    assert_eq!(failed["provider"], "echo");
    assert_eq!(failed["host"], "api.echo.test");
    assert_eq!(failed["status"], Value::Null);
    let served = lines.iter().find(|v| v["path"] == "/in-tls").unwrap();
    assert_eq!(served["decision"], "injected");
    assert_eq!(served["status"], 200);
}
