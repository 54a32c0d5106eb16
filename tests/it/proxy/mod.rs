//! The core proxy end to end, and its HTTP/1.1 path on the wire.

mod clients;
mod e2e;
mod errors;
mod h2;
mod inject;
mod intercept;
mod secrets;
mod tunnel;
mod wire;
mod wire_security;
mod wire_upstream;
