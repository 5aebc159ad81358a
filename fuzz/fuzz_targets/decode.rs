//! Multipart message decoding: limits, layout, HMAC, JSON parsing, replay, and the two WebSocket
//! framings.
//!
//! Input format (see README.md): byte 0 is the frame count (at most 64), then each frame is a
//! little-endian u16 length followed by that many bytes (clamped to what is left). The same raw
//! bytes are also fed to the WebSocket decoders.
#![no_main]

use chrono::{DateTime, TimeZone, Utc};
use kernelgate_wire::websocket::{
    decode_legacy_binary, decode_v1, encode_legacy_binary, encode_v1,
};
use kernelgate_wire::{
    decode_unverified, ErrorKind, Key, Limits, Message, Scheme, Session, SessionConfig, Signer,
    DELIMITER,
};
use libfuzzer_sys::fuzz_target;

/// The key the seeds in corpus/decode are signed with (fuzz/gen_corpus.py uses the same).
const KEY: &[u8] = b"kernelgate-fuzz-key";

fn epoch() -> DateTime<Utc> {
    // Seeds are dated 2026-01-01T00:00:00.xZ; the session starts then and "now" is 1 s later.
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn split_frames(data: &[u8]) -> Vec<Vec<u8>> {
    let Some((&count, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    let mut frames = Vec::with_capacity(usize::from(count.min(64)));
    for _ in 0..count.min(64) {
        let len = match rest {
            [a, b, tail @ ..] => {
                rest = tail;
                usize::from(u16::from_le_bytes([*a, *b]))
            }
            _ => {
                rest = &[];
                0
            }
        };
        let (frame, tail) = rest.split_at(len.min(rest.len()));
        frames.push(frame.to_vec());
        rest = tail;
    }
    frames
}

fn session() -> Session {
    let signer = match Signer::new(Scheme::Sha256, &Key::new(KEY)) {
        Ok(s) => s,
        Err(e) => panic!("signer: {e}"),
    };
    let limits = Limits {
        max_frames: 64,
        max_frame_bytes: 1 << 16,
        max_total_bytes: 1 << 20,
    };
    Session::started_at(
        signer,
        SessionConfig {
            limits,
            ..SessionConfig::default()
        },
        epoch(),
    )
}

/// Runs the keyed pipeline; on success checks that a replay is refused and that re-encoding the
/// message decodes to the same message.
fn keyed(session: &Session, frames: Vec<Vec<u8>>) {
    let now = epoch() + chrono::TimeDelta::seconds(1);
    let Ok(authentic) = session.authenticate(frames.clone()) else {
        return;
    };
    let Ok(msg) = session.admit(authentic, now) else {
        return;
    };
    // The very same frames again: authentic, but a replay.
    match session
        .authenticate(frames)
        .and_then(|a| session.admit(a, now))
    {
        Err(e) if e.kind() == ErrorKind::Replayed => {}
        other => panic!("replayed message not refused as Replayed: {other:?}"),
    }
    round_trip(session, &msg);
}

/// encode then decode_unverified gives back the message.
fn round_trip(session: &Session, msg: &Message) {
    let Ok(encoded) = session.encode(msg) else {
        return;
    };
    let limits = Limits {
        max_frames: 1 << 10,
        max_frame_bytes: 1 << 24,
        max_total_bytes: 1 << 26,
    };
    match decode_unverified(encoded, &limits) {
        Ok(back) => assert_eq!(&back, msg, "encode/decode round trip changed the message"),
        Err(e) => panic!("re-encoded message does not decode: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let session = session();
    let frames = split_frames(data);

    // 1. As received: signature as given (only the seeds' real signatures get past it).
    keyed(&session, frames.clone());

    // 2. Re-signed with our key, so that mutations reach JSON parsing, freshness and replay.
    if let Ok(layout) = kernelgate_wire::frames::Layout::of(&frames) {
        let sig = session.signer().sign(&layout.signed(&frames));
        let mut resigned = frames.clone();
        if let Some(slot) = resigned.get_mut(layout.delimiter + 1) {
            *slot = sig;
            keyed(&session, resigned);
        }
    }

    // 3. With no key (traffic inspection).
    if let Ok(msg) = decode_unverified(frames, session.limits()) {
        round_trip(&session, &msg);
    }

    // 4. The WebSocket framings, on the raw bytes.
    if let Ok(parts) = decode_v1(data, 64) {
        let again = decode_v1(&encode_v1(&parts), 64);
        assert_eq!(again.as_ref(), Ok(&parts), "v1 re-encode changed the parts");
        let mut frames = vec![DELIMITER.to_vec(), Vec::new()];
        frames.extend(parts.parts.iter().cloned());
        frames.extend(parts.buffers.iter().cloned());
        if let Ok(msg) = decode_unverified(frames, session.limits()) {
            round_trip(&session, &msg);
        }
    }
    if let Ok((json, buffers)) = decode_legacy_binary(data, 64) {
        let again = decode_legacy_binary(&encode_legacy_binary(&json, &buffers), 64);
        assert_eq!(
            again,
            Ok((json, buffers)),
            "legacy binary re-encode changed the parts"
        );
    }
});
