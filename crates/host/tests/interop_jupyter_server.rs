//! Test of record: jupyter_server 2.x with `--gateway-url` pointing at kernelgate starts kernels
//! through its own API, and cells executed over jupyter_server's WebSocket run on our host (the
//! built-in kernel and ipykernel). Needs the project's venv (jupyter_server, ipykernel,
//! websocket-client): `KERNELGATE_VENV`, else `<repo>/.venv` (`scripts/setup-venv` makes it).
//! It runs with the other tests and fails (never skips) when the venv is missing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::json;

fn venv() -> PathBuf {
    let v = std::env::var_os("KERNELGATE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    assert!(
        v.join("bin/jupyter-server").is_file(),
        "no jupyter-server in {}: set KERNELGATE_VENV",
        v.display()
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_server_gateway_runs_cells_on_kernelgate() {
    let venv = venv();
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::env::set_var("PATH", &path); // ipykernel's argv starts with `python`
    let h = TestHost::start(|c| {
        let mut dirs = std::collections::BTreeMap::new();
        dirs.insert(
            "python3".to_string(),
            venv.join("share/jupyter/kernels/python3"),
        );
        c.add_specs(&dirs);
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let jtok = "interop-token-0123456789abcdef0123456789";
    let _js = KillOnDrop(
        std::process::Command::new(venv.join("bin/jupyter-server"))
            .args(["--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--gateway-url={}", h.base))
            .env("HOME", home.path())
            .env("JUPYTER_RUNTIME_DIR", home.path().join("rt"))
            .env("JUPYTER_GATEWAY_AUTH_TOKEN", &h.token) // jupyter_server's own way to pass it
            .env("JUPYTER_TOKEN", jtok)
            .current_dir(home.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let jbase = format!("http://127.0.0.1:{port}");
    let auth = format!("token {jtok}");
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(up, "jupyter_server did not start");
    let (s, specs) = http(
        "GET",
        &format!("{jbase}/api/kernelspecs"),
        Some(&auth),
        None,
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert!(specs["kernelspecs"]["rhai"].is_object(), "{specs}");
    for (name, code, want) in [
        ("rhai", "print(\"via gateway\"); 6 * 7", "42"),
        ("python3", "print('via gateway'); 6 * 7", "42"),
    ] {
        let (s, m) = http(
            "POST",
            &format!("{jbase}/api/kernels"),
            Some(&auth),
            Some(json!({"name": name}).to_string()),
            &[],
        )
        .await;
        assert_eq!(s, 201, "{m}");
        let id = m["id"].as_str().unwrap().to_owned();
        assert!(
            h.host.shared.registry.get(&id).is_some(),
            "the kernel runs on our host"
        );
        let url = format!(
            "ws://127.0.0.1:{port}/api/kernels/{id}/channels?session_id=interop&token={jtok}"
        );
        let mut ws = ws_connect(&url, false, None).await.unwrap();
        let (out, result, status) = execute(&mut ws, false, code).await;
        assert_eq!(
            (out.as_str(), result.as_str(), status.as_str()),
            ("via gateway\n", want, "ok"),
            "{name}"
        );
        let (s, _) = http(
            "DELETE",
            &format!("{jbase}/api/kernels/{id}"),
            Some(&auth),
            None,
            &[],
        )
        .await;
        assert_eq!(s, 204);
    }
    h.stop().await;
}
