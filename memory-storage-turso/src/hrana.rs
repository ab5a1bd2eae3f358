//! One Hrana batch per HTTP request, for the calls of remote mode that must not pay a round
//! trip per statement.
//!
//! libsql's remote client runs each statement of a transaction as its own HTTP request (and
//! describes every statement that returns rows first: two requests), and its batch call takes
//! SQL text without bound values and returns no rows. A completion over sqld therefore cost
//! ~30 requests. The Hrana protocol itself takes a whole batch (statements with their values
//! and conditions on earlier steps) in one pipeline request, so this module sends exactly
//! that: the message types are `libsql-hrana`'s (the crate libsql itself uses); the transport
//! is the same hyper 0.14 client and rustls connector libsql builds, so nothing new is
//! compiled. Written here because no crate offers a parameterized Hrana batch.

use std::sync::Arc;
use std::time::Duration;

use hyper::client::HttpConnector;
use hyper::{Body, Client, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use libsql::Value;
use libsql_hrana::proto::{
    Batch, BatchCond, BatchResult, BatchStep, BatchStreamReq, CloseStreamReq, PipelineReqBody,
    PipelineRespBody, Stmt, StmtResult, StreamRequest, StreamResponse, StreamResult,
};

use crate::error::{DbResult, DriverError, Failure, decode};

/// A statement of a batch: SQL and its positional values.
pub(crate) struct Statement {
    pub(crate) sql: String,
    pub(crate) values: Vec<Value>,
    /// Whether the result's rows are wanted.
    pub(crate) want_rows: bool,
}

impl Statement {
    /// A statement whose rows are not needed.
    pub(crate) fn exec(sql: impl Into<String>, values: Vec<Value>) -> Self {
        Statement {
            sql: sql.into(),
            values,
            want_rows: false,
        }
    }

    /// A statement whose rows are returned.
    pub(crate) fn query(sql: impl Into<String>, values: Vec<Value>) -> Self {
        Statement {
            sql: sql.into(),
            values,
            want_rows: true,
        }
    }
}

/// A batch in the making: steps run in order on one server connection, each only when its
/// condition (on earlier steps) holds.
#[derive(Default)]
pub(crate) struct BatchBuilder {
    steps: Vec<BatchStep>,
}

impl BatchBuilder {
    /// Adds `stmt`, run when `condition` holds (always when `None`); its step index.
    pub(crate) fn step(&mut self, stmt: Statement, condition: Option<BatchCond>) -> u32 {
        let mut proto = Stmt::new(stmt.sql, stmt.want_rows);
        for value in stmt.values {
            proto.bind(to_proto(value));
        }
        self.steps.push(BatchStep {
            condition,
            stmt: proto,
        });
        u32::try_from(self.steps.len() - 1).unwrap_or(u32::MAX)
    }

    /// Adds `stmt`, run only when step `after` succeeded; its step index.
    pub(crate) fn after(&mut self, after: u32, stmt: Statement) -> u32 {
        self.step(stmt, Some(BatchCond::Ok { step: after }))
    }
}

/// The outcome of each step of a batch.
pub(crate) struct Outcome {
    result: BatchResult,
}

impl Outcome {
    /// The error step `step` failed with, if it ran and failed.
    pub(crate) fn error(&self, step: u32) -> Option<&str> {
        self.result
            .step_errors
            .get(step as usize)?
            .as_ref()
            .map(|e| e.message.as_str())
    }

    /// The result of step `step`, when it ran and succeeded.
    fn result(&self, step: u32) -> Option<&StmtResult> {
        self.result.step_results.get(step as usize)?.as_ref()
    }

    /// Whether step `step` ran and succeeded.
    pub(crate) fn succeeded(&self, step: u32) -> bool {
        self.result(step).is_some()
    }

    /// The rows of step `step` as values; an error when it did not run or failed.
    pub(crate) fn rows(&self, step: u32, what: &'static str) -> DbResult<Vec<Vec<Value>>> {
        if let Some(message) = self.error(step) {
            return Err(server_error(message));
        }
        let result = self
            .result(step)
            .ok_or_else(|| decode(what, format!("batch step {step} did not run")))?;
        result
            .rows
            .iter()
            .map(|row| {
                row.values
                    .iter()
                    .cloned()
                    .map(|v| from_proto(v, what))
                    .collect()
            })
            .collect()
    }

    /// The first error of any step, for a batch that should have run whole.
    pub(crate) fn first_error(&self) -> Option<&str> {
        self.result
            .step_errors
            .iter()
            .flatten()
            .map(|e| e.message.as_str())
            .next()
    }
}

/// A client of one server's pipeline endpoint. Cheap to clone (one connection pool).
#[derive(Clone)]
pub(crate) struct HranaClient {
    http: Client<HttpsConnector<HttpConnector>>,
    pipeline_url: Arc<str>,
    authorization: Option<Arc<str>>,
}

impl HranaClient {
    /// A client for the server at `url` (`http://`, `https://` or `libsql://`, which means
    /// https), authenticating with `token` when given.
    pub(crate) fn new(url: &str, token: Option<&str>) -> DbResult<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| setup(format!("TLS roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let base = if let Some(rest) = url.strip_prefix("libsql://") {
            format!("https://{rest}")
        } else if url.contains("://") {
            url.to_owned()
        } else {
            format!("https://{url}")
        };
        let token = token.filter(|t| !t.is_empty());
        Ok(HranaClient {
            http: Client::builder().build(https),
            pipeline_url: Arc::from(format!("{}/v2/pipeline", base.trim_end_matches('/'))),
            authorization: token.map(|t| Arc::from(format!("Bearer {t}"))),
        })
    }

    /// Runs `batch` in one HTTP request on a fresh server stream, closed by the same request.
    pub(crate) async fn batch(&self, batch: BatchBuilder) -> DbResult<Outcome> {
        self.send(batch).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(steps = batch.steps.len()))]
    async fn send(&self, batch: BatchBuilder) -> DbResult<Outcome> {
        let url = Arc::clone(&self.pipeline_url);
        let requests = vec![
            StreamRequest::Batch(BatchStreamReq {
                batch: Batch {
                    steps: batch.steps,
                    replication_index: None,
                },
            }),
            StreamRequest::Close(CloseStreamReq {}),
        ];
        let body = PipelineReqBody {
            baton: None,
            requests,
        };
        let body = serde_json::to_vec(&body).map_err(|e| decode("hrana request", e))?;
        let mut request = Request::post(url.as_ref()).header("content-type", "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header("authorization", auth.as_ref());
        }
        let request = request
            .body(Body::from(body))
            .map_err(|e| setup(format!("request: {e}")))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| http(format!("http error: {e}"), true))?;
        let status = response.status();
        let bytes = hyper::body::to_bytes(response.into_body())
            .await
            .map_err(|e| http(format!("http error: {e}"), true))?;
        if status != StatusCode::OK {
            let transient = matches!(status.as_u16(), 429 | 502 | 503 | 504);
            let text = String::from_utf8_lossy(&bytes);
            return Err(http(format!("status={status}, body={text}"), transient));
        }
        let response: PipelineRespBody =
            serde_json::from_slice(&bytes).map_err(|e| decode("hrana response", e))?;
        match response.results.into_iter().next() {
            Some(StreamResult::Ok {
                response: StreamResponse::Batch(batch),
            }) => Ok(Outcome {
                result: batch.result,
            }),
            Some(StreamResult::Error { error }) => Err(server_error(&error.message)),
            _ => Err(decode("hrana response", "no batch result")),
        }
    }
}

