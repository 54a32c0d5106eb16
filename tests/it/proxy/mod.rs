//! The core proxy end to end, and its HTTP/1.1 path on the wire.

pub(crate) mod callers;
mod clients;
mod e2e;
mod errors;
mod go_client;
mod h2;
mod inject;
mod intercept;
mod policy;
mod secret_fields;
mod secrets;
mod streaming;
pub(crate) mod tunnel;
mod websocket;
mod wire;
mod wire_security;
mod wire_upstream;
