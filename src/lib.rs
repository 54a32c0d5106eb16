//! credproxy: a local reverse proxy that holds API credentials so applications don't have to.
//!
//! An application sends plain HTTP to credproxy on localhost; credproxy finds the provider that
//! owns the upstream host, attaches `Authorization: Bearer <fresh token>` and the provider's own
//! headers, and forwards the request over TLS.
//!
//! Dependencies point one way: [`proxy`] and [`token`] both depend on [`credential`], never on
//! each other; [`app`] and [`cli`] sit on top and wire them together.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod ca;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credential;
pub mod demo;
pub mod fields;
pub mod fsutil;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod request_id;
pub mod secret;
pub mod tls;
pub mod token;
