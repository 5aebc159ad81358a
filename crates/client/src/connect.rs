//! Finding connection files and setting up the client's sockets.

use std::path::{Path, PathBuf};

use kernelgate_wire::ConnectionInfo;
use kernelgate_zmq::{Context, PublicKey, SecretKey, Socket, SocketType};

use crate::error::{Error, Result};

/// Which CURVE keypair the client presents when the connection info carries the kernel's
/// `curve_publickey`. The kernel is always authenticated by that public key.
#[derive(Debug, Clone, Default)]
pub enum CurveIdentity {
    /// The connection file's `curve_secretkey` when present (jupyter_client's convention: clients
    /// reuse the kernel's keypair), else a freshly generated keypair.
    #[default]
    Auto,
    /// Always a freshly generated keypair (for kernels that admit per-client keys via ZAP).
    Generated,
    /// This secret key (the public key is derived from it).
    Secret(SecretKey),
}

/// The keys of a CURVE client socket.
#[derive(Debug, Clone)]
pub(crate) struct CurveKeys {
    server: PublicKey,
    public: PublicKey,
    secret: SecretKey,
}

impl CurveKeys {
    /// `None` when the kernel does not use CURVE.
    pub(crate) fn resolve(
        info: &ConnectionInfo,
        identity: &CurveIdentity,
    ) -> Result<Option<CurveKeys>> {
        let Some(server) = &info.curve_publickey else {
            return Ok(None);
        };
        let server = PublicKey::from_z85(server)?;
        let secret = match identity {
            CurveIdentity::Secret(s) => s.clone(),
            CurveIdentity::Auto if info.curve_secretkey.is_some() => {
                let text = info
                    .curve_secretkey
                    .as_ref()
                    .map(|k| k.expose())
                    .unwrap_or_default();
                let text = std::str::from_utf8(text).map_err(|_| {
                    Error::InvalidArgument("curve_secretkey is not Z85 text".into())
                })?;
                SecretKey::from_z85(text)?
            }
            CurveIdentity::Auto | CurveIdentity::Generated => kernelgate_zmq::curve_keypair()?.1,
        };
        let public = secret.public_key()?;
        Ok(Some(CurveKeys {
            server,
            public,
            secret,
        }))
    }
}

/// Creates and connects one client socket.
pub(crate) fn client_socket(
    ctx: &Context,
    ty: SocketType,
    endpoint: &str,
    curve: Option<&CurveKeys>,
    routing_id: Option<&[u8]>,
) -> Result<Socket> {
    let socket = ctx.socket(ty)?;
    if let Some(keys) = curve {
        socket.configure_curve_client(&keys.server, &keys.public, &keys.secret)?;
    }
    if let Some(id) = routing_id {
        socket.set_routing_id(id)?;
    }
    if ty == SocketType::Sub {
        socket.subscribe(b"")?;
    }
    socket.connect(endpoint)?;
    Ok(socket)
}

/// Resolves a connection file the way `jupyter console --existing <name>` does, in Jupyter's
/// runtime directory (`$JUPYTER_RUNTIME_DIR`, else the data dir's `runtime`).
///
/// `name_or_path` may be a path to an existing file; a file name in the runtime directory, with or
/// without `.json` and the `kernel-` prefix; or a fragment of such a name (the most recently
/// modified match wins). An empty string picks the most recent `kernel-*.json`.
pub fn find_connection_file(name_or_path: &str) -> Result<PathBuf> {
    find_connection_file_in(name_or_path, &[kernelgate_zmq::files::runtime_dir()])
}

/// [`find_connection_file`] searching `dirs` instead of the runtime directory.
///
/// A path (with a `/`) is used as given. A file found by its name, in the current directory
/// (which may be shared, such as `/tmp`) or in `dirs`, must belong to this user.
pub fn find_connection_file_in(name_or_path: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    let given = Path::new(name_or_path);
    let is_path = name_or_path.contains(std::path::MAIN_SEPARATOR);
    if is_path {
        return match given.is_file() {
            true => Ok(given.to_path_buf()),
            false => Err(Error::ConnectionFileNotFound(name_or_path.to_owned())),
        };
    }
    search_connection_file(name_or_path, dirs).and_then(ours)
}

