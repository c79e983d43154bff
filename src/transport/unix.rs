//! Unix domain socket addresses: a path in the file system, or (on Linux)
//! a name in the abstract namespace; connecting to them, and binding a path
//! that may hold a stale socket file from an earlier server.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Where a Unix domain socket is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UnixAddr {
    /// A path in the file system.
    Path(PathBuf),
    /// A name in Linux's abstract namespace (no file).
    Abstract(Vec<u8>),
}

impl std::fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnixAddr::Path(p) => write!(f, "{}", p.display()),
            UnixAddr::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract Unix socket names exist on Linux only",
    ))
}

impl UnixAddr {
    /// Connects to the socket.
    pub(crate) fn connect(&self) -> io::Result<UnixStream> {
        match self {
            UnixAddr::Path(p) => UnixStream::connect(p),
            UnixAddr::Abstract(name) => UnixStream::connect_addr(&abstract_addr(name)?),
        }
    }

    /// Binds a listening socket here. A path that holds a socket file
    /// nobody listens on (left by a server that died) is replaced; a path
    /// where a server listens, or that holds anything but a socket, is an
    /// error.
    pub(crate) fn bind(&self) -> io::Result<UnixListener> {
        match self {
            UnixAddr::Path(p) => {
                clear_stale(p)?;
                UnixListener::bind(p)
            }
            UnixAddr::Abstract(name) => UnixListener::bind_addr(&abstract_addr(name)?),
        }
    }
}

/// Removes a stale socket file at `path`, if that is what is there.
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use: a server listens on it", path.display()),
        )),
        // Nobody listens: a stale file from an earlier server.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("grpc-blocking-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_or_a_file_is_not() {
        let path = temp_path("stale.sock");
        let _ = std::fs::remove_file(&path);
        let addr = UnixAddr::Path(path.clone());
        // A live server: refused.
        let live = addr.bind().unwrap();
        let err = addr.bind().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        // The server is gone, its file stays: replaced.
        drop(live);
        assert!(path.exists());
        let again = addr.bind().unwrap();
        assert!(addr.connect().is_ok());
        drop(again);
        std::fs::remove_file(&path).unwrap();
        // A regular file: refused, and left alone.
        std::fs::write(&path, b"precious").unwrap();
        let err = addr.bind().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        std::fs::remove_file(&path).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_names_bind_and_connect() {
        let addr =
            UnixAddr::Abstract(format!("grpc-blocking-test-{}", std::process::id()).into_bytes());
        let listener = addr.bind().unwrap();
        assert!(addr.connect().is_ok());
        drop(listener);
        assert!(addr.connect().is_err());
        assert!(addr.to_string().starts_with("@grpc-blocking-test-"));
    }
}
