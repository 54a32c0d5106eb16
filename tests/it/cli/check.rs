//! `credproxy check` (and `run`, which checks the same way): every error in one run, each on its
//! line with its key, in file order with the count last; the catches across sections
//! (listeners, hosts, loops, header-unsafe values); messages in the user's words.

use std::path::Path;
use std::process::{Command, Output};

use credproxy::config::{ConfigError, ConfigErrors, load_str};

/// `credproxy ARGS --config FILE` with `text` as FILE; no `${VAR}` from the test's environment.
fn credproxy(args: &[&str], text: &str) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("CREDPROXY_LOG")
        .env_remove("CREDPROXY_CONFIG")
        .env_remove("BASELIME_CLIENT_ID")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the config"))
        + 1
}

fn errors(text: &str) -> Vec<ConfigError> {
    match load_str(text, "c.toml", &|_| None) {
        Ok(_) => panic!("expected errors from:\n{text}"),
        Err(ConfigErrors(e)) => e,
    }
}

/// The error for `key`, with a panic listing them all when there is none.
fn error_for<'a>(errors: &'a [ConfigError], key: &str) -> &'a ConfigError {
    errors
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no error for {key}: {errors:#?}"))
}

const MANY: &str = r#"[proxy]
listen = "127.0.0.1:18080"
admin_listen = "localhost:18080"
connect_timeout = 30
max_connections = "many"
allow_remote = "yes"
lisen = "127.0.0.1:1"

[providers.bace]
preset = "bace"
token_url = "ftp://auth.example"
client_id = true
client_secret = 12345
default_lifetime = "soon"
grant = "magic"

[providers.gh]
preset = "static"
hosts = ["api.github.com"]
token = "abc def-s3cr3t"
headers = { "X-Thing" = "one\ntwo-s3cr3t" }

[providers.gh2]
preset = "static"
hosts = ["api.github.com"]
token = "fine"
upstream = "http://localhost:18080"

[[routes]]
listen = "127.0.0.1:17001"
[[routes]]
listen = 17002
provider = "gh"
"#;

#[test]
fn check_reports_every_error_in_file_order_with_its_line_key_and_the_count() {
    let (out, err) = credproxy(&["check"], MANY);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // (what the line holds, key, words the message must have)
    let expected = [
        (
            "admin_listen =",
            "proxy.admin_listen",
            "is also proxy.listen",
        ),
        (
            "connect_timeout =",
            "proxy.connect_timeout",
            "must be a duration such as \"90s\"",
        ),
        (
            "max_connections =",
            "proxy.max_connections",
            "must be a whole number",
        ),
        (
            "allow_remote =",
            "proxy.allow_remote",
            "must be true or false",
        ),
        ("lisen =", "proxy.lisen", "did you mean `listen`"),
        (
            "token_url = \"ftp",
            "providers.bace.token_url",
            "must be an absolute http(s) URL",
        ),
        (
            "client_id = true",
            "providers.bace.client_id",
            "must be a string",
        ),
        (
            "client_secret = 12345",
            "providers.bace.client_secret",
            "{ file =",
        ),
        (
            "default_lifetime =",
            "providers.bace.default_lifetime",
            "must be a duration such as \"90s\"",
        ),
        (
            "grant = \"magic\"",
            "providers.bace.grant",
            "\"client_credentials\", \"password\", \"authorization_code\"",
        ),
        ("token = \"abc", "providers.gh.token", "contains a space"),
        (
            "headers =",
            "providers.gh.headers.X-Thing",
            "contains a newline",
        ),
        (
            "hosts = [\"api.github.com\"]\ntoken = \"fine\"",
            "providers.gh2.hosts[0]",
            "also claimed by provider gh",
        ),
        (
            "upstream = \"http://localhost:18080\"",
            "providers.gh2.upstream",
            "loop back into credproxy",
        ),
        ("[[routes]]", "routes[0].provider", "missing"),
        ("listen = 17002", "routes[1].listen", "must be an address"),
    ];
    let mut last = 0;
    for (needle, key, words) in expected {
        // A needle with a newline names the line of its first part, after the previous match.
        let first = needle.split('\n').next().unwrap();
        let line = MANY
            .lines()
            .enumerate()
            .skip(last)
            .find(|(i, l)| {
                l.contains(first)
                    && (!needle.contains('\n')
                        || MANY
                            .lines()
                            .nth(i + 1)
                            .is_some_and(|n| n.contains(needle.split('\n').nth(1).unwrap())))
            })
            .map(|(i, _)| i + 1)
            .unwrap_or_else(|| panic!("{needle:?} not in the config"));
        let prefix = format!(":{line}:");
        let hit = err
            .lines()
            .find(|l| l.contains(&prefix) && l.contains(&format!(": {key}: ")))
            .unwrap_or_else(|| panic!("no line {line} error for {key}:\n{err}"));
        assert!(hit.contains(words), "{key}: {words:?} not in {hit:?}");
        last = line - 1;
    }
    // In file order: the reported lines never go down.
    let lines: Vec<usize> = err
        .lines()
        .filter_map(|l| l.split(':').nth(1)?.parse().ok())
        .collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{err}");
    assert_eq!(
        lines.len(),
        expected.len(),
        "one error each, no repeats:\n{err}"
    );
    assert!(
        err.trim_end()
            .ends_with(&format!("\n{} errors", expected.len())),
        "{err}"
    );
    assert!(
        !err.contains("s3cr3t") && !err.contains("12345"),
        "a secret value was printed:\n{err}"
    );
    assert!(
        !err.contains("invalid type") && !err.contains("expected i64"),
        "{err}"
    );
}

