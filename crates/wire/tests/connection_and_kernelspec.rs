//! Connection files and kernelspecs: files as jupyter_client and ipykernel write them, round
//! trips, validation errors, argv substitution and the kernelspec search path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashSet;
use std::path::PathBuf;

use kernelgate_wire::kernelspec::{
    is_valid_name, jupyter_path, resolve, search_dirs, ArgvVars, PathEnv,
};
use kernelgate_wire::{
    Channel, ConnectionInfo, ErrorKind, InterruptMode, KernelSpec, Key, Scheme, Transport,
};
use serde_json::{json, Value};

const KEY: &str = "a0436f6c-1916498877fdd5c1a0d0b0e5e1f7e5a3";
const CURVE_PUBLIC: &str = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
const CURVE_SECRET: &str = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6";

/// A connection file exactly as jupyter_client 8.10's `write_connection_file` writes it
/// (`json.dumps(cfg, indent=2)`, keys in its order).
fn jupyter_file(extra: Value) -> Vec<u8> {
    let mut cfg = json!({
        "shell_port": 53794,
        "iopub_port": 53795,
        "stdin_port": 53796,
        "control_port": 53797,
        "hb_port": 53798,
        "ip": "127.0.0.1",
        "key": KEY,
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
        "kernel_name": "python3",
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    serde_json::to_vec_pretty(&cfg).unwrap()
}

fn kind(bytes: &[u8]) -> ErrorKind {
    ConnectionInfo::from_json(bytes).unwrap_err().kind()
}

#[test]
fn jupyter_client_connection_file_parses_and_round_trips() {
    let info = ConnectionInfo::from_json(&jupyter_file(json!({}))).unwrap();
    assert_eq!(
        info.ports().map(|(_, p)| p),
        [53794, 53795, 53796, 53797, 53798]
    );
    assert_eq!(info.transport, Transport::Tcp);
    assert_eq!(info.signature_scheme, Scheme::Sha256);
    assert_eq!(info.key.expose(), KEY.as_bytes());
    assert_eq!(info.kernel_name, "python3");
    assert_eq!(info.curve_publickey, None);
    assert!(info.curve_secretkey.is_none());
    assert_eq!(info.endpoint(Channel::Shell), "tcp://127.0.0.1:53794");
    assert_eq!(info.endpoint(Channel::Heartbeat), "tcp://127.0.0.1:53798");
    info.validate_for_connect().unwrap();
    assert!(info.signer(false).unwrap().is_authenticated());

    let written = info.to_json_with_secrets();
    assert_eq!(ConnectionInfo::from_json(&written).unwrap(), info);
    // What we write is what jupyter_client writes, field for field.
    let ours: Value = serde_json::from_slice(&written).unwrap();
    let theirs: Value = serde_json::from_slice(&jupyter_file(json!({}))).unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn curve_keys_are_read_round_tripped_and_never_printed() {
    let bytes =
        jupyter_file(json!({"curve_publickey": CURVE_PUBLIC, "curve_secretkey": CURVE_SECRET}));
    let info = ConnectionInfo::from_json(&bytes).unwrap();
    assert_eq!(info.curve_publickey.as_deref(), Some(CURVE_PUBLIC));
    assert_eq!(
        info.curve_secretkey.as_ref().unwrap().expose(),
        CURVE_SECRET.as_bytes()
    );
    assert_eq!(
        ConnectionInfo::from_json(&info.to_json_with_secrets()).unwrap(),
        info
    );
    let debug = format!("{info:?}");
    assert!(debug.contains(CURVE_PUBLIC));
    assert!(!debug.contains(CURVE_SECRET), "{debug}");
    assert!(!debug.contains(KEY), "{debug}");
    // Empty CURVE fields mean no CURVE.
    let info = ConnectionInfo::from_json(&jupyter_file(
        json!({"curve_publickey": "", "curve_secretkey": ""}),
    ))
    .unwrap();
    assert!(info.curve_publickey.is_none() && info.curve_secretkey.is_none());
}

#[test]
fn ipc_transport_endpoints_are_ip_dash_port() {
    let bytes = jupyter_file(
        json!({"transport": "ipc", "ip": "/tmp/kernel-7f3c", "shell_port": 1,
        "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}),
    );
    let info = ConnectionInfo::from_json(&bytes).unwrap();
    assert_eq!(info.transport, Transport::Ipc);
    assert_eq!(info.endpoint(Channel::Shell), "ipc:///tmp/kernel-7f3c-1");
    assert_eq!(info.endpoint(Channel::IoPub), "ipc:///tmp/kernel-7f3c-2");
    assert_eq!(info.endpoint(Channel::Stdin), "ipc:///tmp/kernel-7f3c-3");
    assert_eq!(info.endpoint(Channel::Control), "ipc:///tmp/kernel-7f3c-4");
    assert_eq!(
        info.endpoint(Channel::Heartbeat),
        "ipc:///tmp/kernel-7f3c-5"
    );
    assert_eq!(
        ConnectionInfo::from_json(&info.to_json_with_secrets()).unwrap(),
        info
    );
}

#[test]
fn ipv6_tcp_endpoints_are_bracketed() {
    let info = ConnectionInfo::from_json(&jupyter_file(json!({"ip": "::1"}))).unwrap();
    assert_eq!(info.endpoint(Channel::Shell), "tcp://[::1]:53794");
    let info = ConnectionInfo::from_json(&jupyter_file(json!({"ip": "[fe80::1]"}))).unwrap();
    assert_eq!(info.endpoint(Channel::Control), "tcp://[fe80::1]:53797");
    let info = ConnectionInfo::from_json(&jupyter_file(json!({"ip": "0.0.0.0"}))).unwrap();
    assert_eq!(info.endpoint(Channel::IoPub), "tcp://0.0.0.0:53795");
}

#[test]
fn unknown_fields_survive_and_defaults_apply() {
    let bytes = jupyter_file(json!({"jupyter_session": "/home/u/notebook.ipynb", "n": 1.5}));
    let info = ConnectionInfo::from_json(&bytes).unwrap();
    assert_eq!(info.extra["jupyter_session"], "/home/u/notebook.ipynb");
    let again: Value = serde_json::from_slice(&info.to_json_with_secrets()).unwrap();
    assert_eq!(again["jupyter_session"], "/home/u/notebook.ipynb");
    assert_eq!(again["n"], 1.5);

    // Only the ports are required: ip, transport and scheme have jupyter's defaults.
    let minimal =
        br#"{"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}"#;
    let info = ConnectionInfo::from_json(minimal).unwrap();
    assert_eq!(info.ip, "127.0.0.1");
    assert_eq!(info.transport, Transport::Tcp);
    assert_eq!(info.signature_scheme, Scheme::Sha256);
    assert!(info.key.is_empty());
    assert_eq!(info.signer(false).unwrap_err().kind(), ErrorKind::EmptyKey);
    assert!(!info.signer(true).unwrap().is_authenticated());
}

#[test]
fn every_scheme_parses() {
    for scheme in Scheme::ALL {
        let info =
            ConnectionInfo::from_json(&jupyter_file(json!({"signature_scheme": scheme.name()})))
                .unwrap();
        assert_eq!(info.signature_scheme, scheme);
    }
}

#[test]
fn validation_errors() {
    // Two channels on one port.
    assert_eq!(
        kind(&jupyter_file(json!({"hb_port": 53794}))),
        ErrorKind::InvalidConnectionInfo
    );
    // ... but unassigned (0) ports may repeat until the kernel picks them.
    let unassigned = jupyter_file(json!({"shell_port": 0, "iopub_port": 0, "stdin_port": 0,
        "control_port": 0, "hb_port": 0}));
    let info = ConnectionInfo::from_json(&unassigned).unwrap();
    // A client cannot connect to port 0.
    assert_eq!(
        info.validate_for_connect().unwrap_err().kind(),
        ErrorKind::InvalidConnectionInfo
    );
    let one_missing = jupyter_file(json!({"stdin_port": 0}));
    let err = ConnectionInfo::from_json(&one_missing)
        .unwrap()
        .validate_for_connect()
        .unwrap_err();
    assert!(err.to_string().contains("stdin"), "{err}");

    // A port key absent altogether, or out of range.
    let mut v: Value = serde_json::from_slice(&jupyter_file(json!({}))).unwrap();
    v.as_object_mut().unwrap().remove("control_port");
    assert_eq!(
        kind(&serde_json::to_vec(&v).unwrap()),
        ErrorKind::InvalidConnectionInfo
    );
    assert_eq!(
        kind(&jupyter_file(json!({"shell_port": 70000}))),
        ErrorKind::InvalidConnectionInfo
    );
    assert_eq!(
        kind(&jupyter_file(json!({"shell_port": "53794"}))),
        ErrorKind::InvalidConnectionInfo
    );

    assert_eq!(
        kind(&jupyter_file(json!({"transport": "udp"}))),
        ErrorKind::InvalidConnectionInfo
    );
    assert_eq!(
        kind(&jupyter_file(json!({"transport": "TCP"}))),
        ErrorKind::InvalidConnectionInfo
    );
    assert_eq!(
        kind(&jupyter_file(json!({"signature_scheme": "hmac-sha3"}))),
        ErrorKind::UnsupportedScheme
    );
    assert_eq!(
        kind(&jupyter_file(json!({"signature_scheme": "sha256"}))),
        ErrorKind::UnsupportedScheme
    );
    assert_eq!(
        kind(&jupyter_file(json!({"ip": ""}))),
        ErrorKind::InvalidConnectionInfo
    );
    assert_eq!(kind(b"not json"), ErrorKind::InvalidConnectionInfo);
    assert_eq!(kind(b"[]"), ErrorKind::InvalidConnectionInfo);

    // CURVE keys are 40 Z85 characters.
    let short = &CURVE_PUBLIC[..39];
    assert_eq!(
        kind(&jupyter_file(json!({"curve_publickey": short}))),
        ErrorKind::InvalidConnectionInfo
    );
    let long = format!("{CURVE_SECRET}x");
    assert_eq!(
        kind(&jupyter_file(json!({"curve_secretkey": long}))),
        ErrorKind::InvalidConnectionInfo
    );
}

#[test]
fn errors_never_show_the_key() {
    let cases = [
        jupyter_file(json!({"signature_scheme": "hmac-nope"})),
        jupyter_file(json!({"transport": "udp"})),
        jupyter_file(json!({"hb_port": 53794})),
        jupyter_file(json!({"curve_secretkey": "too-short-secret"})),
        jupyter_file(json!({"key": ["a0436f6c-1916498877fdd5c1a0d0b0e5e1f7e5a3"]})),
        jupyter_file(json!({"shell_port": -1})),
    ];
    for bytes in cases {
        let err = ConnectionInfo::from_json(&bytes).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains(KEY) && !text.contains("too-short-secret"),
            "{text}"
        );
    }
}

#[test]
fn generated_keys_are_64_hex_chars_and_fresh() {
    let mut seen = HashSet::new();
    for _ in 0..32 {
        let key = Key::generate().unwrap();
        let text = std::str::from_utf8(key.expose()).unwrap().to_owned();
        assert_eq!(text.len(), 64);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{text}"
        );
        assert!(seen.insert(text), "Key::generate repeated a key");
    }
    assert_eq!(format!("{:?}", Key::generate().unwrap()), "<redacted>");
    let a = ConnectionInfo::generate(Transport::Tcp, "127.0.0.1").unwrap();
    let b = ConnectionInfo::generate(Transport::Tcp, "127.0.0.1").unwrap();
    assert_ne!(a.key, b.key);
    assert_eq!(a.key.expose().len(), 64);
    assert_eq!(a.ports().map(|(_, p)| p), [0; 5]);
    a.validate().unwrap();
}

// ---- kernelspecs ----

/// ipykernel 7.4's installed kernel.json, byte for byte.
const IPYKERNEL_SPEC: &str = r#"{
 "argv": [
  "python",
  "-m",
  "ipykernel_launcher",
  "-f",
  "{connection_file}"
 ],
 "display_name": "Python 3 (ipykernel)",
 "language": "python",
 "metadata": {
  "debugger": true,
  "supported_encryption": [
   "curve"
  ]
 },
 "kernel_protocol_version": "5.5"
}"#;

const VARS: ArgvVars<'static> = ArgvVars {
    connection_file: "/run/user/1000/jupyter/kernel-1234.json",
    resource_dir: "/usr/share/jupyter/kernels/python3",
    prefix: "/opt/venv",
};

#[test]
fn ipykernel_kernel_json_parses() {
    let spec = KernelSpec::from_json(IPYKERNEL_SPEC.as_bytes()).unwrap();
    assert_eq!(
        spec.argv,
        [
            "python",
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}"
        ]
    );
    assert_eq!(spec.display_name, "Python 3 (ipykernel)");
    assert_eq!(spec.language, "python");
    assert_eq!(spec.interrupt_mode, InterruptMode::Signal);
    assert!(spec.env.is_empty());
    assert_eq!(spec.kernel_protocol_version.as_deref(), Some("5.5"));
    assert_eq!(spec.metadata["debugger"], true);
    assert!(spec.supports_curve());
    assert_eq!(
        spec.command(&VARS),
        [
            "python",
            "-m",
            "ipykernel_launcher",
            "-f",
            "/run/user/1000/jupyter/kernel-1234.json"
        ]
    );
    // Serializing and parsing again gives the same spec.
    assert_eq!(
        KernelSpec::from_json(&serde_json::to_vec(&spec).unwrap()).unwrap(),
        spec
    );
}

