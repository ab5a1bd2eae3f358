//! Plain HTTP/1.x over a loopback socket, for the tests of `memory serve` that need to send
//! what no client library would (a wrong `Host`, a malformed body, no token).

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer: status, headers (names and values lowercased) and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code (0 when the answer had none).
    pub status: u16,
    /// The header block, lowercased.
    pub headers: String,
    /// The header block as received.
    pub head: String,
    /// The body as sent (the servers tested answer with a length, not in chunks).
    pub body: String,
}

/// Sends `head` (request line and headers, without the blank line) with `body` to
/// `127.0.0.1:port`, adding `Content-Length` and `Connection: close`, and reads the answer.
pub async fn exchange(port: u16, head: &str, body: &str) -> anyhow::Result<Answer> {
    exchange_from(None, port, head, body).await
}

/// [`exchange`] from the loopback address `from` (`127.0.0.2`, say: every `127.x.y.z` is this
/// machine), so that a server sees another client address.
pub async fn exchange_from(
    from: Option<std::net::Ipv4Addr>,
    port: u16,
    head: &str,
    body: &str,
) -> anyhow::Result<Answer> {
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = match from {
        None => tokio::net::TcpStream::connect(to).await,
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(std::net::SocketAddr::from((ip, 0)))?;
            socket.connect(to).await
        }
    }
    .with_context(|| format!("connecting to port {port}"))?;
    let request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(Answer {
        status,
        headers: headers.to_lowercase(),
        head: headers.to_owned(),
        body: body.to_owned(),
    })
}

/// `GET path` with `Host: host`, and the bearer token when given.
pub async fn get(port: u16, path: &str, token: Option<&str>, host: &str) -> anyhow::Result<Answer> {
    let auth = token.map_or(String::new(), |t| format!("\r\nAuthorization: Bearer {t}"));
    exchange(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}{auth}"),
        "",
    )
    .await
}

impl Answer {
    /// The value of header `name` (any case), as received.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}
