//! What the running Linux offers: the Landlock ABI, and which protections are missing at it.

use serde::Serialize;

/// One protection the sandbox relies on, and the Landlock ABI that brought it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protection {
    /// Files: other kernels' connection files, directories, the host's state and token (ABI 1);
    /// also tracing other domains and reading their /proc memory and environment.
    Filesystem,
    /// Links and renames across directories (ABI 2; without it they are refused outright).
    Refer,
    /// Truncating files outside the allowed directories (ABI 3).
    Truncate,
    /// TCP bind and connect: other kernels' ports and the host API (ABI 4).
    Network,
    /// ioctl on device files (ABI 5).
    IoctlDev,
    /// Abstract Unix sockets of processes outside the domain (ABI 6).
    AbstractUnixSockets,
    /// Signals to processes outside the domain (ABI 6).
    Signals,
}

impl Protection {
    const ALL: [(Protection, u32); 7] = [
        (Protection::Filesystem, 1),
        (Protection::Refer, 2),
        (Protection::Truncate, 3),
        (Protection::Network, 4),
        (Protection::IoctlDev, 5),
        (Protection::AbstractUnixSockets, 6),
        (Protection::Signals, 6),
    ];

    /// A short explanation for logs.
    pub fn explain(self) -> &'static str {
        match self {
            Protection::Filesystem => "kernels can read one another's files and keys",
            Protection::Refer => "links and renames across directories are refused",
            Protection::Truncate => "kernels can truncate files they may not write",
            Protection::Network => "kernels can connect to one another's ports and the host API",
            Protection::IoctlDev => "kernels can issue ioctls on device files",
            Protection::AbstractUnixSockets => {
                "kernels can reach abstract Unix sockets of other processes"
            }
            Protection::Signals => "kernels can signal one another",
        }
    }
}

/// The Landlock support of the running Linux.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Support {
    /// Landlock ABI version (0: none).
    pub abi: u32,
    /// Protections this ABI lacks.
    pub missing: Vec<Protection>,
}

impl Support {
    /// The protections missing at `abi` (pure).
    pub fn at_abi(abi: u32) -> Support {
        let missing = Protection::ALL
            .iter()
            .filter(|(_, since)| abi < *since)
            .map(|(p, _)| *p)
            .collect();
        Support { abi, missing }
    }

    /// Asks the running kernel.
    pub fn probe() -> Support {
        Support::at_abi(landlock_abi())
    }

    /// Whether every protection is there.
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the ABI, or 0 when
/// Landlock is not built in or disabled at boot.
#[allow(unsafe_code)]
fn landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: a NULL attribute pointer with size 0 and this flag is the documented way to ask
    // for the version; no memory is read or written.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(r).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_by_abi() {
        assert_eq!(Support::at_abi(0).missing.len(), 7);
        assert_eq!(
            Support::at_abi(4).missing,
            vec![
                Protection::IoctlDev,
                Protection::AbstractUnixSockets,
                Protection::Signals
            ]
        );
        assert!(Support::at_abi(6).complete());
        assert!(Support::at_abi(7).complete());
    }
}
