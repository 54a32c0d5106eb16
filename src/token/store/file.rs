//! The token store on disk: one JSON file per provider, written so a crash can't tear it.
//!
//! Layout of the state directory (0700):
//!
//! ```text
//! <provider>.json                        the token (0600), {"version": 1, ...StoredToken}
//! <provider>.lock                        empty; flock'ed while a process refreshes (0600)
//! .<provider>.json.tmp-<pid>-<random>    a save in progress, or left by a crash
//! ```
//!
//! A save writes a temp file in the same directory, fsyncs it, renames it over `<provider>.json`
//! and fsyncs the directory, so after a crash at any point the file is the old token or the new
//! one. Loads never look at temp files.
//!
//! Token and lock files are opened with `O_NOFOLLOW`: a symlink planted at `<provider>.json` or
//! `<provider>.lock` (pointing at another file of the user's, or at a file another user controls)
//! is refused with an error that says so, never followed. (Temp files are created with
//! `O_EXCL`, which never follows one either, and `rename` replaces a link rather than writing
//! through it.)
//!
//! Lock files are never deleted: a process waiting on the old file while another deletes and
//! recreates it would hold a lock nobody else sees. The lock is an advisory `flock` (std's
//! `File::lock`): it is per open file, so it also serializes threads of one process, and it is
//! released by the kernel when a process dies. Network filesystems may not honour it.
//!
//! (Over 500 lines with its unit tests, the last 240-odd lines: they test this file's
//! internals, so they stay beside them.)

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{ParseError, StoreError, StoreLock, StoredToken, TokenStore, check_provider};

/// The `version` written in every token file.
pub(super) const FORMAT_VERSION: u64 = 1;

/// A temp file older than this is left over from a crash, and the next save deletes it. Younger
/// ones may belong to a save in progress in another process (one that does not hold the lock,
/// such as `login`), whose rename would fail if we deleted its file.
const STALE_TEMP: Duration = Duration::from_secs(60);

/// Token files in a directory. See the module docs for the layout.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

/// The file's JSON: the token plus a format version.
#[derive(Serialize, Deserialize)]
struct OnDisk<T> {
    version: u64,
    #[serde(flatten)]
    token: T,
}

impl FileStore {
    /// Opens the store in `dir`, creating it (and its parents) if needed. The directory ends up
    /// 0700 whatever the umask; if it was open to other users it is tightened, with a warning.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        let create_err = |source| StoreError::CreateDir {
            path: dir.clone(),
            source,
        };
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        dir = %dir.display(),
                        mode = %format_args!("{mode:o}"),
                        "token store directory is open to other users; restricting it to 0700"
                    );
                }
                if mode != 0o700 {
                    set_mode(&dir, 0o700)?;
                }
            }
            Ok(_) => {
                let not_dir = io::Error::from(io::ErrorKind::NotADirectory);
                return Err(create_err(not_dir));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(create_err)?;
                // The umask may have taken bits away.
                set_mode(&dir, 0o700)?;
            }
            Err(e) => return Err(create_err(e)),
        }
        Ok(FileStore { dir })
    }

    /// The directory holding the token files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn token_path(&self, provider: &str) -> PathBuf {
        self.dir.join(format!("{provider}.json"))
    }

    fn lock_file(&self, provider: &str) -> Result<(File, PathBuf), StoreError> {
        check_provider(provider)?;
        let path = self.dir.join(format!("{provider}.lock"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| StoreError::Lock {
                path: path.clone(),
                source: refuse_symlink(e),
            })?;
        Ok((file, path))
    }

    /// Writes `bytes` to a new temp file, then renames it over `path` (0600).
    fn write_atomically(&self, provider: &str, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let temp = crate::fsutil::temp_name(&temp_prefix(provider));
        crate::fsutil::write_atomically(&self.dir, &temp, path, 0o600, bytes)
    }

    /// Deletes this provider's temp files left over from crashed saves.
    fn remove_stale_temps(&self, provider: &str) {
        let prefix = temp_prefix(provider);
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_str().is_some_and(|n| n.starts_with(&prefix)) {
                continue;
            }
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age >= STALE_TEMP));
            if stale {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => tracing::debug!(file = %path.display(), "removed leftover temp file"),
                    Err(error) => tracing::debug!(
                        file = %path.display(),
                        %error,
                        "can't remove leftover temp file"
                    ),
                }
            }
        }
    }
}

fn refuse_symlink(e: io::Error) -> io::Error {
    crate::fsutil::refuse_symlink(
        e,
        "its state directory (remove the link; the file is recreated)",
    )
}

fn temp_prefix(provider: &str) -> String {
    format!(".{provider}.json.tmp-")
}

fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|source| {
        StoreError::Permissions {
            path: path.to_owned(),
            source,
        }
    })
}

