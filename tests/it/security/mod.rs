//! The adversarial tests (issue 8) and the hardening ones (issue 14).

mod access;
mod framing;
mod hardening;
mod leaks;
mod query_token;
mod requests;
mod tokens;
