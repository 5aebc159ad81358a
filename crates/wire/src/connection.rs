//! Connection files: the JSON a kernel and its clients share to find and authenticate each other.
//!
//! The key and CURVE secret key never appear in `Debug` output or errors. Writing the file
//! (atomically, owner-only) is the transport layer's job; this module only converts.

use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::{Key, Scheme, Signer};
use crate::error::{err, Error, ErrorKind, Result};
use crate::message::Channel;

/// The ZeroMQ transport of a kernel's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// TCP on `ip`.
    #[default]
    Tcp,
    /// Unix domain sockets at `ip-<port>` paths.
    Ipc,
}

impl Transport {
    /// `tcp` or `ipc`.
    pub const fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ipc => "ipc",
        }
    }

    /// Parses `tcp` or `ipc`.
    pub fn parse(s: &str) -> Result<Transport> {
        match s {
            "tcp" => Ok(Transport::Tcp),
            "ipc" => Ok(Transport::Ipc),
            _ => err(
                ErrorKind::InvalidConnectionInfo,
                "transport must be \"tcp\" or \"ipc\"",
            ),
        }
    }
}

/// The contents of a connection file.
#[derive(Clone, PartialEq)]
pub struct ConnectionInfo {
    /// Shell ROUTER port.
    pub shell_port: u16,
    /// IOPub PUB port.
    pub iopub_port: u16,
    /// Stdin ROUTER port.
    pub stdin_port: u16,
    /// Control ROUTER port.
    pub control_port: u16,
    /// Heartbeat REP port.
    pub hb_port: u16,
    /// IP address (tcp) or path prefix (ipc).
    pub ip: String,
    /// tcp or ipc.
    pub transport: Transport,
    /// HMAC scheme.
    pub signature_scheme: Scheme,
    /// The HMAC key (the connection file's text is the key).
    pub key: Key,
    /// Name of the kernelspec, if known.
    pub kernel_name: String,
    /// The kernel's CURVE public key (Z85), when the kernel uses CurveZMQ.
    pub curve_publickey: Option<String>,
    /// The kernel's CURVE secret key (Z85). jupyter_client 8.9+ writes it into the file; we read it
    /// for compatibility and never print it.
    pub curve_secretkey: Option<Key>,
    /// Fields this struct does not name, kept for round trips.
    pub extra: Map<String, Value>,
}

impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("transport", &self.transport)
            .field("ip", &self.ip)
            .field("shell_port", &self.shell_port)
            .field("iopub_port", &self.iopub_port)
            .field("stdin_port", &self.stdin_port)
            .field("control_port", &self.control_port)
            .field("hb_port", &self.hb_port)
            .field("signature_scheme", &self.signature_scheme)
            .field("key", &"<redacted>")
            .field("kernel_name", &self.kernel_name)
            .field("curve_publickey", &self.curve_publickey)
            .field(
                "curve_secretkey",
                &self.curve_secretkey.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Deserialize)]
struct RawConnectionInfo {
    shell_port: u16,
    iopub_port: u16,
    stdin_port: u16,
    control_port: u16,
    hb_port: u16,
    #[serde(default = "default_ip")]
    ip: String,
    #[serde(default = "default_transport")]
    transport: String,
    #[serde(default = "default_scheme")]
    signature_scheme: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    kernel_name: String,
    #[serde(default)]
    curve_publickey: Option<String>,
    #[serde(default)]
    curve_secretkey: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

fn default_ip() -> String {
    "127.0.0.1".into()
}
fn default_transport() -> String {
    "tcp".into()
}
fn default_scheme() -> String {
    "hmac-sha256".into()
}

impl ConnectionInfo {
    /// Fresh connection info for a kernel on `ip` with a new 256-bit key and ports still to be
    /// chosen (0).
    pub fn generate(transport: Transport, ip: &str) -> Result<ConnectionInfo> {
        Ok(ConnectionInfo {
            shell_port: 0,
            iopub_port: 0,
            stdin_port: 0,
            control_port: 0,
            hb_port: 0,
            ip: ip.to_owned(),
            transport,
            signature_scheme: Scheme::Sha256,
            key: Key::generate()?,
            kernel_name: String::new(),
            curve_publickey: None,
            curve_secretkey: None,
            extra: Map::new(),
        })
    }

    /// The largest connection file worth reading: real ones are a few hundred bytes, and a
    /// kernel (or anyone) growing one to gigabytes must not make its reader hold them.
    pub const MAX_FILE_BYTES: u64 = 64 << 10;

    /// Parses a connection file's bytes and validates it.
    pub fn from_json(bytes: &[u8]) -> Result<ConnectionInfo> {
        let raw: RawConnectionInfo = serde_json::from_slice(bytes).map_err(|e| {
            // serde_json errors cite a position and the expected type, never the value itself
            // for the string fields we read, so the key cannot leak through them.
            Error::new(
                ErrorKind::InvalidConnectionInfo,
                format!("connection file: {}", scrub(&e)),
            )
        })?;
        let info = ConnectionInfo {
            shell_port: raw.shell_port,
            iopub_port: raw.iopub_port,
            stdin_port: raw.stdin_port,
            control_port: raw.control_port,
            hb_port: raw.hb_port,
            ip: raw.ip,
            transport: Transport::parse(&raw.transport)?,
            signature_scheme: Scheme::parse(&raw.signature_scheme)?,
            key: Key::new(raw.key.into_bytes()),
            kernel_name: raw.kernel_name,
            curve_publickey: raw.curve_publickey.filter(|s| !s.is_empty()),
            curve_secretkey: raw
                .curve_secretkey
                .filter(|s| !s.is_empty())
                .map(|s| Key::new(s.into_bytes())),
            extra: raw.extra,
        };
        info.validate()?;
        Ok(info)
    }