impl TokenStore for FileStore {
    fn load(&self, provider: &str) -> Result<Option<StoredToken>, StoreError> {
        check_provider(provider)?;
        let path = self.token_path(provider);
        let read = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut f| {
                let mut bytes = Vec::new();
                io::Read::read_to_end(&mut f, &mut bytes).map(|_| bytes)
            });
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Read {
                    path,
                    source: refuse_symlink(e),
                });
            }
        };
        let corrupt = |e: serde_json::Error| StoreError::Corrupt {
            path: path.clone(),
            source: ParseError::from(e),
        };
        // The version first, so a file from a newer credproxy says so rather than "corrupt".
        #[derive(Deserialize)]
        struct Version {
            version: u64,
        }
        let found = serde_json::from_slice::<Version>(&bytes)
            .map_err(corrupt)?
            .version;
        if found != FORMAT_VERSION {
            return Err(StoreError::Version { path, found });
        }
        let file: OnDisk<StoredToken> = serde_json::from_slice(&bytes).map_err(corrupt)?;
        Ok(Some(file.token))
    }

    fn save(&self, provider: &str, token: &StoredToken) -> Result<(), StoreError> {
        check_provider(provider)?;
        let path = self.token_path(provider);
        let file = OnDisk {
            version: FORMAT_VERSION,
            token,
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("a token serializes to JSON");
        bytes.push(b'\n');
        self.write_atomically(provider, &path, &bytes)
            .map_err(|source| StoreError::Write { path, source })?;
        self.remove_stale_temps(provider);
        Ok(())
    }

    fn remove(&self, provider: &str) -> Result<bool, StoreError> {
        check_provider(provider)?;
        let path = self.token_path(provider);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(StoreError::Remove { path, source }),
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StoreError::Remove { path, source })?;
        Ok(true)
    }

    fn lock(&self, provider: &str) -> Result<Box<dyn StoreLock>, StoreError> {
        let (file, path) = self.lock_file(provider)?;
        file.lock()
            .map_err(|source| StoreError::Lock { path, source })?;
        Ok(Box::new(FileLock(file)))
    }

    fn try_lock(&self, provider: &str) -> Result<Option<Box<dyn StoreLock>>, StoreError> {
        let (file, path) = self.lock_file(provider)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(FileLock(file)))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(source)) => Err(StoreError::Lock { path, source }),
        }
    }
}

/// An open, flock'ed lock file. Closing the file would release the lock too; unlocking first
/// says so.
struct FileLock(File);

