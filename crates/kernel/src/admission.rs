//! Who may connect to a CURVE kernel. libzmq admits any CURVE client when no ZAP handler is
//! bound, so a kernel with CURVE keys runs its own handler, and its sockets fail closed without
//! one.

use kernelgate_zmq::zap::{DomainPolicy, Policy, ZapAuthenticator, ZapHandle};
use kernelgate_zmq::{Context, PublicKey, SecretKey};

use crate::server::KernelError;

/// The ZAP domain of a CURVE kernel's shell, control, stdin and IOPub sockets.
pub const ZAP_DOMAIN: &str = "kernelgate";

/// The ZAP domain of its heartbeat: any CURVE client may ping (an echo carries nothing, and
/// jupyter_client's heartbeat presents a fresh random key of its own).
pub const HEARTBEAT_ZAP_DOMAIN: &str = "kernelgate-heartbeat";

/// The client keys a CURVE kernel admits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CurveAdmission {
    /// jupyter_client's convention: clients present the kernel's own keypair, read from the
    /// connection file, so that key alone is admitted (holding the file is the gate).
    #[default]
    ConnectionFile,
    /// These client public keys and no other (not even the kernel's own).
    Clients(Vec<PublicKey>),
}

/// The ZAP policy for a kernel whose secret key is `secret`.
pub fn policy(admission: &CurveAdmission, secret: &SecretKey) -> Result<Policy, KernelError> {
    let clients = match admission {
        CurveAdmission::ConnectionFile => {
            vec![secret.public_key().map_err(KernelError::Transport)?]
        }
        CurveAdmission::Clients(keys) => keys.clone(),
    };
    let mut policy = Policy::new();
    policy.set_domain(ZAP_DOMAIN, DomainPolicy::curve(clients));
    policy.set_domain(HEARTBEAT_ZAP_DOMAIN, DomainPolicy::curve_any());
    Ok(policy)
}

/// Starts the ZAP handler of a CURVE kernel on `ctx` (which must have none yet).
pub fn start(
    ctx: &Context,
    admission: &CurveAdmission,
    secret: &SecretKey,
) -> Result<ZapHandle, KernelError> {
    ZapAuthenticator::start_with(ctx, policy(admission, secret)?).map_err(KernelError::Transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_file_convention_admits_the_kernels_own_key() {
        let keys = kernelgate_zmq::curve_keypair();
        assert!(keys.is_ok(), "CURVE keypair: {keys:?}");
        let Ok((public, secret)) = keys else { return };
        let own = PublicKey::from_z85(&public).ok();
        let p = policy(&CurveAdmission::ConnectionFile, &secret).ok();
        let rules = p.as_ref().and_then(|p| p.domain(ZAP_DOMAIN));
        assert_eq!(
            rules.map(|r| r.curve_clients.iter().copied().collect::<Vec<_>>()),
            own.map(|k| vec![k])
        );
        let hb = p.as_ref().and_then(|p| p.domain(HEARTBEAT_ZAP_DOMAIN));
        assert_eq!(hb.map(|r| r.curve_any_client), Some(true));
    }

    #[test]
    fn a_client_list_admits_only_those_keys() {
        let keys = kernelgate_zmq::curve_keypair();
        assert!(keys.is_ok(), "CURVE keypair: {keys:?}");
        let Ok((_, secret)) = keys else { return };
        let other = PublicKey::from_bytes([3; 32]);
        let p = policy(&CurveAdmission::Clients(vec![other]), &secret).ok();
        let rules = p.as_ref().and_then(|p| p.domain(ZAP_DOMAIN));
        assert_eq!(
            rules.map(|r| r.curve_clients.iter().copied().collect::<Vec<_>>()),
            Some(vec![other])
        );
    }
}