    /// Checks consistency: an ip, distinct ports, CURVE keys of the right length.
    pub fn validate(&self) -> Result<()> {
        if self.ip.is_empty() {
            return err(ErrorKind::InvalidConnectionInfo, "ip is empty");
        }
        let ports = self.ports();
        for (i, (ch, p)) in ports.iter().enumerate() {
            if *p != 0 && ports.iter().skip(i + 1).any(|(_, q)| q == p) {
                return err(
                    ErrorKind::InvalidConnectionInfo,
                    format!("port {p} of {} is used by another channel too", ch.name()),
                );
            }
        }
        if let Some(pk) = &self.curve_publickey {
            if pk.len() != 40 {
                return err(
                    ErrorKind::InvalidConnectionInfo,
                    "curve_publickey is not 40 Z85 characters",
                );
            }
        }
        if let Some(sk) = &self.curve_secretkey {
            if sk.expose().len() != 40 {
                return err(
                    ErrorKind::InvalidConnectionInfo,
                    "curve_secretkey is not 40 Z85 characters",
                );
            }
        }
        Ok(())
    }

    /// Checks that every port is set, as a client needs.
    pub fn validate_for_connect(&self) -> Result<()> {
        self.validate()?;
        if let Some((ch, _)) = self.ports().iter().find(|(_, p)| *p == 0) {
            return err(
                ErrorKind::InvalidConnectionInfo,
                format!("{} port is 0", ch.name()),
            );
        }
        Ok(())
    }

    /// The port of each channel.
    pub fn ports(&self) -> [(Channel, u16); 5] {
        [
            (Channel::Shell, self.shell_port),
            (Channel::IoPub, self.iopub_port),
            (Channel::Stdin, self.stdin_port),
            (Channel::Control, self.control_port),
            (Channel::Heartbeat, self.hb_port),
        ]
    }

    /// The port of `channel`.
    pub fn port(&self, channel: Channel) -> u16 {
        self.ports()
            .iter()
            .find(|(c, _)| *c == channel)
            .map(|(_, p)| *p)
            .unwrap_or(0)
    }

    /// Sets the port of `channel`.
    pub fn set_port(&mut self, channel: Channel, port: u16) {
        match channel {
            Channel::Shell => self.shell_port = port,
            Channel::IoPub => self.iopub_port = port,
            Channel::Stdin => self.stdin_port = port,
            Channel::Control => self.control_port = port,
            Channel::Heartbeat => self.hb_port = port,
        }
    }

    /// The ZeroMQ endpoint of `channel`: `tcp://ip:port` or `ipc://ip-port`.
    pub fn endpoint(&self, channel: Channel) -> String {
        endpoint(self.transport, &self.ip, self.port(channel))
    }

    /// The signer for this connection. An empty key is refused unless `allow_unauthenticated`.
    pub fn signer(&self, allow_unauthenticated: bool) -> Result<Signer> {
        if self.key.is_empty() && allow_unauthenticated {
            return Ok(Signer::unauthenticated());
        }
        Signer::new(self.signature_scheme, &self.key)
    }

    /// The file contents, key included: only for writing the owner-only connection file.
    pub fn to_json_with_secrets(&self) -> Vec<u8> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        put("shell_port", self.shell_port.into());
        put("iopub_port", self.iopub_port.into());
        put("stdin_port", self.stdin_port.into());
        put("control_port", self.control_port.into());
        put("hb_port", self.hb_port.into());
        put("ip", self.ip.clone().into());
        put(
            "key",
            String::from_utf8_lossy(self.key.expose())
                .into_owned()
                .into(),
        );
        put("transport", self.transport.name().into());
        put("signature_scheme", self.signature_scheme.name().into());
        put("kernel_name", self.kernel_name.clone().into());
        if let Some(pk) = &self.curve_publickey {
            put("curve_publickey", pk.clone().into());
        }
        if let Some(sk) = &self.curve_secretkey {
            put(
                "curve_secretkey",
                String::from_utf8_lossy(sk.expose()).into_owned().into(),
            );
        }
        for (k, v) in &self.extra {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let mut out = serde_json::to_vec_pretty(&Value::Object(m)).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// A ZeroMQ endpoint for `transport`, `ip` and `port`.
pub fn endpoint(transport: Transport, ip: &str, port: u16) -> String {
    endpoint_with(transport, ip, &port)
}

/// A TCP endpoint on `ip` whose port libzmq chooses while binding (`tcp://ip:*`), so no other
/// process can take the port between choice and use.
pub fn tcp_wildcard_endpoint(ip: &str) -> String {
    endpoint_with(Transport::Tcp, ip, &"*")
}

fn endpoint_with(transport: Transport, ip: &str, port: &dyn fmt::Display) -> String {
    match transport {
        Transport::Tcp if ip.contains(':') && !ip.starts_with('[') => {
            format!("tcp://[{ip}]:{port}")
        }
        Transport::Tcp => format!("tcp://{ip}:{port}"),
        Transport::Ipc => format!("ipc://{ip}-{port}"),
    }
}

/// serde_json's message without any quoted input (defence in depth: keep values out of errors).
fn scrub(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.find(['"', '`']) {
        Some(_) => format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
        None => msg,
    }
}
