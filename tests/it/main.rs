//! credproxy's integration tests, as one test binary (one link step instead of one per file).
//!
//! - [`proxy`]: the core proxy end to end, and the HTTP/1.1 path byte for byte on the wire.
//! - [`token`]: the token engine, the provider presets' token calls, secrecy in the logs, and the
//!   token stores.
//! - [`security`]: the adversarial tests (issue 8) and the hardening ones (issue 14).
//! - [`presets`]: each seed provider end to end, through credproxy against its fake.
//! - [`cli`]: the `credproxy` binary's commands, the demo, and the example configs.
//! - [`admin`]: the admin listener, metrics, access logs, and reload.
//! - [`support`]: what they share: the in-process fakes (and their self-test), the test CA,
//!   clients, a proxy harness, and the security and token harnesses.
//!
//! All tests share one process: a test that needs the process to itself (a global tracing
//! subscriber) re-runs itself in a child process, see [`support::alone::own_process`].

mod admin;
mod cli;
mod presets;
mod proxy;
mod security;
mod support;
mod token;
