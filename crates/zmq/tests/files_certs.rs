//! Private files, runtime dir, pyzmq-format certificates.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use kernelgate_zmq::files::{
    ensure_private_dir, euid, read_bounded, read_owned, read_owned_no_symlink, read_private,
    remove_stale_temp_files, write_private_file_atomic, LockFile, RemoveOnDrop,
};
use kernelgate_zmq::zap::{
    create_certificates, load_certificate, load_public_keys_from_dir, write_certificates,
};
use kernelgate_zmq::{curve_keypair, Error, PublicKey};

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o777
}

#[test]
fn private_file_is_0600_and_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kernel-1.json");
    write_private_file_atomic(&path, b"{\"key\": \"one\"}").unwrap();
    assert_eq!(mode(&path), 0o600);
    let inode = fs::metadata(&path).unwrap().ino();
    write_private_file_atomic(&path, b"{\"key\": \"two\"}").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"{\"key\": \"two\"}");
    assert_ne!(
        fs::metadata(&path).unwrap().ino(),
        inode,
        "replaced by rename, not rewritten"
    );
    assert_eq!(mode(&path), 0o600);
    // No temp files left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    {
        let _guard = RemoveOnDrop::new(&path);
    }
    assert!(!path.exists());
    let kept = RemoveOnDrop::new(dir.path().join("nope")).disarm();
    assert!(kept.is_some());
}

#[test]
fn private_dir_created_fixed_or_refused() {
    let base = tempfile::tempdir().unwrap();
    let d = base.path().join("a/b/runtime");
    ensure_private_dir(&d).unwrap();
    assert_eq!(mode(&d), 0o700);
    fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
    ensure_private_dir(&d).unwrap();
    assert_eq!(mode(&d), 0o700, "tightened");
    let file = base.path().join("file");
    fs::write(&file, b"").unwrap();
    assert!(ensure_private_dir(&file).is_err());
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&d, &link).unwrap();
    assert!(matches!(
        ensure_private_dir(&link),
        Err(Error::InsecurePath { .. })
    ));
    // Owned by someone else (root-owned /tmp when we are not root, or vice versa).
    if kernelgate_zmq_is_root() {
        let other = base.path().join("other");
        fs::create_dir(&other).unwrap();
        std::os::unix::fs::chown(&other, Some(65534), None).unwrap();
        assert!(matches!(
            ensure_private_dir(&other),
            Err(Error::InsecurePath { .. })
        ));
    }
}

fn kernelgate_zmq_is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn runtime_dir_follows_jupyter_core() {
    // One test mutates the environment, so all env cases live here, in order.
    std::env::set_var("JUPYTER_RUNTIME_DIR", "/x/rt");
    assert_eq!(
        kernelgate_zmq::files::runtime_dir(),
        std::path::PathBuf::from("/x/rt")
    );
    std::env::remove_var("JUPYTER_RUNTIME_DIR");
    std::env::set_var("JUPYTER_DATA_DIR", "/x/data");
    assert_eq!(
        kernelgate_zmq::files::runtime_dir(),
        std::path::PathBuf::from("/x/data/runtime")
    );
    std::env::remove_var("JUPYTER_DATA_DIR");
    std::env::set_var("XDG_DATA_HOME", "/x/xdg");
    assert_eq!(
        kernelgate_zmq::files::runtime_dir(),
        std::path::PathBuf::from("/x/xdg/jupyter/runtime")
    );
    std::env::remove_var("XDG_DATA_HOME");
    std::env::set_var("HOME", "/home/u");
    assert_eq!(
        kernelgate_zmq::files::runtime_dir(),
        std::path::PathBuf::from("/home/u/.local/share/jupyter/runtime")
    );
}

