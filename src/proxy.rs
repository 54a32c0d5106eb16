//! The proxy: from a downstream request to an upstream response, with a credential attached.
//!
//! The phases of a request, in order (pingora's habit of naming them), and the file that is
//! each one's single home; both transports (below) call these, neither has its own copy:
//! 1. **accept** (`listener.rs`): a connection on the main listener or a route listener, within
//!    the global and per-client connection limits (`limits.rs`); HTTP/1.1 framing, header size
//!    (64 KiB) and header timeout are enforced by hyper, with `framing.rs` refusing the one
//!    ambiguous framing hyper accepts (`Content-Length` with `Transfer-Encoding`). What a request
//!    is served with (the config generation, the connection's context) is in `state.rs`.
//! 2. **downstream checks** (`checks.rs`): `Proxy-Authorization` when `proxy_auth` or
//!    `[callers]` is set (407; who is calling, verified by `auth.rs`: a named caller or anyone);
//!    a transfer coding other than plain `chunked`, or two `Host` fields (400). After routing, a
//!    named caller may use only its providers (403 `caller_denied`, `checks.rs`); a `CONNECT`
//!    tunnel's requests are its `CONNECT`'s caller's.
//! 3. **route** (`route.rs`): `CONNECT` to a claimed host opens a tunnel whose requests are
//!    served as one more connection (`tunnel.rs`). Otherwise the provider is found by route
//!    listener, path prefix, absolute URI or `Host` (inside a tunnel: the tunnel's provider, when
//!    the request names its host; else 421). Unclaimed hosts: 403 or passed through (and
//!    `CONNECT` tunnelled) to the one resolved address judged public or in `pass_private` (403
//!    `destination_not_allowed` otherwise: `checks.rs`).
//!    On a loopback route listener, `Host` must be its own (DNS rebinding, `checks.rs`).
//! 4. **browser check** (`checks.rs`): `Origin` / cross-site `Sec-Fetch-Site` are refused (403)
//!    unless allowed.
//!    Then the **rules** (`policy.rs`): a provider's `deny` and `allow` (403 `policy_denied`),
//!    and, on a provider with rules, a path servers may read differently (400
//!    `ambiguous_path`); before any credential is read, so a refused request has none.
//! 5. **credential**: the provider's current credential, at once when valid; else wait up to
//!    `wait_for_token` (503 `credential_unavailable` / `login_required`; hyper's turn).
//! 6. **upstream request**: hop-by-hop fields stripped, `Host` set to the upstream's, credential
//!    headers *replace* the client's, `Via` added only with `via = true`, `_` look-alikes of
//!    framing, hop-by-hop and credential fields dropped (`inject.rs`, over `headers.rs`'s field
//!    classification); the path joined to the upstream's base path (`route.rs`); body streamed,
//!    not buffered.
//! 7. **send** (`upstream.rs`): on this connection's own upstream connection, a parked one, or a
//!    new one; response headers within `response_timeout` (504), counted from when the body
//!    was sent, while a stalled body gets 408 (`upload.rs`); connect errors 502. The
//!    keep-alive retry and the classification of upstream failures are `exchange.rs`'s.
//! 8. **upstream response**: a 401 to the current credential nudges the refresher and is replayed
//!    once with the new credential when the body could be kept (the rule: `exchange.rs`);
//!    hop-by-hop stripped, `Via` added (`inject.rs`), a `Location` or `Content-Location`
//!    pointing at the upstream rewritten to the origin the client used, on every listener
//!    (`route.rs`: `ClientOrigin`), so a redirect comes back through credproxy. The body is
//!    forwarded chunk by chunk as it arrives (Server-Sent Events), with no timeout once the
//!    head came. A WebSocket handshake (`Upgrade: websocket`) keeps its upgrade fields, goes
//!    on an upstream connection of its own, and a `101` splices the two connections
//!    (`upgrade.rs`).
//! 9. **log** (`access.rs`): one line per request with whose fault an error was and who called;
//!    the audit record (`crate::audit`), queued without waiting; every answer carries
//!    `credproxy-request-id` (`crate::request_id`).
//!
//! Errors credproxy makes are built in one place, `error.rs`; hyper's own answers to heads it
//! can't parse (400, 414, 431) are rewritten into them as they are written (`own_answers.rs`).
//!
//! HTTP/2 clients (h2c with prior knowledge, or `h2` by ALPN on intercepted TLS) are served by
//! `h2.rs`, which makes each stream's request the HTTP/1.1 request it stands for (strictly:
//! RFC 9113 §8.2.2) and hands it to `service.rs`, as one more way in at phase 1.
//!
//! Two transports run these phases. `fast.rs` serves the common HTTP/1.1 request (a valid
//! credential, no body or a small one, an HTTP/1.1 upstream) by editing its head as bytes;
//! `service.rs`, on hyper, serves everything else, and takes over a connection from the first
//! request the fast path declines (before any byte of it was sent on). The listener dispatches to
//! both; neither transport imports the other, and the phase modules import neither.

pub mod access;
pub mod auth;
pub mod challenge;
pub mod checks;
pub mod counted;
pub mod error;
pub mod exchange;
pub mod expect;
pub mod fast;
pub mod framing;
pub mod h2;
pub mod headers;
pub mod inject;
pub mod limits;
pub mod listener;
pub mod own_answers;
pub mod policy;
pub mod route;
pub mod service;
pub mod state;
pub mod tunnel;
pub mod upgrade;
pub mod upload;
pub mod upstream;

use bytes::Bytes;
use http_body_util::{Either, Full};

pub use error::{Blame, ErrorKind, ProxyError};
pub use listener::serve;
pub use route::{ProviderRoute, Role, Router};
pub use state::{ListenerInfo, Shared};

/// Body of a request sent upstream: the client's, streamed (timed by `upload.rs`, and held back
/// for `Expect: 100-continue`: `expect.rs`), or one in memory (a small body read whole, a kept
/// copy for a replay).
pub type UpBody = Either<expect::ClientBody, Full<Bytes>>;
/// Body of a response sent downstream: the upstream's, streamed (and counted, for a cut short
/// one's log line: `counted.rs`), or one credproxy made.
pub type RespBody = Either<counted::Counted, Full<Bytes>>;

/// Request header blocks over this get 431 (DESIGN.md).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Upstream response heads over this are refused: 502 `upstream_bad_response`, on both
/// transports (hyper's client reads with a buffer of this size).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
