//! The JSON the web view reads and the actions it posts, under `/api/`. Reads of one item or
//! of learned items, advice, forgetting and corrections are the MCP tools' own handlers;
//! paging through episodes and the learning curve are the view's.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use memory_core::{
    EpisodeFilter, EpisodeQuery, EpisodeStatus, FailureLesson, Heuristic, Pattern, TaskType,
};
use rmcp::model::JsonObject;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::WebState;
use crate::error::ToolFailure;
use crate::params::StatusFilter;
use crate::server::MemoryServer;

/// The furthest a page of episodes may start.
pub(crate) const MAX_EPISODE_OFFSET: u32 = 1_000_000;

/// The HTTP status of a failed call of this kind.
fn status_of(kind: &str) -> StatusCode {
    match kind {
        "invalid_arguments" | "invalid_input" | "limit_exceeded" => StatusCode::BAD_REQUEST,
        "not_found" => StatusCode::NOT_FOUND,
        "conflict" => StatusCode::CONFLICT,
        "namespace_not_allowed" => StatusCode::FORBIDDEN,
        "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        "unavailable" | "shutdown" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A call's answer: its JSON, or the tool error's JSON with the status of its kind.
fn answer(result: Result<Value, ToolFailure>) -> Response {
    let (status, body) = match result {
        Ok(value) => (StatusCode::OK, value),
        Err(failure) => (status_of(failure.kind), failure.to_json()),
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Tool arguments from named values, leaving out the absent ones.
fn args<const N: usize>(pairs: [(&str, Option<Value>); N]) -> JsonObject {
    pairs
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect()
}

fn text(v: Option<String>) -> Option<Value> {
    v.filter(|s| !s.trim().is_empty()).map(Value::String)
}

/// A query value named like one of the tools' enums (`success`, `debugging`, ...).
fn named<T: DeserializeOwned>(field: &str, v: Option<&str>) -> Result<Option<T>, ToolFailure> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => serde_json::from_value(Value::String(s.to_owned()))
            .map(Some)
            .map_err(|e| ToolFailure::arguments(field, e)),
    }
}

/// `?namespace=`.
#[derive(Debug, Deserialize)]
pub(super) struct NamespaceQuery {
    namespace: Option<String>,
}

/// The namespaces the server may serve, its default first.
pub(super) async fn session(State(s): State<WebState>) -> Response {
    let server = &s.server;
    answer(
        server
            .run_guarded("web_session", async {
                let namespaces = server.namespaces_served().await?;
                Ok(json!({
                    "default_namespace": namespaces.first(),
                    "namespaces": namespaces,
                    "version": env!("CARGO_PKG_VERSION"),
                }))
            })
            .await,
    )
}

/// The `stats` tool.
pub(super) async fn stats(State(s): State<WebState>, Query(q): Query<NamespaceQuery>) -> Response {
    let a = args([("namespace", text(q.namespace))]);
    answer(s.server.run_tool("stats", Some(a)).await)
}

/// `?q=&status=&domain=&language=&task_type=&limit=&offset=&namespace=`.
#[derive(Debug, Deserialize)]
pub(super) struct EpisodesQuery {
    namespace: Option<String>,
    /// Words to search for; without them, the newest episodes.
    q: Option<String>,
    status: Option<String>,
    domain: Option<String>,
    language: Option<String>,
    task_type: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

/// A page of episodes: found by `q` (best first) or the newest, filtered; `more` says whether
/// another page follows.
pub(super) async fn episodes(
    State(s): State<WebState>,
    Query(q): Query<EpisodesQuery>,
) -> Response {
    let server = &s.server;
    answer(
        server
            .run_guarded("web_episodes", page_of_episodes(server, q))
            .await,
    )
}

async fn page_of_episodes(server: &MemoryServer, q: EpisodesQuery) -> Result<Value, ToolFailure> {
    let limit = server.limit("limit", q.limit, 25)?;
    let offset = q.offset.unwrap_or(0);
    if offset > MAX_EPISODE_OFFSET {
        return Err(memory_core::Error::LimitExceeded {
            field: "offset",
            limit: u64::from(MAX_EPISODE_OFFSET),
            actual: u64::from(offset),
        }
        .into());
    }
    let status: Option<StatusFilter> = named("status", q.status.as_deref())?;
    let task_type: Option<TaskType> = named("task_type", q.task_type.as_deref())?;
    if let Some(words) = q.q.filter(|w| !w.trim().is_empty()) {
        // Search answers best first with no offset: the hits up to the end of this page.
        let wanted = (offset + limit + 1).min(server.limits().max_results as u32);
        let a = args([
            ("query", Some(Value::String(words))),
            ("status", text(q.status)),
            ("domain", text(q.domain)),
            ("language", text(q.language)),
            ("task_type", text(q.task_type)),
            ("limit", Some(json!(wanted))),
            ("namespace", text(q.namespace)),
        ]);
        let found = server.dispatch("search_episodes", Some(a)).await?;
        let results = found["results"].as_array().cloned().unwrap_or_default();
        let more = results.len() > (offset + limit) as usize;
        let page: Vec<Value> = results
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect();
        return Ok(json!({ "namespace": found["namespace"], "episodes": page,
            "offset": offset, "limit": limit, "more": more }));
    }
    let ns = server.namespace(q.namespace.as_deref())?;
    let limits = server.limits();
    for (field, v) in [("domain", &q.domain), ("language", &q.language)] {
        crate::server::check_label(field, v.as_deref(), limits)?;
    }
    let query = EpisodeQuery {
        filter: EpisodeFilter {
            task_type,
            domain: q
                .domain
                .filter(|d| !d.is_empty())
                .map(|d| d.trim().to_lowercase()),
            language: q
                .language
                .filter(|l| !l.is_empty())
                .map(|l| l.trim().to_lowercase()),
            status: status.map(EpisodeStatus::from),
            ..EpisodeFilter::default()
        },
        limit: limit + 1,
        offset,
    };
    let mut found = server.memory().list_episodes(&ns, &query).await?;
    let more = found.len() > limit as usize;
    found.truncate(limit as usize);
    let page: Vec<Value> = found.iter().map(|e| json!({ "episode": e })).collect();
    Ok(json!({ "namespace": ns, "episodes": page, "offset": offset, "limit": limit, "more": more }))
}

/// The `show_episode` tool.
pub(super) async fn episode(
    State(s): State<WebState>,
    Path(id): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Response {
    let a = args([
        ("episode_id", Some(Value::String(id))),
        ("namespace", text(q.namespace)),
    ]);
    answer(s.server.run_tool("show_episode", Some(a)).await)
}

/// `?kind=patterns|heuristics|lessons&include_inactive=&limit=&namespace=`.
#[derive(Debug, Deserialize)]
pub(super) struct LearnedQuery {
    namespace: Option<String>,
    kind: Option<String>,
    include_inactive: Option<bool>,
    limit: Option<u32>,
}

/// The `list_learned` tool.
pub(super) async fn learned(State(s): State<WebState>, Query(q): Query<LearnedQuery>) -> Response {
    let a = args([
        (
            "kind",
            Some(Value::String(q.kind.unwrap_or_else(|| "patterns".into()))),
        ),
        ("include_inactive", q.include_inactive.map(Value::Bool)),
        ("limit", q.limit.map(|l| json!(l))),
        ("namespace", text(q.namespace)),
    ]);
    answer(s.server.run_tool("list_learned", Some(a)).await)
}

/// The learning curve ([`super::curve`]).
pub(super) async fn curve(State(s): State<WebState>, Query(q): Query<NamespaceQuery>) -> Response {
    let server = &s.server;
    let work = super::curve::learning_curve(server, q.namespace.as_deref());
    answer(server.run_guarded("web_curve", work).await)
}

/// The `recommend` tool, with the body as its arguments; each learned item of the answer also
/// gets its `description` in words (as `list_learned` gives it), for the page to show.
pub(super) async fn recommend(State(s): State<WebState>, Json(a): Json<JsonObject>) -> Response {
    let mut answered = s.server.run_tool("recommend", Some(a)).await;
    if let Ok(value) = &mut answered {
        describe_advice(&mut value["recommendation"]);
    }
    answer(answered)
}

/// Adds `description` to each pattern, heuristic and pitfall of a recommendation.
fn describe_advice(rec: &mut Value) {
    fn each(list: &mut Value, describe: impl Fn(&Value) -> Option<String>) {
        for advice in list.as_array_mut().into_iter().flatten() {
            if let Some(text) = describe(&advice["item"]) {
                advice["description"] = Value::String(text);
            }
        }
    }
    fn read<T: DeserializeOwned>(v: &Value) -> Option<T> {
        T::deserialize(v).ok()
    }
    each(&mut rec["patterns"], |v| {
        read::<Pattern>(v).map(|p| p.describe())
    });
    each(&mut rec["heuristics"], |v| {
        read::<Heuristic>(v).map(|h| h.describe())
    });
    each(&mut rec["pitfalls"], |v| {
        read::<FailureLesson>(v).map(|l| l.text())
    });
}

/// The `forget_episode` tool, with the body as its arguments.
pub(super) async fn forget(State(s): State<WebState>, Json(a): Json<JsonObject>) -> Response {
    answer(s.server.run_tool("forget_episode", Some(a)).await)
}

/// The `correct_learned` tool, with the body as its arguments.
pub(super) async fn correct(State(s): State<WebState>, Json(a): Json<JsonObject>) -> Response {
    answer(s.server.run_tool("correct_learned", Some(a)).await)
}
