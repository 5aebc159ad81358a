//! One regression test per peer flaw listed in PROTOCOL.md that applies to the wire layer, each
//! showing kernelgate does not have it, plus the defined behaviour of odd frame layouts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use kernelgate_wire::{
    ConnectionInfo, ErrorKind, Key, Limits, ReplayConfig, Scheme, Session, SessionConfig, Signer,
    DELIMITER,
};
use serde_json::json;

fn key() -> Key {
    Key::new("a-secret-key-that-must-never-leak")
}

fn session() -> Session {
    Session::new(
        Signer::new(Scheme::Sha256, &key()).unwrap(),
        SessionConfig::default(),
    )
}

fn frames(s: &Session) -> Vec<Vec<u8>> {
    let msg = s
        .message("execute_request", &json!({"code": "1+1"}), None)
        .unwrap();
    s.encode(&msg).unwrap()
}

fn kind<T: std::fmt::Debug>(r: kernelgate_wire::Result<T>) -> ErrorKind {
    r.unwrap_err().kind()
}

/// jupyter_client records the digest before checking the signature: a forgery carrying the
/// genuine signature then makes the genuine message fail as a duplicate.
#[test]
fn forged_message_with_genuine_signature_does_not_poison_the_genuine_one() {
    let s = session();
    let genuine = frames(&s);
    let mut forged = genuine.clone();
    forged[5] = br#"{"code": "import os; os.system('rm -rf ~')"}"#.to_vec();
    assert_eq!(kind(s.receive(forged)), ErrorKind::BadSignature);
    assert!(s.receive(genuine).is_ok());
}

/// jupyter_client evicts 10% of its history at random when it holds 65,536 digests, so old
/// messages become replayable. Here a replay is refused however much traffic came between.
#[test]
fn replay_is_refused_after_heavy_traffic() {
    let s = session();
    let first = frames(&s);
    assert!(s.receive(first.clone()).is_ok());
    for _ in 0..70_000 {
        s.receive(frames(&s)).unwrap();
    }
    assert_eq!(kind(s.receive(first)), ErrorKind::Replayed);
}

/// The history is capped and full means refuse, never evict.
#[test]
fn full_history_refuses_rather_than_evicts() {
    let config = SessionConfig {
        replay: Some(ReplayConfig {
            max_entries: 3,
            ..ReplayConfig::default()
        }),
        ..SessionConfig::default()
    };
    let s = Session::new(Signer::new(Scheme::Sha256, &key()).unwrap(), config);
    let msgs: Vec<_> = (0..4).map(|_| frames(&s)).collect();
    for m in &msgs[..3] {
        s.receive(m.clone()).unwrap();
    }
    assert_eq!(kind(s.receive(msgs[3].clone())), ErrorKind::ReplayCacheFull);
    for m in &msgs[..3] {
        assert_eq!(kind(s.receive(m.clone())), ErrorKind::Replayed);
    }
}

/// A restarted kernel (same key, fresh history) accepts jupyter_client replays. Ours refuses
/// messages dated before the session started.
#[test]
fn message_from_before_a_restart_is_refused() {
    let signer = Signer::new(Scheme::Sha256, &key()).unwrap();
    let old = Session::started_at(
        signer.clone(),
        SessionConfig::default(),
        Utc::now() - TimeDelta::seconds(60),
    );
    let mut msg = old
        .message("execute_request", &json!({"code": "1+1"}), None)
        .unwrap();
    msg.header.date = kernelgate_wire::message::format_date(Utc::now() - TimeDelta::seconds(30));
    let captured = old.encode(&msg).unwrap();
    let restarted = Session::new(signer, SessionConfig::default());
    assert_eq!(kind(restarted.receive(captured)), ErrorKind::Stale);
}

/// A session with a 10 s window and 1 s skew, started an hour ago.
fn session_10s() -> Session {
    let signer = Signer::new(Scheme::Sha256, &key()).unwrap();
    let config = SessionConfig {
        replay: Some(ReplayConfig {
            window: Duration::from_secs(10),
            clock_skew: Duration::from_secs(1),
            max_entries: 100,
            ..ReplayConfig::default()
        }),
        ..SessionConfig::default()
    };
    Session::started_at(signer, config, Utc::now() - TimeDelta::hours(1))
}

