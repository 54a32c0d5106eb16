//! `{ file = }` secrets follow their file: a rotated secret is used without a restart.
//!
//! A stat poll rather than inotify (the `notify` crate): one `stat` per file secret every
//! [`POLL`] costs nothing, needs no extra thread or crate, and sees every way a secret is
//! rotated the same way: an atomic rename (a new inode), a rewrite in place (a new size or
//! mtime), and Kubernetes' secret volumes, where the path is a symlink whose target is swapped
//! (`stat` follows it). inotify on the parent directory would have to tell these apart and
//! re-arm its watches after each swap. The stamp is (device, inode, size, mtime, ctime) to the
//! nanosecond, so two writes within one second are told apart too.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use super::live::Live;

/// How often a secret file is looked at: well within the 5 s in which a rotation must be used.
pub const POLL: Duration = Duration::from_secs(1);

/// What a file looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The stamp of the file at `path` now (`None`: it can't be read, e.g. mid-rotation).
pub fn stamp(path: &str) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// Follow the file at `path` for `live`: re-read it whenever its stamp changes. A read that
/// fails (the file missing for a moment, empty half-way through a rewrite) keeps the last value
/// and is reported; the next change is read again.
pub async fn follow(live: &Live, path: &str) {
    // Read once more at the start: the file may have changed since the config was loaded.
    let mut seen = stamp(path);
    live.set(super::read_file(path));
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = stamp(path);
        if now != seen {
            seen = now;
            let read = tokio::task::spawn_blocking({
                let path = path.to_owned();
                move || super::read_file(&path)
            })
            .await
            .unwrap_or_else(|e| Err(format!("reading the secret file {path} failed: {e}")));
            live.set(read);
        }
    }
}
