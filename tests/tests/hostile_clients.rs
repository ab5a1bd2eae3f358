//! `memory serve` against clients that hold connections without finishing their requests: at
//! the connection cap one more connection is answered 503 and closed, each half-sent request
//! header is cut off at the header deadline, a body sent too slowly gets 408, and honest
//! requests are served again once the slow connections are gone. (Before, the server had no
//! cap and no deadlines: 4,100 half requests took every descriptor and no connection was closed
//! within 45 s.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use std::net::Ipv4Addr;

use tests::http::{Answer, exchange_from, get};
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

/// `POST /mcp` of `body`, in session `session` when given.
async fn mcp(port: u16, session: Option<&str>, body: &str) -> Answer {
    mcp_from(None, port, session, body).await
}

/// [`mcp`] from another loopback address.
async fn mcp_from(from: Option<Ipv4Addr>, port: u16, session: Option<&str>, body: &str) -> Answer {
    let session = session.map_or(String::new(), |s| format!("\r\nMcp-Session-Id: {s}"));
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2025-06-18{session}"
    );
    exchange_from(from, port, &head, body).await.unwrap()
}

/// A new MCP session, initialized; its id.
async fn session(port: u16) -> String {
    session_from(None, port).await
}

/// [`session`] from another loopback address.
async fn session_from(from: Option<Ipv4Addr>, port: u16) -> String {
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"hostile","version":"1"}}}"#;
    let answer = mcp_from(from, port, None, init).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let id = answer.header("mcp-session-id").unwrap().to_owned();
    let done = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let answer = mcp_from(from, port, Some(&id), done).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    id
}

/// At the session cap a new session closes the idlest; and fresh sessions do not get fresh
/// rate-limit buckets: the bucket is the client's (its address), shared by its sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_capped_and_share_their_clients_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve_on_any_port(
        dir.path(),
        &[],
        &[
            "--max-sessions",
            "4",
            "--rate-burst",
            "5",
            "--rate-per-second",
            "0.1",
        ],
        &[],
    )
    .await
    .unwrap();
    let port = served.port;
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(session(port).await);
    }
    let ping = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    // The two idlest (the first two) were closed; the other four, the cap, still answer.
    for (i, id) in sessions.iter().enumerate() {
        let answer = mcp(port, Some(id), ping).await;
        let expected = if i < 2 { 404 } else { 202 };
        assert_eq!(answer.status, expected, "session {i}: {}", answer.body);
    }

    // 12 fresh sessions, one call each, against a burst of 5 (refilled at 0.1/s).
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"stats","arguments":{}}}"#;
    let (mut served_calls, mut limited) = (0, 0);
    for _ in 0..12 {
        let id = session(port).await;
        let answer = mcp(port, Some(&id), call).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        if answer.body.contains("rate_limited") {
            limited += 1;
        } else {
            assert!(answer.body.contains("\"counts\""), "{}", answer.body);
            served_calls += 1;
        }
    }
    eprintln!("12 fresh sessions: {served_calls} calls served, {limited} rate limited");
    assert!(
        served_calls <= 6,
        "{served_calls} of 12 served through a burst of 5"
    );
    assert!(limited >= 6, "{limited}");

    let status = terminate(served.child).await.unwrap();
    assert!(status.success(), "{status:?}");
}

/// A client at its session cap loses its own idlest session, not another client's: one client
/// cannot push the others' sessions out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_at_its_session_cap_closes_its_own_idlest() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve_on_any_port(
        dir.path(),
        &[],
        &["--max-sessions", "10", "--max-sessions-per-client", "3"],
        &[],
    )
    .await
    .unwrap();
    let port = served.port;
    let other = Some(Ipv4Addr::new(127, 0, 0, 2));
    // The other client's session is the idlest of all.
    let theirs = session_from(other, port).await;
    let mut mine = Vec::new();
    for _ in 0..4 {
        mine.push(session(port).await);
    }
    let ping = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    for (i, id) in mine.iter().enumerate() {
        let answer = mcp(port, Some(id), ping).await;
        let expected = if i == 0 { 404 } else { 202 };
        assert_eq!(answer.status, expected, "my session {i}: {}", answer.body);
    }
    let answer = mcp_from(other, port, Some(&theirs), ping).await;
    assert_eq!(
        answer.status, 202,
        "the other client's session: {}",
        answer.body
    );
    let status = terminate(served.child).await.unwrap();
    assert!(status.success(), "{status:?}");
}

/// One client at its own connection cap cannot take the other clients' slots: its connections
/// up to the cap are kept, the next one is refused at once, and another client is served.
/// (Before, one client's half requests could take every slot of the server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_every_connection_slot() {
    const PER_CLIENT: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let per_client = PER_CLIENT.to_string();
    let served = serve_on_any_port(
        dir.path(),
        &[],
        &[
            "--max-connections",
            "16",
            "--max-connections-per-client",
            &per_client,
            "--header-timeout",
            "30",
        ],
        &[],
    )
    .await
    .unwrap();
    let port = served.port;
    let host = format!("127.0.0.1:{port}");
    let attacker = Ipv4Addr::new(127, 0, 0, 2);

    // At its cap: every connection kept open, half a request header each.
    let mut held = Vec::with_capacity(PER_CLIENT);
    for _ in 0..PER_CLIENT {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from((attacker, 0)))
            .unwrap();
        let mut s = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        s.write_all(format!("GET /health HTTP/1.1\r\nHost: {host}\r\n").as_bytes())
            .await
            .unwrap();
        held.push(s);
    }
    for s in &mut held {
        let (read, closed) = read_until_closed(s, Duration::from_millis(300)).await;
        assert!(
            !closed && read.is_empty(),
            "a connection at the cap: {read:?}"
        );
    }
    // One over its cap: refused at once.
    let head = format!("GET /health HTTP/1.1\r\nHost: {host}");
    let over = exchange_from(Some(attacker), port, &head, "")
        .await
        .unwrap();
    assert_eq!(over.status, 503, "{}", over.body);
    // Another client is served meanwhile.
    let honest = get(port, "/health", None, &host).await.unwrap();
    assert_eq!(honest.status, 200, "{}", honest.body);
    // Once one of its connections closes, the client connects again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = exchange_from(Some(attacker), port, &head, "")
        .await
        .unwrap();
    assert_eq!(again.status, 200, "{}", again.body);
    drop(held);
    let status = terminate(served.child).await.unwrap();
    assert!(status.success(), "{status:?}");
}