#[test]
fn env_interrupt_mode_and_metadata() {
    let spec = KernelSpec::from_json(
        br#"{"argv": ["k", "{connection_file}"], "display_name": "K", "language": "k",
             "env": {"PYTHONUNBUFFERED": "1", "K_HOME": "/opt/k"}, "interrupt_mode": "message",
             "metadata": {"supported_encryption": ["none", "curve"]},
             "codemirror_mode": {"name": "k"}}"#,
    )
    .unwrap();
    assert_eq!(
        spec.env.get("PYTHONUNBUFFERED").map(String::as_str),
        Some("1")
    );
    assert_eq!(spec.env.get("K_HOME").map(String::as_str), Some("/opt/k"));
    assert_eq!(spec.interrupt_mode, InterruptMode::Message);
    assert!(spec.supports_curve());
    assert_eq!(spec.extra["codemirror_mode"]["name"], "k");
    assert_eq!(spec.kernel_protocol_version, None);

    let no_curve = |metadata: Value| {
        let text = json!({"argv": ["k"], "display_name": "K", "metadata": metadata}).to_string();
        KernelSpec::from_json(text.as_bytes())
            .unwrap()
            .supports_curve()
    };
    assert!(!no_curve(json!({})));
    assert!(!no_curve(json!({"supported_encryption": []})));
    assert!(!no_curve(json!({"supported_encryption": "curve"})));
    assert!(!no_curve(json!({"supported_encryption": ["CURVE"]})));

    let signal = KernelSpec::from_json(
        br#"{"argv": ["k"], "display_name": "K", "interrupt_mode": "signal"}"#,
    );
    assert_eq!(signal.unwrap().interrupt_mode, InterruptMode::Signal);
}

