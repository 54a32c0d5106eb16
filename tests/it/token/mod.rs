//! The token engine, the provider presets' token calls, no secret in the logs, and the stores.

mod engine;
mod fleet;
mod presets;
mod redis;
mod redis_endpoints;
mod secrecy;
mod store;
