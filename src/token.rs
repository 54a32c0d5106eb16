//! Token engine.

pub mod store;
