//! JSON-RPC's own errors for what `POST /mcp` cannot take, answered before rmcp's transport
//! sees the body: `-32700` for a body that is not JSON, `-32600` for JSON that is not one
//! JSON-RPC message (a batch, or no method), `-32602` for a `tools/call` whose parameters are
//! not a tool name with an object of arguments. (rmcp answers the first two with HTTP 415, and
//! takes the third for an unknown method, -32601.) Each is HTTP 400 with the JSON-RPC error as
//! its body, the request's id echoed when it has one.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::ClientJsonRpcMessage;
use serde_json::{Value, json};

/// JSON-RPC's code for a body that is not JSON.
pub(crate) const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's code for JSON that is not a request.
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC's code for parameters a method cannot take.
pub(crate) const INVALID_PARAMS: i64 = -32602;

/// What is wrong with a body, if anything: the code, the message and the id to echo.
fn check(body: &[u8]) -> Option<(i64, String, Value)> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Some((PARSE_ERROR, format!("Parse error: {e}"), Value::Null)),
    };
    let Some(object) = value.as_object() else {
        let what = if value.is_array() {
            "batches are not supported: send one message per request"
        } else {
            "a JSON-RPC message is an object"
        };
        return Some((
            INVALID_REQUEST,
            format!("Invalid Request: {what}"),
            Value::Null,
        ));
    };
    let id = object.get("id").cloned().unwrap_or(Value::Null);
    if object.get("method").and_then(Value::as_str) == Some("tools/call") {
        let params = object.get("params");
        let name = params.and_then(|p| p.get("name")).and_then(Value::as_str);
        let arguments = params.and_then(|p| p.get("arguments"));
        if name.is_none() {
            return Some((
                INVALID_PARAMS,
                "Invalid params: tools/call needs `params.name`, the tool's name".into(),
                id,
            ));
        }
        if arguments.is_some_and(|a| !a.is_object() && !a.is_null()) {
            return Some((
                INVALID_PARAMS,
                "Invalid params: `params.arguments` must be an object of the tool's arguments"
                    .into(),
                id,
            ));
        }
    }
    if serde_json::from_value::<ClientJsonRpcMessage>(value).is_err() {
        return Some((
            INVALID_REQUEST,
            "Invalid Request: not a JSON-RPC 2.0 request, notification or response".into(),
            id,
        ));
    }
    None
}

fn refusal(code: i64, message: &str, id: &Value) -> Response {
    let body = json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// Answers a `POST` whose body JSON-RPC cannot take (see the module docs); passes every other
/// request on with its body as read. A body over `max_bytes` is refused with 413, as rmcp does.
pub(crate) async fn jsonrpc_errors(max_bytes: usize, request: Request, next: Next) -> Response {
    let json_post = request.method() == Method::POST
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let essence = v.split_once(';').map_or(v, |(e, _)| e);
                essence.trim().eq_ignore_ascii_case("application/json")
            });
    if !json_post {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, max_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Payload Too Large: request body exceeds {max_bytes} bytes"),
            )
                .into_response();
        }
    };
    if let Some((code, message, id)) = check(&bytes) {
        return refusal(code, &message, &id);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> Option<(i64, Value)> {
        check(body.as_bytes()).map(|(c, _, id)| (c, id))
    }

    #[test]
    fn each_kind_of_bad_body_gets_its_code() {
        assert_eq!(code("{not json"), Some((PARSE_ERROR, Value::Null)));
        assert_eq!(code(""), Some((PARSE_ERROR, Value::Null)));
        assert_eq!(code("[]"), Some((INVALID_REQUEST, Value::Null)));
        assert_eq!(code("42"), Some((INVALID_REQUEST, Value::Null)));
        assert_eq!(
            code(
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"stats","arguments":"x"}}"#
            ),
            Some((INVALID_PARAMS, json!(7)))
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"arguments":{}}}"#),
            Some((INVALID_PARAMS, json!("a")))
        );
        assert_eq!(
            code(r#"{"id":1,"params":{}}"#),
            Some((INVALID_REQUEST, json!(1)))
        );
    }

    #[test]
    fn good_messages_pass() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"stats","arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"stats"}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":4,"method":"no/such/method"}"#,
        ] {
            assert_eq!(code(body), None, "{body}");
        }
    }
}
