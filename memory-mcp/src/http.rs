//! `memory serve`: the MCP tools over streamable HTTP at `/mcp`, with `GET /health` and
//! `GET /metrics`, for many agents sharing one process (its model, index and cache), and the
//! web view at `/` (module `web`).
//!
//! Loopback by default. Any other address needs a bearer token, checked on every request
//! (constant-time compare); TLS is left to a reverse proxy in front. Each MCP session gets its
//! own rate-limit bucket. On `stop` the server stops accepting connections, lets the tool calls
//! in flight finish ([`MemoryServer::drain`]) and closes the sessions.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::error::{Error, Result};
use crate::guarded_listener::{GuardedListener, PeerAddr};
use crate::server::{MemoryServer, PROBE_DEADLINE};
use crate::session_cap::CappedSessions;

/// Settings of the HTTP server.
///
/// # Default
/// | field | default |
/// |---|---|
/// | `token` | none (loopback only) |
/// | `allowed_hosts` | none besides loopback and the listen address |
/// | `health_details` | off |
/// | `max_connections` | 512 |
/// | `max_connections_per_client` | 128 |
/// | `header_timeout` | 10 s |
/// | `body_timeout` | 30 s |
/// | `max_sessions` | 1,000 |
/// | `max_sessions_per_client` | 100 |
#[derive(Clone)]
pub struct HttpConfig {
    /// Bearer token every request must carry (`Authorization: Bearer <token>`). Required when
    /// the server listens on a non-loopback address.
    pub token: Option<String>,
    /// Host names (or `host:port`) clients may use besides the loopback ones and the address
    /// the server listens on (the `Host` header is checked, against DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Whether `GET /health` shows every component to callers without the token (on a
    /// loopback address only). Without it they learn only `ok` or `degraded`.
    pub health_details: bool,
    /// Connections open at once; one more is answered `503` and closed.
    pub max_connections: usize,
    /// Connections open at once from one client address; one more is answered `503` and
    /// closed (one client cannot take every slot).
    pub max_connections_per_client: usize,
    /// How long a new connection may take to send its first request header.
    pub header_timeout: Duration,
    /// How long a request may take to send its body.
    pub body_timeout: Duration,
    /// MCP sessions kept at once; at the cap a new one closes the idlest.
    pub max_sessions: usize,
    /// MCP sessions of one client address; at the cap its new one closes its idlest.
    pub max_sessions_per_client: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            token: None,
            allowed_hosts: Vec::new(),
            health_details: false,
            max_connections: 512,
            max_connections_per_client: 128,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_sessions: 1_000,
            max_sessions_per_client: 100,
        }
    }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("health_details", &self.health_details)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_client",
                &self.max_connections_per_client,
            )
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("max_sessions", &self.max_sessions)
            .field("max_sessions_per_client", &self.max_sessions_per_client)
            .finish()
    }
}

/// Checks that `listen` may be served with `config`: a non-loopback address needs a token,
/// and shows `/health`'s details only to callers with it.
pub fn check_listen(listen: SocketAddr, config: &HttpConfig) -> Result<()> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    if config.token.as_deref().is_none_or(str::is_empty) {
        return Err(Error::Config(format!(
            "{listen} is not a loopback address: set a bearer token (MEMORY_SERVE_TOKEN) so that only your agents can use the memory"
        )));
    }
    if config.health_details {
        return Err(Error::Config(format!(
            "{listen} is not a loopback address: /health shows its details only with the token there (leave out --health-details)"
        )));
    }
    Ok(())
}

#[derive(Clone)]
struct Shared {
    server: MemoryServer,
    token: Option<Arc<str>>,
    /// Host names the `Host` header may name.
    hosts: Arc<[String]>,
    health_details: bool,
}

impl Shared {
    /// Whether the request carries the token (always true without one).
    fn has_token(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        same(given.as_bytes(), token.as_bytes())
    }
}

/// Binds `listen` and serves until `stop` resolves (see the module docs).
pub async fn serve_http(
    server: MemoryServer,
    listen: SocketAddr,
    config: HttpConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    check_listen(listen, &config)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Http(format!("cannot listen on {listen}: {e}")))?;
    serve_http_on(server, listener, config, stop).await
}

