//! Property tests: encode then decode is the identity; any single-bit flip of a signed part fails.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use kernelgate_wire::{
    ErrorKind, Key, Message, ReplayConfig, Scheme, Session, SessionConfig, Signer,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn session(scheme: Scheme, replay: bool) -> Session {
    let config = SessionConfig {
        replay: replay.then(ReplayConfig::default),
        ..SessionConfig::default()
    };
    Session::new(Signer::new(scheme, &Key::new("prop-key")).unwrap(), config)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::vec((".{0,8}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn scheme() -> impl Strategy<Value = Scheme> {
    prop::sample::select(Scheme::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_then_decode_is_identity(
        scheme in scheme(),
        content in prop::collection::vec((".{0,8}", json_value()), 0..6),
        idents in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..3),
        buffers in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..3),
        msg_type in "[a-z_]{1,20}",
    ) {
        let s = session(scheme, true);
        let content = Value::Object(content.into_iter().collect());
        let mut msg: Message = s.message(&msg_type, &content, None).unwrap();
        msg.identities = idents.into_iter().filter(|i| i.as_slice() != kernelgate_wire::DELIMITER).collect();
        msg.buffers = buffers;
        let frames = s.encode(&msg).unwrap();
        let got = s.receive(frames.clone()).unwrap().into_inner();
        prop_assert_eq!(&got, &msg);
        prop_assert_eq!(s.encode(&got).unwrap(), frames);
    }

    #[test]
    fn any_bit_flip_in_a_signed_part_fails(scheme in scheme(), part in 0usize..5, bit in any::<prop::sample::Index>()) {
        let s = session(scheme, false);
        let msg = s.message("execute_request", &json!({"code": "x = 1", "silent": false}), None).unwrap();
        let mut frames = s.encode(&msg).unwrap();
        // part 0 is the signature itself, 1..=4 the signed parts.
        let frame = &mut frames[1 + part];
        let i = bit.index(frame.len() * 8);
        frame[i / 8] ^= 1 << (i % 8);
        let kind = s.receive(frames).unwrap_err().kind();
        prop_assert!(kind == ErrorKind::BadSignature, "{:?}", kind);
    }

    #[test]
    fn arbitrary_frames_never_panic(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..12)) {
        let s = session(Scheme::Sha256, true);
        prop_assert!(s.receive(frames).is_err());
    }
}
