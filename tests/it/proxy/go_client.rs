//! Go's `net/http` over intercepted HTTPS (issue 16, item 7): `HTTPS_PROXY` pointing at
//! credproxy and the CA added to the client's `RootCAs`, the way a Go program that trusts an
//! extra CA is written. Go comes from Debian's `golang-go`; without it the test says so and
//! passes. The program uses only the standard library, built with `go run` in a temp dir, its
//! cache under the test target's temp dir, and no network.

use super::e2e::{TOKEN, header_values, setup_with};
use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::Alpn;
use support::external::works;

const GO_GET: &str = r#"package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	pem, err := os.ReadFile(os.Getenv("CREDPROXY_CA"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	roots.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyFromEnvironment,
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
	req, _ := http.NewRequest("GET", os.Args[1], nil)
	req.Header.Set("Authorization", "Bearer the-apps-own")
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(string(body))
	if resp.StatusCode != 200 {
		os.Exit(2)
	}
}
"#;

#[tokio::test]
async fn go_net_http_over_intercepted_https_gets_the_credential_injected() {
    if !works("go", &["version"]) {
        eprintln!("go not installed (apt-get install golang-go); skipping");
        return;
    }
    let s = setup_with(Alpn::Http1Only, "intercept = \"claimed\"", "").await;
    let tmp = tempfile::tempdir().unwrap();
    let main = tmp.path().join("main.go");
    std::fs::write(&main, GO_GET).unwrap();
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let ca = s._dir.path().join("state/ca/ca.pem");
    let proxy = format!("http://{}", s.main());
    let mut cmd = tokio::process::Command::new("go");
    cmd.args([
        "run",
        main.to_str().unwrap(),
        "https://api.echo.test/go?lang=go",
    ]);
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("HTTPS_PROXY", &proxy)
        .env("CREDPROXY_CA", &ca)
        .env("GOCACHE", target.join("go-cache"))
        .env("GOPATH", target.join("go-path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local");
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("go run finished within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{stdout}"));
    assert_eq!(v["path"], "/go?lang=go");
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
    assert_eq!(header_values(&v, "x-bv-org-id"), vec!["org-42"]);
}
