//! Forgetting through any store: the erasure prepared from the episodes as stored, and
//! retried while another writer changes them.

use chrono::{DateTime, Utc};

use super::erasure::{Erasure, ErasureReport, ForgetEpisode};
use super::traits::EpisodeStore;
use crate::episode::EpisodeId;
use crate::error::Result;
use crate::learning::extract_learning;
use crate::namespace::Namespace;

/// How many times an erasure reads its episodes again when another writer changed one between
/// the read and the write.
const FORGET_TRIES: usize = 8;

/// The first pause before an erasure reads its episodes again (doubled up to 8 times it).
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(30);

/// Reads the episodes `ids` name from `storage` and prepares their erasure: for each completed
/// one, what its completion taught (extraction run again on the episode as stored); for each
/// the steps it holds. An id the namespace does not hold is kept (the store reports it
/// missing).
#[tracing::instrument(level = "debug", skip_all, fields(namespace = %ns, episodes = ids.len()))]
pub async fn prepare_erasure(
    storage: &dyn EpisodeStore,
    ns: &Namespace,
    ids: &[EpisodeId],
    reason: &str,
    at: DateTime<Utc>,
) -> Result<Erasure> {
    // Each id once: an episode named twice is forgotten (and unlearned) once.
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<EpisodeId> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
    let ids = ids.as_slice();
    let read = storage.get_episodes(ns, ids).await?;
    let episodes = (ids.iter().zip(read))
        .map(|(&episode_id, episode)| {
            let Some(e) = episode else {
                return ForgetEpisode {
                    episode_id,
                    learning: None,
                    expected_steps: 0,
                };
            };
            let learning = e.outcome.as_ref().map(|outcome| {
                extract_learning(&e, outcome, e.completed_at.unwrap_or(e.started_at))
            });
            ForgetEpisode {
                episode_id,
                learning,
                expected_steps: e.steps.len() as u64,
            }
        })
        .collect();
    Ok(Erasure {
        episodes,
        reason: reason.to_owned(),
        at,
    })
}

/// Forgets the episodes `ids` name in `storage` ([`EpisodeStore::forget_episodes`]), reading
/// them again (up to 8 times, pausing longer each time) while another writer changes one between the read and the
/// write: what the engine does, and what a journaled erasure does when it is replayed (the
/// journal holds the ids and the reason only).
pub async fn forget_in(
    storage: &dyn EpisodeStore,
    ns: &Namespace,
    ids: &[EpisodeId],
    reason: &str,
    at: DateTime<Utc>,
) -> Result<ErasureReport> {
    let mut tries = 0;
    loop {
        let erasure = prepare_erasure(storage, ns, ids, reason, at).await?;
        match storage.forget_episodes(ns, &erasure).await {
            Err(e) if e.is_steps_changed() && tries + 1 < FORGET_TRIES => {
                // A cached copy may lag another machine's write by up to a poll interval
                // (1 s): wait longer each time (about 2 s in all) before reading again.
                tries += 1;
                tokio::time::sleep(RETRY_PAUSE * (1 << tries.min(3))).await;
            }
            done => return done,
        }
    }
}
