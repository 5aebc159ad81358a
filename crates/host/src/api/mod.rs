//! The HTTP API: routes, the auth + Origin middleware, JSON errors.

pub mod first_request;
pub mod listen;
pub mod rest;
pub mod ws;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use serde_json::json;

use crate::auth::{self, AuthOutcome};
use crate::refusals::HttpRefusal;
use crate::HostShared;
use listen::CappedAcceptor;

/// A JSON error like Jupyter Server's: `{"message": ..., "reason": ...}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message (never contains secrets).
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        (
            self.status,
            Json(json!({ "message": self.message, "reason": reason })),
        )
            .into_response()
    }
}

/// The whole API, behind the token and Origin checks.
pub fn router(host: Arc<HostShared>) -> Router {
    Router::new()
        .route("/api", get(rest::api_version))
        .route("/api/", get(rest::api_version))
        .route("/api/status", get(rest::status))
        .route("/api/kernelspecs", get(rest::kernelspecs))
        .route("/api/kernelspecs/{name}", get(rest::kernelspec))
        .route(
            "/kernelspecs/{name}/{resource}",
            get(rest::kernelspec_resource),
        )
        .route(
            "/api/kernels",
            get(rest::list_kernels).post(rest::start_kernel),
        )
        .route(
            "/api/kernels/{id}",
            get(rest::get_kernel).delete(rest::delete_kernel),
        )
        .route("/api/kernels/{id}/interrupt", post(rest::interrupt_kernel))
        .route("/api/kernels/{id}/restart", post(rest::restart_kernel))
        .route("/api/kernels/{id}/channels", get(ws::channels))
        .route("/", get(rest::root))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn_with_state(host.clone(), guard))
        .with_state(host)
}

/// The TLS server of `kernelgate serve --certfile/--keyfile` on `listener` (rustls with the ring
/// provider; a PEM certificate chain and private key), its connections capped by `acceptor`
/// before their handshake (which rustls gives 10 s). Serve with `.handle(..).serve(make_service)`.
pub async fn tls_server(
    listener: std::net::TcpListener,
    certfile: &std::path::Path,
    keyfile: &std::path::Path,
    acceptor: CappedAcceptor,
    header_read_timeout: std::time::Duration,
) -> std::io::Result<
    axum_server::Server<first_request::FirstRequestDeadline<RustlsAcceptor<CappedAcceptor>>>,
> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = RustlsConfig::from_pem_file(certfile, keyfile).await?;
    // Offer only HTTP/1.1 in ALPN, as the server speaks nothing else (see `listen::server`).
    let mut config = (*tls.get_inner()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tls.reload_from_config(std::sync::Arc::new(config));
    listen::server(
        listener,
        RustlsAcceptor::new(tls).acceptor(acceptor),
        header_read_timeout,
    )
}

/// Every route: the Origin must be allowed, and the token right. Nothing about the token is
/// logged; refusals are counted and logged by kind only (a path may hold a pasted token).
async fn guard(State(host): State<Arc<HostShared>>, req: Request, next: Next) -> Response {
    let headers: &HeaderMap = req.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host_header = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !host.config.origins.allows(origin, host_header) {
        host.refusals.record(HttpRefusal::BadOrigin);
        return ApiError::new(StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth::check(&host.token, authz, req.uri().query()) {
        AuthOutcome::Ok => next.run(req).await,
        AuthOutcome::Missing => {
            host.refusals.record(HttpRefusal::NoToken);
            ApiError::new(StatusCode::UNAUTHORIZED, "token required").into_response()
        }
        AuthOutcome::Wrong => {
            host.refusals.record(HttpRefusal::WrongToken);
            ApiError::new(StatusCode::FORBIDDEN, "invalid token").into_response()
        }
    }
}
