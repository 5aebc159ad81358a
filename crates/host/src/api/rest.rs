//! REST handlers, shaped like Jupyter Server's `/api/kernels` and `/api/kernelspecs`.

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::ApiError;
use crate::kernel::Control;
use crate::provision::LaunchSpec;
use crate::registry::{self, StartError};
use crate::HostShared;

type Shared = State<Arc<HostShared>>;

/// `GET /api`, with the sandbox status: what protects kernels from one another here.
pub async fn api_version(State(host): Shared) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "kernelgate": true,
        "sandbox": sandbox_status(&host),
    }))
}

fn sandbox_status(host: &HostShared) -> Value {
    host.config
        .provision
        .hook
        .as_ref()
        .map_or_else(|| json!({ "mode": "off" }), |h| h.describe())
}

/// `GET /`: a pointer to the API.
pub async fn root() -> Json<Value> {
    Json(json!({ "kernelgate": env!("CARGO_PKG_VERSION"), "api": "/api" }))
}

/// `GET /api/status`.
pub async fn status(State(host): Shared) -> Json<Value> {
    let kernels = host.registry.list();
    let last = kernels
        .iter()
        .map(|k| k.last_activity())
        .max()
        .unwrap_or_else(chrono::Utc::now);
    Json(json!({
        "kernels": kernels.len(),
        "connections": kernels.iter().map(|k| k.connections()).sum::<usize>(),
        "last_activity": last.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "started": true,
        "sandbox": sandbox_status(&host),
        // Not in Jupyter Server's model: what the host turned away, by kind.
        "refused": {
            "requests": host.refusals.to_json(),
            "messages": crate::refusals::messages_json(kernels.iter().map(|k| k.rejections())),
        },
    }))
}

fn resources(name: &str, spec: &LaunchSpec) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(dir) = &spec.resource_dir else {
        return out;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let stem = file.rsplit_once('.').map(|(s, _)| s).unwrap_or(&file);
        let wanted = stem.starts_with("logo-") || file == "kernel.js" || file == "kernel.css";
        if wanted && is_safe_resource(&file) {
            let key = if stem.starts_with("logo-") {
                stem.to_owned()
            } else {
                file.clone()
            };
            out.insert(key, format!("/kernelspecs/{name}/{file}").into());
        }
    }
    out
}

fn spec_model(name: &str, spec: &LaunchSpec) -> Value {
    json!({
        "name": name,
        "spec": serde_json::to_value(&spec.spec).unwrap_or_else(|_| json!({})),
        "resources": resources(name, spec),
    })
}

/// `GET /api/kernelspecs`.
pub async fn kernelspecs(State(host): Shared) -> Json<Value> {
    let specs: Map<String, Value> = host
        .config
        .specs
        .iter()
        .map(|(n, s)| (n.clone(), spec_model(n, s)))
        .collect();
    Json(json!({ "default": host.config.default_kernel, "kernelspecs": specs }))
}

/// `GET /api/kernelspecs/{name}`.
pub async fn kernelspec(
    State(host): Shared,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let spec = host
        .config
        .specs
        .get(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such kernelspec"))?;
    Ok(Json(spec_model(&name, spec)))
}

fn is_safe_resource(file: &str) -> bool {
    !file.is_empty()
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// `GET /kernelspecs/{name}/{resource}`: files in the kernelspec's directory (logos, kernel.js).
pub async fn kernelspec_resource(
    State(host): Shared,
    UrlPath((name, file)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no such kernelspec resource");
    let spec = host.config.specs.get(&name).ok_or_else(not_found)?;
    let dir = spec.resource_dir.as_ref().ok_or_else(not_found)?;
    if !is_safe_resource(&file) || file == "kernel.json" {
        return Err(not_found());
    }
    let path = dir.join(&file);
    // The file must really be inside the directory (no symlink escape).
    let (Ok(real), Ok(root)) = (path.canonicalize(), dir.canonicalize()) else {
        return Err(not_found());
    };
    if !real.starts_with(&root) {
        return Err(not_found());
    }
    let bytes = tokio::fs::read(&real).await.map_err(|_| not_found())?;
    Ok(([(header::CONTENT_TYPE, content_type(&real))], bytes).into_response())
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()) {
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("js") => "application/javascript",
        Some("css") => "text/css",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// `GET /api/kernels`.
pub async fn list_kernels(State(host): Shared) -> Json<Value> {
    Json(Value::Array(
        host.registry.list().iter().map(|k| k.model()).collect(),
    ))
}

/// `POST /api/kernels` with an optional `{"name": ...}`: 201 with the model once the kernel is
/// ready (or dead, or after `post_wait`).
pub async fn start_kernel(State(host): Shared, body: Bytes) -> Result<Response, ApiError> {
    let name = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}"))
        })?;
        match v.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "name must be a string",
                ))
            }
        }
    };
    let name = name.filter(|n| !n.is_empty());
    let k = registry::start_kernel(&host, name.as_deref()).map_err(|e| match e {
        StartError::NoSuchSpec(n) => ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no such kernelspec: {}",
                n.chars().take(64).collect::<String>()
            ),
        ),
    })?;
    k.wait_settled(host.config.post_wait).await;
    let location = format!("/api/kernels/{}", k.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(k.model()),
    )
        .into_response())
}

fn find(host: &HostShared, id: &str) -> Result<Arc<crate::kernel::ManagedKernel>, ApiError> {
    host.registry
        .get(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such kernel"))
}

/// `GET /api/kernels/{id}`.
pub async fn get_kernel(
    State(host): Shared,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(find(&host, &id)?.model()))
}

/// `DELETE /api/kernels/{id}`: 204 once the process is gone.
pub async fn delete_kernel(
    State(host): Shared,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    find(&host, &id)?;
    registry::shutdown_kernel(&host, &id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/kernels/{id}/interrupt`: 204.
pub async fn interrupt_kernel(
    State(host): Shared,
    UrlPath(id): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let k = find(&host, &id)?;
    // A supervisor busy launching reads its commands only afterwards: bounded like restart.
    let interrupted = tokio::time::timeout(host.config.post_wait, async {
        let (tx, rx) = oneshot::channel();
        k.control(Control::Interrupt(tx))
            .await
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
        rx.await
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "interrupt failed"))
    })
    .await
    .map_err(|_| {
        tracing::warn!(kernel = %id, "interrupt not handled in time");
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "interrupt not handled in time")
    })??;
    match interrupted {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("interrupt failed: {e}"),
        )),
    }
}

/// `POST /api/kernels/{id}/restart`: 200 with the model once the new process is ready.
pub async fn restart_kernel(
    State(host): Shared,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let k = find(&host, &id)?;
    let (tx, rx) = oneshot::channel();
    // Asking and waiting share one deadline: the supervisor's queue may be full while it
    // launches.
    let restarted = async {
        k.control(Control::Restart(tx))
            .await
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
        Ok::<_, ApiError>(rx.await)
    };
    match tokio::time::timeout(host.config.post_wait, restarted).await {
        Ok(Err(e)) => Err(e),
        Ok(Ok(Ok(Ok(())))) => Ok(Json(k.model())),
        Ok(Ok(Ok(Err(e)))) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Ok(Ok(Err(_))) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "restart failed",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "kernel did not become ready in time",
        )),
    }
}
