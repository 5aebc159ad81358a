//! Admission policy: what the ZAP handler answers, per ZAP domain.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::curve::PublicKey;

/// Rules for one ZAP domain (kernelgate uses one domain per kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainPolicy {
    /// Accept NULL-mechanism (unauthenticated) connections. Only consulted for sockets
    /// that set a ZAP domain.
    pub allow_null: bool,
    /// CURVE client public keys that may connect.
    pub curve_clients: HashSet<PublicKey>,
    /// Admit any CURVE client key (the connection is still encrypted to the server's key):
    /// only for sockets whose traffic is worth nothing to a stranger, like a heartbeat echo.
    pub curve_any_client: bool,
    /// Peer IP addresses refused whatever their credentials.
    pub deny_addresses: HashSet<IpAddr>,
}

impl DomainPolicy {
    /// A CURVE domain admitting exactly `clients`.
    pub fn curve(clients: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            curve_clients: clients.into_iter().collect(),
            ..Self::default()
        }
    }

    /// A CURVE domain admitting any client key (see [`DomainPolicy::curve_any_client`]).
    pub fn curve_any() -> Self {
        Self {
            curve_any_client: true,
            ..Self::default()
        }
    }

    /// A domain that accepts NULL connections (no CURVE clients).
    pub fn null() -> Self {
        Self {
            allow_null: true,
            ..Self::default()
        }
    }
}

/// The whole policy: domain name to rules. Unknown domains are denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    domains: HashMap<String, DomainPolicy>,
}

/// A parsed ZAP request (RFC 27).
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) domain: &'a [u8],
    pub(crate) address: &'a [u8],
    pub(crate) mechanism: &'a [u8],
    pub(crate) credentials: &'a [Vec<u8>],
}

/// The answer to one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    pub(crate) reason: &'static str,
    pub(crate) user_id: String,
}

impl Decision {
    fn deny(reason: &'static str) -> Self {
        Self {
            allowed: false,
            reason,
            user_id: String::new(),
        }
    }
}

impl Policy {
    /// An empty policy (denies everything).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a domain's rules.
    pub fn set_domain(&mut self, domain: impl Into<String>, rules: DomainPolicy) {
        self.domains.insert(domain.into(), rules);
    }

    /// Removes a domain; its clients are refused from then on.
    pub fn remove_domain(&mut self, domain: &str) -> Option<DomainPolicy> {
        self.domains.remove(domain)
    }

    /// A domain's rules.
    pub fn domain(&self, domain: &str) -> Option<&DomainPolicy> {
        self.domains.get(domain)
    }

    /// A domain's rules, created empty (deny-all) if missing.
    pub fn domain_mut(&mut self, domain: &str) -> &mut DomainPolicy {
        self.domains.entry(domain.to_owned()).or_default()
    }

    pub(crate) fn decide(&self, req: &Request<'_>) -> Decision {
        let Some(rules) = std::str::from_utf8(req.domain)
            .ok()
            .and_then(|d| self.domains.get(d))
        else {
            return Decision::deny("unknown domain");
        };
        let ip = std::str::from_utf8(req.address)
            .ok()
            .and_then(|a| a.parse::<IpAddr>().ok());
        if ip.is_some_and(|ip| rules.deny_addresses.contains(&ip)) {
            return Decision::deny("address denied");
        }
        match req.mechanism {
            b"NULL" if rules.allow_null => Decision {
                allowed: true,
                reason: "OK",
                user_id: String::new(),
            },
            b"NULL" => Decision::deny("NULL mechanism not allowed"),
            b"CURVE" => match req.credentials {
                [key] => match PublicKey::parse(key) {
                    Ok(k) if rules.curve_any_client || rules.curve_clients.contains(&k) => {
                        Decision {
                            allowed: true,
                            reason: "OK",
                            user_id: k.to_z85(),
                        }
                    }
                    Ok(_) => Decision::deny("unknown client key"),
                    Err(_) => Decision::deny("malformed client key"),
                },
                _ => Decision::deny("malformed CURVE credentials"),
            },
            _ => Decision::deny("mechanism not supported"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(domain: &'a [u8], mech: &'a [u8], creds: &'a [Vec<u8>]) -> Request<'a> {
        Request {
            domain,
            address: b"10.0.0.1",
            mechanism: mech,
            credentials: creds,
        }
    }

    #[test]
    fn decisions() {
        let key = PublicKey::from_bytes([7; 32]);
        let mut p = Policy::new();
        p.set_domain("k1", DomainPolicy::curve([key]));
        let good = [key.as_bytes().to_vec()];
        let bad = [vec![9u8; 32]];
        assert!(p.decide(&req(b"k1", b"CURVE", &good)).allowed);
        assert_eq!(p.decide(&req(b"k1", b"CURVE", &good)).user_id, key.to_z85());
        assert!(!p.decide(&req(b"k1", b"CURVE", &bad)).allowed);
        assert!(!p.decide(&req(b"k2", b"CURVE", &good)).allowed);
        assert!(!p.decide(&req(b"k1", b"NULL", &[])).allowed);
        assert!(!p.decide(&req(b"k1", b"PLAIN", &good)).allowed);
        p.domain_mut("k1")
            .deny_addresses
            .insert("10.0.0.1".parse().unwrap_or(IpAddr::from([0; 4])));
        assert_eq!(
            p.decide(&req(b"k1", b"CURVE", &good)).reason,
            "address denied"
        );
        p.set_domain("n", DomainPolicy::null());
        assert!(p.decide(&req(b"n", b"NULL", &[])).allowed);
        p.set_domain("any", DomainPolicy::curve_any());
        assert!(p.decide(&req(b"any", b"CURVE", &bad)).allowed);
        assert!(!p.decide(&req(b"any", b"NULL", &[])).allowed);
        assert!(!p.decide(&req(b"any", b"CURVE", &[vec![1u8; 5]])).allowed);
    }
}