impl StoreLock for FileLock {}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("state")).unwrap();
        assert_eq!(store.load("api").unwrap(), None);
        store.save("api", &sample()).unwrap();
        assert_eq!(store.load("api").unwrap(), Some(sample()));

        let mut next = sample();
        next.refresh_token = None;
        next.secrets.clear();
        store.save("api", &next).unwrap();
        assert_eq!(store.load("api").unwrap(), Some(next));
        assert_eq!(store.load("other").unwrap(), None);

        assert!(store.remove("api").unwrap());
        assert!(!store.remove("api").unwrap());
        assert_eq!(store.load("api").unwrap(), None);
    }

    /// Issue 14 item 14: a symlink planted as the token or lock file is refused, not followed,
    /// and the error says it is a link; the file it points at is untouched.
    #[test]
    fn symlinked_token_and_lock_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("state")).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"{\"version\": 1}").unwrap();
        std::os::unix::fs::symlink(&victim, store.dir().join("api.json")).unwrap();
        std::os::unix::fs::symlink(&victim, store.dir().join("api.lock")).unwrap();
        let err = store.load("api").unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("symbolic link"), "{text}");
        let Err(err) = store.lock("api") else {
            panic!("a symlinked lock file was followed")
        };
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("symbolic link"), "{text}");
        assert_eq!(fs::read(&victim).unwrap(), b"{\"version\": 1}");
    }

    #[test]
    fn file_format_has_a_version_and_optional_maps() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.save("api", &sample()).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("api.json")).unwrap()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["access_token"], "at-SECRET-1");

        // `secrets` and `details` may be absent.
        let minimal = r#"{"version": 1, "access_token": "a", "refresh_token": null,
            "expires_at": null, "obtained_at": 5, "fingerprint": "f"}"#;
        fs::write(dir.path().join("min.json"), minimal).unwrap();
        let token = store.load("min").unwrap().unwrap();
        assert_eq!(token.access_token.expose(), "a");
        assert!(token.secrets.is_empty() && token.details.is_empty());
    }

    #[test]
    fn new_dir_is_0700_and_files_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b/state");
        let store = FileStore::open(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        store.save("api", &sample()).unwrap();
        assert_eq!(mode(&state.join("api.json")), 0o600);
        drop(store.lock("api").unwrap());
        assert_eq!(mode(&state.join("api.lock")), 0o600);
    }

    #[test]
    fn wide_dir_is_tightened_and_wide_file_is_replaced_by_0600() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, Permissions::from_mode(0o777)).unwrap();
        // An existing token file someone made world-readable.
        fs::write(state.join("api.json"), b"{}").unwrap();
        fs::set_permissions(state.join("api.json"), Permissions::from_mode(0o666)).unwrap();

        let store = FileStore::open(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        store.save("api", &sample()).unwrap();
        assert_eq!(mode(&state.join("api.json")), 0o600);
    }

    #[test]
    fn a_crashed_save_leaves_the_good_file_readable_and_the_next_save_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.save("api", &sample()).unwrap();
        let good = fs::read(dir.path().join("api.json")).unwrap();

        // Crashes before the rename: half a token file, and garbage.
        let partial = dir.path().join(".api.json.tmp-1-00000000000000aa");
        let garbage = dir.path().join(".api.json.tmp-2-00000000000000bb");
        let fresh = dir.path().join(".api.json.tmp-3-00000000000000cc");
        fs::write(&partial, &good[..good.len() / 2]).unwrap();
        fs::write(&garbage, b"\0\xff not json").unwrap();
        fs::write(&fresh, b"{").unwrap();
        assert_eq!(store.load("api").unwrap(), Some(sample()));

        // Old leftovers go at the next save; a young one may be another process's save in
        // progress, so it stays.
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        for old in [&partial, &garbage] {
            File::options()
                .write(true)
                .open(old)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        store.save("api", &sample()).unwrap();
        assert!(!partial.exists() && !garbage.exists());
        assert!(fresh.exists());
        assert_eq!(store.load("api").unwrap(), Some(sample()));
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let path = dir.path().join("api.json");
        for contents in [
            &b"{\"access_token\": \"tok-SECRET"[..],
            b"",
            b"\xff\xfe",
            b"{\"version\": 1, \"access_token\": 987654}",
            b"[1, 2]",
        ] {
            fs::write(&path, contents).unwrap();
            let err = store.load("api").unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
            assert!(err.is_unusable_token());
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("will be replaced"), "{msg}");
            let cause = std::error::Error::source(&err).unwrap().to_string();
            assert!(
                !cause.contains("SECRET") && !cause.contains("987654"),
                "{cause}"
            );
        }
        // And a save replaces it.
        store.save("api", &sample()).unwrap();
        assert_eq!(store.load("api").unwrap(), Some(sample()));
    }

    #[test]
    fn a_newer_format_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        fs::write(
            dir.path().join("api.json"),
            r#"{"version": 2, "tokens": []}"#,
        )
        .unwrap();
        let err = store.load("api").unwrap_err();
        assert!(
            matches!(err, StoreError::Version { found: 2, .. }),
            "{err:?}"
        );
        assert!(err.is_unusable_token());
    }

    #[test]
    fn bad_provider_names_touch_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("state")).unwrap();
        for bad in ["../escape", "a/b", "", ".hidden"] {
            assert!(matches!(
                store.load(bad),
                Err(StoreError::InvalidProvider(_))
            ));
            assert!(matches!(
                store.save(bad, &sample()),
                Err(StoreError::InvalidProvider(_))
            ));
            assert!(matches!(
                store.remove(bad),
                Err(StoreError::InvalidProvider(_))
            ));
            assert!(matches!(
                store.lock(bad),
                Err(StoreError::InvalidProvider(_))
            ));
        }
        assert!(!dir.path().join("escape.json").exists());
    }

    #[test]
    fn open_refuses_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        fs::write(&path, b"").unwrap();
        let err = FileStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
    }

    #[test]
    fn lock_is_exclusive_per_provider_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let other = FileStore::open(dir.path()).unwrap();
        let held = store.lock("api").unwrap();
        assert!(other.try_lock("api").unwrap().is_none());
        let unrelated = other.try_lock("other").unwrap();
        assert!(unrelated.is_some());
        drop(held);
        let again = other.try_lock("api").unwrap();
        assert!(again.is_some());
        assert!(store.try_lock("api").unwrap().is_none());
    }

    #[test]
    fn a_waiting_lock_gets_it_when_the_holder_drops() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let held = store.lock("api").unwrap();
        let waiter = {
            let store = store.clone();
            std::thread::spawn(move || {
                let _guard = store.lock("api").unwrap();
                store.load("api").unwrap()
            })
        };
        store.save("api", &sample()).unwrap();
        drop(held);
        // The waiter re-reads after getting the lock, so it sees what the holder saved.
        assert_eq!(waiter.join().unwrap(), Some(sample()));
    }
}
