//! CURVE encryption with ZAP admission.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use common::*;
use kernelgate_zmq::zap::{DomainPolicy, ZapAuthenticator};
use kernelgate_zmq::{curve_keypair, Context, PublicKey, SecretKey, Socket, SocketType};

fn keypair() -> (PublicKey, SecretKey) {
    let (p, s) = curve_keypair().unwrap();
    (PublicKey::from_z85(&p).unwrap(), s)
}

fn curve_client(
    ctx: &Context,
    ep: &str,
    server: &PublicKey,
    me: &(PublicKey, SecretKey),
) -> Socket {
    let d = socket(ctx, SocketType::Dealer);
    d.configure_curve_client(server, &me.0, &me.1).unwrap();
    d.connect(ep).unwrap();
    d
}

#[test]
fn zap_admits_only_allowed_curve_keys() {
    let ctx = Context::new().unwrap();
    let zap = ZapAuthenticator::start(&ctx).unwrap();
    let server = keypair();
    let alice = keypair();
    let mallory = keypair();
    zap.set_domain("kernel-1", DomainPolicy::curve([alice.0]));

    let r = socket(&ctx, SocketType::Router);
    r.configure_curve_server(&server.1, "kernel-1").unwrap();
    r.bind("tcp://127.0.0.1:*").unwrap();
    let ep = r.last_endpoint().unwrap();

    let a = curve_client(&ctx, &ep, &server.0, &alice);
    roundtrip(&r, &a, &[b"hello", b"curve"]);
    assert_eq!(a.mechanism().unwrap(), 2);

    // Unknown key: handshake refused, nothing delivered.
    let m = curve_client(&ctx, &ep, &server.0, &mallory);
    m.send_multipart([b"let me in"], false).unwrap();
    assert_quiet(&r);
    assert_quiet(&m);

    // NULL client to a CURVE server: nothing either.
    let n = dealer(&ctx, &ep);
    n.send_multipart([b"plain"], false).unwrap();
    assert_quiet(&r);

    // The allowed client is unaffected.
    roundtrip(&r, &a, &[b"still", b"here"]);
    assert!(zap.denied() >= 1, "denials counted");
    assert!(zap.allowed() >= 1);

    // Runtime update: once admitted, mallory's next connection succeeds.
    drop(m);
    zap.allow_curve_client("kernel-1", mallory.0);
    let m1 = curve_client(&ctx, &ep, &server.0, &mallory);
    roundtrip(&r, &m1, &[b"admitted"]);
    // And revocation refuses new connections.
    assert!(zap.remove_curve_client("kernel-1", &mallory.0));
    let m2 = curve_client(&ctx, &ep, &server.0, &mallory);
    m2.send_multipart([b"again"], false).unwrap();
    assert_quiet(&r);
}

#[test]
fn unknown_domain_and_null_policy() {
    let ctx = Context::new().unwrap();
    let zap = ZapAuthenticator::start(&ctx).unwrap();
    // A second handler on the same context is refused, not silently shadowed.
    assert!(ZapAuthenticator::start(&ctx).is_err());
    let server = keypair();
    let alice = keypair();
    zap.set_domain("known", DomainPolicy::curve([alice.0]));

    let r = socket(&ctx, SocketType::Router);
    r.configure_curve_server(&server.1, "other").unwrap();
    r.bind("tcp://127.0.0.1:*").unwrap();
    let a = curve_client(&ctx, &r.last_endpoint().unwrap(), &server.0, &alice);
    a.send_multipart([b"x"], false).unwrap();
    assert_quiet(&r);

    // NULL sockets with a ZAP domain go through the policy too.
    let nr = socket(&ctx, SocketType::Router);
    nr.set_zap_domain("null-ok").unwrap();
    nr.bind("tcp://127.0.0.1:*").unwrap();
    let nep = nr.last_endpoint().unwrap();
    let d = dealer(&ctx, &nep);
    d.send_multipart([b"y"], false).unwrap();
    assert_quiet(&nr);
    zap.set_domain("null-ok", DomainPolicy::null());
    let d2 = dealer(&ctx, &nep);
    roundtrip(&nr, &d2, &[b"z"]);
    drop(zap); // stops promptly
}

#[test]
fn enforce_domain_fails_closed_without_handler() {
    let ctx = Context::new().unwrap();
    let server = keypair();
    let alice = keypair();
    let r = socket(&ctx, SocketType::Router);
    r.configure_curve_server(&server.1, "kernel-1").unwrap();
    r.set_zap_enforce_domain(true).unwrap();
    r.bind("tcp://127.0.0.1:*").unwrap();
    let a = curve_client(&ctx, &r.last_endpoint().unwrap(), &server.0, &alice);
    a.send_multipart([b"x"], false).unwrap();
    assert_quiet(&r);
}
