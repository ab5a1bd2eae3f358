//! `memory serve` against clients that hold connections without finishing their requests: at
//! the connection cap one more connection is answered 503 and closed, each half-sent request
//! header is cut off at the header deadline, a body sent too slowly gets 408, and honest
//! requests are served again once the slow connections are gone. (Before, the server had no
//! cap and no deadlines: 4,100 half requests took every descriptor and no connection was closed
//! within 45 s.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use tests::http::get;
use tests::procs::{serve_on_any_port, terminate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CAP: usize = 16;

/// Reads until the server closes the connection or `within` passes; what was read, and
/// whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_hold_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let cap = CAP.to_string();
    let served = serve_on_any_port(
        dir.path(),
        &[],
        &[
            "--max-connections",
            &cap,
            "--header-timeout",
            "2",
            "--body-timeout",
            "2",
        ],
        &[],
    )
    .await
    .unwrap();
    let port = served.port;
    let host = format!("127.0.0.1:{port}");

    // At the cap: every slot held by half a request header.
    let mut slow = Vec::with_capacity(CAP);
    for _ in 0..CAP {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(format!("GET /health HTTP/1.1\r\nHost: {host}\r\n").as_bytes())
            .await
            .unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One over the cap: refused at once, with a reason.
    let over = get(port, "/health", None, &host).await.unwrap();
    assert_eq!(over.status, 503, "{}", over.body);
    assert!(over.body.contains("too many connections"), "{}", over.body);
    assert!(over.headers.contains("retry-after: 1"), "{}", over.headers);

    // Each half request is cut off at the header deadline (2 s), not left open.
    let started = Instant::now();
    for s in &mut slow {
        let (_, closed) = read_until_closed(s, Duration::from_secs(10)).await;
        assert!(
            closed,
            "a half-sent request was still open after {:?}",
            started.elapsed()
        );
    }
    eprintln!(
        "the half requests were closed {:?} after the check began",
        started.elapsed()
    );

    // The slots are free again: an honest request is served.
    let honest = get(port, "/health", None, &host).await.unwrap();
    assert_eq!(honest.status, 200, "{}", honest.body);

    // A body sent too slowly: 408 at the body deadline.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\""
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    let status = terminate(served.child).await.unwrap();
    assert!(status.success(), "{status:?}");
}
