//! Ranking the learned items a recommendation may show: what the similar episodes taught,
//! weighed by their evidence share, their context and their standing (`Relevance`).

#[allow(clippy::wildcard_imports)]
use super::*;

/// How much a learned item bears on the task: its share of the evidence of the similar
/// episodes (`0..=1`, see [`taught_by`]) and whether it holds in the task's context.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Relevance {
    pub share: f64,
    pub in_context: bool,
}

/// What holding in the task's context is worth next to having been taught by every similar
/// episode (share 1.0): context alone is weak evidence, so a context's most-seen items never
/// outrank what the matched episodes actually did unless they are far more certain.
pub(super) const CONTEXT_WEIGHT: f64 = 0.25;

impl Relevance {
    fn weight(self) -> f64 {
        self.share + if self.in_context { CONTEXT_WEIGHT } else { 0.0 }
    }

    fn note(self, why: &mut String) {
        if self.share > 0.0 {
            let _ = write!(
                why,
                "; taught by the similar episodes ({:.0}% of their weight)",
                self.share * 100.0
            );
        }
    }
}

/// The candidates of one kind with their relevance: the items the similar episodes taught
/// (left out when they do not hold in `scope`, the request's explicit context) and the items of
/// the task's context (`in_context`, matched by `context`).
pub(crate) fn candidates<T: Learned>(
    taught: Vec<(T, f64)>,
    of_context: Vec<T>,
    context: Option<&LearnedQuery>,
    scope: Option<&LearnedQuery>,
) -> Vec<(T, Relevance)> {
    let mut out: HashMap<T::Id, (T, Relevance)> = of_context
        .into_iter()
        .map(|item| {
            let rel = Relevance {
                share: 0.0,
                in_context: true,
            };
            (item.id().clone(), (item, rel))
        })
        .collect();
    for (item, share) in taught {
        if scope.is_some_and(|q| !q.matches(&item)) {
            continue;
        }
        let in_context = context.is_some_and(|q| q.matches(&item));
        out.entry(item.id().clone())
            .or_insert((item, Relevance::default()))
            .1 = Relevance { share, in_context };
    }
    out.into_values().collect()
}

/// Ranks patterns: relevance times confidence (Wilson lower bound of success, decayed) times
/// feedback effectiveness.
pub(crate) fn rank_patterns(
    patterns: Vec<(Pattern, Relevance)>,
    now: DateTime<Utc>,
    half_life_days: f64,
) -> Vec<Advice<Pattern>> {
    let mut out: Vec<Advice<Pattern>> = patterns
        .into_iter()
        .map(|(p, rel)| {
            let confidence = p.confidence(now, half_life_days);
            let effectiveness = p.effectiveness.score();
            let score = rel.weight() * confidence * (2.0 * effectiveness);
            let mut why = format!(
                "seen {}x in {}, {:.0}% success (confidence {:.0}%)",
                p.occurrences,
                p.context.label(),
                p.success_rate() * 100.0,
                confidence * 100.0
            );
            rel.note(&mut why);
            let e = &p.effectiveness;
            if e.uses() > 0 {
                let _ = write!(
                    why,
                    "; feedback {} helped / {} hindered",
                    e.helped, e.hindered
                );
            }
            if e.hindered_streak > 0 {
                let _ = write!(
                    why,
                    " ({} in a row since it last helped: demoted)",
                    e.hindered_streak
                );
            }
            Advice {
                why: pinned_why(&p, why),
                item: p,
                score,
                taught_share: rel.share,
            }
        })
        .filter(|a| a.score > 0.0)
        .collect();
    sort_advice(&mut out, |p| p.id.to_string());
    out
}

/// Ranks heuristics: relevance times decayed confidence. A general rule is left out where an
/// observed rule of the same condition and action is among the candidates (it says the same,
/// with the evidence of this very context).
pub(crate) fn rank_heuristics(
    heuristics: Vec<(Heuristic, Relevance)>,
    now: DateTime<Utc>,
    half_life_days: f64,
) -> Vec<Advice<Heuristic>> {
    let heuristics: Vec<_> = (heuristics.into_iter())
        .map(|(h, rel)| (h.is_general(), h, rel))
        .collect();
    let observed: HashSet<(&str, &str)> = (heuristics.iter())
        .filter(|(general, ..)| !general)
        .map(|(_, h, _)| (h.condition.as_str(), h.action.as_str()))
        .collect();
    let said = |h: &Heuristic| observed.contains(&(h.condition.as_str(), h.action.as_str()));
    let general: Vec<bool> = heuristics.iter().map(|(g, h, _)| *g && said(h)).collect();
    let mut out: Vec<Advice<Heuristic>> = (heuristics.into_iter().zip(general))
        .filter(|(_, repeated)| !repeated)
        .map(|((general, h, rel), _)| {
            let confidence = h.confidence(now, half_life_days);
            let mut why = format!(
                "held {} of {} times {} (confidence {:.0}%)",
                h.support,
                h.support + h.against,
                rule_scope(&h, general),
                confidence * 100.0
            );
            rel.note(&mut why);
            Advice {
                score: rel.weight() * confidence,
                why: pinned_why(&h, why),
                item: h,
                taught_share: rel.share,
            }
        })
        .filter(|a| a.score > 0.0)
        .collect();
    sort_advice(&mut out, |h| h.id.to_string());
    out
}

/// Ranks failure lessons: relevance times how often they struck (log-scaled) times recency.
pub(crate) fn rank_pitfalls(
    lessons: Vec<(FailureLesson, Relevance)>,
    now: DateTime<Utc>,
    half_life_days: f64,
) -> Vec<Advice<FailureLesson>> {
    let mut out: Vec<Advice<FailureLesson>> = lessons
        .into_iter()
        .map(|(l, rel)| {
            let decay = crate::statistics::decay_factor(l.last_seen, now, half_life_days);
            let score = rel.weight() * (1.0 + l.occurrences as f64).ln() * decay;
            let mut why = format!("struck {} time(s) in {}", l.occurrences, l.context.label());
            rel.note(&mut why);
            Advice {
                score,
                why: pinned_why(&l, format!("{}: {why}", l.text())),
                item: l,
                taught_share: rel.share,
            }
        })
        .filter(|a| a.score > 0.0)
        .collect();
    sort_advice(&mut out, |l| l.id.to_string());
    out
}

/// Pinned items first (an operator's agreed procedure), then by score, ties by id.
pub(super) fn sort_advice<T: Learned>(items: &mut [Advice<T>], id: impl Fn(&T) -> String) {
    items.sort_by(|a, b| {
        (b.item.pinned().is_some())
            .cmp(&a.item.pinned().is_some())
            .then_with(|| b.score.total_cmp(&a.score))
            .then_with(|| id(&a.item).cmp(&id(&b.item)))
    });
}

/// Puts `pinned: <reason>` before an item's `why`.
fn pinned_why<T: Learned>(item: &T, why: String) -> String {
    match item.pinned() {
        Some(pin) => format!("pinned: {}; {why}", pin.reason),
        None => why,
    }
}