#[test]
fn messages_outside_the_freshness_window_are_stale_and_future_ones_refused() {
    let s = session_10s();
    let f = frames(&s);
    let a = s.authenticate(f.clone()).unwrap();
    assert_eq!(
        kind(s.admit(a, Utc::now() + TimeDelta::seconds(11))),
        ErrorKind::Stale
    );
    // The guard's clock never runs back, so the future is tested on a session of its own.
    let s = session_10s();
    let a = s.authenticate(f).unwrap();
    assert_eq!(
        kind(s.admit(a, Utc::now() - TimeDelta::seconds(5))),
        ErrorKind::FutureDated
    );
}

/// kallichore skips verification when the signature frame is empty.
#[test]
fn empty_signature_is_unsigned_not_accepted() {
    let s = session();
    let mut f = frames(&s);
    f[1] = Vec::new();
    assert_eq!(kind(s.receive(f)), ErrorKind::Unsigned);
}

/// runtimed disables verification for an empty key. Ours refuses an empty key unless asked.
#[test]
fn empty_key_needs_explicit_opt_in() {
    assert_eq!(
        kind(Signer::new(Scheme::Sha256, &Key::new(""))),
        ErrorKind::EmptyKey
    );
    let mut info = ConnectionInfo::generate(kernelgate_wire::Transport::Tcp, "127.0.0.1").unwrap();
    info.key = Key::new("");
    assert_eq!(kind(info.signer(false)), ErrorKind::EmptyKey);
    assert!(!info.signer(true).unwrap().is_authenticated());
}

/// evcxr panics when a message ends at the delimiter; amalthea indexes a fifth frame after
/// checking for four.
#[test]
fn truncated_layouts_are_typed_errors() {
    let s = session();
    let full = frames(&s);
    for n in 0..full.len() {
        let got = s.receive(full[..n].to_vec());
        assert_eq!(kind(got), ErrorKind::MalformedFrames, "{n} frames");
    }
    assert_eq!(
        kind(s.receive(vec![b"id".to_vec(), DELIMITER.to_vec()])),
        ErrorKind::MalformedFrames
    );
    assert_eq!(
        kind(s.receive(vec![Vec::new(); 9])),
        ErrorKind::MalformedFrames
    );
}

#[test]
fn empty_signed_frames_fail_verification_before_parsing() {
    let s = session();
    let mut f = vec![
        DELIMITER.to_vec(),
        b"00".repeat(32),
        vec![],
        vec![],
        vec![],
        vec![],
    ];
    assert_eq!(kind(s.receive(f.clone())), ErrorKind::BadSignature);
    // Correctly signed but empty JSON: verification passes, then parsing fails with a typed error.
    let sig = s.signer().sign(&[b"", b"", b"", b""]);
    f[1] = sig;
    assert_eq!(kind(s.receive(f)), ErrorKind::InvalidJson);
}

/// An identity equal to the delimiter: the receiver splits at the first delimiter (as
/// jupyter_client), so the message fails verification; the sender refuses to build it.
#[test]
fn identity_equal_to_delimiter() {
    let s = session();
    let mut msg = s.message("kernel_info_request", &json!({}), None).unwrap();
    msg.identities = vec![DELIMITER.to_vec()];
    assert_eq!(kind(s.encode(&msg)), ErrorKind::MalformedFrames);
    let mut f = frames(&s);
    f.insert(0, DELIMITER.to_vec());
    assert_eq!(kind(s.receive(f)), ErrorKind::BadSignature);
}

