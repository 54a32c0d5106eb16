//! Self-test of the in-process fakes in `support`: each fake's happy path, at least one
//! strictness refusal, and expiry under tokio's paused clock, driven by a plain hyper client
//! that trusts only the test CA. If these fail, an e2e failure says nothing about credproxy.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Version;
use serde_json::json;
use tokio::time::{Instant, advance};

use support::client::{form, multipart, query_param};
use support::fault::HUGE_BODY;
use support::server::handler;
use support::{
    Alpn, ApiV1Fake, ApicbaseFake, BaceFake, BaselimeFake, BlendVisionFake, ClientAuth, CodeGrant,
    Consent, ExpiresIn, Fake, FakeClock, Fault, OAuth2Fake, OAuth2Options, TestCa, TestClient,
    TestResponse, TestServer, TokenFormat, apicbase, apiv1, bace, baselime, blendvision, s256,
};

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";
/// A valid RFC 7636 verifier (43+ unreserved characters).
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-test";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn api_get(client: &TestClient, url: &str, token: &str) -> TestResponse {
    client.get(url, &[("authorization", &bearer(token))]).await
}

// ---------------------------------------------------------------- TLS, server, clock

#[tokio::test]
async fn server_speaks_h2_and_http1_over_tls_trusting_only_the_test_ca() {
    let ca = TestCa::new();
    let server = TestServer::start(
        Some(ca.server_config(&["api.example.test"], Alpn::H2AndHttp1)),
        handler(|_req| async { support::http::json_reply(200, &json!({"hello": true})) }),
    )
    .await;
    assert!(server.url().starts_with("https://localhost:"));

    let h2 = TestClient::new(&ca).get(&server.url(), &[]).await;
    assert_eq!((h2.status.as_u16(), h2.version), (200, Version::HTTP_2));
    let h1 = TestClient::with_alpn(&ca, Alpn::Http1Only)
        .get(&server.ip_url(), &[])
        .await;
    assert_eq!((h1.status.as_u16(), h1.version), (200, Version::HTTP_11));
    assert_eq!(server.connections(), 2);

    // A client trusting another CA must fail the handshake.
    let other = TestCa::new();
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(other.client_config()))
        .connect(name, tcp)
        .await;
    assert!(handshake.is_err(), "a foreign CA was trusted");

    let dir = tempfile::tempdir().unwrap();
    let path = ca.write_ca_file(dir.path());
    let pem = std::fs::read_to_string(path).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----") && pem == ca.ca_pem());
}

