//! The web view of `memory serve` at `/`: a page (its HTML, script and style compiled into the
//! binary) and the JSON reads and actions it calls under `/api/`.
//!
//! Every route of the view is guarded by [`guard`](access::guard):
//! - **Host**: the `Host` header must name the server (a loopback name, the address it listens
//!   on, or an `--allow-host`), against DNS rebinding.
//! - **Token**: when the server has a bearer token, a request carries it (`Authorization:
//!   Bearer`), or the session cookie a browser got by opening `/?token=<token>` once (then
//!   redirected to `/`, so the token leaves the address bar). The cookie is `HttpOnly` and
//!   `SameSite=Strict`, and holds a random session id, not the token.
//! - **Cross-site requests**: the actions (forget, retract, pin, advise) are `POST`s that must
//!   carry the page's per-process CSRF value in `x-memory-csrf`, and whose `Origin` and
//!   `Sec-Fetch-Site`, when the browser sends them, say the same site. A cross-site form or
//!   script can send neither the header nor (under `SameSite=Strict`) the cookie.
//!
//! The actions run as the MCP tools do (the same limits, rate limit, metrics and errors): a
//! failed one answers with the tool error's JSON and an HTTP status for its kind.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::server::MemoryServer;

mod access;
mod api;
mod curve;

pub(crate) use access::{WebAccess, host_allowed};

/// The page, its script and its style, compiled into the binary (no network, no CDN).
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What every handler of the view shares.
#[derive(Clone)]
pub(crate) struct WebState {
    /// The server, with a rate-limit bucket of the view's own.
    pub server: MemoryServer,
    /// Who may use the view, and how requests are checked.
    pub access: Arc<WebAccess>,
}

/// The view's routes, each behind the [`access::guard`]; a body is read whole within
/// `body_timeout` (at most `max_body` bytes) once the guard let the request in.
pub(crate) fn router(
    server: &MemoryServer,
    access: WebAccess,
    (body_timeout, max_body): (std::time::Duration, usize),
) -> Router {
    let state = WebState {
        server: server.for_client(),
        access: Arc::new(access),
    };
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(script))
        .route("/assets/app.css", get(style))
        .route("/api/session", get(api::session))
        .route("/api/stats", get(api::stats))
        .route("/api/episodes", get(api::episodes))
        .route("/api/episodes/{id}", get(api::episode))
        .route("/api/learned", get(api::learned))
        .route("/api/curve", get(api::curve))
        .route("/api/recommend", post(api::recommend))
        .route("/api/forget", post(api::forget))
        .route("/api/correct", post(api::correct))
        .layer(middleware::from_fn(move |request, next| {
            crate::body_deadline::body_in_time(body_timeout, max_body, request, next)
        }))
        .layer(middleware::from_fn_with_state(state.clone(), access::guard))
        .with_state(state)
}

/// The page, with this process's CSRF value in a `<meta>` tag for the script to send back.
async fn index(axum::extract::State(s): axum::extract::State<WebState>) -> Response {
    let page = INDEX_HTML.replace("{{csrf}}", s.access.csrf());
    let mut response = Html(page).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