/// The pure-Rust zeromq crate aborts on a huge frame; we check limits before any work.
#[test]
fn limits_are_checked_first() {
    let limits = Limits {
        max_frames: 8,
        max_frame_bytes: 1024,
        max_total_bytes: 2048,
    };
    let s = Session::new(
        Signer::new(Scheme::Sha256, &key()).unwrap(),
        SessionConfig {
            limits,
            ..SessionConfig::default()
        },
    );
    let mut f = frames(&s);
    f.push(vec![0; 1025]);
    assert_eq!(kind(s.receive(f)), ErrorKind::TooLarge);
    let mut f = frames(&s);
    f.extend(std::iter::repeat_n(vec![0; 10], 3));
    assert_eq!(kind(s.receive(f)), ErrorKind::TooLarge);
    let mut f = frames(&s);
    f.push(vec![0; 1000]);
    f.push(vec![0; 1000]);
    assert_eq!(kind(s.receive(f)), ErrorKind::TooLarge);
}

/// amalthea logs the connection info (key included) and puts key text in errors.
#[test]
fn key_material_never_in_debug_or_errors() {
    let secret = "a-secret-key-that-must-never-leak";
    let signer = Signer::new(Scheme::Sha256, &key()).unwrap();
    assert!(!format!("{signer:?}").contains(secret));
    assert_eq!(format!("{:?}", key()), "<redacted>");
    let mut info = ConnectionInfo::generate(kernelgate_wire::Transport::Tcp, "127.0.0.1").unwrap();
    info.key = key();
    info.curve_secretkey = Some(Key::new("S".repeat(40)));
    let dbg = format!("{info:?}");
    assert!(
        !dbg.contains(secret) && !dbg.contains(&"S".repeat(40)),
        "{dbg}"
    );
    // Errors from a connection file whose key is mistyped must not echo it.
    let bad = format!(
        r#"{{"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": "{secret}", "key": "{secret}"}}"#
    );
    let e = ConnectionInfo::from_json(bad.as_bytes()).unwrap_err();
    assert!(!e.to_string().contains(secret), "{e}");
    let bad = format!(
        r#"{{"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5, "key": {secret:?}, "signature_scheme": "hmac-{secret}"}}"#
    );
    let e = ConnectionInfo::from_json(bad.as_bytes()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnsupportedScheme);
    // Every verification error on a message signed with a different key.
    let other = Session::new(
        Signer::new(Scheme::Sha256, &Key::new("other")).unwrap(),
        SessionConfig::default(),
    );
    let e = session().receive(frames(&other)).unwrap_err();
    assert!(!e.to_string().contains(secret));
}

#[test]
fn unsupported_schemes_are_refused_with_a_clear_error() {
    for bad in ["hmac-sha3-256", "sha256", "", "hmac-", "HMAC-SHA256"] {
        let e = Scheme::parse(bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsupportedScheme);
        assert!(e.to_string().contains("hmac-sha256"), "{e}");
    }
}

#[test]
fn replay_on_another_clone_of_the_session_is_refused() {
    let s = session();
    let f = frames(&s);
    let control = s.clone();
    s.receive(f.clone()).unwrap();
    assert_eq!(kind(control.receive(f)), ErrorKind::Replayed);
}

#[test]
fn unknown_header_fields_and_message_types_pass_through() {
    let s = session();
    let mut msg = s
        .message(
            "my_custom_request",
            &json!({"z": 1, "a": [1, {"b": null}]}),
            None,
        )
        .unwrap();
    msg.header
        .extra
        .insert("subshell_id".into(), json!("sub-1"));
    msg.header
        .extra
        .insert("x_custom".into(), json!({"deep": [1, 2]}));
    let got = s.receive(s.encode(&msg).unwrap()).unwrap();
    assert_eq!(*got, msg);
}

#[test]
fn encode_owned_matches_encode() {
    let s = session();
    let mut msg = s
        .message("comm_msg", &json!({"comm_id": "c", "data": {}}), None)
        .unwrap();
    msg.identities = vec![b"id".to_vec()];
    msg.buffers = vec![vec![1; 1 << 20]];
    assert_eq!(
        s.encode(&msg).unwrap(),
        s.encode_owned(msg.clone()).unwrap()
    );
    msg.identities = vec![DELIMITER.to_vec()];
    assert_eq!(kind(s.encode_owned(msg)), ErrorKind::MalformedFrames);
}