#[tokio::test]
async fn dropping_the_server_closes_its_port() {
    let ca = TestCa::new();
    let server =
        TestServer::start(None, handler(|_req| async { support::http::not_found() })).await;
    let addr = server.addr();
    assert_eq!(
        TestClient::new(&ca).get(&server.url(), &[]).await.status,
        404
    );
    drop(server);
    tokio::task::yield_now().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn fake_clock_moves_with_paused_tokio_time() {
    let clock = FakeClock::new();
    let before = clock.now_wall();
    advance(Duration::from_secs(3600)).await;
    let moved = clock.now_wall().duration_since(before).unwrap();
    assert_eq!(moved.as_secs(), 3600);
}

// ---------------------------------------------------------------- Baselime

fn baselime_code_body(code: &str, redirect: &str) -> String {
    json!({
        "grantType": "authorization_code",
        "clientId": baselime::CLIENT_ID,
        "clientSecret": baselime::CLIENT_SECRET,
        "redirect": redirect,
        "code": code,
        "code_verifier": VERIFIER,
    })
    .to_string()
}

#[tokio::test(start_paused = true)]
async fn baselime_code_refresh_workspaces_and_expiry() {
    let ca = TestCa::new();
    let fake = BaselimeFake::start(&ca).await;
    let client = TestClient::new(&ca);
    let redirect = "http://127.0.0.1:9/callback";

    let authorize_url = format!(
        "{}/oauth/authorize?{}",
        fake.ip_url(),
        form(&[
            ("client_id", baselime::CLIENT_ID),
            ("redirect_uri", redirect),
            ("state", "st4te"),
            ("response_type", "code"),
            ("code_challenge", &s256(VERIFIER)),
            ("code_challenge_method", "S256"),
        ])
    );
    let redirected = client.get(&authorize_url, &[]).await;
    assert_eq!(redirected.status, 302);
    let location = redirected.header("location").unwrap().to_owned();
    assert!(location.starts_with(redirect));
    assert_eq!(query_param(&location, "state").as_deref(), Some("st4te"));
    let code = query_param(&location, "code").unwrap();

    let token_url = format!("{}/oauth/token", fake.ip_url());
    let reply = client
        .post(&token_url, JSON, baselime_code_body(&code, redirect), &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(
        (body["expiresIn"].as_u64(), body["tokenType"].as_str()),
        (Some(86400), Some("Bearer"))
    );
    let access = body["accessToken"].as_str().unwrap().to_owned();
    let refresh = body["refreshToken"].as_str().unwrap().to_owned();
    assert!(access.starts_with("baselime_at_"));

    // Single use.
    let again = client
        .post(&token_url, JSON, baselime_code_body(&code, redirect), &[])
        .await;
    assert_eq!(again.json()["error"], "invalid_grant");

    let api = api_get(
        &client,
        &format!("{}/v1/services?x=1", fake.ip_url()),
        &access,
    )
    .await;
    assert_eq!(
        api.json(),
        json!({"ok": true, "method": "GET", "path": "/v1/services", "query": "x=1", "authorization_ok": true, "body": ""})
    );
    let seen = fake.last_api_headers().unwrap();
    assert_eq!(seen.get_all("authorization").iter().count(), 1);

    let workspaces = api_get(
        &client,
        &format!("{}/oauth/workspaces", fake.ip_url()),
        &access,
    )
    .await;
    assert_eq!(workspaces.json()[0]["apiKey"], baselime::API_KEY);

    // Refresh: no new refresh token, and the old one keeps working (not rotated).
    let refresh_body = json!({
        "grantType": "refresh_token",
        "clientId": baselime::CLIENT_ID,
        "clientSecret": baselime::CLIENT_SECRET,
        "redirect": redirect,
        "refreshToken": refresh,
    })
    .to_string();
    for _ in 0..2 {
        let refreshed = client
            .post(&token_url, JSON, refresh_body.clone(), &[])
            .await;
        assert_eq!(refreshed.status, 200, "{}", refreshed.text());
        assert!(refreshed.json().get("refreshToken").is_none());
    }
    assert_eq!(
        (fake.authorization_code_grants(), fake.refresh_grants()),
        (2, 2)
    );

    advance(Duration::from_secs(86401)).await;
    assert_eq!(
        api_get(&client, &format!("{}/v1/x", fake.ip_url()), &access)
            .await
            .status,
        401
    );
    assert_eq!(fake.api_denied(), 1);
}

#[tokio::test(start_paused = true)]
async fn baselime_is_strict_about_its_dialect() {
    let ca = TestCa::new();
    let fake = BaselimeFake::start(&ca).await;
    let client = TestClient::new(&ca);
    let token_url = format!("{}/oauth/token", fake.ip_url());

    // snake_case names are not Baselime's.
    let snake = json!({"grant_type": "authorization_code", "client_id": baselime::CLIENT_ID,
        "client_secret": baselime::CLIENT_SECRET, "redirect": "x", "code": fake.issue_code()});
    let reply = client.post(&token_url, JSON, snake.to_string(), &[]).await;
    assert_eq!(
        (reply.status.as_u16(), reply.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );

    // Form-encoded is refused even with the right names.
    let form_body = form(&[
        ("grantType", "authorization_code"),
        ("code", &fake.issue_code()),
    ]);
    assert_eq!(
        client.post(&token_url, FORM, form_body, &[]).await.status,
        400
    );

    // Wrong secret.
    let wrong = json!({"grantType": "authorization_code", "clientId": baselime::CLIENT_ID,
        "clientSecret": "nope", "redirect": "x", "code": fake.issue_code()});
    let reply = client.post(&token_url, JSON, wrong.to_string(), &[]).await;
    assert_eq!(
        (reply.status.as_u16(), reply.json()["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // A verifier for a code issued without a challenge means the challenge got lost.
    let lost = client
        .post(
            &token_url,
            JSON,
            baselime_code_body(&fake.issue_code(), "x"),
            &[],
        )
        .await;
    assert_eq!(lost.json()["error"], "invalid_grant");

    // Codes live three minutes.
    let code = fake.issue_code();
    advance(Duration::from_secs(181)).await;
    let late = client
        .post(&token_url, JSON, baselime_code_body(&code, "x"), &[])
        .await;
    assert_eq!(late.json()["error"], "invalid_grant");
    assert_eq!(fake.rejected_calls(), 5);
    assert!(fake.last_rejection().unwrap().contains("expired"));
}

// ---------------------------------------------------------------- BACE

fn bace_password() -> (String, Bytes) {
    multipart(&[
        ("client_id", bace::CLIENT_ID),
        ("client_secret", bace::CLIENT_SECRET),
        ("grant_type", "password"),
        ("username", bace::USERNAME),
        ("password", bace::PASSWORD),
    ])
}

fn bace_refresh(refresh: &str) -> (String, Bytes) {
    multipart(&[
        ("refresh_token", refresh),
        ("client_secret", bace::CLIENT_SECRET),
        ("client_id", bace::CLIENT_ID),
        ("grant_type", "refresh_token"),
    ])
}

#[tokio::test(start_paused = true)]
async fn bace_password_refresh_in_place_and_permission_401() {
    let ca = TestCa::new();
    let fake = BaceFake::start(&ca).await;
    let client = TestClient::new(&ca);
    let token_url = format!("{}/oauth2/token", fake.ip_url());

    let (ct, body) = bace_password();
    let reply = client.post(&token_url, &ct, body, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let issued = reply.json();
    assert_eq!(
        (issued["expires_in"].as_u64(), issued["scope"].is_null()),
        (Some(86400), true)
    );
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let refresh = issued["refresh_token"].as_str().unwrap().to_owned();

    let api_url = format!("{}/api/v2/physical-device", fake.ip_url());
    assert_eq!(api_get(&client, &api_url, &access).await.status, 200);

    // A refresh without the access token as Bearer is refused.
    let (ct, body) = bace_refresh(&refresh);
    assert_eq!(client.post(&token_url, &ct, body, &[]).await.status, 401);

    // With it: same token, now valid for 14 days; the naive UTC `expires` says exactly when.
    let (ct, body) = bace_refresh(&refresh);
    let reply = client
        .post(
            &token_url,
            &ct,
            body,
            &[("authorization", &bearer(&access))],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let expires = reply.json()["expires"].as_str().unwrap().to_owned();
    let expected = jiff::Timestamp::try_from(fake.token_expiry(&access).unwrap().unwrap())
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    assert_eq!(expires, expected);
    advance(Duration::from_secs(13 * 86400)).await;
    assert_eq!(api_get(&client, &api_url, &access).await.status, 200);

    // 401 for lack of permission, even with a valid token.
    let forbidden = api_get(
        &client,
        &format!("{}/api/v2/forbidden/x", fake.ip_url()),
        &access,
    )
    .await;
    assert_eq!(
        (forbidden.status.as_u16(), fake.forbidden_calls()),
        (401, 1)
    );

    // Once expired, a refresh is 401: the client must use the password grant again.
    advance(Duration::from_secs(2 * 86400)).await;
    assert_eq!(api_get(&client, &api_url, &access).await.status, 401);
    let (ct, body) = bace_refresh(&refresh);
    let reply = client
        .post(
            &token_url,
            &ct,
            body,
            &[("authorization", &bearer(&access))],
        )
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!((fake.password_grants(), fake.refresh_grants()), (1, 3));
}

#[tokio::test]
async fn bace_accepts_multipart_only() {
    let ca = TestCa::new();
    let fake = BaceFake::start(&ca).await;
    let client = TestClient::new(&ca);
    let token_url = format!("{}/oauth2/token", fake.ip_url());
    let urlencoded = form(&[
        ("client_id", bace::CLIENT_ID),
        ("client_secret", bace::CLIENT_SECRET),
        ("grant_type", "password"),
        ("username", bace::USERNAME),
        ("password", bace::PASSWORD),
    ]);
    let reply = client.post(&token_url, FORM, urlencoded, &[]).await;
    assert_eq!(
        (reply.status.as_u16(), reply.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let record = &fake.token_requests()[0];
    assert_eq!(record.content_type.as_deref(), Some(FORM));
    assert_eq!(fake.tokens_issued(), 0);
}

// ---------------------------------------------------------------- Apicbase

#[tokio::test(start_paused = true)]
async fn apicbase_code_introspection_and_refresh_after_expiry() {
    let ca = TestCa::new();
    let fake = ApicbaseFake::start(&ca).await;
    let client = TestClient::new(&ca);
    let redirect = "http://127.0.0.1:9/cb";
    let authorize = format!(
        "{}/oauth/authorize/?response_type=code&client_id={}&scope=library+sales&redirect_uri={}&state=s1",
        fake.ip_url(),
        apicbase::CLIENT_ID,
        form(&[("x", redirect)]).trim_start_matches("x="),
    );
    let redirected = client.get(&authorize, &[]).await;
    assert_eq!(redirected.status, 302, "{}", redirected.text());
    let code = query_param(redirected.header("location").unwrap(), "code").unwrap();
    assert_eq!(
        fake.last_authorize().unwrap().scope.as_deref(),
        Some("library sales")
    );

    let token_url = format!("{}/oauth/token/", fake.ip_url());
    let exchange = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", redirect),
        ("client_id", apicbase::CLIENT_ID),
        ("client_secret", apicbase::CLIENT_SECRET),
    ]);
    let reply = client.post(&token_url, FORM, exchange, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["expires_in"].as_u64(), Some(7 * 86400));
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    let introspect_url = format!("{}/oauth/introspect/", fake.ip_url());
    let introspect = |token: String| {
        form(&[
            ("token", &token),
            ("client_id", apicbase::CLIENT_ID),
            ("client_secret", apicbase::CLIENT_SECRET),
        ])
    };
    let info = client
        .post(&introspect_url, FORM, introspect(access.clone()), &[])
        .await
        .json();
    assert_eq!(
        (info["active"].as_bool(), info["scope"].as_str()),
        (Some(true), Some("library sales"))
    );
    assert_eq!(
        info["exp"].as_u64(),
        Some(fake.clock().now_unix() + 7 * 86400)
    );

    advance(Duration::from_secs(7 * 86400 + 1)).await;
    let info = client
        .post(&introspect_url, FORM, introspect(access.clone()), &[])
        .await
        .json();
    assert_eq!(info, json!({"active": false}));
    assert_eq!(fake.introspect_calls(), 2);

    // Refresh still works after expiry, without expires_in when told so; the old one is spent.
    fake.set_send_expires_in(false);
    let refresh_body = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &refresh),
        ("client_id", apicbase::CLIENT_ID),
        ("client_secret", apicbase::CLIENT_SECRET),
    ]);
    let reply = client
        .post(&token_url, FORM, refresh_body.clone(), &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json().get("expires_in").is_none());
    let fresh = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        api_get(
            &client,
            &format!("{}/api/v1/recipes/", fake.ip_url()),
            &fresh
        )
        .await
        .status,
        200
    );
    let replay = client.post(&token_url, FORM, refresh_body, &[]).await;
    assert_eq!(
        (replay.json()["error"].as_str(), fake.refresh_reuse()),
        (Some("invalid_grant"), 1)
    );
}

#[tokio::test(start_paused = true)]
async fn apicbase_is_strict_about_slashes_format_and_code_age() {
    let ca = TestCa::new();
    let fake = ApicbaseFake::start(&ca).await;
    let client = TestClient::new(&ca);
    let exchange = |code: String| {
        form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("client_id", apicbase::CLIENT_ID),
            ("client_secret", apicbase::CLIENT_SECRET),
        ])
    };
    let no_slash = format!("{}/oauth/token", fake.ip_url());
    assert_eq!(
        client
            .post(&no_slash, FORM, exchange(fake.issue_code()), &[])
            .await
            .status,
        404
    );

    let token_url = format!("{}/oauth/token/", fake.ip_url());
    let as_json = json!({"grant_type": "authorization_code"}).to_string();
    assert_eq!(
        client.post(&token_url, JSON, as_json, &[]).await.status,
        400
    );

    let code = fake.issue_code();
    advance(Duration::from_secs(61)).await;
    let late = client.post(&token_url, FORM, exchange(code), &[]).await;
    assert_eq!(late.json()["error"], "invalid_grant");
}

// ---------------------------------------------------------------- api-v1

fn apiv1_password() -> String {
    json!({
        "grant_type": "password",
        "username": apiv1::USERNAME,
        "password": apiv1::PASSWORD,
        "client_id": apiv1::CLIENT_ID,
        "client_secret": apiv1::CLIENT_SECRET,
    })
    .to_string()
}

#[tokio::test(start_paused = true)]
async fn apiv1_exact_content_type_lowercase_bearer_and_rotation() {
    let ca = TestCa::new();
    let fake = ApiV1Fake::start(&ca).await;
    let client = TestClient::new(&ca);
    let token_url = format!("{}/oauth/token", fake.ip_url());

    let with_charset = client
        .post(
            &token_url,
            "application/json; charset=utf-8",
            apiv1_password(),
            &[],
        )
        .await;
    assert_eq!(with_charset.status, 415);
    assert_eq!(fake.tokens_issued(), 0);

    let reply = client.post(&token_url, JSON, apiv1_password(), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(
        (body["token_type"].as_str(), body["expires_in"].as_u64()),
        (Some("bearer"), Some(7200))
    );
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        api_get(&client, &format!("{}/v1/items", fake.ip_url()), &access)
            .await
            .status,
        200
    );

    let refresh_body = json!({
        "grant_type": "refresh_token",
        "refresh_token": refresh,
        "client_id": apiv1::CLIENT_ID,
        "client_secret": apiv1::CLIENT_SECRET,
    })
    .to_string();
    let rotated = client
        .post(&token_url, JSON, refresh_body.clone(), &[])
        .await
        .json();
    assert_ne!(rotated["refresh_token"].as_str(), Some(refresh.as_str()));
    assert_eq!(fake.refresh_reuse(), 0);
    let replay = client.post(&token_url, JSON, refresh_body, &[]).await;
    assert_eq!((replay.status.as_u16(), fake.refresh_reuse()), (400, 1));

    advance(Duration::from_secs(7201)).await;
    assert_eq!(
        api_get(&client, &format!("{}/v1/items", fake.ip_url()), &access)
            .await
            .status,
        401
    );

    // The authorization-code grant, with a code from the test shortcut.
    let exchange = json!({
        "client_id": apiv1::CLIENT_ID,
        "client_secret": apiv1::CLIENT_SECRET,
        "code": fake.issue_code(),
        "grant_type": "authorization_code",
        "redirect_uri": "https://app.example/cb",
    });
    let reply = client
        .post(&token_url, JSON, exchange.to_string(), &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        (
            fake.password_grants(),
            fake.authorization_code_grants(),
            fake.refresh_grants()
        ),
        (1, 1, 2)
    );
}

// ---------------------------------------------------------------- BlendVision

#[tokio::test(start_paused = true)]
async fn blendvision_login_mint_org_and_org_header() {
    let ca = TestCa::new();
    let fake = BlendVisionFake::start(&ca).await;
    let client = TestClient::new(&ca);
    let base = fake.ip_url();

    let login = json!({"email": blendvision::EMAIL, "password": blendvision::PASSWORD});
    let reply = client
        .post(
            &format!("{base}/bv/account/v1/accounts/login"),
            JSON,
            login.to_string(),
            &[],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["expires_in"].as_i64(),
        Some(blendvision::GARBAGE_EXPIRES_IN)
    );
    let login_token = reply.json()["access_token"].as_str().unwrap().to_owned();

    let mint_url = format!("{base}/bv/account/v1/accounts/api-token");
    let expiry = fake.clock().now_timestamp() + jiff::SignedDuration::from_hours(30 * 24);
    let expiry = jiff::Timestamp::from_second(expiry.as_second()).unwrap();
    let mint = json!({"name": "credproxy", "expired_date": expiry.to_string()});
    let auth = bearer(&login_token);
    let minted = client
        .post(
            &mint_url,
            JSON,
            mint.to_string(),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(minted.status, 200, "{}", minted.text());
    assert_eq!(minted.json()["expired_date"], expiry.to_string());
    let api_token = minted.json()["token"].as_str().unwrap().to_owned();

    let bad_date = json!({"name": "x", "expired_date": "next tuesday"});
    let refused = client
        .post(
            &mint_url,
            JSON,
            bad_date.to_string(),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(refused.status, 400);

    let orgs = api_get(
        &client,
        &format!("{base}/bv/org/v1/organizations"),
        &api_token,
    )
    .await;
    assert_eq!(
        orgs.json()["organization"]["id"],
        blendvision::DEFAULT_ORG_ID
    );

    let call = format!("{base}/bv/cms/v1/videos");
    assert_eq!(api_get(&client, &call, &api_token).await.status, 403);
    let with_org = [
        ("authorization", bearer(&api_token)),
        ("x-bv-org-id", fake.org_id()),
    ];
    let with_org: Vec<(&str, &str)> = with_org.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(client.get(&call, &with_org).await.status, 200);

    // The login token lives an hour whatever expires_in said; the API token until its date.
    advance(Duration::from_secs(3601)).await;
    assert!(!fake.is_valid_login_token(&login_token));
    assert_eq!(client.get(&call, &with_org).await.status, 200);
    advance(Duration::from_secs(30 * 86400)).await;
    assert_eq!(client.get(&call, &with_org).await.status, 401);
    assert_eq!(
        (fake.login_calls(), fake.mint_calls(), fake.org_calls()),
        (1, 2, 1)
    );
}

#[tokio::test]
async fn blendvision_static_token_needs_the_org_header_too() {
    let ca = TestCa::new();
    let fake = BlendVisionFake::start(&ca)
        .await
        .with_static_token("bv-static-token");
    fake.set_org_id("org-777");
    let client = TestClient::new(&ca);
    let call = format!("{}/bv/cms/v1/videos", fake.ip_url());
    let auth = bearer("bv-static-token");
    let ok = client
        .get(
            &call,
            &[("authorization", &auth), ("x-bv-org-id", "org-777")],
        )
        .await;
    assert_eq!(ok.status, 200);
    let wrong_org = client
        .get(
            &call,
            &[("authorization", &auth), ("x-bv-org-id", "org-123")],
        )
        .await;
    assert_eq!(wrong_org.status, 403);
    let no_token = client.get(&call, &[("x-bv-org-id", "org-777")]).await;
    assert_eq!(no_token.status, 401);
}

// ---------------------------------------------------------------- generic OAuth 2

#[tokio::test]
async fn oauth2_basic_auth_is_form_encoded_and_never_doubled() {
    use base64::Engine;
    let ca = TestCa::new();
    let options = OAuth2Options {
        client_id: "svc id".to_owned(),
        client_secret: "p@ss:w+rd/é".to_owned(),
        ..OAuth2Options::default()
    };
    let fake = OAuth2Fake::start_with(&ca, options).await;
    let client = TestClient::new(&ca);
    let token_url = format!("{}/token", fake.ip_url());
    let encoded = |s: &str| form(&[("x", s)]).trim_start_matches("x=").to_owned();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            encoded("svc id"),
            encoded("p@ss:w+rd/é")
        ))
    );
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("scope", "read write"),
    ]);
    let reply = client
        .post(&token_url, FORM, body.clone(), &[("authorization", &basic)])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let issued = reply.json();
    assert_eq!(
        (issued["scope"].as_str(), issued.get("refresh_token")),
        (Some("read write"), None)
    );
    let access = issued["access_token"].as_str().unwrap();
    assert_eq!(
        api_get(&client, &format!("{}/anything", fake.ip_url()), access)
            .await
            .status,
        200
    );

    // Raw (unencoded) credentials in Basic are wrong per RFC 6749 §2.3.1.
    let raw = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("svc id:p@ss:w+rd/é")
    );
    let reply = client
        .post(&token_url, FORM, body.clone(), &[("authorization", &raw)])
        .await;
    assert_eq!(
        (reply.status.as_u16(), reply.json()["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // Basic and body credentials together are refused.
    let doubled = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "svc id"),
        ("client_secret", "p@ss:w+rd/é"),
    ]);
    let reply = client
        .post(&token_url, FORM, doubled, &[("authorization", &basic)])
        .await;
    assert_eq!(reply.status, 400);

    // Records show the dialect but never a secret.
    let records = fake.token_requests();
    assert_eq!(records.len(), 3);
    assert!(records[0].basic_auth && records[0].content_type.as_deref() == Some(FORM));
    let printed = format!("{records:?}");
    assert!(!printed.contains("p@ss") && printed.contains("[redacted]"));
    assert_eq!(fake.client_credentials_grants(), 3);
}

