//! Jupyter's runtime directory and private, atomic file writes (connection files, keys).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn home_dir() -> PathBuf {
    env_path("HOME").unwrap_or_else(|| PathBuf::from("/"))
}

/// Jupyter's user data directory, as jupyter_core computes it: `$JUPYTER_DATA_DIR`,
/// else `~/Library/Jupyter` on macOS, else `$XDG_DATA_HOME/jupyter` (default
/// `~/.local/share/jupyter`).
pub fn jupyter_data_dir() -> PathBuf {
    if let Some(p) = env_path("JUPYTER_DATA_DIR") {
        return p;
    }
    if cfg!(target_os = "macos") {
        return home_dir().join("Library").join("Jupyter");
    }
    env_path("XDG_DATA_HOME")
        .unwrap_or_else(|| home_dir().join(".local").join("share"))
        .join("jupyter")
}

/// Where connection files go: `$JUPYTER_RUNTIME_DIR`, else `jupyter_data_dir()/runtime`
/// (jupyter_core >= 5; older releases used `$XDG_RUNTIME_DIR/jupyter`).
pub fn runtime_dir() -> PathBuf {
    env_path("JUPYTER_RUNTIME_DIR").unwrap_or_else(|| jupyter_data_dir().join("runtime"))
}

/// The effective user id of this process: whose files count as ours.
pub fn euid() -> u32 {
    crate::ffi::euid()
}

/// Creates `path` (and missing parents) with mode 0700, or checks an existing one: it
/// must be a real directory (not a symlink) owned by us. If it is ours but readable or
/// writable by group/others, its mode is tightened to 0700.
pub fn ensure_private_dir(path: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))?;
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
    let insecure = |reason: String| Error::InsecurePath {
        path: path.to_owned(),
        reason,
    };
    if !meta.file_type().is_dir() {
        return Err(insecure("not a directory (or a symlink)".into()));
    }
    let me = crate::ffi::euid();
    if meta.uid() != me {
        return Err(insecure(format!("owned by uid {}, not {me}", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.mode() & 0o777),
            "tightening permissions of private directory to 0700");
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("chmod", path, e))?;
    }
    Ok(())
}

/// Atomically writes a file only we can read (0600): a temp file is created in the same
/// directory with `O_EXCL`, written, fsynced, renamed over `path`, and the directory is
/// fsynced. Readers see the old file or the complete new one, never a partial one.
pub fn write_private_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file_atomic(path, bytes, 0o600)
}

pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument("path has no file name".into()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true) // O_CREAT | O_EXCL: never follow or reuse an existing file
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        // The umask can only remove bits, but be explicit in case mode had extra bits.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", &tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Removes what [`write_private_file_atomic`] leaves behind when its process dies between
/// creating a temporary file and renaming it (`.NAME.tmp-PID-N`, owner-only, perhaps holding a
/// key): such files in `dir` that are ours, regular, untouched for [`STALE_AFTER`], and named
/// for a process that no longer exists here. (The age matters where the directory is shared
/// with other machines or PID namespaces, over NFS say: a live writer there has a pid that
/// does not exist here.) Returns how many were removed.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let me = euid();
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(temp_file_writer) else {
            continue;
        };
        if crate::ffi::process_exists(pid) {
            continue;
        }
        let path = entry.path();
        let old = |m: &fs::Metadata| {
            m.modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= STALE_AFTER)
        };
        let ours = fs::symlink_metadata(&path)
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == me && old(&m));
        if ours && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// How long a temporary file must have been left alone before it counts as abandoned: writing
/// one takes milliseconds.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// The writer's pid in the name of one of [`write_file_atomic`]'s temporary files.
fn temp_file_writer(name: &str) -> Option<i32> {
    let (_, tail) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok().filter(|p| *p > 0)
}

/// Reads at most `max` bytes of `path`; a larger file is refused ([`Error::FileTooLarge`]) and
/// never read whole. For files a user names: symlinks are followed, and a FIFO is refused
/// rather than waited on.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>> {
    read_checked(path, max, Symlinks::Follow, |_| Ok(()))
}

/// Like [`read_bounded`], for a secret only its owner may read (a token file): a regular file
/// whose mode gives group and others nothing, checked on the opened file.
pub fn read_private(path: &Path, max: u64) -> Result<Vec<u8>> {
    read_checked(path, max, Symlinks::Follow, |meta| {
        match meta.mode() & 0o077 {
            0 => Ok(()),
            _ => Err(format!(
                "readable by other users or the group (mode {:o}); chmod 600 it",
                meta.mode() & 0o777
            )),
        }
    })
}