/// Serves on an already bound listener (tests bind port 0) until `stop` resolves.
pub async fn serve_http_on(
    server: MemoryServer,
    listener: TcpListener,
    config: HttpConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let local = listener
        .local_addr()
        .map_err(|e| Error::Http(e.to_string()))?;
    check_listen(local, &config)?;
    let sessions = CancellationToken::new();
    let loopback = ["localhost", "127.0.0.1", "::1", "[::1]"].map(String::from);
    let mut mcp_config = StreamableHttpServerConfig::default();
    mcp_config.cancellation_token = sessions.clone();
    mcp_config.allowed_hosts = loopback
        .into_iter()
        .chain([local.ip().to_string(), local.to_string()])
        .chain(config.allowed_hosts.iter().cloned())
        .collect();
    let max_body = mcp_config.max_request_body_bytes;
    let web = crate::web::router(
        &server,
        crate::web::WebAccess::new(config.token.as_deref(), mcp_config.allowed_hosts.clone()),
        (config.body_timeout, max_body),
    );
    let hosts: Arc<[String]> = mcp_config.allowed_hosts.clone().into();
    // Every session shares the server's rate limiter, which keys its buckets by the client's
    // address: a client cannot get a fresh bucket by opening a fresh session.
    let factory_server = server.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(factory_server.clone()),
        Arc::new(CappedSessions::new(
            LocalSessionManager::default(),
            config.max_sessions,
            config.max_sessions_per_client,
        )),
        mcp_config,
    );
    let shared = Shared {
        server: server.clone(),
        token: config.token.as_deref().map(Arc::from),
        hosts,
        health_details: config.health_details,
    };
    let body_timeout = config.body_timeout;
    let mcp = Router::new()
        .fallback_service(mcp)
        .layer(middleware::from_fn(move |request, next| {
            crate::jsonrpc_errors::jsonrpc_errors(max_body, request, next)
        }))
        .layer(middleware::from_fn(move |request, next| {
            crate::body_deadline::body_in_time(body_timeout, max_body, request, next)
        }))
        .layer(middleware::from_fn(session_closed_is_no_content))
        .layer(middleware::from_fn(for_this_client));
    let router = Router::new()
        .nest("/mcp", mcp)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(shared.clone(), authorize))
        .layer(middleware::from_fn_with_state(shared.clone(), check_host))
        .with_state(shared)
        .merge(web);
    let listener = GuardedListener::new(
        listener,
        config.max_connections,
        config.max_connections_per_client,
        config.header_timeout,
    );
    info!(address = %local, token = config.token.is_some(), "memory serve: MCP over streamable HTTP at /mcp, the web view at /");
    let drain = server.clone();
    let stopping = async move {
        stop.await;
        drain.stop_taking_calls().await;
        sessions.cancel();
    };
    let router = router.into_make_service_with_connect_info::<PeerAddr>();
    axum::serve(listener, router)
        .with_graceful_shutdown(stopping)
        .await
        .map_err(|e| Error::Http(e.to_string()))?;
    Ok(())
}

/// Serves the request with its client's address known to the session cap
/// ([`crate::session_cap::CLIENT`]).
async fn for_this_client(request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0.ip());
    match peer {
        Some(ip) => {
            crate::session_cap::CLIENT
                .scope(ip, next.run(request))
                .await
        }
        None => next.run(request).await,
    }
}

/// A closed session answers `204 No Content`. rmcp's transport answers a session `DELETE` with
/// `202 Accepted`, which MCP clients (the official Python SDK among them) take for a failure
/// and log; the session is closed by then, so nothing is pending to be accepted.
async fn session_closed_is_no_content(request: Request, next: Next) -> Response {
    let deleting = request.method() == axum::http::Method::DELETE;
    let mut response = next.run(request).await;
    if deleting && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
        *response.body_mut() = axum::body::Body::empty();
    }
    response
}

/// Refuses a request whose `Host` header names no host of this server (against DNS
/// rebinding: a page elsewhere must not read `/health` or `/metrics` through a name that
/// resolves to loopback). `/mcp` is checked by rmcp's transport as well.
async fn check_host(State(s): State<Shared>, request: Request, next: Next) -> Response {
    if !crate::web::host_allowed(&s.hosts, request.headers()) {
        return (
            StatusCode::FORBIDDEN,
            "this Host is not served: use the address `memory serve` printed, or start it with --allow-host\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// Rejects requests without the bearer token, when one is configured; `/health` answers
/// anyone (with only `ok` or `degraded` to callers without the token).
async fn authorize(State(s): State<Shared>, request: Request, next: Next) -> Response {
    if request.uri().path() != "/health" && !s.has_token(request.headers()) {
        let mut response =
            (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

/// Compares in time that depends on the lengths only.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in b.iter().enumerate() {
        diff |= x ^ a.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// `{"status": "ok"}` (200) or `{"status": "degraded"}` (503); every component's report too
/// for a caller with the token, or for anyone on loopback with `health_details`.
async fn health(State(s): State<Shared>, headers: axum::http::HeaderMap) -> Response {
    // A probe gets its answer in time whatever the database does (a hung server included).
    let mut report = match tokio::time::timeout(PROBE_DEADLINE, s.server.health_report()).await {
        Ok(report) => report,
        Err(_) => serde_json::json!({
            "healthy": false,
            "components": [{
                "component": "durable",
                "status": "down",
                "detail": format!("no answer within {} ms", PROBE_DEADLINE.as_millis()),
            }],
        }),
    };
    let healthy = report["healthy"] == serde_json::Value::Bool(true);
    let (status, word) = if healthy {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    };
    let details = if s.token.is_some() {
        s.has_token(&headers)
    } else {
        s.health_details
    };
    if !details {
        report = serde_json::json!({ "status": word });
    } else if let Some(map) = report.as_object_mut() {
        map.insert("status".into(), word.into());
    }
    (status, axum::Json(report)).into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    let text = s.server.metrics_text().await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_public_address_needs_a_token() {
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(check_listen(public, &HttpConfig::default()).is_err());
        assert!(check_listen(local, &HttpConfig::default()).is_ok());
        let with = HttpConfig {
            token: Some("secret".into()),
            ..HttpConfig::default()
        };
        assert!(check_listen(public, &with).is_ok());
        let empty = HttpConfig {
            token: Some(String::new()),
            ..HttpConfig::default()
        };
        assert!(check_listen(public, &empty).is_err());
    }

    #[test]
    fn token_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abd", b"abc"));
        assert!(!same(b"ab", b"abc"));
        assert!(!same(b"abcd", b"abc"));
        assert!(!same(b"", b"abc"));
    }
}