#[test]
fn certificates_round_trip_in_pyzmq_format() {
    let dir = tempfile::tempdir().unwrap();
    let (pub_file, sec_file) = create_certificates(dir.path(), "server").unwrap();
    assert_eq!(pub_file.file_name().unwrap(), "server.key");
    assert_eq!(sec_file.file_name().unwrap(), "server.key_secret");
    assert_eq!(mode(&sec_file), 0o600);
    let (p1, none) = load_certificate(&pub_file).unwrap();
    assert!(none.is_none());
    let (p2, secret) = load_certificate(&sec_file).unwrap();
    assert_eq!(p1, p2);
    assert_eq!(secret.unwrap().public_key().unwrap(), p1);
    let text = fs::read_to_string(&pub_file).unwrap();
    assert!(
        text.contains("metadata\ncurve\n    public-key = \""),
        "{text}"
    );
    assert!(!text.contains("secret-key"));

    // A file as pyzmq writes it.
    let (public, secret) = curve_keypair().unwrap();
    let py = format!(
        "#   ****  Generated on 2024-01-01 00:00:00.000000 by pyzmq  ****\n\
         #   ZeroMQ CURVE **Secret** Certificate\n\n\
         metadata\ncurve\n    public-key = \"{public}\"\n    secret-key = \"{}\"\n",
        secret.as_z85()
    );
    fs::write(dir.path().join("py.key_secret"), py).unwrap();
    let (p, s) = load_certificate(&dir.path().join("py.key_secret")).unwrap();
    assert_eq!(p.to_z85(), public);
    assert_eq!(s.unwrap().as_z85(), secret.as_z85());

    // Directory load: only *.key files; junk skipped.
    let (cp, cs) = curve_keypair().unwrap();
    let client = PublicKey::from_z85(&cp).unwrap();
    let wrong = curve_keypair().unwrap().1;
    assert!(write_certificates(dir.path(), "client", &client, &wrong, &[]).is_err());
    assert!(write_certificates(dir.path(), "../evil", &client, &cs, &[]).is_err());
    write_certificates(dir.path(), "client", &client, &cs, &[("name", "c")]).unwrap();
    fs::write(
        dir.path().join("junk.key"),
        "curve\n    public-key = \"short\"\n",
    )
    .unwrap();
    let keys = load_public_keys_from_dir(dir.path()).unwrap();
    assert!(keys.contains(&p1) && keys.contains(&client));
    assert_eq!(keys.len(), 2);
}

#[test]
fn bounded_reads_refuse_big_files_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.json");
    fs::write(&path, vec![b' '; 4097]).unwrap();
    assert!(matches!(
        read_bounded(&path, 4096),
        Err(Error::FileTooLarge { max: 4096, .. })
    ));
    assert!(matches!(
        read_owned(&path, 4096),
        Err(Error::FileTooLarge { .. })
    ));
    assert_eq!(read_bounded(&path, 4097).unwrap().len(), 4097);
    assert!(matches!(
        read_bounded(&dir.path().join("none"), 1),
        Err(Error::Io { .. })
    ));
}

