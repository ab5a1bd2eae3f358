//! What the export and both import passes share: the paged listing of a namespace, the
//! marker tag an imported episode carries, and a validated line's plan.

use memory_core::{EpisodeId, EpisodeQuery, EpisodeSummary, Namespace, SelfLearningMemory};

/// Episodes read per page while exporting.
const PAGE: u32 = 200;
/// Every import marker tag starts with this.
const MARKER_PREFIX: &str = memory_core::IMPORT_TAG_PREFIX;

/// Every episode summary of the namespace, through the ordinary listing, `PAGE` at a time,
/// each page handed to `each`.
pub(super) async fn for_each_page(
    m: &SelfLearningMemory,
    ns: &Namespace,
    mut each: impl FnMut(Vec<EpisodeSummary>),
) -> memory_core::Result<()> {
    let mut offset = 0u32;
    loop {
        let page = m
            .list_episodes(
                ns,
                &EpisodeQuery {
                    limit: PAGE,
                    offset,
                    ..EpisodeQuery::default()
                },
            )
            .await?;
        let n = page.len() as u32;
        each(page);
        if n < PAGE {
            return Ok(());
        }
        offset += n;
    }
}

/// The namespace's episode ids, oldest first, through the ordinary listing.
pub(super) async fn list_ids(
    m: &SelfLearningMemory,
    ns: &Namespace,
) -> memory_core::Result<Vec<EpisodeId>> {
    let mut ids = Vec::new();
    for_each_page(m, ns, |page| ids.extend(page.into_iter().map(|e| e.id))).await?;
    ids.sort_unstable(); // UUID v7: time order
    ids.dedup();
    Ok(ids)
}

/// What an imported episode's marker tag records: `import:<key>:<origin>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Marker {
    /// 16 hex digits of the content hash of the source episode.
    pub(super) key: String,
    /// The source episode's original id, 32 hex digits.
    pub(super) origin: String,
}

impl Marker {
    pub(super) fn tag(&self) -> String {
        format!("{MARKER_PREFIX}{}:{}", self.key, self.origin)
    }

    pub(super) fn parse(tag: &str) -> Option<Marker> {
        let (key, origin) = tag.strip_prefix(MARKER_PREFIX)?.split_once(':')?;
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        (hex(key, 16) && hex(origin, 32)).then(|| Marker {
            key: key.to_owned(),
            origin: origin.to_owned(),
        })
    }
}

/// One validated, non-blank line of the import file: what the import pass needs of it.
pub(super) struct Planned {
    pub(super) number: usize,
    /// Hash of the line's bytes, compared again when the line is imported.
    pub(super) line_hash: u128,
    pub(super) marker: Marker,
    pub(super) steps: usize,
    pub(super) completed: bool,
}