#[tokio::test]
async fn oauth2_json_format_password_refresh_introspect_revoke() {
    let ca = TestCa::new();
    let options = OAuth2Options {
        format: TokenFormat::Json,
        client_auth: ClientAuth::Body,
        expires_in: ExpiresIn::String,
        ..OAuth2Options::default()
    };
    let fake = OAuth2Fake::start_with(&ca, options.clone()).await;
    let client = TestClient::new(&ca);
    let token_url = format!("{}/token", fake.ip_url());
    let password = json!({
        "grant_type": "password", "username": options.username, "password": options.password,
        "client_id": options.client_id, "client_secret": options.client_secret, "scope": "read",
    });
    // Form is refused when JSON is configured.
    let as_form = form(&[("grant_type", "password")]);
    assert_eq!(
        client.post(&token_url, FORM, as_form, &[]).await.status,
        400
    );

    let reply = client
        .post(&token_url, JSON, password.to_string(), &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["expires_in"], "3600");
    let access = reply.json()["access_token"].as_str().unwrap().to_owned();
    let refresh = reply.json()["refresh_token"].as_str().unwrap().to_owned();

    let refresh_body = json!({
        "grant_type": "refresh_token", "refresh_token": refresh,
        "client_id": options.client_id, "client_secret": options.client_secret,
    })
    .to_string();
    assert_eq!(
        client
            .post(&token_url, JSON, refresh_body.clone(), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        client
            .post(&token_url, JSON, refresh_body, &[])
            .await
            .status,
        400
    );
    assert_eq!(fake.refresh_reuse(), 1);

    let auth_form = |token: &str| {
        form(&[
            ("token", token),
            ("client_id", &options.client_id),
            ("client_secret", &options.client_secret),
        ])
    };
    let introspect_url = format!("{}/introspect", fake.ip_url());
    let info = client
        .post(&introspect_url, FORM, auth_form(&access), &[])
        .await
        .json();
    assert_eq!(
        (info["active"].as_bool(), info["scope"].as_str()),
        (Some(true), Some("read"))
    );
    let revoked = client
        .post(
            &format!("{}/revoke", fake.ip_url()),
            FORM,
            auth_form(&access),
            &[],
        )
        .await;
    assert_eq!(revoked.status, 200);
    let info = client
        .post(&introspect_url, FORM, auth_form(&access), &[])
        .await
        .json();
    assert_eq!(info["active"], false);
    assert_eq!((fake.introspect_calls(), fake.revoke_calls()), (2, 1));
}

/// `revoke_on_reuse`: a refresh token presented twice revokes the grant; the rotated refresh
/// token and the access tokens stop working too (what a double spend costs a fleet).
#[tokio::test]
async fn oauth2_reuse_of_a_refresh_token_revokes_the_whole_grant() {
    let ca = TestCa::new();
    let options = OAuth2Options {
        client_auth: ClientAuth::Body,
        revoke_on_reuse: true,
        ..OAuth2Options::default()
    };
    let fake = OAuth2Fake::start_with(&ca, options.clone()).await;
    let client = TestClient::new(&ca);
    let token_url = format!("{}/token", fake.ip_url());
    let refresh = |rt: &str| {
        form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", &options.client_id),
            ("client_secret", &options.client_secret),
        ])
    };
    let code = fake.issue_code();
    let first = client
        .post(
            &token_url,
            FORM,
            form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", &options.client_id),
                ("client_secret", &options.client_secret),
            ]),
            &[],
        )
        .await
        .json();
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    let second = client
        .post(&token_url, FORM, refresh(&rt1), &[])
        .await
        .json();
    let (at2, rt2) = (
        second["access_token"].as_str().unwrap().to_owned(),
        second["refresh_token"].as_str().unwrap().to_owned(),
    );
    assert_eq!(fake.grants_revoked(), 0);
    assert_eq!(
        api_get(&client, &format!("{}/api", fake.ip_url()), &at2)
            .await
            .status,
        200
    );
    // The replay of rt1 revokes everything, rt2 and at2 included.
    let replay = client.post(&token_url, FORM, refresh(&rt1), &[]).await;
    assert_eq!((replay.status.as_u16(), fake.grants_revoked()), (400, 1));
    let after = client.post(&token_url, FORM, refresh(&rt2), &[]).await;
    assert_eq!(after.json()["error"], "invalid_grant");
    assert_eq!(
        api_get(&client, &format!("{}/api", fake.ip_url()), &at2)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn oauth2_authorization_code_with_pkce_and_denial() {
    let ca = TestCa::new();
    let fake = OAuth2Fake::start(&ca).await;
    let options = fake.options();
    let client = TestClient::new(&ca);
    let redirect = "http://127.0.0.1:9/cb";
    let authorize_url = format!(
        "{}/authorize?{}",
        fake.ip_url(),
        form(&[
            ("response_type", "code"),
            ("client_id", &options.client_id),
            ("redirect_uri", redirect),
            ("state", "abc"),
            ("code_challenge", &s256(VERIFIER)),
            ("code_challenge_method", "S256"),
        ])
    );
    let location = client
        .get(&authorize_url, &[])
        .await
        .header("location")
        .unwrap()
        .to_owned();
    let code = query_param(&location, "code").unwrap();
    let exchange = |code: &str, verifier: &str| {
        form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
            ("client_id", &options.client_id),
            ("client_secret", &options.client_secret),
        ])
    };
    let token_url = format!("{}/token", fake.ip_url());
    let wrong = client
        .post(
            &token_url,
            FORM,
            exchange(&code, &VERIFIER.replace('t', "u")),
            &[],
        )
        .await;
    assert_eq!(wrong.json()["error"], "invalid_grant");
    // The failed attempt spent the code; a fresh one with the right verifier works.
    let code = fake.issue_code_with(CodeGrant {
        scope: Some("read".to_owned()),
        code_challenge: Some(s256(VERIFIER)),
        ..CodeGrant::default()
    });
    let reply = client
        .post(&token_url, FORM, exchange(&code, VERIFIER), &[])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(fake.authorization_code_grants(), 2);

    fake.set_consent(Consent::Deny);
    let location = client
        .get(&authorize_url, &[])
        .await
        .header("location")
        .unwrap()
        .to_owned();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some("abc"));
    assert_eq!(fake.authorize_calls(), 2);
}

