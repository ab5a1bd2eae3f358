//! The deadline for a request's body: read whole (up to a size) within a time, after the
//! request's token and `Host` were checked, before the handler sees it.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Reads a request's whole body (at most `max_bytes`) within `timeout` before anything else
/// sees it: a client that sends its body slowly gets `408` instead of holding a task.
pub(crate) async fn body_in_time(
    timeout: Duration,
    max_bytes: usize,
    request: Request,
    next: Next,
) -> Response {
    let has_body = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::DELETE
    );
    if !has_body {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, max_bytes)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Payload Too Large: request body exceeds {max_bytes} bytes\n"),
            )
                .into_response();
        }
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s\n",
                    timeout.as_secs()
                ),
            )
                .into_response();
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}