#[test]
fn run_at_start_reports_every_error_too() {
    let (out, err) = credproxy(&["run"], MANY);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for key in [
        "proxy.connect_timeout",
        "providers.bace.grant",
        "routes[1].listen",
    ] {
        assert!(err.contains(&format!(": {key}: ")), "{key} not in:\n{err}");
    }
    assert!(err.contains("16 errors"), "{err}");
}

#[test]
fn a_syntax_error_is_one_error_and_only_warnings_exit_0() {
    let (out, err) = credproxy(
        &["check"],
        "[proxy]\nlisten = \"127.0.0.1:1\"\nadmin_listen =\n",
    );
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("c.toml:3:"), "{err}");
    assert!(err.trim_end().ends_with("\n1 error"), "{err}");

    let warned = "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t\"\n\
                  upstream = \"http://api.github.com\"\n";
    let (out, err) = credproxy(&["check"], warned);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning: providers.gh.upstream is plain http"),
        "{err}"
    );
}

#[test]
fn listeners_on_one_address_are_refused_as_sockets() {
    let text = r#"[proxy]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:19090"
allow_remote = true
proxy_auth = "s"

[providers.gh]
preset = "static"
hosts = ["api.github.com"]
token = "t"

[[routes]]
listen = "localhost:18080"
provider = "gh"
[[routes]]
listen = "127.0.0.1:17001"
provider = "gh"
[[routes]]
listen = "0.0.0.0:17001"
provider = "gh"
[[routes]]
listen = "127.0.0.1:17002"
provider = "gh"
[[routes]]
listen = "127.0.0.2:17002"
provider = "gh"
[[routes]]
listen = "unix:/tmp/credproxy-check-test.sock"
provider = "gh"
[[routes]]
listen = "unix:/tmp/credproxy-check-test.sock"
provider = "gh"
"#;
    let e = errors(text);
    let r0 = error_for(&e, "routes[0].listen");
    assert_eq!(r0.line, line_of(text, "localhost:18080"));
    assert!(
        r0.message.contains("is also proxy.listen (line 2)"),
        "{}",
        r0.message
    );
    let r2 = error_for(&e, "routes[2].listen");
    assert!(
        r2.message
            .contains("overlaps 127.0.0.1:17001 of routes[1].listen"),
        "{}",
        r2.message
    );
    assert!(
        error_for(&e, "routes[6].listen")
            .message
            .contains("is also routes[5].listen")
    );
    // Two loopback addresses are two addresses.
    assert!(e.iter().all(|x| x.key != "routes[4].listen"), "{e:#?}");
    assert_eq!(e.len(), 3, "{e:#?}");

    // A route on the default admin address (127.0.0.1:9090) is caught too, at the route.
    let text = "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t\"\n\
                [[routes]]\nlisten = \"127.0.0.1:9090\"\nprovider = \"gh\"\n";
    let r = error_for(&errors(text), "routes[0].listen").clone();
    assert_eq!(r.line, 6);
    assert!(
        r.message.contains("proxy.admin_listen (its default)"),
        "{}",
        r.message
    );
}

