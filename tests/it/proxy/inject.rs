//! Issue 20 item 1: every `inject` form, checked at a real upstream on both transports (the fast
//! path: a plain GET; hyper's: the same with `Expect: 100-continue`, on a connection of its
//! own), with the client's own field or query parameter of that name replaced, never doubled.

use crate::support;

use base64::Engine as _;
use support::wire::*;

/// credproxy with the wire provider attaching its token as `inject` says.
async fn with_inject(inject: &str) -> Setup {
    Setup::start_at(
        Upstream::answering(echo).await,
        "",
        "",
        &format!("inject = {inject}"),
    )
    .await
}

/// What the upstream saw for `target` sent with `fields`, by the fast path and by hyper's.
async fn both_ways(s: &Setup, target: &str, fields: &[&str]) -> [Message; 2] {
    let mut fast = s.client().await;
    assert_status(
        &fast.roundtrip(request("GET", target, fields, b"")).await,
        200,
    );
    let by_fast = s.up.last();
    assert!(
        !by_fast.head.has("expect"),
        "not the fast path: {:?}",
        by_fast.head
    );
    let mut slow = s.client().await;
    let fields: Vec<&str> = fields
        .iter()
        .copied()
        .chain(["Expect: 100-continue"])
        .collect();
    assert_status(
        &slow.roundtrip(request("GET", target, &fields, b"")).await,
        200,
    );
    let by_hyper = s.up.last();
    assert!(
        by_hyper.head.has("expect"),
        "not hyper's path: {:?}",
        by_hyper.head
    );
    [by_fast, by_hyper]
}

#[tokio::test]
async fn a_header_form_replaces_the_clients_field_of_that_name() {
    let s = with_inject(r#"{ header = "X-Api-Key" }"#).await;
    for up in both_ways(
        &s,
        "/v1/messages",
        &[
            "x-api-key: client-own",
            "Authorization: Bearer client-bearer",
        ],
    )
    .await
    {
        assert_eq!(up.head.all("x-api-key"), [TOKEN], "{:?}", up.head);
        // Only the field the credential sets is the credential's: the client's others go on.
        assert_eq!(up.head.all("authorization"), ["Bearer client-bearer"]);
        assert_eq!(up.head.all("x-provider"), ["from-config"]);
    }
}

#[tokio::test]
async fn a_format_puts_the_token_where_it_says() {
    let s = with_inject(r#"{ header = "authorization", format = "token {token}" }"#).await;
    for up in both_ways(&s, "/user", &["Authorization: Bearer client-bearer"]).await {
        assert_eq!(up.head.all("authorization"), [format!("token {TOKEN}")]);
    }
}

#[tokio::test]
async fn basic_sends_the_username_and_the_token_as_its_password() {
    let s = with_inject(r#"{ basic = { username = "api" } }"#).await;
    for up in both_ways(&s, "/charges", &["Authorization: Basic Y2xpZW50OnB3"]).await {
        let all = up.head.all("authorization");
        assert_eq!(all.len(), 1, "{:?}", up.head);
        let pair = base64::engine::general_purpose::STANDARD
            .decode(all[0].strip_prefix("Basic ").expect("a Basic credential"))
            .unwrap();
        assert_eq!(String::from_utf8(pair).unwrap(), format!("api:{TOKEN}"));
    }
}

#[tokio::test]
async fn the_query_form_replaces_the_clients_parameter_and_keeps_the_others() {
    let s = with_inject(r#"{ query = "key" }"#).await;
    let want = format!("key={TOKEN}");
    for (sent, expected) in [
        ("/v1/models", format!("/v1/models?{want}")),
        ("/v1/models?", format!("/v1/models?{want}")),
        (
            "/v1/models?a=1&key=client&b=%20&key",
            format!("/v1/models?a=1&b=%20&{want}"),
        ),
        // A name that decodes to `key` is the same parameter to the upstream.
        (
            "/v1/x?k%65y=smuggled&keys=1",
            format!("/v1/x?keys=1&{want}"),
        ),
    ] {
        for up in both_ways(&s, sent, &[]).await {
            assert_eq!(up.target(), expected, "sent {sent}");
            // The bearer default is not added beside it.
            assert!(!up.head.has("authorization"), "{:?}", up.head);
        }
    }
}

#[tokio::test]
async fn the_query_form_goes_under_a_base_path_and_a_prefix_route() {
    let s = Setup::start_at(
        Upstream::answering(echo).await,
        "/api/v1",
        "",
        "inject = { query = \"key\" }\n[[routes]]\npath_prefix = \"/pre\"\nprovider = \"wire\"",
    )
    .await;
    let want = format!("key={TOKEN}");
    for (sent, expected) in [
        ("/items?x=1", format!("/api/v1/items?x=1&{want}")),
        ("/pre", format!("/api/v1/?{want}")),
        ("/pre?key=mine", format!("/api/v1/?{want}")),
    ] {
        for up in both_ways(&s, sent, &[]).await {
            assert_eq!(up.target(), expected, "sent {sent}");
        }
    }
}
