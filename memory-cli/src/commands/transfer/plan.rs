//! What the import does with each validated line, decided against the namespace's episodes
//! (listed once), and the quota check of what it would add.

use std::collections::HashMap;

use anyhow::Result;
use memory_core::{EpisodeId, Error, Namespace, SelfLearningMemory};

use super::records::{Marker, Planned, for_each_page};

/// An episode of the namespace, as the import compares it with a line.
struct Stored {
    id: EpisodeId,
    step_count: usize,
    completed: bool,
}

/// What the import does with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Not in the memory yet: import it.
    New,
    /// Imported before: skip it.
    Present,
    /// Left in progress by an interrupted import: log the steps after `stored_steps`, then
    /// complete it if the source is completed.
    Resume { id: EpisodeId, stored_steps: usize },
}

/// The namespace's episodes, and who they stand for: origin id -> indices for every episode's
/// own id and every marker's origin, content key -> indices for every marker.
#[derive(Default)]
pub(super) struct Existing {
    stored: Vec<Stored>,
    by_origin: HashMap<String, Vec<usize>>,
    by_key: HashMap<String, Vec<usize>>,
}

/// Lists the namespace's episodes (summaries, page by page) once.
pub(super) async fn existing(
    m: &SelfLearningMemory,
    ns: &Namespace,
) -> memory_core::Result<Existing> {
    let mut found = Existing::default();
    for_each_page(m, ns, |page| {
        for e in page {
            let index = found.stored.len();
            found.stored.push(Stored {
                id: e.id,
                step_count: e.step_count as usize,
                completed: e.completed_at.is_some(),
            });
            // An episode exported from this namespace (or a backup of it) is itself.
            let own = e.id.0.simple().to_string();
            found.by_origin.entry(own).or_default().push(index);
            for mk in e.context.tags.iter().filter_map(|t| Marker::parse(t)) {
                found.by_origin.entry(mk.origin).or_default().push(index);
                found.by_key.entry(mk.key).or_default().push(index);
            }
        }
    })
    .await?;
    Ok(found)
}

/// Decides, line by line, what to do: a stored copy is found by the line's origin, else by
/// its content key, and serves one line only.
pub(super) fn plan(planned: &[Planned], existing: &Existing) -> Vec<Action> {
    let mut claimed = vec![false; existing.stored.len()];
    planned
        .iter()
        .map(|p| {
            let free = |candidates: Option<&Vec<usize>>| {
                candidates
                    .into_iter()
                    .flatten()
                    .copied()
                    .find(|&i| !claimed[i])
            };
            let found = free(existing.by_origin.get(&p.marker.origin))
                .or_else(|| free(existing.by_key.get(&p.marker.key)));
            let Some(i) = found else {
                return Action::New;
            };
            claimed[i] = true;
            let copy = &existing.stored[i];
            if !copy.completed
                && (copy.step_count < p.steps || (copy.step_count == p.steps && p.completed))
            {
                Action::Resume {
                    id: copy.id,
                    stored_steps: copy.step_count,
                }
            } else {
                Action::Present
            }
        })
        .collect()
}

/// Refuses an import the namespace's quotas cannot hold, before anything is written.
pub(super) async fn check_quotas(
    m: &SelfLearningMemory,
    ns: &Namespace,
    planned: &[Planned],
    actions: &[Action],
) -> Result<()> {
    let (mut episodes, mut steps) = (0u64, 0u64);
    for (p, a) in planned.iter().zip(actions) {
        match a {
            Action::New => {
                episodes += 1;
                steps += p.steps as u64;
            }
            Action::Resume { stored_steps, .. } => {
                steps += p.steps.saturating_sub(*stored_steps) as u64;
            }
            Action::Present => {}
        }
    }
    if episodes == 0 && steps == 0 {
        return Ok(());
    }
    let stats = m.stats(ns).await?;
    let quotas = &m.config().quotas;
    for (resource, have, adding, limit) in [
        ("episodes", stats.episodes, episodes, quotas.max_episodes),
        ("steps", stats.steps, steps, quotas.max_steps),
    ] {
        if have.saturating_add(adding) > limit {
            return Err(anyhow::Error::new(Error::QuotaExceeded {
                namespace: ns.to_string(),
                resource,
                limit,
            })
            .context(format!(
                "the namespace holds {have} {resource} and the import would add {adding}; nothing was imported"
            )));
        }
    }
    Ok(())
}