#[test]
fn two_providers_claiming_one_host_or_wildcard_are_refused_an_exact_host_under_a_wildcard_is_a_note()
 {
    let provider = |name: &str, hosts: &str| {
        format!(
            "[providers.{name}]\npreset = \"static\"\nhosts = [{hosts}]\ntoken = \"t\"\nupstream = \"https://{name}.example\"\n"
        )
    };
    let text = format!(
        "{}{}{}",
        provider("a", "\"api.example.com\", \"*.svc.test\""),
        provider("b", "\"API.example.com.:443\""),
        provider("c", "\"*.svc.test\""),
    );
    let e = errors(&text);
    let b = error_for(&e, "providers.b.hosts[0]");
    assert_eq!(b.line, 8);
    assert!(
        b.message.contains("also claimed by provider a (line 3)"),
        "{}",
        b.message
    );
    assert!(
        error_for(&e, "providers.c.hosts[0]")
            .message
            .contains("*.svc.test is also claimed by provider a")
    );
    assert_eq!(e.len(), 2, "{e:#?}");

    // Another port is another claim.
    let text = format!(
        "{}{}",
        provider("a", "\"api.example.com:8443\""),
        provider("b", "\"api.example.com:443\"")
    );
    assert!(load_str(&text, "c.toml", &|_| None).is_ok());

    let text = format!(
        "{}{}",
        provider("exact", "\"api.svc.test\""),
        provider("wild", "\"*.svc.test\"")
    );
    let config = load_str(&text, "c.toml", &|_| None).unwrap();
    assert!(
        config.notes.iter().any(|n| n.contains(
            "api.svc.test (provider exact) is also covered by *.svc.test (provider wild)"
        ) && n.contains("go to exact")),
        "{:?}",
        config.notes
    );
    let (out, err) = credproxy(&["check"], &text);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("note: api.svc.test (provider exact)"), "{err}");
}

#[test]
fn header_unsafe_tokens_and_header_values_are_refused_naming_the_key_not_the_value() {
    let text = r#"[providers.a]
preset = "static"
hosts = ["a.test"]
token = "Bearer tok-s3cr3t"

[providers.b]
preset = "static"
hosts = ["b.test"]
token = "tok-s3cr3t\r\nX-Injected: 1"
headers = { "X-Key" = " lead-s3cr3t", "X-Tab" = "a\tb-s3cr3t", "X Bad" = "v" }

[providers.c]
preset = "oauth2"
hosts = ["c.test"]
token_url = "https://c.test/token"
client_id = "id"
client_secret = "s"
token_headers = { "X-Api" = "v\n-s3cr3t" }

[providers.d]
preset = "blendvision"
api_token = "two words-s3cr3t"
"#;
    let e = errors(text);
    let words = [
        ("providers.a.token", "starts with \"Bearer \""),
        ("providers.b.token", "contains a newline"),
        ("providers.b.headers.X-Key", "starts or ends with a space"),
        ("providers.b.headers.X-Tab", "control character"),
        ("providers.b.headers.X Bad", "can't contain a space"),
        ("providers.c.token_headers.X-Api", "contains a newline"),
        ("providers.d.api_token", "contains a space"),
    ];
    for (key, w) in words {
        let m = &error_for(&e, key).message;
        assert!(m.contains(w), "{key}: {w:?} not in {m:?}");
    }
    for x in &e {
        assert!(
            !x.message.contains("s3cr3t") && !x.message.contains("tok-"),
            "{x:?}"
        );
    }
    // A space inside a header value is fine ("Basic abc"), and so is a token from a file with
    // its trailing newline.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tok");
    std::fs::write(&file, "tok-from-file\n").unwrap();
    let ok = format!(
        "[providers.a]\npreset = \"static\"\nhosts = [\"a.test\"]\ntoken = {{ file = \"{}\" }}\nheaders = {{ \"X-Auth\" = \"Basic abc\" }}\n",
        file.display()
    );
    load_str(&ok, "c.toml", &|_| None).unwrap();
}