#[test]
fn owned_reads_refuse_foreign_and_world_writable_files_and_optionally_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("kernel-ours.json");
    write_private_file_atomic(&ours, b"{}").unwrap();
    assert_eq!(read_owned(&ours, 64).unwrap(), b"{}");
    assert_eq!(read_owned_no_symlink(&ours, 64).unwrap(), b"{}");

    // A symlink to a file of ours: its target is what is checked, unless symlinks are refused.
    let link = dir.path().join("kernel-link.json");
    std::os::unix::fs::symlink(&ours, &link).unwrap();
    assert_eq!(read_owned(&link, 64).unwrap(), b"{}");
    assert!(matches!(
        read_owned_no_symlink(&link, 64),
        Err(Error::InsecurePath { .. })
    ));

    let shared = dir.path().join("kernel-shared.json");
    fs::write(&shared, b"{}").unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o666)).unwrap();
    assert!(matches!(
        read_owned(&shared, 64),
        Err(Error::InsecurePath { .. })
    ));
    let via_link = dir.path().join("kernel-via-link.json");
    std::os::unix::fs::symlink(&shared, &via_link).unwrap();
    assert!(matches!(
        read_owned(&via_link, 64),
        Err(Error::InsecurePath { .. })
    ));
    // Group-writable (a user-private group's default umask) is accepted.
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o664)).unwrap();
    assert!(read_owned(&shared, 64).is_ok());

    assert!(matches!(
        read_owned(dir.path(), 64),
        Err(Error::InsecurePath { .. })
    ));

    // As root, give a file away; otherwise a file of root's shows that root's files count as
    // trusted (root can read every key anyway).
    if euid() == 0 {
        let planted = dir.path().join("kernel-planted.json");
        fs::write(&planted, b"{}").unwrap();
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
        match read_owned(&planted, 64) {
            Err(Error::InsecurePath { reason, .. }) => {
                assert!(reason.contains("65534"), "{reason}")
            }
            other => panic!("a foreign file was read: {other:?}"),
        }
    } else {
        let root_file = ["/etc/hostname", "/etc/passwd"]
            .iter()
            .map(std::path::Path::new)
            .find(|p| fs::metadata(p).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o002 == 0))
            .expect("a root-owned file in /etc");
        assert!(read_owned(root_file, 1 << 20).is_ok());
    }
}

#[test]
fn private_reads_refuse_files_others_can_open() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_private_file_atomic(&token, b"secret").unwrap();
    assert_eq!(read_private(&token, 64).unwrap(), b"secret");
    fs::set_permissions(&token, fs::Permissions::from_mode(0o640)).unwrap();
    match read_private(&token, 64) {
        Err(Error::InsecurePath { reason, .. }) => assert!(reason.contains("640"), "{reason}"),
        other => panic!("a group-readable secret was read: {other:?}"),
    }
}

#[test]
fn a_lock_file_admits_one_holder_and_goes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.lock");
    let held = LockFile::acquire(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert!(matches!(
        LockFile::acquire(&path),
        Err(Error::Locked { .. })
    ));
    drop(held);
    assert!(!path.exists(), "the lock file is removed with the lock");
    let again = LockFile::acquire(&path).unwrap();
    assert_eq!(again.path(), path);

    // Removed from outside and taken by another holder: dropping the first leaves the second's.
    fs::remove_file(&path).unwrap();
    let second = LockFile::acquire(&path).unwrap();
    drop(again);
    assert!(path.exists(), "another holder's lock file was removed");
    assert!(matches!(
        LockFile::acquire(&path),
        Err(Error::Locked { .. })
    ));
    drop(second);

    // Another user's lock file is refused, not waited on.
    if euid() == 0 {
        fs::write(&path, b"").unwrap();
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        assert!(matches!(
            LockFile::acquire(&path),
            Err(Error::InsecurePath { .. })
        ));
    }
}

#[test]
fn temp_files_of_dead_writers_are_swept_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    // pid_max is at most 2^22: no process has this pid.
    let stale = dir.path().join(".kernel-1.json.tmp-99999999-0");
    let live = dir
        .path()
        .join(format!(".kernel-2.json.tmp-{}-3", std::process::id()));
    let others = [
        dir.path().join("kernel-3.json"),
        dir.path().join(".kernel-4.json.tmp-99999999-x"),
        dir.path().join("notes.tmp-99999999-0"),
    ];
    let recent = dir.path().join(".kernel-5.json.tmp-99999998-0");
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for p in others.iter().chain([&stale, &live, &recent]) {
        fs::write(p, b"{}").unwrap();
        if p != &recent {
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(an_hour_ago)
                .unwrap();
        }
    }
    assert_eq!(remove_stale_temp_files(dir.path()), 1);
    assert!(
        recent.exists(),
        "a file written in the last minute stays (its writer may be elsewhere)"
    );
    assert!(!stale.exists());
    assert!(live.exists(), "a live writer's file stays");
    assert!(others.iter().all(|p| p.exists()), "other names stay");
    assert_eq!(remove_stale_temp_files(&dir.path().join("missing")), 0);
}
