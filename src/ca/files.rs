//! The CA's directory on disk: `state_dir/ca/` (0700) with `ca.pem` (0644, the certificate users
//! trust) and `ca-key.pem` (0600), written as the token store writes its files: a temp file
//! created with `O_EXCL`, fsynced, renamed into place, the directory fsynced; read with
//! `O_NOFOLLOW`, so a symlink planted in the directory is refused, never followed. `ca.lock` is
//! `flock`ed while a process reads or creates the CA, so two processes starting at once (`run`
//! and `exec`) end up with the same CA, not a certificate of one and the key of the other.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const CERT_FILE: &str = "ca.pem";
pub const KEY_FILE: &str = "ca-key.pem";
const LOCK_FILE: &str = "ca.lock";

/// The CA directory, created 0700 (tightened if it was open to others), and locked.
pub struct CaDir {
    pub path: PathBuf,
    /// Held (flock) for as long as this value lives.
    _lock: File,
}

impl CaDir {
    pub fn open(path: &Path) -> io::Result<CaDir> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                if meta.permissions().mode() & 0o777 != 0o700 {
                    fs::set_permissions(path, Permissions::from_mode(0o700))?;
                }
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "it exists and is not a directory (a symbolic link is not followed here)",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new().recursive(true).mode(0o700).create(path)?;
                // The umask may have taken bits away.
                fs::set_permissions(path, Permissions::from_mode(0o700))?;
            }
            Err(e) => return Err(e),
        }
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path.join(LOCK_FILE))
            .map_err(refuse_symlink)?;
        lock.lock()?;
        Ok(CaDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// The file's text, `None` when it does not exist.
    pub fn read(&self, name: &str) -> io::Result<Option<String>> {
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.path.join(name));
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(refuse_symlink(e)),
        };
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        Ok(Some(text))
    }

    /// Write `name` with `mode`, atomically (temp file, fsync, rename, fsync the directory).
    pub fn write(&self, name: &str, mode: u32, bytes: &[u8]) -> io::Result<()> {
        let temp = crate::fsutil::temp_name(&format!(".{name}.tmp-"));
        crate::fsutil::write_atomically(&self.path, &temp, &self.path.join(name), mode, bytes)
    }
}

fn refuse_symlink(e: io::Error) -> io::Error {
    crate::fsutil::refuse_symlink(e, "its CA directory (remove the link)")
}
