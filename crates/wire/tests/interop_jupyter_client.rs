//! Interop with the real jupyter_client `Session`, generated during the run, in both directions,
//! for every scheme, with and without buffers, identities and IOPub topics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kernelgate_wire::{iopub_topic, Key, Message, Scheme, Session, SessionConfig, Signer};
use serde_json::{json, Value};
use support::Peer;

const KEY: &str = "5f0c1d9e-interop-test-key-7a1b";

fn session(scheme: Scheme) -> Session {
    Session::new(
        Signer::new(scheme, &Key::new(KEY)).unwrap(),
        SessionConfig::default(),
    )
}

fn frames_of(v: &Value) -> Vec<Vec<u8>> {
    v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| B64.decode(f.as_str().unwrap()).unwrap())
        .collect()
}

fn b64s(frames: &[Vec<u8>]) -> Vec<String> {
    frames.iter().map(|f| B64.encode(f)).collect()
}

struct Case {
    ident: Vec<Vec<u8>>,
    buffers: Vec<Vec<u8>>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            ident: vec![],
            buffers: vec![],
        },
        Case {
            ident: vec![b"\x00k\x8b\x45\x67".to_vec(), b"client-two".to_vec()],
            buffers: vec![],
        },
        Case {
            ident: vec![iopub_topic("abc", "stream")],
            buffers: vec![vec![0, 1, 2, 255], vec![]],
        },
        Case {
            ident: vec![],
            buffers: vec![vec![7u8; 70_000]],
        },
    ]
}

#[test]
fn messages_jupyter_client_signs_verify_and_parse_in_ours() {
    let mut peer = Peer::start("session_peer.py");
    for scheme in Scheme::ALL {
        let ours = session(scheme);
        for case in cases() {
            let content =
                json!({"code": "print('héllo')\n1 + 1", "silent": false, "n": 1.5e-7, "big": 1e16});
            let out = peer.call(&json!({
                "op": "sign", "scheme": scheme.name(), "key": KEY, "msg_type": "execute_request",
                "content": content, "metadata": {"cellId": "x"},
                "ident": b64s(&case.ident), "buffers": b64s(&case.buffers),
            }));
            let frames = frames_of(&out);
            let msg = ours
                .receive(frames.clone())
                .unwrap_or_else(|e| panic!("{scheme}: {e}"));
            assert_eq!(msg.msg_type(), "execute_request");
            assert_eq!(msg.identities, case.ident);
            assert_eq!(msg.buffers, case.buffers);
            assert_eq!(msg.content, content);
            assert_eq!(msg.header.username, "peer");

            // Re-encoded by us: the same signed bytes and signature.
            let again = ours.encode(&msg).unwrap();
            assert_eq!(again, frames, "{scheme}: re-encoding changed the bytes");
        }
    }
}

#[test]
fn messages_we_sign_verify_and_deserialize_in_jupyter_client() {
    let mut peer = Peer::start("session_peer.py");
    for scheme in Scheme::ALL {
        let ours = session(scheme);
        for case in cases() {
            let parent = ours
                .message("execute_request", &json!({"code": "x"}), None)
                .unwrap();
            let mut msg: Message = ours
                .message(
                    "execute_result",
                    &json!({"data": {"text/plain": "2 ünïcode"}, "execution_count": 3, "f": 0.1}),
                    Some(&parent),
                )
                .unwrap();
            msg.identities = case.ident.clone();
            msg.buffers = case.buffers.clone();
            msg.header.extra.insert("subshell_id".into(), Value::Null);
            let frames = ours.encode(&msg).unwrap();
            let out = peer.call(&json!({"op": "verify", "scheme": scheme.name(), "key": KEY, "frames": b64s(&frames)}));
            assert_eq!(out["ok"], true, "{scheme}: {out}");
            assert_eq!(out["msg_type"], "execute_result");
            assert_eq!(out["msg_id"], msg.header.msg_id.as_str());
            assert_eq!(out["parent_msg_id"], parent.header.msg_id.as_str());
            assert_eq!(out["content"], msg.content);
            assert_eq!(out["buffers"], json!(b64s(&case.buffers)));
            assert_eq!(out["idents"], json!(b64s(&case.ident)));
        }
    }
}

#[test]
fn jupyter_client_rejects_our_message_signed_with_another_key() {
    let mut peer = Peer::start("session_peer.py");
    let other = Session::new(
        Signer::new(Scheme::Sha256, &Key::new("not-the-key")).unwrap(),
        SessionConfig::default(),
    );
    let msg = other
        .message("kernel_info_request", &json!({}), None)
        .unwrap();
    let frames = other.encode(&msg).unwrap();
    let out = peer.call(
        &json!({"op": "verify", "scheme": "hmac-sha256", "key": KEY, "frames": b64s(&frames)}),
    );
    assert_eq!(out["ok"], false);
}

#[test]
fn we_reject_jupyter_client_message_with_another_key() {
    let mut peer = Peer::start("session_peer.py");
    let out = peer.call(&json!({"op": "sign", "scheme": "hmac-sha256", "key": "wrong", "msg_type": "kernel_info_request", "content": {}}));
    let err = session(Scheme::Sha256)
        .receive(frames_of(&out))
        .unwrap_err();
    assert_eq!(err.code(), "bad_signature");
}
