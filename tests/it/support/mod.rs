//! In-process fakes for credproxy's end-to-end tests.
//!
//! One fake per seed provider (`/work/shared/seeds/*.md`, summarised in DESIGN.md's table "The
//! seed providers") plus a generic RFC 6749 server. Each runs a real HTTPS server on
//! `127.0.0.1:0` with a certificate from a [`TestCa`], is as strict as its document about the
//! token request, keeps time with a [`FakeClock`] that follows tokio's paused clock, and exposes
//! counters, records and a fault script through the [`Fake`] trait.
//!
//! ```ignore
//! let ca = TestCa::new();
//! let bace = BaceFake::start(&ca).await;
//! bace.push_fault(Fault::Status503RetryAfter(2));
//! // ... point credproxy at bace.url() with ca.write_ca_file(dir) as its ca_file ...
//! assert_eq!(bace.password_grants(), 1);
//! ```
#![allow(dead_code)]

pub mod alone;
pub mod authorize;
pub mod client;
pub mod clock;
pub mod core;
pub mod external;
pub mod fault;
pub mod fields;
pub mod h2raw;
pub mod http;
pub mod logs;
pub mod proxy;
pub mod redis;
pub mod security;
pub mod server;
pub mod tls;
pub mod token;
pub mod tokens;
pub mod wire;

pub mod apicbase;
pub mod apiv1;
pub mod bace;
pub mod baselime;
pub mod blendvision;
pub mod oauth2;

// The fakes' self-test.
mod fakes;

// Each group of tests uses a different subset of these.
#[allow(unused_imports)]
pub use self::{
    apicbase::ApicbaseFake,
    apiv1::ApiV1Fake,
    authorize::{AuthorizeRequest, Consent, s256},
    bace::BaceFake,
    baselime::BaselimeFake,
    blendvision::BlendVisionFake,
    client::{TestClient, TestResponse},
    clock::FakeClock,
    core::{Fake, RecordedRequest, TokenRequestRecord},
    fault::Fault,
    oauth2::{ClientAuth, ExpiresIn, OAuth2Fake, OAuth2Options, TokenFormat},
    server::{TestServer, read_body},
    tls::{Alpn, TestCa},
    tokens::CodeGrant,
};