/// Like [`read_bounded`], for a file whose contents we trust (a connection file we take a key
/// from): a regular file owned by us (or by root) that not everyone can write, checked on the
/// opened file (symlinks followed, so the target is what is checked), which cannot be swapped
/// between the check and the read. A connection file planted at a shared path (`/tmp/k.json`)
/// by another user, who then knows its key, is refused. A group-writable file is accepted (with
/// user-private groups, the default umask makes every file so) but logged.
pub fn read_owned(path: &Path, max: u64) -> Result<Vec<u8>> {
    read_checked(path, max, Symlinks::Follow, check_owned(path))
}

/// [`read_owned`] for a file someone less trusted could have replaced with a symlink (a kernel's
/// own connection file, read back by its host): a symlink is refused, not followed.
pub fn read_owned_no_symlink(path: &Path, max: u64) -> Result<Vec<u8>> {
    read_checked(path, max, Symlinks::Refuse, check_owned(path))
}

fn check_owned(path: &Path) -> impl Fn(&fs::Metadata) -> std::result::Result<(), String> + '_ {
    move |meta| {
        let me = euid();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(format!(
                "owned by uid {}, not {me}: whoever wrote it knows its secrets",
                meta.uid()
            ));
        }
        if meta.mode() & 0o002 != 0 {
            return Err(format!(
                "writable by every user (mode {:o})",
                meta.mode() & 0o777
            ));
        }
        if meta.mode() & 0o020 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.mode() & 0o777),
                "a file holding a key is writable by its group");
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Symlinks {
    Follow,
    Refuse,
}

/// Opens `path` (never blocking on a FIFO), checks the opened file is regular and passes
/// `check`, and reads at most `max` bytes of it.
fn read_checked(
    path: &Path,
    max: u64,
    symlinks: Symlinks,
    check: impl Fn(&fs::Metadata) -> std::result::Result<(), String>,
) -> Result<Vec<u8>> {
    let nofollow = match symlinks {
        Symlinks::Follow => 0,
        Symlinks::Refuse => libc::O_NOFOLLOW,
    };
    let insecure = |reason: String| Error::InsecurePath {
        path: path.to_owned(),
        reason,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) if symlinks == Symlinks::Refuse => insecure("a symlink".into()),
            _ => Error::io("open", path, e),
        })?;
    let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.file_type().is_file() {
        return Err(insecure("not a regular file".into()));
    }
    check(&meta).map_err(insecure)?;
    read_at_most(file, path, max)
}

fn read_at_most(file: File, path: &Path, max: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::FileTooLarge {
            path: path.to_owned(),
            max,
        });
    }
    Ok(bytes)
}

/// An exclusive lock held on a file for as long as this value lives, and the file removed when
/// it is dropped: one process at a time uses what the lock guards (a host's state file and
/// token file, say). A process that dies loses its lock at once (the kernel releases `flock`
/// locks with the last descriptor; the descriptor is close-on-exec, so children never hold it),
/// so a crashed host never blocks its successor.
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    /// The locked file's identity: dropping removes `path` only while it is still this file.
    id: (u64, u64),
    _file: File,
}

impl LockFile {
    /// Takes the lock on `path` (created 0600 if missing; an existing one must be a regular
    /// file of ours), or fails with [`Error::Locked`] at once when another process holds it.
    pub fn acquire(path: &Path) -> Result<LockFile> {
        // A holder removes the file before it lets go of the lock, so a file locked here may
        // have been unlinked meanwhile: then lock the new one instead (bounded retries).
        for _ in 0..8 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| Error::io("open", path, e))?;
            let held = file.metadata().map_err(|e| Error::io("stat", path, e))?;
            // Another user's file could be held locked by them for good.
            if !held.file_type().is_file() || held.uid() != euid() {
                return Err(Error::InsecurePath {
                    path: path.to_owned(),
                    reason: format!("a lock file not ours (uid {})", held.uid()),
                });
            }
            if !crate::ffi::try_lock_exclusive(&file).map_err(|e| Error::io("lock", path, e))? {
                return Err(Error::Locked {
                    path: path.to_owned(),
                });
            }
            let id = (held.dev(), held.ino());
            if file_id(path) == Some(id) {
                return Ok(LockFile {
                    path: path.to_owned(),
                    id,
                    _file: file,
                });
            }
        }
        Err(Error::Locked {
            path: path.to_owned(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Removed while still locked (the lock goes with the descriptor, closed after this), and
        // only if it is still our file: one removed from outside may have been replaced by
        // another holder's.
        if file_id(&self.path) == Some(self.id) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes a file (e.g. a connection file) when dropped, unless [`disarm`](Self::disarm)ed.
#[derive(Debug)]
pub struct RemoveOnDrop {
    path: Option<PathBuf>,
}

impl RemoveOnDrop {
    /// Guard `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
        }
    }

    /// The guarded path.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Keep the file; returns its path.
    pub fn disarm(mut self) -> Option<PathBuf> {
        self.path.take()
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            if let Err(e) = fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "could not remove file");
                }
            }
        }
    }
}
