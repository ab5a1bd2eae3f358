//! A cap on the MCP sessions `memory serve` keeps at once, in all and per client address: at
//! a cap, a new session closes the one idle the longest (of its client, at the client's cap);
//! that client gets 404 on its next request and starts a new session, as MCP clients do. Each
//! session costs about 100 KiB; without a cap, one client opening sessions could take the
//! server's memory, since rmcp drops a session only after 5 idle minutes. (rmcp's session
//! managers have no cap; this wraps one.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::{
    ServerSseMessage, SessionId, SessionManager,
};
use tracing::{info, warn};

tokio::task_local! {
    /// The address of the client whose request is being served (set around each `/mcp`
    /// request by `http.rs`), so that a new session is counted against its client.
    pub(crate) static CLIENT: IpAddr;
}

/// A live session: when its client last used it, and who that client is.
#[derive(Debug, Clone, Copy)]
struct Used {
    at: Instant,
    client: Option<IpAddr>,
}

/// `inner` with at most `max` sessions, and at most `per_client` of one client address.
#[derive(Debug)]
pub(crate) struct CappedSessions<M> {
    inner: M,
    max: usize,
    per_client: usize,
    used: Mutex<HashMap<SessionId, Used>>,
    evicted: AtomicU64,
}

impl<M: SessionManager> CappedSessions<M> {
    /// At most `max` (at least 1) sessions of `inner` at once, and `per_client` (at least 1)
    /// of one client address.
    pub(crate) fn new(inner: M, max: usize, per_client: usize) -> Self {
        CappedSessions {
            inner,
            max: max.max(1),
            per_client: per_client.max(1),
            used: Mutex::new(HashMap::new()),
            evicted: AtomicU64::new(0),
        }
    }

    fn used(&self) -> MutexGuard<'_, HashMap<SessionId, Used>> {
        self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn touch(&self, id: &SessionId) {
        if let Some(used) = self.used().get_mut(id) {
            used.at = Instant::now();
        }
    }

    /// Room for a session of `client`: first forgets the sessions `inner` dropped on its own
    /// (idle expiry, a closed worker), then closes the client's idlest while it holds
    /// `per_client`, then the idlest of all while there are `max`.
    async fn make_room(&self, client: Option<IpAddr>) {
        let full = |used: &HashMap<SessionId, Used>| {
            let mine = used.values().filter(|u| u.client == client).count();
            (used.len() >= self.max, mine >= self.per_client)
        };
        let tracked: Vec<SessionId> = {
            let used = self.used();
            if full(&used) == (false, false) {
                return;
            }
            used.keys().cloned().collect()
        };
        for id in tracked {
            if !self.inner.has_session(&id).await.unwrap_or(false) {
                self.used().remove(&id);
            }
        }
        loop {
            let idlest = {
                let mut used = self.used();
                let (all, of_client) = full(&used);
                if !all && !of_client {
                    return;
                }
                let Some(id) = used
                    .iter()
                    .filter(|(_, u)| !of_client || u.client == client)
                    .min_by_key(|(_, u)| u.at)
                    .map(|(id, _)| id.clone())
                else {
                    return;
                };
                used.remove(&id);
                id
            };
            let n = self.evicted.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                info!(
                    evicted = n,
                    max = self.max,
                    "session cap reached: closing the idlest session"
                );
            }
            if let Err(e) = self.inner.close_session(&idlest).await {
                warn!(error = %e, "closing an evicted session failed");
            }
        }
    }
}

impl<M: SessionManager> SessionManager for CappedSessions<M> {
    type Error = M::Error;
    type Transport = M::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let client = CLIENT.try_with(|c| *c).ok();
        self.make_room(client).await;
        let (id, transport) = self.inner.create_session().await?;
        let used = Used {
            at: Instant::now(),
            client,
        };
        self.used().insert(id.clone(), used);
        Ok((id, transport))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.touch(id);
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.used().remove(id);
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.touch(id);
        self.inner.create_stream(id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.touch(id);
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.touch(id);
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.touch(id);
        self.inner.resume(id, last_event_id).await
    }
}
