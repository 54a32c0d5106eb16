//! Binding listeners: TCP (one socket per worker with `SO_REUSEPORT`, so the kernel spreads
//! connections over the workers) and unix sockets (a stale socket file is replaced safely).

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

use super::{AppError, BoundAddr};
use crate::config::Listen;
use crate::proxy::listener::Bound;

/// Pending connections the kernel holds for us while we are at `max_connections`.
const BACKLOG: i32 = 1024;

/// Bind `listen` `copies` times (TCP) or once (unix). All TCP copies share the port.
pub fn bind(
    listen: &Listen,
    copies: usize,
    socket_mode: u32,
) -> Result<(Vec<Bound>, BoundAddr), AppError> {
    match listen {
        Listen::Tcp(addr) => {
            let err = |source| AppError::Bind {
                addr: addr.to_string(),
                source,
            };
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
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process is serving on this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket_mode))?;
    l.set_nonblocking(true)?;
    Ok(l)
}