/// The file found by name must be this user's own.
fn ours(path: PathBuf) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(&path)
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?
        .uid();
    match owner == kernelgate_zmq::files::euid() {
        true => Ok(path),
        false => Err(Error::ForeignConnectionFile { path, owner }),
    }
}

fn search_connection_file(name_or_path: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    let given = Path::new(name_or_path);
    if !name_or_path.is_empty() && given.is_file() {
        return Ok(given.to_path_buf());
    }
    let not_found = || Error::ConnectionFileNotFound(name_or_path.to_owned());
    for dir in dirs {
        if !name_or_path.is_empty() {
            for candidate in [
                name_or_path.to_owned(),
                format!("{name_or_path}.json"),
                format!("kernel-{name_or_path}.json"),
            ] {
                let p = dir.join(candidate);
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let newest = entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let wanted = if name_or_path.is_empty() {
                    name.starts_with("kernel-")
                } else {
                    name.contains(name_or_path)
                };
                wanted && name.ends_with(".json") && e.path().is_file()
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .max_by_key(|(t, _)| *t);
        if let Some((_, p)) = newest {
            return Ok(p);
        }
    }
    Err(not_found())
}

/// Reads and parses a connection file.
/// At most [`ConnectionInfo::MAX_FILE_BYTES`] are read.
pub(crate) fn read_connection_file(path: &Path) -> Result<ConnectionInfo> {
    let bytes =
        kernelgate_zmq::files::read_bounded(path, ConnectionInfo::MAX_FILE_BYTES).map_err(|e| {
            match e {
                kernelgate_zmq::Error::Io { path, source, .. } => Error::Io { path, source },
                other => Error::Transport(other),
            }
        })?;
    Ok(ConnectionInfo::from_json(&bytes)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    #[test]
    fn resolves_names_like_jupyter() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|source| Error::Io {
            path: "tmp".into(),
            source,
        })?;
        let d = dir.path().to_path_buf();
        let write = |name: &str| {
            std::fs::write(d.join(name), b"{}").map_err(|source| Error::Io {
                path: name.into(),
                source,
            })
        };
        write("kernel-abc123.json")?;
        std::thread::sleep(std::time::Duration::from_millis(20));
        write("kernel-abd999.json")?;
        let dirs = [d.clone()];
        assert_eq!(
            find_connection_file_in("kernel-abc123.json", &dirs)?,
            d.join("kernel-abc123.json")
        );
        assert_eq!(
            find_connection_file_in("kernel-abc123", &dirs)?,
            d.join("kernel-abc123.json")
        );
        assert_eq!(
            find_connection_file_in("abc123", &dirs)?,
            d.join("kernel-abc123.json")
        );
        assert_eq!(
            find_connection_file_in("ab", &dirs)?,
            d.join("kernel-abd999.json")
        );
        assert_eq!(
            find_connection_file_in("", &dirs)?,
            d.join("kernel-abd999.json")
        );
        let full = d.join("kernel-abc123.json");
        assert_eq!(find_connection_file_in(&full.to_string_lossy(), &[])?, full);
        assert!(matches!(
            find_connection_file_in("zzz", &dirs),
            Err(Error::ConnectionFileNotFound(_))
        ));
        Ok(())
    }

    #[test]
    fn a_file_found_by_name_must_be_ours() -> Result<()> {
        let io = |source| Error::Io {
            path: "tmp".into(),
            source,
        };
        let dir = tempfile::tempdir().map_err(io)?;
        let planted = dir.path().join("kernel-planted.json");
        std::fs::write(&planted, b"{}").map_err(io)?;
        // As root, give the file away; otherwise a file of root's stands in for another user's.
        let (dirs, name, path) = if kernelgate_zmq::files::euid() == 0 {
            std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).map_err(io)?;
            (vec![dir.path().to_path_buf()], "planted", planted.clone())
        } else {
            (
                vec![PathBuf::from("/etc")],
                "passwd",
                PathBuf::from("/etc/passwd"),
            )
        };
        match find_connection_file_in(name, &dirs) {
            Err(Error::ForeignConnectionFile { path: found, owner }) => {
                assert_eq!(found, path);
                assert_ne!(owner, kernelgate_zmq::files::euid());
            }
            other => panic!("a foreign file was not refused: {other:?}"),
        }
        // Named as a path, it is used as asked.
        assert_eq!(
            find_connection_file_in(&path.to_string_lossy(), &dirs)?,
            path
        );
        Ok(())
    }
}
