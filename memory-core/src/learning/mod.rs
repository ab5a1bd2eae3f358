//! The learning pipeline: from a completed episode to what it teaches. Pure and
//! deterministic: the reward, the reflection, the observations, and the merge of an update into
//! what is known (which backends run inside their transaction).

mod extract;
pub(crate) use extract::follow_action;
mod reflect;
mod reward;
mod unlearn;
mod update;

pub use extract::{Recovery, extract_learning, find_recoveries, is_mistake};
pub use reflect::reflect;
pub use reward::{RewardHistory, compute_reward};
pub use unlearn::{RemovedItems, Unlearned};
pub use update::{Changed, ExistingLearned, LearnedChanges, LearningUpdate};