#[test]
fn an_upstream_on_credproxys_own_listener_is_a_loop() {
    let base = "[proxy]\nlisten = \"127.0.0.1:18080\"\n\n[providers.a]\npreset = \"static\"\nhosts = [\"a.test\"]\ntoken = \"t\"\n";
    for upstream in [
        "http://localhost:18080",
        "http://127.0.0.1:18080/v1",
        "https://[::1]:17001",
    ] {
        let mut text = format!("{base}upstream = \"{upstream}\"\n");
        if upstream.contains("::1") {
            // [::1] is not 127.0.0.1: only a listener on [::1] (or [::]) is the same socket.
            text.push_str("[[routes]]\nlisten = \"[::1]:17001\"\nprovider = \"a\"\n");
        }
        let e = errors(&text);
        let a = error_for(&e, "providers.a.upstream");
        assert_eq!(a.line, 8, "{upstream}");
        assert!(
            a.message.contains("credproxy's own") && a.message.contains("loop"),
            "{}",
            a.message
        );
    }
    // Another port on this machine (a sidecar) is fine.
    load_str(
        &format!("{base}upstream = \"http://127.0.0.1:18081\"\n"),
        "c.toml",
        &|_| None,
    )
    .unwrap();
    // A default upstream from a claimed localhost:PORT host is caught at the provider.
    let text = "[proxy]\nlisten = \"127.0.0.1:18080\"\n[providers.a]\npreset = \"static\"\nhosts = [\"localhost:18080\"]\ntoken = \"t\"\n";
    assert_eq!(error_for(&errors(text), "providers.a.upstream").line, 3);
}

#[test]
fn messages_are_in_the_users_words_not_serdes() {
    let text = r#"[proxy]
response_timeout = true
max_connections_per_client = 1.5
socket_mode = [1]
unknown_hosts = "allow"

[providers.x]
preset = "oauth3"
hosts = "api.x.test"
forwarded = "no"
scopes = ["a", 2]
token_format = "xml"
wait_for_token = "10 minutes"
"#;
    let e = errors(text);
    let words = [
        (
            "proxy.response_timeout",
            "must be a duration such as \"90s\"",
        ),
        ("proxy.max_connections_per_client", "must be a whole number"),
        ("proxy.socket_mode", "octal file mode"),
        (
            "proxy.unknown_hosts",
            "must be \"reject\" or \"pass\", not `allow`",
        ),
        ("providers.x.preset", "must be one of static, oauth2"),
        ("providers.x.hosts", "must be a list"),
        ("providers.x.forwarded", "must be true or false"),
        ("providers.x.scopes[1]", "must be a string"),
        (
            "providers.x.wait_for_token",
            "must be a duration such as \"90s\"",
        ),
    ];
    for (key, w) in words {
        let m = &error_for(&e, key).message;
        assert!(m.contains(w), "{key}: {w:?} not in {m:?}");
        for serde in [
            "invalid type",
            "expected i64",
            "expected a",
            "untagged",
            "sequence",
            "map",
        ] {
            assert!(!m.contains(serde), "{key}: serde's words in {m:?}");
        }
    }
}

#[test]
fn a_presets_unset_variable_is_named_with_the_key_it_fills_and_nothing_else() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/baselime.toml"))
            .unwrap();
    let set = |v: &str| (v == "BASELIME_CLIENT_SECRET").then(|| "s".to_owned());
    let e = match load_str(&text, "baselime.toml", &set) {
        Err(ConfigErrors(e)) => e,
        Ok(_) => panic!("BASELIME_CLIENT_ID is unset"),
    };
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].key, "providers.baselime.client_id");
    assert_eq!(e[0].line, line_of(&text, "client_id = "));
    assert!(
        e[0].message.contains("BASELIME_CLIENT_ID is not set"),
        "{}",
        e[0].message
    );
}
