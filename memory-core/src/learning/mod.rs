//! TODO module docs

mod extract;
mod reflect;
mod reward;
mod update;

pub use extract::{Recovery, extract_learning, find_recoveries};
pub use reflect::reflect;
pub use reward::{RewardHistory, compute_reward};
pub use update::{Changed, ExistingLearned, LearnedChanges, LearningUpdate};
