//! Who may use the web view and how each request is checked: the `Host` header, the bearer
//! token or a session cookie, and the CSRF value of state-changing requests (see the module
//! docs of [`crate::web`]).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::json;

use super::WebState;
use crate::http::same;

/// The session cookie's name.
const COOKIE: &str = "memory_session";

/// The header carrying the page's CSRF value.
pub(crate) const CSRF_HEADER: &str = "x-memory-csrf";

/// Browser sessions kept at once; the oldest is forgotten first (its browser opens
/// `/?token=` again).
const MAX_SESSIONS: usize = 1_000;

/// The web view's access rules, for one server process.
#[derive(Debug)]
pub(crate) struct WebAccess {
    token: Option<String>,
    /// Host names (with or without a port) the `Host` header may name.
    hosts: Vec<String>,
    /// This process's CSRF value, put in the page.
    csrf: String,
    /// Session ids given to browsers that opened `/?token=`, oldest first.
    sessions: Mutex<VecDeque<String>>,
}

/// 256 random bits as hex, from the thread's cryptographically secure generator.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    let mut hex = String::with_capacity(64);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

impl WebAccess {
    /// Rules for a server with this token (if any) answering to these host names.
    pub(crate) fn new(token: Option<&str>, hosts: Vec<String>) -> Self {
        WebAccess {
            token: token.filter(|t| !t.is_empty()).map(str::to_owned),
            hosts,
            csrf: random_hex(),
            sessions: Mutex::new(VecDeque::new()),
        }
    }

    /// The CSRF value the page sends back with every action.
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }

    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        host_allowed(&self.hosts, headers)
    }

    /// Whether the request carries the token or a live session (always, without a token).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|b| same(b.as_bytes(), token.as_bytes())) {
            return true;
        }
        let Some(session) = cookie(headers, COOKIE) else {
            return false;
        };
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .iter()
            .any(|s| same(session.as_bytes(), s.as_bytes()))
    }

    /// A new session for a browser that showed the token.
    fn open_session(&self) -> String {
        let id = random_hex();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.len() >= MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(id.clone());
        id
    }

    /// Whether a state-changing request comes from the view's own page.
    fn same_site(&self, headers: &HeaderMap) -> bool {
        let csrf = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same(csrf.as_bytes(), self.csrf.as_bytes()) {
            return false;
        }
        let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        if fetch_site.is_some_and(|s| s != "same-origin") {
            return false;
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        match headers.get(header::ORIGIN).map(HeaderValue::to_str) {
            None => true,
            Some(Ok(origin)) => {
                let origin_host = origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"));
                origin_host.is_some() && origin_host == host
            }
            Some(Err(_)) => false,
        }
    }
}

/// Whether the request's `Host` header names one of `hosts` (with or without its port).
pub(crate) fn host_allowed(hosts: &[String], headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = host_name(host);
    hosts.iter().any(|h| h == host || h == name)
}

/// The host name of a `Host` header value (`name`, `name:port`, `[v6]` or `[v6]:port`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The value of the cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The token of a `/?token=` query, when the request is one.
fn token_in_query(request: &Request) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(request.uri().query()?).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

fn refused(status: StatusCode, message: &str, api: bool) -> Response {
    let mut response = if api {
        let kind = if status == StatusCode::UNAUTHORIZED {
            "unauthorized"
        } else {
            "forbidden"
        };
        (
            status,
            axum::Json(json!({ "error": { "kind": kind, "message": message } })),
        )
            .into_response()
    } else {
        (status, format!("{message}\n")).into_response()
    };
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Checks every request to the view (see [`crate::web`]) and sets the headers that keep its
/// pages from being framed, sniffed or leaking their address.
pub(crate) async fn guard(State(s): State<WebState>, request: Request, next: Next) -> Response {
    let access = &s.access;
    let api = request.uri().path().starts_with("/api/");
    if !access.host_allowed(request.headers()) {
        return refused(
            StatusCode::FORBIDDEN,
            "this Host is not served: open the address `memory serve` printed, or start it with --allow-host",
            api,
        );
    }
    if request.uri().path() == "/"
        && let Some(given) = token_in_query(&request)
    {
        let valid = access
            .token
            .as_ref()
            .is_some_and(|t| same(given.as_bytes(), t.as_bytes()));
        if !valid {
            return refused(
                StatusCode::UNAUTHORIZED,
                "the token is not this server's",
                api,
            );
        }
        let session = access.open_session();
        let cookie = format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict");
        let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return response;
    }
    if !access.authorized(request.headers()) {
        return refused(
            StatusCode::UNAUTHORIZED,
            "this server needs its token: open /?token=<MEMORY_SERVE_TOKEN> once",
            api,
        );
    }
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads && !access.same_site(request.headers()) {
        return refused(
            StatusCode::FORBIDDEN,
            "a cross-site request: actions come from the view's own page only",
            api,
        );
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                *k,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    #[test]
    fn hosts_are_matched_with_or_without_their_port() {
        let access = WebAccess::new(None, vec!["127.0.0.1".into(), "[::1]".into()]);
        assert!(access.host_allowed(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(access.host_allowed(&headers(&[("host", "[::1]:80")])));
        assert!(!access.host_allowed(&headers(&[("host", "evil.example:8080")])));
        assert!(!access.host_allowed(&headers(&[("host", "127.0.0.1.evil.example")])));
        assert!(!access.host_allowed(&HeaderMap::new()));
    }

    #[test]
    fn a_session_cookie_or_the_token_authorizes_and_nothing_else_does() {
        let access = WebAccess::new(Some("s3cret"), vec![]);
        assert!(!access.authorized(&HeaderMap::new()));
        assert!(access.authorized(&headers(&[("authorization", "Bearer s3cret")])));
        assert!(!access.authorized(&headers(&[("authorization", "Bearer s3cre")])));
        let session = access.open_session();
        let good = format!("other=1; {COOKIE}={session}");
        assert!(access.authorized(&headers(&[("cookie", &good)])));
        let forged = format!("{COOKIE}={}", random_hex());
        assert!(!access.authorized(&headers(&[("cookie", &forged)])));
        // The token itself is not a session.
        assert!(!access.authorized(&headers(&[("cookie", "memory_session=s3cret")])));
    }

    #[test]
    fn actions_need_the_csrf_value_and_a_same_site_origin() {
        let access = WebAccess::new(None, vec![]);
        let csrf = access.csrf().to_owned();
        let host = ("host", "127.0.0.1:9");
        assert!(access.same_site(&headers(&[host, (CSRF_HEADER, &csrf)])));
        assert!(!access.same_site(&headers(&[host])));
        assert!(!access.same_site(&headers(&[host, (CSRF_HEADER, "guess")])));
        let cross = [
            host,
            (CSRF_HEADER, &csrf),
            ("origin", "http://evil.example"),
        ];
        assert!(!access.same_site(&headers(&cross)));
        let fetched = [host, (CSRF_HEADER, &csrf), ("sec-fetch-site", "cross-site")];
        assert!(!access.same_site(&headers(&fetched)));
        let own = [
            host,
            (CSRF_HEADER, &csrf),
            ("origin", "http://127.0.0.1:9"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert!(access.same_site(&headers(&own)));
    }
}
