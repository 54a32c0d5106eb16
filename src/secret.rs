//! Secrets that cannot be printed by accident.
//!
//! Tokens, refresh tokens, client secrets and passwords travel as [`Secret`]: its `Debug` prints
//! `[redacted]` and it has no `Display`, so `{}`/`{:?}` in a log line or an error message can never
//! leak one (the habit oauth2-rs's `types.rs` set). Code that must send the value calls
//! [`Secret::expose`], which makes every use greppable.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A secret string. Cheap to clone (shared), redacted in `Debug`, never `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: only for putting it on the wire or on disk.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s.into())
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2");
    }
}