// ---------------------------------------------------------------- faults

#[tokio::test(start_paused = true)]
async fn scripted_faults_come_in_order_then_normal_service_resumes() {
    let ca = TestCa::new();
    let fake = OAuth2Fake::start(&ca).await;
    let options = fake.options();
    let client = TestClient::new(&ca);
    let token_url = format!("{}/token", fake.ip_url());
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &options.client_id),
        ("client_secret", &options.client_secret),
    ]);
    for fault in [
        Fault::Status(500),
        Fault::Status503RetryAfter(7),
        Fault::Malformed("{not json".to_owned()),
        Fault::ErrorCode("invalid_grant"),
        Fault::Redirect("https://elsewhere.test/token".to_owned()),
        Fault::Huge,
        Fault::CrlfToken,
        Fault::SpaceToken,
        Fault::Delay(Duration::from_secs(30)),
    ] {
        fake.push_fault(fault);
    }
    let mut replies = Vec::new();
    for _ in 0..6 {
        replies.push(client.post(&token_url, FORM, body.clone(), &[]).await);
    }
    assert_eq!(replies[0].status, 500);
    assert_eq!(
        (replies[1].status.as_u16(), replies[1].header("retry-after")),
        (503, Some("7"))
    );
    assert_eq!(
        (replies[2].status.as_u16(), replies[2].text().as_str()),
        (200, "{not json")
    );
    assert_eq!(
        (
            replies[3].status.as_u16(),
            replies[3].json()["error"].as_str()
        ),
        (400, Some("invalid_grant"))
    );
    assert_eq!(replies[4].status, 302);
    assert_eq!(
        replies[4].header("location"),
        Some("https://elsewhere.test/token")
    );
    assert_eq!(
        (replies[5].status.as_u16(), replies[5].body.len()),
        (200, HUGE_BODY)
    );

    let crlf = client
        .post(&token_url, FORM, body.clone(), &[])
        .await
        .json();
    assert!(crlf["access_token"].as_str().unwrap().contains("\r\n"));
    let space = client
        .post(&token_url, FORM, body.clone(), &[])
        .await
        .json();
    assert!(space["access_token"].as_str().unwrap().contains(' '));

    let started = Instant::now();
    let delayed = client.post(&token_url, FORM, body.clone(), &[]).await;
    assert_eq!(delayed.status, 200);
    assert!(started.elapsed() >= Duration::from_secs(30));

    assert_eq!(fake.pending_faults(), 0);
    assert_eq!(client.post(&token_url, FORM, body, &[]).await.status, 200);
    assert_eq!((fake.token_calls(), fake.tokens_issued()), (10, 4));
}

#[tokio::test]
async fn api_refuses_two_authorization_headers() {
    let ca = TestCa::new();
    let fake = BaselimeFake::start(&ca).await;
    let client = TestClient::new(&ca);
    let token_url = format!("{}/oauth/token", fake.ip_url());
    let body = json!({"grantType": "authorization_code", "clientId": baselime::CLIENT_ID,
        "clientSecret": baselime::CLIENT_SECRET, "redirect": "x", "code": fake.issue_code()});
    let access = client
        .post(&token_url, JSON, body.to_string(), &[])
        .await
        .json()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = bearer(&access);
    let doubled = client
        .get(
            &format!("{}/v1/x", fake.ip_url()),
            &[("authorization", &auth), ("authorization", &auth)],
        )
        .await;
    assert_eq!(doubled.status, 400);
    assert_eq!(
        fake.last_api_headers()
            .unwrap()
            .get_all("authorization")
            .iter()
            .count(),
        2
    );
}