#[test]
fn invalid_kernel_json_is_refused() {
    for bad in [
        &br#"{"argv": [], "display_name": "K"}"#[..],
        br#"{"argv": [""], "display_name": "K"}"#,
        br#"{"display_name": "K"}"#,
        br#"{"argv": ["k"]}"#,
        br#"{"argv": "k", "display_name": "K"}"#,
        br#"{"argv": ["k"], "display_name": "K", "interrupt_mode": "sigint"}"#,
        br#"{"argv": ["k"], "display_name": "K", "env": {"A": 1}}"#,
        b"{",
    ] {
        let err = KernelSpec::from_json(bad).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::InvalidKernelspec,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn argv_substitution() {
    let spec = KernelSpec::from_json(
        br#"{"display_name": "K", "argv": [
            "{prefix}/bin/python", "-f", "{connection_file}", "--res={resource_dir}/x",
            "{connection_file}{connection_file}", "{unknown}", "{", "}", "{{connection_file}}",
            "{prefix", "prefix}", "{}", "{PREFIX}", "plain", "{ prefix }"]}"#,
    )
    .unwrap();
    let cf = VARS.connection_file;
    assert_eq!(
        spec.command(&VARS),
        [
            "/opt/venv/bin/python".to_owned(),
            "-f".into(),
            cf.into(),
            "--res=/usr/share/jupyter/kernels/python3/x".into(),
            format!("{cf}{cf}"),
            "{unknown}".into(),
            "{".into(),
            "}".into(),
            format!("{{{cf}}}"),
            "{prefix".into(),
            "prefix}".into(),
            "{}".into(),
            "{PREFIX}".into(),
            "plain".into(),
            "{ prefix }".into(),
        ]
    );
    // A substituted value is not itself substituted again.
    let tricky = ArgvVars {
        connection_file: "{prefix}",
        ..VARS
    };
    let spec =
        KernelSpec::from_json(br#"{"display_name": "K", "argv": ["{connection_file}"]}"#).unwrap();
    assert_eq!(spec.command(&tricky), ["{prefix}"]);
}

fn env() -> PathEnv {
    PathEnv {
        jupyter_path: Some("/a/jp:/b/jp".into()),
        jupyter_data_dir: None,
        xdg_data_home: None,
        home: Some("/home/u".into()),
        env_prefix: Some("/opt/venv".into()),
        prefer_env: false,
    }
}

fn paths(v: &[PathBuf]) -> Vec<&str> {
    v.iter().map(|p| p.to_str().unwrap()).collect()
}

#[test]
fn search_dirs_order() {
    assert_eq!(
        paths(&search_dirs(&env())),
        [
            "/a/jp/kernels",
            "/b/jp/kernels",
            "/home/u/.local/share/jupyter/kernels",
            "/opt/venv/share/jupyter/kernels",
            "/usr/local/share/jupyter/kernels",
            "/usr/share/jupyter/kernels",
        ]
    );
    // JUPYTER_PREFER_ENV_PATH: the environment before the user directory.
    assert_eq!(
        paths(&search_dirs(&PathEnv {
            prefer_env: true,
            ..env()
        })),
        [
            "/a/jp/kernels",
            "/b/jp/kernels",
            "/opt/venv/share/jupyter/kernels",
            "/home/u/.local/share/jupyter/kernels",
            "/usr/local/share/jupyter/kernels",
            "/usr/share/jupyter/kernels",
        ]
    );
}

#[test]
fn search_path_user_dir_rules_and_dedup() {
    // No JUPYTER_PATH, no env: user then system.
    let bare = PathEnv {
        jupyter_path: None,
        env_prefix: None,
        ..env()
    };
    assert_eq!(
        paths(&jupyter_path(&bare)),
        [
            "/home/u/.local/share/jupyter",
            "/usr/local/share/jupyter",
            "/usr/share/jupyter"
        ]
    );
    // XDG_DATA_HOME, then JUPYTER_DATA_DIR, take precedence for the user directory.
    let xdg = PathEnv {
        xdg_data_home: Some("/x".into()),
        ..bare.clone()
    };
    assert_eq!(paths(&jupyter_path(&xdg))[0], "/x/jupyter");
    let data = PathEnv {
        jupyter_data_dir: Some("/d".into()),
        ..xdg.clone()
    };
    assert_eq!(paths(&jupyter_path(&data))[0], "/d");
    // Empty JUPYTER_PATH entries are ignored; a directory listed twice is searched once, first.
    let dup = PathEnv {
        jupyter_path: Some(":/usr/share/jupyter::/a".into()),
        env_prefix: Some("/usr".into()),
        ..bare
    };
    assert_eq!(
        paths(&jupyter_path(&dup)),
        [
            "/usr/share/jupyter",
            "/a",
            "/home/u/.local/share/jupyter",
            "/usr/local/share/jupyter"
        ]
    );
}

#[test]
fn resolve_picks_the_first_dir_and_skips_invalid_names() {
    let d1 = PathBuf::from("/a/jp/kernels");
    let d2 = PathBuf::from("/usr/share/jupyter/kernels");
    let listings = vec![
        (d1.clone(), vec!["python3".to_owned(), "ir".into()]),
        (
            d2.clone(),
            vec![
                "python3".into(),
                "julia-1.9".into(),
                "Py.Dev_2".into(),
                "bad name".into(),
                "../escape".into(),
                "pythön".into(),
                "".into(),
            ],
        ),
    ];
    let found = resolve(&listings);
    assert_eq!(found.len(), 4, "{found:?}");
    assert_eq!(found["python3"], d1.join("python3"));
    assert_eq!(found["ir"], d1.join("ir"));
    assert_eq!(found["julia-1.9"], d2.join("julia-1.9"));
    // Names are compared in lower case; the directory keeps its spelling.
    assert_eq!(found["py.dev_2"], d2.join("Py.Dev_2"));
    for bad in ["bad name", "../escape", "pythön", "", "a/b"] {
        assert!(!is_valid_name(bad), "{bad:?}");
    }
}
