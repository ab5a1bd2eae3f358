//! The listener `memory serve` accepts on, so that no client can hold the server hostage by
//! its connections alone:
//! - at most `max_connections` are open at once, and at most `max_connections_per_client` from
//!   one client address; one more gets `503 Service Unavailable` with `Retry-After` and is
//!   closed at once (it never reaches the router), so one client cannot take every slot;
//! - a connection's first request header must be complete within `header_timeout` of the
//!   accept, or the connection is closed: half a request and silence (a slow-loris) holds a
//!   slot for that long at most. Later requests on a kept-alive connection are not timed
//!   (an MCP event stream idles on its connection by design).
//!
//! (hyper's own header timeout needs a timer that `axum::serve` does not give it, hence this
//! small wrapper around the socket; the body's read deadline is a middleware, `http.rs`.)

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tracing::{debug, warn};

/// The listener: a bound socket, its connection slots and the header deadline.
#[derive(Debug)]
pub(crate) struct GuardedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    per_client: Arc<ClientCounts>,
    header_timeout: Duration,
    /// Connections refused for want of a slot, since the start.
    refused: Arc<AtomicU64>,
}

/// The connections open from each client address, and the most one may have.
#[derive(Debug)]
struct ClientCounts {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

impl ClientCounts {
    /// Counts a connection from `ip`, unless it has `max` open already.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            counts: Arc::clone(self),
            ip,
        })
    }
}

/// One counted connection of a client; uncounted when dropped (the connection closed).
#[derive(Debug)]
struct ClientSlot {
    counts: Arc<ClientCounts>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl GuardedListener {
    /// Accepts on `inner`, at most `max_connections` open at once and `max_per_client` from
    /// one client address.
    pub(crate) fn new(
        inner: TcpListener,
        max_connections: usize,
        max_per_client: usize,
        header_timeout: Duration,
    ) -> Self {
        GuardedListener {
            inner,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            per_client: Arc::new(ClientCounts {
                open: Mutex::new(HashMap::new()),
                max: max_per_client.max(1),
            }),
            header_timeout,
            refused: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// What a connection over the cap reads before it is closed.
const REFUSAL: &str = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Length: 51\r\nConnection: close\r\n\r\n\
the server has too many connections: retry shortly\n";

async fn refuse(mut stream: TcpStream) {
    // A client that does not read its refusal gets nothing more than a closed socket.
    let _ =
        tokio::time::timeout(Duration::from_secs(1), stream.write_all(REFUSAL.as_bytes())).await;
    let _ = stream.shutdown().await;
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted: wait
                    // a moment rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // The client's own cap first: a client at it takes no slot from the others.
            let client = self.per_client.take(addr.ip());
            let slot = client
                .as_ref()
                .and_then(|_| Arc::clone(&self.slots).try_acquire_owned().ok());
            if let (Some(client), Some(slot)) = (client, slot) {
                let deadline = Box::pin(tokio::time::sleep(self.header_timeout));
                let stream = GuardedStream {
                    inner: stream,
                    _slot: slot,
                    _client: client,
                    header: Some(HeaderWatch {
                        deadline,
                        tail: Vec::with_capacity(3),
                    }),
                };
                return (stream, addr);
            }
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(
                    refused = n,
                    "connection refused: every connection slot is taken, or its client's"
                );
            }
            tokio::spawn(refuse(stream));
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The address a connection came from, in each request's extensions
/// (`ConnectInfo<PeerAddr>`): what the per-client rate limit is keyed by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, GuardedListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, GuardedListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Watches a connection until its first request header is complete.
struct HeaderWatch {
    deadline: Pin<Box<Sleep>>,
    /// The last bytes read (at most 3), to find the header's end across reads.
    tail: Vec<u8>,
}

impl HeaderWatch {
    /// Whether `read` (what came after the bytes seen so far) completes the header.
    fn completes(&mut self, read: &[u8]) -> bool {
        let mut joined = std::mem::take(&mut self.tail);
        joined.extend_from_slice(read);
        if joined.windows(4).any(|w| w == b"\r\n\r\n") {
            return true;
        }
        let keep = joined.len().saturating_sub(3);
        self.tail = joined.split_off(keep);
        false
    }
}

/// An accepted connection: holds its slot until it closes.
pub(crate) struct GuardedStream {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
    _client: ClientSlot,
    /// Until the first request header is complete.
    header: Option<HeaderWatch>,
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(watch) = &mut this.header
            && watch.deadline.as_mut().poll(cx).is_ready()
        {
            debug!("closing a connection whose request header did not arrive in time");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request header did not arrive in time",
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(watch)) = (&read, &mut this.header)
            && watch.completes(&buf.filled()[before..])
        {
            this.header = None;
        }
        read
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> HeaderWatch {
        HeaderWatch {
            deadline: Box::pin(tokio::time::sleep(Duration::from_secs(60))),
            tail: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_end_of_a_header_is_found_across_reads() {
        let mut w = watch();
        assert!(!w.completes(b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(!w.completes(b"\n"));
        assert!(w.completes(b"\r\n"));
        let mut w = watch();
        for byte in b"GET / HTTP/1.1\r\n\r" {
            assert!(!w.completes(&[*byte]));
        }
        assert!(w.completes(b"\n"));
        assert!(!watch().completes(b""));
    }

    #[test]
    fn a_client_at_its_cap_is_refused_and_freed_when_a_connection_closes() {
        let counts = Arc::new(ClientCounts {
            open: Mutex::new(HashMap::new()),
            max: 2,
        });
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let first = counts.take(a).unwrap();
        let _second = counts.take(a).unwrap();
        assert!(
            counts.take(a).is_none(),
            "at the limit, one more is refused"
        );
        assert!(counts.take(b).is_some(), "another client is not affected");
        drop(first);
        assert!(
            counts.take(a).is_some(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn the_refusal_is_a_whole_http_answer() {
        let (head, body) = REFUSAL.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 503"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
