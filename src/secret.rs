//! Secrets that cannot be printed by accident.
//!
//! Tokens, refresh tokens, client secrets and passwords travel as [`Secret`]: its `Debug` prints
//! `[redacted]` and it has no `Display`, so `{}`/`{:?}` in a log line or an error message can never
//! leak one (the habit oauth2-rs's `types.rs` set). Code that must send the value calls
//! [`Secret::expose`], which makes every use greppable.
//!
//! A configured secret may change while credproxy runs ([`Live`]): `{ file = }` follows its file
//! (`watch.rs`), `{ command, ttl }` is re-run before its `ttl` passes (`command.rs`).

mod command;
mod live;
mod watch;

pub use command::{TIMEOUT as COMMAND_TIMEOUT, run as run_command};
pub use live::{Health, Live, Origin, rerun_after, retry_after};
pub use watch::POLL as FILE_POLL;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A secret file larger than this is refused: a secret is a line, and a path such as `/dev/zero`
/// or a log file named by mistake must not be read into memory whole.
pub const MAX_SECRET_FILE: u64 = 64 * 1024;

/// The secret in the file at `path`, its trailing newlines trimmed. The error is a sentence that
/// names the path (never the content): unreadable, empty, over [`MAX_SECRET_FILE`], not UTF-8.
pub fn read_file(path: &str) -> Result<Secret, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| {
        // One byte more than allowed tells "too big" from "exactly the limit"; the size is
        // judged before the encoding, so a big binary file says "too big", not "not UTF-8".
        f.take(MAX_SECRET_FILE + 1).read_to_end(&mut bytes)
    });
    match read {
        Ok(n) if n as u64 > MAX_SECRET_FILE => {
            return Err(format!(
                "secret file larger than 64 KiB: {path} (a secret file holds the secret alone)"
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(format!("can't read secret file {path}: {e}")),
    }
    let Ok(mut content) = String::from_utf8(bytes) else {
        return Err(format!("secret file {path} is not UTF-8 text"));
    };
    while content.ends_with('\n') || content.ends_with('\r') {
        content.pop();
    }
    if content.is_empty() {
        return Err(format!("secret file {path} is empty"));
    }
    Ok(Secret::from(content))
}

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

    /// Issue 14 item 14: `/dev/zero` or a large file is refused without being read whole; the
    /// limit itself is accepted; newlines are trimmed; the content is never in the message.
    #[test]
    fn secret_files_are_read_trimmed_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(path("ok"), "s3cret\r\n").unwrap();
        assert_eq!(read_file(&path("ok")).unwrap().expose(), "s3cret");
        let limit = "x".repeat(MAX_SECRET_FILE as usize);
        std::fs::write(path("limit"), &limit).unwrap();
        assert_eq!(read_file(&path("limit")).unwrap().expose(), limit);
        std::fs::write(path("big"), format!("{limit}y")).unwrap();
        let err = read_file(&path("big")).unwrap_err();
        assert!(err.starts_with("secret file larger than 64 KiB: "), "{err}");
        assert!(!err.contains("xxx"), "{err}");
        let err = read_file("/dev/zero").unwrap_err();
        assert!(err.contains("larger than 64 KiB"), "{err}");
        // A big binary file is "too big" (its size is judged first), a small one "not UTF-8".
        std::fs::write(path("binary"), vec![0xff; 70_000]).unwrap();
        let err = read_file(&path("binary")).unwrap_err();
        assert!(err.contains("larger than 64 KiB"), "{err}");
        std::fs::write(path("latin1"), b"caf\xe9").unwrap();
        let err = read_file(&path("latin1")).unwrap_err();
        assert!(err.ends_with("is not UTF-8 text"), "{err}");
        std::fs::write(path("empty"), "\n").unwrap();
        assert!(read_file(&path("empty")).unwrap_err().contains("is empty"));
        assert!(
            read_file(&path("missing"))
                .unwrap_err()
                .starts_with("can't read secret file")
        );
    }
}
