//! The old home of loading and checking, kept as a path: `config::validate::parse_duration` is
//! used by `cli` and `fuzz/`. Loading now lives in `load.rs`, the checker in `check.rs`.

pub use super::check::{ConfigError, ConfigErrors, parse_duration};
pub use super::load::{load, load_str, locate};
