//! Files credproxy keeps secrets in (the token store, the local CA): written atomically and
//! opened without following symlinks, in one place.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `bytes` to `target` in `dir` through a new temp file `dir/temp_name` (created with
/// `O_EXCL`, 0600 while written, then exactly `mode`, fsynced), renamed over `target`, the
/// directory fsynced so the rename itself is durable. A crash leaves the old file or the new one,
/// never a torn one; a failed write removes its temp file.
pub fn write_atomically(
    dir: &Path,
    temp_name: &str,
    target: &Path,
    mode: u32,
    bytes: &[u8],
) -> io::Result<()> {
    let temp = dir.join(temp_name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // `mode` is filtered by the umask; make it exact.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, target)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// A temp file name unique to this process and this write: `{prefix}{pid}-{random}`.
pub fn temp_name(prefix: &str) -> String {
    format!(
        "{prefix}{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// `O_NOFOLLOW` on a symlink fails with `ELOOP` ("too many levels of symbolic links"), which
/// says nothing useful; say what it is and what to do. `where_` names the directory ("its state
/// directory (remove the link; the file is recreated)").
pub fn refuse_symlink(e: io::Error, where_: &str) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::new(
            e.kind(),
            format!("it is a symbolic link, which credproxy does not follow in {where_}"),
        )
    } else {
        e
    }
}
