//! credproxy in front of a scripted [`Upstream`]: a `static` or an `oauth2` provider claiming
//! [`HOST`] and forwarding to it over plain HTTP on loopback ([`Setup`]); then the assertions
//! and waits the tests share.

use tokio::sync::mpsc::UnboundedReceiver;

use super::{HOST, Message, TOKEN, Upstream, WAIT, Wire, echo};
use crate::support::proxy::{Harness, Proxy};
use crate::support::{Fake, OAuth2Fake, TestCa};

/// credproxy (in-process, on port 0) in front of `up`; [`Setup::client`] connects to it.
pub struct Setup {
    _ca: TestCa,
    _harness: Harness,
    pub proxy: Proxy,
    pub up: Upstream,
}

impl Setup {
    /// credproxy with a `static` provider claiming [`HOST`], forwarding to `up` over plain
    /// HTTP (loopback), with one provider header.
    pub async fn start(up: Upstream) -> Setup {
        Setup::start_with(up, "").await
    }

    /// [`Setup::start`] with an upstream that answers every request with [`echo`].
    pub async fn echoing() -> Setup {
        Setup::start(Upstream::answering(echo).await).await
    }

    /// `proxy_keys` are more `[proxy]` keys: the harness writes its `[proxy]` section first,
    /// so keys given before the first table land in it.
    pub async fn start_with(up: Upstream, proxy_keys: &str) -> Setup {
        Setup::start_at(up, "", proxy_keys, "").await
    }

    /// [`Setup::start_with`] with an upstream URL that has a base path (`/api/v1`), and `keys`
    /// after the provider's own (more of its keys, then tables such as `[[routes]]`).
    pub async fn start_at(up: Upstream, base: &str, proxy_keys: &str, keys: &str) -> Setup {
        let provider = format!(
            r#"preset = "static"
token = "{TOKEN}"
headers = {{ "x-provider" = "from-config" }}
{keys}"#
        );
        let providers = wire_provider(proxy_keys, &up, base, &provider);
        Setup::with(TestCa::new(), up, &providers).await
    }

    /// credproxy with an `oauth2` (refreshable) provider claiming [`HOST`], its tokens from the
    /// returned fake token server; `proxy_keys` as in [`Setup::start_with`].
    pub async fn oauth2(up: Upstream, proxy_keys: &str) -> (Setup, OAuth2Fake) {
        let ca = TestCa::new();
        let fake = OAuth2Fake::start(&ca).await;
        let o = fake.options();
        let provider = format!(
            r#"preset = "oauth2"
token_url = "{fake_url}/token"
grant = "client_credentials"
client_id = "{id}"
client_secret = "{secret}"
wait_for_token = "5s""#,
            fake_url = fake.url(),
            id = o.client_id,
            secret = o.client_secret,
        );
        let providers = wire_provider(proxy_keys, &up, "", &provider);
        (Setup::with(ca, up, &providers).await, fake)
    }

    /// credproxy with `providers`; `ca` signs the certificates of any token server they use.
    async fn with(ca: TestCa, up: Upstream, providers: &str) -> Setup {
        let harness = Harness::new(&ca);
        let proxy = harness.start(providers).await;
        Setup {
            _ca: ca,
            _harness: harness,
            proxy,
            up,
        }
    }

    pub async fn client(&self) -> Wire {
        Wire::client(self.proxy.main()).await
    }
}

/// The config's providers: `proxy_keys` (see [`Setup::start_with`]), then the one provider,
/// `wire`, claiming [`HOST`] and forwarding to `up` under `base`, with `keys` (its preset and
/// credential).
fn wire_provider(proxy_keys: &str, up: &Upstream, base: &str, keys: &str) -> String {
    format!(
        r#"{proxy_keys}
[providers.wire]
hosts = ["{HOST}"]
upstream = "http://127.0.0.1:{port}{base}"
{keys}
"#,
        port = up.port(),
    )
}

/// `m` has `status` (the failure shows the whole response).
pub fn assert_status(m: &Message, status: u16) {
    assert_eq!(
        m.status(),
        status,
        "{} {:?}: {}",
        m.head.start,
        m.head.fields,
        m.text()
    );
}

/// `m` is a 200 whose body is `want`, byte for byte; `what` names the body in a failure.
pub fn assert_whole_body(m: &Message, want: &[u8], what: &str) {
    assert_status(m, 200);
    assert_eq!(m.body.len(), want.len(), "{what}: length");
    assert!(m.body == want, "{what} changed in transit");
}

/// `m` is credproxy's own error answer: `status`, with a JSON body.
pub fn assert_json_error(m: &Message, status: u16) {
    assert_status(m, status);
    assert!(
        m.head
            .get("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{m:?}"
    );
}

/// Wait (with the safety net [`WAIT`]) for an upstream script's signal that `what` happened.
pub async fn signalled(rx: &mut UnboundedReceiver<()>, what: &str) {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no signal within {WAIT:?}: {what}"))
        .unwrap_or_else(|| panic!("the script is gone: {what}"));
}
