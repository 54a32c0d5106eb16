//! Issue 20 item 1: a token that goes in the query (`inject = { query = NAME }`) is in no log
//! line at any level, no access line, no error credproxy makes, and not in `/status` or
//! `/metrics`: only the upstream sees it. One session at TRACE, in a process of its own (the
//! subscriber is global): requests by the fast path and by hyper's, a 502 from a dead upstream
//! (both ways), and an upstream redirect whose `Location` and `Link` repeat the query (the token
//! is taken out of them).

use crate::support;

use support::alone::own_process;
use support::logs::capture_trace;
use support::wire::*;

const DEAD_TOKEN: &str = "dead-qS3CR3T-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_token_is_in_no_log_line_error_or_admin_page() {
    if !own_process(
        module_path!(),
        "a_query_token_is_in_no_log_line_error_or_admin_page",
    ) {
        return;
    }
    let logs = capture_trace();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let up = Upstream::answering(|req: &Message| {
        if req.target().starts_with("/moved") {
            // A trailing-slash redirect that keeps the query, the token in it.
            let location = format!("Location: {}", req.target().replacen('?', "/?", 1));
            let link = format!("Link: <{}>; rel=\"self\"", req.target());
            response(
                "301 Moved Permanently",
                &[location.as_str(), link.as_str()],
                b"",
            )
        } else {
            echo(req)
        }
    })
    .await;
    let s = Setup::start_at(
        up,
        "",
        "",
        &format!(
            "inject = {{ query = \"key\" }}\n\n[providers.dead]\npreset = \"static\"\n\
             hosts = [\"api.dead.test\"]\nupstream = \"http://127.0.0.1:{dead}\"\n\
             token = \"{DEAD_TOKEN}\"\ninject = {{ query = \"key\" }}\n"
        ),
    )
    .await;
    let mut answers = Vec::new();
    for expect in [None, Some("Expect: 100-continue")] {
        let extra: Vec<&str> = expect.into_iter().collect();
        let mut c = s.client().await;
        let r = c
            .roundtrip(request("GET", "/v1/models?key=client&q=1", &extra, b""))
            .await;
        assert_status(&r, 200);
        assert_eq!(s.up.last().target(), format!("/v1/models?q=1&key={TOKEN}"));
        let r = c.roundtrip(request("GET", "/moved?a=1", &extra, b"")).await;
        assert_status(&r, 301);
        assert_eq!(r.head.get("location"), Some("/moved/?a=1"), "{:?}", r.head);
        assert_eq!(r.head.get("link"), Some("</moved?a=1>; rel=\"self\""));
        answers.push(format!("{r:?}"));
        let mut d = s.client().await;
        let mut fields = vec!["Host: api.dead.test"];
        fields.extend(extra.iter().copied());
        let raw = format!("GET /v1/x?q=1 HTTP/1.1\r\n{}\r\n\r\n", fields.join("\r\n"));
        let r = d.roundtrip(raw.as_bytes()).await;
        assert_json_error(&r, 502);
        answers.push(format!("{r:?} {}", r.text()));
    }
    for path in ["/status", "/metrics", "/readyz", "/"] {
        answers.push(s.proxy.admin(path).await.text());
    }
    let text = logs.text();
    assert!(
        text.contains("credproxy::access") && text.contains("/v1/models"),
        "the access lines were captured"
    );
    for secret in [TOKEN, DEAD_TOKEN, "qS3CR3T"] {
        assert!(!text.contains(secret), "{secret} in the logs");
        for a in &answers {
            assert!(!a.contains(secret), "{secret} in an answer: {a}");
        }
    }
}

/// Issue 20 item 1: an upstream that echoes the request's URL, the token in its query, into
/// `Link` (two fields, absolute and relative targets) and `Refresh` hands the client neither the
/// token nor a broken field: each URL keeps its other parameters and each field its parameters,
/// by the fast path and by hyper's (`Expect` takes a request there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_and_refresh_echoing_the_url_lose_the_query_token() {
    let up = Upstream::answering(|req: &Message| {
        let target = req.target().to_owned();
        let link = format!("Link: <http://{HOST}{target}>; rel=\"next\", <{target}>; rel=\"self\"");
        let refresh = format!("Refresh: 5; url='{target}'");
        response(
            "200 OK",
            &[
                link.as_str(),
                "Link: </docs>; rel=\"help\"",
                refresh.as_str(),
            ],
            b"ok",
        )
    })
    .await;
    let s = Setup::start_at(up, "", "", "inject = { query = \"key\" }\n").await;
    for expect in [None, Some("Expect: 100-continue")] {
        let extra: Vec<&str> = expect.into_iter().collect();
        let mut c = s.client().await;
        let r = c
            .roundtrip(request("GET", "/v1/items?page=2&key=client", &extra, b""))
            .await;
        assert_status(&r, 200);
        assert_eq!(
            s.up.last().target(),
            format!("/v1/items?page=2&key={TOKEN}"),
            "the upstream got the token"
        );
        assert_eq!(
            r.head.all("link"),
            [
                format!(
                    "<http://{HOST}/v1/items?page=2>; rel=\"next\", </v1/items?page=2>; rel=\"self\""
                ),
                "</docs>; rel=\"help\"".to_owned(),
            ],
            "{expect:?}: {:?}",
            r.head
        );
        assert_eq!(
            r.head.get("refresh"),
            Some("5; url='/v1/items?page=2'"),
            "{expect:?}"
        );
        let answer = format!("{:?} {}", r.head, r.text());
        assert!(
            !answer.contains(TOKEN),
            "{expect:?}: the token reached the client: {answer}"
        );
    }
}
