//! The host's state file: the kernel table, written owner-only and atomically, so a host that
//! crashed can re-adopt its kernels. Pure (de)serialization here; the writer task is in
//! [`crate::registry`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One kernel in the state file. No key: the connection file (owner-only) holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRecord {
    /// Kernel id.
    pub id: String,
    /// Kernelspec name.
    pub name: String,
    /// Process id (= process group).
    pub pid: i32,
    /// /proc start time, to tell a re-used pid apart.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// Connection file path.
    pub connection_file: PathBuf,
    /// Its sandbox status at launch (a Landlock domain outlives the host that set it up).
    #[serde(default)]
    pub sandbox: serde_json::Value,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// Format version (1).
    pub version: u32,
    /// The host process that wrote it.
    pub host_pid: u32,
    /// Kernels with a process.
    pub kernels: Vec<KernelRecord>,
}

impl HostState {
    /// Serialized form.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses a state file; `None` when it is not one of ours.
    pub fn from_json(bytes: &[u8]) -> Option<HostState> {
        serde_json::from_slice::<HostState>(bytes)
            .ok()
            .filter(|s| s.version == 1)
    }

    /// Reads `path`, if present, valid, ours and not writable by others, and at most
    /// [`HostState::MAX_FILE_BYTES`].
    pub fn read(path: &Path) -> Option<HostState> {
        HostState::load(path).ok().flatten()
    }

    /// Like [`HostState::read`], telling a missing file (`Ok(None)`: nothing to recover) from
    /// one that cannot be used (`Err`, why): a host that went on would overwrite the only
    /// record of the kernels it names.
    pub fn load(path: &Path) -> Result<Option<HostState>, String> {
        match kernelgate_zmq::files::read_owned_no_symlink(path, HostState::MAX_FILE_BYTES) {
            Ok(bytes) => HostState::from_json(&bytes).map(Some).ok_or_else(|| {
                format!(
                    "{} is not a kernelgate state file (version 1)",
                    path.display()
                )
            }),
            Err(kernelgate_zmq::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Far above the state of thousands of kernels (a few hundred bytes each).
    pub const MAX_FILE_BYTES: u64 = 64 << 20;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = HostState {
            version: 1,
            host_pid: 42,
            kernels: vec![KernelRecord {
                id: "a".into(),
                name: "rhai".into(),
                pid: 7,
                start_time: Some(9),
                connection_file: "/tmp/kernel-a.json".into(),
                sandbox: serde_json::json!({"enabled": true}),
            }],
        };
        assert_eq!(HostState::from_json(&s.to_json()), Some(s));
        assert_eq!(
            HostState::from_json(b"{\"version\":2,\"host_pid\":1,\"kernels\":[]}"),
            None
        );
        assert_eq!(HostState::from_json(b"garbage"), None);
    }
}
