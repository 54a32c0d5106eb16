//! Binding listeners: TCP (one socket per worker with `SO_REUSEPORT`, so the kernel spreads
//! connections over the workers, after a probe that refuses a port another process listens on) and unix sockets (a stale socket file is replaced safely).
//!
//! A unix socket must never be reachable with a wider mode than `socket_mode`, not even for an
//! instant: `bind` creates the file with `0777 & !umask`, and a `chmod` afterwards leaves a
//! window in which another local user could connect (connecting needs write permission on the
//! socket). So the socket is bound inside a fresh private directory (mode 0700) next to the
//! target, given its mode there, and then renamed into place: the path only ever shows the final
//! mode, and the rename also replaces a stale socket atomically. (Changing the umask instead would
//! be process-wide, racing with the token store and the other threads.) Only when the temporary
//! path would be too long for a socket address (`sun_path`, 108 bytes) does it fall back to
//! binding in place and `chmod`, with that window, and a warning.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, Socket, Type};

use super::{AppError, BoundAddr};
use crate::config::Listen;
use crate::net::Bound;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit, once per process. Each proxied request
/// holds two sockets, and the common soft default (1024) is reached by a few hundred clients;
/// the hard limit is what the administrator allows. Failing to raise it is not fatal.
pub fn raise_fd_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let (soft, hard) = (limit.current, limit.maximum);
        if soft.is_some() && soft != hard {
            let raised = rustix::process::Rlimit {
                current: hard,
                maximum: hard,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => tracing::debug!(from = ?soft, to = ?hard, "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"),
                Err(e) => tracing::debug!(soft = ?soft, hard = ?hard, error = %e, "can't raise the open-file limit (RLIMIT_NOFILE)"),
            }
        } else {
            tracing::debug!(soft = ?soft, hard = ?hard, "open-file limit (RLIMIT_NOFILE)");
        }
    });
}

/// Pending connections the kernel holds for us while we are at `max_connections`.
const BACKLOG: i32 = 1024;

/// Bind `listen` `copies` times (TCP) or once (unix). All TCP copies share the port.
///
/// `probe`: first make sure no other process listens on the address (at start; a reload skips
/// it, since the listener being replaced may hold an overlapping wildcard address itself).
pub fn bind(
    listen: &Listen,
    copies: usize,
    socket_mode: u32,
    probe: bool,
) -> Result<(Vec<Bound>, BoundAddr), AppError> {
    match listen {
        Listen::Tcp(addr) => {
            let err = |source| AppError::Bind {
                addr: addr.to_string(),
                source,
            };
            if probe && addr.port() != 0 {
                probe_port(*addr).map_err(err)?;
            }
            let first = tcp(*addr, copies > 1).map_err(err)?;
            let local = first.local_addr().map_err(err)?;
            let mut all = vec![Bound::Tcp(first)];
            for _ in 1..copies {
                all.push(Bound::Tcp(tcp(local, true).map_err(err)?));
            }
            Ok((all, BoundAddr::Tcp(local)))
        }
        Listen::Unix(path) => {
            let l = unix(path, socket_mode).map_err(|source| AppError::Bind {
                addr: format!("unix:{}", path.display()),
                source,
            })?;
            Ok((
                vec![Bound::Unix(l, path.clone())],
                BoundAddr::Unix(path.clone()),
            ))
        }
    }
}

/// Fail when another process listens on `addr`. The workers' sockets share the port with
/// `SO_REUSEPORT`, which would just as gladly share it with a second `credproxy run` (same user)
/// and split the traffic between the two in silence. A socket bound *without* `SO_REUSEPORT`
/// can't join a port that any listener holds, so it is bound (and closed) first: the port is
/// ours alone when it succeeds. (Two starts within the same microseconds could both pass; a
/// start racing a start is not the failure this catches: a forgotten second instance is.)
fn probe_port(addr: SocketAddr) -> std::io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(
                e.kind(),
                "address in use by another process (is another credproxy running with this config? stop it, or pick another port)",
            )
        } else {
            e
        }
    })
}

fn tcp(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Restarting must not fail on connections in TIME_WAIT from the previous run.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

fn unix(path: &Path, socket_mode: u32) -> std::io::Result<std::os::unix::net::UnixListener> {
    // A stale socket from a previous run is replaced; anything else at the path is not.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        // Stale means nobody listens (ECONNREFUSED); a socket we may not even try (EACCES,
        // another user's) is left alone.
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process is serving on this socket",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("a socket exists at this path and can't be checked for use: {e}"),
                ));
            }
        }
    }
    let l = match private_dir(path)? {
        Some(dir) => {
            let result = bind_private(&dir, path, socket_mode);
            let _ = std::fs::remove_dir(&dir);
            result?
        }
        None => {
            tracing::warn!(path = %path.display(), "the socket path is too long to bind in a private directory first; binding in place and then setting socket_mode");
            let _ = std::fs::remove_file(path);
            let l = std::os::unix::net::UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket_mode))?;
            l
        }
    };
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Bind in `dir` (private), set `socket_mode`, then move the socket to `path`.
fn bind_private(
    dir: &Path,
    path: &Path,
    socket_mode: u32,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    let tmp = dir.join("s");
    let l = std::os::unix::net::UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(socket_mode))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(l)
}

/// A fresh 0700 directory beside `path` (same filesystem, so the rename is atomic), or `None`
/// when a socket inside it would not fit in `sun_path`.
fn private_dir(path: &Path) -> std::io::Result<Option<PathBuf>> {
    const SUN_PATH: usize = 108;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut attempt = 0u32;
    loop {
        let dir = parent.join(format!(".cp{}.{attempt}", std::process::id()));
        if dir.as_os_str().len() + "/s".len() >= SUN_PATH {
            return Ok(None);
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(Some(dir)),
            // Left by a crash of an earlier process with our pid, or another listener binding
            // at this moment: try the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 64 => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