fn setup(message: String) -> Failure {
    Failure::Driver(DriverError::Setup(message))
}

fn http(message: String, transient: bool) -> Failure {
    Failure::Driver(DriverError::Http { message, transient })
}

/// A statement's error as the server reported it (busy and locked are transient, as for
/// libsql's own errors).
pub(crate) fn server_error(message: &str) -> Failure {
    let lower = message.to_lowercase();
    let transient = lower.contains("database is locked") || lower.contains("busy");
    http(format!("server: {message}"), transient)
}

fn to_proto(value: Value) -> libsql_hrana::proto::Value {
    use libsql_hrana::proto::Value as P;
    match value {
        Value::Null => P::Null,
        Value::Integer(value) => P::Integer { value },
        Value::Real(value) => P::Float { value },
        Value::Text(value) => P::Text {
            value: Arc::from(value),
        },
        Value::Blob(value) => P::Blob {
            value: value.into(),
        },
    }
}

fn from_proto(value: libsql_hrana::proto::Value, what: &'static str) -> DbResult<Value> {
    use libsql_hrana::proto::Value as P;
    Ok(match value {
        P::None => return Err(decode(what, "a value without a type")),
        P::Null => Value::Null,
        P::Integer { value } => Value::Integer(value),
        P::Float { value } => Value::Real(value),
        P::Text { value } => Value::Text(value.to_string()),
        P::Blob { value } => Value::Blob(value.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn values_keep_their_type_and_bits() {
        let values = [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Real(0.1 + 0.2),
            Value::Text("a\u{0}b'\"".into()),
            Value::Blob(vec![0, 255, 7]),
        ];
        for v in values {
            let wire = serde_json::to_string(&to_proto(v.clone())).unwrap();
            let back: libsql_hrana::proto::Value = serde_json::from_str(&wire).unwrap();
            assert_eq!(from_proto(back, "test").unwrap(), v, "{wire}");
        }
    }

    #[test]
    fn urls_become_pipeline_endpoints() {
        let url = |u: &str| HranaClient::new(u, None).unwrap().pipeline_url.to_string();
        assert_eq!(
            url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/v2/pipeline"
        );
        assert_eq!(
            url("libsql://db.turso.io/"),
            "https://db.turso.io/v2/pipeline"
        );
        assert_eq!(url("db.turso.io"), "https://db.turso.io/v2/pipeline");
    }
}
