//! Host matching: `HostPattern::parse` and `matches`, `split_host_port`, `normalize`, and the
//! proxy's `Router::by_host`. Never panics; matching ignores ASCII case and one trailing dot;
//! a parsed pattern survives a round trip through its `Display`.
//!
//! Input, one item per line so seeds are readable: a pattern, a request host, a port (optional).
#![no_main]

use std::sync::{Arc, OnceLock};

use credproxy::config::host::{normalize, split_host_port};
use credproxy::config::{HostPattern, ProviderConfig, UnknownHosts, load_str};
use credproxy::credential;
use credproxy::proxy::{ProviderRoute, Router};
use libfuzzer_sys::fuzz_target;

/// A static provider to hang fuzzed patterns on (all fields of `ProviderConfig` are public).
fn template() -> &'static ProviderConfig {
    static T: OnceLock<ProviderConfig> = OnceLock::new();
    T.get_or_init(|| {
        let text = r#"
            [proxy]
            listen = "127.0.0.1:8080"
            [providers.p]
            preset = "static"
            hosts = ["api.example.com"]
            token = "t"
        "#;
        let cfg = load_str(text, "template.toml", &|_| None).expect("the template loads");
        (*cfg.providers[0]).clone()
    })
}

fn router(pattern: HostPattern) -> Router {
    let mut config = template().clone();
    config.hosts = vec![pattern];
    let (_writer, reader) = credential::channel();
    Router::new(
        vec![ProviderRoute::new(Arc::new(config), reader)],
        Vec::new(),
        UnknownHosts::Reject,
    )
}

fn with_port(host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

fuzz_target!(|input: &str| {
    let mut lines = input.splitn(3, '\n');
    let pattern = lines.next().unwrap_or_default();
    let host = lines.next().unwrap_or_default();
    let port: Option<u16> = lines.next().and_then(|l| l.trim().parse().ok());

    // Pieces that take any string.
    let (h, p) = split_host_port(host);
    assert!(host.starts_with(h), "{host:?} split into {h:?}");
    if let Some(p) = p {
        assert!(host.ends_with(p));
    }
    let n = normalize(host);
    assert!(!n.bytes().any(|b| b.is_ascii_uppercase()));

    let pat = match HostPattern::parse(pattern) {
        Ok(pat) => pat,
        Err(msg) => {
            assert!(!msg.is_empty());
            return;
        }
    };
    let shown = pat.to_string();
    assert_eq!(
        HostPattern::parse(&shown).as_ref(),
        Ok(&pat),
        "{pattern:?} displays as {shown:?}, which parses differently"
    );
    // The pattern's own case does not matter.
    let upper_pattern = HostPattern::parse(&pattern.to_ascii_uppercase()).expect("upper parses");

    let router = router(pat.clone());
    // Any string at all, as a Host header or authority.
    let _ = router.by_host(host);
    let _ = router.by_host(&with_port(host, port));

    // The invariants hold for a host name (no port syntax of its own, no trailing dot yet).
    if host.is_empty() || host.contains([':', '[', ']']) || host.ends_with('.') {
        return;
    }
    let plain = router.by_host(&with_port(host, port)).is_some();
    let upper = router
        .by_host(&with_port(&host.to_ascii_uppercase(), port))
        .is_some();
    let dotted = router
        .by_host(&with_port(&format!("{host}."), port))
        .is_some();
    assert_eq!(plain, upper, "case changed the match: {shown} vs {host:?}");
    assert_eq!(
        plain, dotted,
        "a trailing dot changed the match: {shown} vs {host:?}"
    );
    let direct = pat.matches(&normalize(host), port);
    assert_eq!(
        plain, direct,
        "by_host and matches disagree: {shown} vs {host:?}"
    );
    assert_eq!(
        direct,
        upper_pattern.matches(&normalize(host), port),
        "the pattern's case changed the match: {pattern:?} vs {host:?}"
    );
});
