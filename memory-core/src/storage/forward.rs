//! [`forward_storage!`](crate::forward_storage): storage decorators written as only the methods
//! they change.
//!
//! A decorator (fault injection, withholding learned items, the breaker of tiered storage)
//! forwards most of the storage methods unchanged. The signatures are written once, here;
//! an impl names the methods it forwards and writes the others. A method of the trait that is
//! neither forwarded nor written is a compile error, so a new storage method cannot be
//! forgotten by a decorator (provided methods such as `sync` and `changes_since` included:
//! forward them, or the trait's default applies).

/// Implements one storage trait for a decorator: the listed methods forward to a field (each
/// call optionally passed through a wrapper method), the block holds the rest.
///
/// ```text
/// forward_storage! {
///     impl[S: Storage + ?Sized] LearningStore for Withholding<S> => inner;
///     forward apply_learning, put_learned, put_learned_unless_changed, record_feedback, list_feedback;
///     { async fn get_learned(..) -> .. { .. }  async fn query_learned(..) -> .. { .. } }
/// }
/// ```
///
/// `=> inner, wrap checked;` passes each forwarded call through
/// `self.checked("method name", future)`, which must return the future's output (fault
/// injection checks before it awaits). `forward all;` forwards every method of the trait.
///
/// ```
/// use std::sync::Arc;
/// use memory_core::{EpisodeStore, InMemoryStorage, Storage, forward_storage};
///
/// /// Counts pings, forwards everything.
/// #[derive(Debug)]
/// struct Counting { inner: Arc<dyn Storage>, pings: std::sync::atomic::AtomicU64 }
///
/// forward_storage! {
///     impl[] EpisodeStore for Counting => inner;
///     forward create_episode, append_steps, complete_episode, forget_episodes,
///         forgotten_episodes, get_episode, query_episodes, search_text, namespace_stats,
///         list_namespaces, sync;
///     {
///         async fn ping(&self) -> memory_core::Result<()> {
///             self.pings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///             self.inner.ping().await
///         }
///     }
/// }
/// forward_storage! { impl[] LearningStore for Counting => inner; forward all; {} }
/// forward_storage! { impl[] EmbeddingStore for Counting => inner; forward all; {} }
/// forward_storage! { impl[] MaintenanceStore for Counting => inner; forward all; {} }
/// forward_storage! {
///     impl[] Storage for Counting => inner;
///     forward may_have_changed, changes_since;
///     { fn backend_name(&self) -> &'static str { "counting" } }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let s = Counting { inner: Arc::new(InMemoryStorage::new()), pings: Default::default() };
/// s.ping().await.unwrap();
/// assert_eq!(s.pings.load(std::sync::atomic::Ordering::Relaxed), 1);
/// # });
/// ```
#[macro_export]
macro_rules! forward_storage {
    // Entry: every method of the trait.
    (impl [$($gen:tt)*] $Trait:ident for $Type:ty => $($field:ident).+ $(, wrap $($wrap:ident).+)?;
     forward all; { $($custom:tt)* }) => {
        $crate::forward_storage!(@all $Trait [[$($gen)*] $Trait $Type] [$($field).+] [$($($wrap).+)?] [$($custom)*]);
    };
    // Entry: the listed methods.
    (impl [$($gen:tt)*] $Trait:ident for $Type:ty => $($field:ident).+ $(, wrap $($wrap:ident).+)?;
     forward $($m:ident),* $(,)?; { $($custom:tt)* }) => {
        $crate::forward_storage!(@next [[$($gen)*] $Trait $Type] [$($field).+] [$($($wrap).+)?] [$($custom)*] [$($m)*]);
    };

    // Every method of each trait.
    (@all EpisodeStore $($k:tt)*) => { $crate::forward_storage!(@next $($k)* [create_episode append_steps
        complete_episode forget_episodes forgotten_episodes get_episode get_episodes query_episodes search_text namespace_stats list_namespaces ping sync]); };
    (@all LearningStore $($k:tt)*) => { $crate::forward_storage!(@next $($k)* [apply_learning put_learned
        put_learned_unless_changed get_learned get_learned_many query_learned record_feedback list_feedback]); };
    (@all EmbeddingStore $($k:tt)*) => { $crate::forward_storage!(@next $($k)* [put_embedding get_embedding
        episodes_missing_embedding scan_embeddings embedding_coverage index_log_head index_changes
        get_index_snapshot put_index_snapshot]); };
    (@all MaintenanceStore $($k:tt)*) => { $crate::forward_storage!(@next $($k)* [record_consolidation
        claim_consolidation list_consolidations put_metrics_snapshot list_metrics_snapshots put_estimate get_estimate
        query_estimates record_restore list_restores compact_step_outputs compact_merged_patterns compact_pruned_patterns
        purge_namespace]); };

    // The next method, or the impl once every method is written out.
    (@next $hdr:tt $field:tt $wrap:tt $done:tt [$m:ident $($rest:ident)*]) => {
        $crate::forward_storage!(@sig $m $hdr $field $wrap $done [$($rest)*]);
    };
    (@next [[$($gen:tt)*] $Trait:ident $Type:ty] $field:tt $wrap:tt [$($done:tt)*] []) => {
        #[$crate::__private::async_trait]
        impl<$($gen)*> $crate::$Trait for $Type {
            $($done)*
        }
    };

    // One method, forwarded: the call, through the wrapper when there is one.
    (@push $m:ident ($($p:ident: $t:ty),*) -> $ret:ty; $hdr:tt [$($field:ident).+] [] [$($done:tt)*] $rest:tt) => {
        $crate::forward_storage!(@next $hdr [$($field).+] [] [$($done)*
            async fn $m(&self, $($p: $t),*) -> $ret {
                self.$($field).+.$m($($p),*).await
            }
        ] $rest);
    };
    (@push $m:ident ($($p:ident: $t:ty),*) -> $ret:ty; $hdr:tt [$($field:ident).+] [$($wrap:ident).+] [$($done:tt)*] $rest:tt) => {
        $crate::forward_storage!(@next $hdr [$($field).+] [$($wrap).+] [$($done)*
            async fn $m(&self, $($p: $t),*) -> $ret {
                self.$($wrap).+(stringify!($m), self.$($field).+.$m($($p),*)).await
            }
        ] $rest);
    };

    // The signatures, written once.
    (@sig create_episode $($k:tt)*) => { $crate::forward_storage!(@push create_episode (ns: &$crate::Namespace, episode: &$crate::Episode) -> $crate::Result<()>; $($k)*); };
    (@sig append_steps $($k:tt)*) => { $crate::forward_storage!(@push append_steps (ns: &$crate::Namespace, episode_id: $crate::EpisodeId, steps: &[$crate::ExecutionStep]) -> $crate::Result<()>; $($k)*); };
    (@sig complete_episode $($k:tt)*) => { $crate::forward_storage!(@push complete_episode (ns: &$crate::Namespace, completion: &$crate::EpisodeCompletion) -> $crate::Result<Option<$crate::LearnedChanges>>; $($k)*); };
    (@sig forget_episodes $($k:tt)*) => { $crate::forward_storage!(@push forget_episodes (ns: &$crate::Namespace, erasure: &$crate::Erasure) -> $crate::Result<$crate::ErasureReport>; $($k)*); };
    (@sig forgotten_episodes $($k:tt)*) => { $crate::forward_storage!(@push forgotten_episodes (ns: &$crate::Namespace, limit: u32) -> $crate::Result<Vec<$crate::ForgetRecord>>; $($k)*); };
    (@sig get_episode $($k:tt)*) => { $crate::forward_storage!(@push get_episode (ns: &$crate::Namespace, id: $crate::EpisodeId) -> $crate::Result<Option<::std::sync::Arc<$crate::Episode>>>; $($k)*); };
    (@sig get_episodes $($k:tt)*) => { $crate::forward_storage!(@push get_episodes (ns: &$crate::Namespace, ids: &[$crate::EpisodeId]) -> $crate::Result<Vec<Option<::std::sync::Arc<$crate::Episode>>>>; $($k)*); };
    (@sig query_episodes $($k:tt)*) => { $crate::forward_storage!(@push query_episodes (ns: &$crate::Namespace, query: &$crate::EpisodeQuery) -> $crate::Result<Vec<$crate::EpisodeSummary>>; $($k)*); };
    (@sig search_text $($k:tt)*) => { $crate::forward_storage!(@push search_text (ns: &$crate::Namespace, query: &$crate::TextQuery) -> $crate::Result<$crate::TextSearch>; $($k)*); };
    (@sig namespace_stats $($k:tt)*) => { $crate::forward_storage!(@push namespace_stats (ns: &$crate::Namespace) -> $crate::Result<$crate::NamespaceStats>; $($k)*); };
    (@sig list_namespaces $($k:tt)*) => { $crate::forward_storage!(@push list_namespaces () -> $crate::Result<Vec<$crate::Namespace>>; $($k)*); };
    (@sig ping $($k:tt)*) => { $crate::forward_storage!(@push ping () -> $crate::Result<()>; $($k)*); };
    (@sig sync $($k:tt)*) => { $crate::forward_storage!(@push sync () -> $crate::Result<()>; $($k)*); };
    (@sig apply_learning $($k:tt)*) => { $crate::forward_storage!(@push apply_learning (ns: &$crate::Namespace, update: &$crate::LearningUpdate) -> $crate::Result<$crate::LearnedChanges>; $($k)*); };
    (@sig put_learned $($k:tt)*) => { $crate::forward_storage!(@push put_learned (ns: &$crate::Namespace, items: &$crate::LearnedItems) -> $crate::Result<()>; $($k)*); };
    (@sig put_learned_unless_changed $($k:tt)*) => { $crate::forward_storage!(@push put_learned_unless_changed (ns: &$crate::Namespace, groups: &[$crate::GuardedItems]) -> $crate::Result<Vec<usize>>; $($k)*); };
    (@sig get_learned $($k:tt)*) => { $crate::forward_storage!(@push get_learned (ns: &$crate::Namespace, id: &$crate::LearnedId) -> $crate::Result<Option<$crate::LearnedItem>>; $($k)*); };
    (@sig get_learned_many $($k:tt)*) => { $crate::forward_storage!(@push get_learned_many (ns: &$crate::Namespace, ids: &[$crate::LearnedId]) -> $crate::Result<Vec<Option<$crate::LearnedItem>>>; $($k)*); };
    (@sig query_learned $($k:tt)*) => { $crate::forward_storage!(@push query_learned (ns: &$crate::Namespace, kind: $crate::LearnedKind, query: &$crate::LearnedQuery) -> $crate::Result<Vec<$crate::LearnedItem>>; $($k)*); };
    (@sig record_feedback $($k:tt)*) => { $crate::forward_storage!(@push record_feedback (ns: &$crate::Namespace, feedback: &$crate::Feedback) -> $crate::Result<()>; $($k)*); };
    (@sig list_feedback $($k:tt)*) => { $crate::forward_storage!(@push list_feedback (ns: &$crate::Namespace, target: &$crate::FeedbackTarget) -> $crate::Result<Vec<$crate::Feedback>>; $($k)*); };
    (@sig put_embedding $($k:tt)*) => { $crate::forward_storage!(@push put_embedding (ns: &$crate::Namespace, episode_id: $crate::EpisodeId, model: &str, vector: &[f32]) -> $crate::Result<()>; $($k)*); };
    (@sig get_embedding $($k:tt)*) => { $crate::forward_storage!(@push get_embedding (ns: &$crate::Namespace, episode_id: $crate::EpisodeId, model: &str) -> $crate::Result<Option<Vec<f32>>>; $($k)*); };
    (@sig episodes_missing_embedding $($k:tt)*) => { $crate::forward_storage!(@push episodes_missing_embedding (ns: &$crate::Namespace, model: &str, after: Option<$crate::EpisodeId>, limit: u32) -> $crate::Result<Vec<$crate::EpisodeId>>; $($k)*); };
    (@sig scan_embeddings $($k:tt)*) => { $crate::forward_storage!(@push scan_embeddings (ns: &$crate::Namespace, model: &str, after: Option<$crate::EpisodeId>, limit: u32) -> $crate::Result<Vec<$crate::StoredEmbedding>>; $($k)*); };
    (@sig embedding_coverage $($k:tt)*) => { $crate::forward_storage!(@push embedding_coverage (ns: &$crate::Namespace, model: &str) -> $crate::Result<$crate::EmbeddingCoverage>; $($k)*); };
    (@sig index_log_head $($k:tt)*) => { $crate::forward_storage!(@push index_log_head (ns: &$crate::Namespace) -> $crate::Result<u64>; $($k)*); };
    (@sig index_changes $($k:tt)*) => { $crate::forward_storage!(@push index_changes (ns: &$crate::Namespace, model: &str, after: u64, limit: u32) -> $crate::Result<$crate::IndexChanges>; $($k)*); };
    (@sig get_index_snapshot $($k:tt)*) => { $crate::forward_storage!(@push get_index_snapshot (ns: &$crate::Namespace, model: &str) -> $crate::Result<Option<$crate::IndexSnapshot>>; $($k)*); };
    (@sig put_index_snapshot $($k:tt)*) => { $crate::forward_storage!(@push put_index_snapshot (ns: &$crate::Namespace, model: &str, snapshot: &$crate::IndexSnapshot) -> $crate::Result<()>; $($k)*); };
    (@sig record_consolidation $($k:tt)*) => { $crate::forward_storage!(@push record_consolidation (ns: &$crate::Namespace, run: &$crate::ConsolidationRun) -> $crate::Result<()>; $($k)*); };
    (@sig claim_consolidation $($k:tt)*) => { $crate::forward_storage!(@push claim_consolidation (ns: &$crate::Namespace, run: &$crate::ConsolidationRun, not_before: $crate::__private::DateTime<$crate::__private::Utc>) -> $crate::Result<bool>; $($k)*); };
    (@sig list_consolidations $($k:tt)*) => { $crate::forward_storage!(@push list_consolidations (ns: &$crate::Namespace, limit: u32) -> $crate::Result<Vec<$crate::ConsolidationRun>>; $($k)*); };
    (@sig put_metrics_snapshot $($k:tt)*) => { $crate::forward_storage!(@push put_metrics_snapshot (ns: &$crate::Namespace, snapshot: &$crate::MetricsSnapshot) -> $crate::Result<()>; $($k)*); };
    (@sig list_metrics_snapshots $($k:tt)*) => { $crate::forward_storage!(@push list_metrics_snapshots (ns: &$crate::Namespace, limit: u32) -> $crate::Result<Vec<$crate::MetricsSnapshot>>; $($k)*); };
    (@sig put_estimate $($k:tt)*) => { $crate::forward_storage!(@push put_estimate (ns: &$crate::Namespace, record: &$crate::EstimateRecord) -> $crate::Result<()>; $($k)*); };
    (@sig get_estimate $($k:tt)*) => { $crate::forward_storage!(@push get_estimate (ns: &$crate::Namespace, episode_id: $crate::EpisodeId) -> $crate::Result<Option<$crate::EstimateRecord>>; $($k)*); };
    (@sig query_estimates $($k:tt)*) => { $crate::forward_storage!(@push query_estimates (ns: &$crate::Namespace, domain: Option<&str>, limit: u32) -> $crate::Result<Vec<$crate::EstimateRecord>>; $($k)*); };
    (@sig record_restore $($k:tt)*) => { $crate::forward_storage!(@push record_restore (ns: &$crate::Namespace, restore: &$crate::RestoreRecord) -> $crate::Result<()>; $($k)*); };
    (@sig list_restores $($k:tt)*) => { $crate::forward_storage!(@push list_restores (ns: &$crate::Namespace, since: $crate::__private::DateTime<$crate::__private::Utc>) -> $crate::Result<Vec<$crate::RestoreRecord>>; $($k)*); };
    (@sig compact_step_outputs $($k:tt)*) => { $crate::forward_storage!(@push compact_step_outputs (ns: &$crate::Namespace, completed_before: $crate::__private::DateTime<$crate::__private::Utc>, max_episodes: u32) -> $crate::Result<$crate::StepCompaction>; $($k)*); };
    (@sig compact_merged_patterns $($k:tt)*) => { $crate::forward_storage!(@push compact_merged_patterns (ns: &$crate::Namespace, ids: &[$crate::PatternId]) -> $crate::Result<u64>; $($k)*); };
    (@sig purge_namespace $($k:tt)*) => { $crate::forward_storage!(@push purge_namespace (ns: &$crate::Namespace) -> $crate::Result<::std::collections::BTreeMap<String, u64>>; $($k)*); };
    (@sig compact_pruned_patterns $($k:tt)*) => { $crate::forward_storage!(@push compact_pruned_patterns (ns: &$crate::Namespace, rows: &[($crate::PatternId, $crate::__private::DateTime<$crate::__private::Utc>)]) -> $crate::Result<u64>; $($k)*); };
    (@sig may_have_changed $($k:tt)*) => { $crate::forward_storage!(@push may_have_changed () -> $crate::Result<bool>; $($k)*); };
    (@sig changes_since $($k:tt)*) => { $crate::forward_storage!(@push changes_since (after: u64, limit: u32) -> $crate::Result<Option<$crate::ChangeSet>>; $($k)*); };
}
