//! TODO module docs

mod limits;
mod quota;
mod redact;

pub use limits::Limits;
pub use quota::{QuotaConfig, RateLimitConfig, RateLimiter};
pub use redact::{RedactionConfig, Redactor};
