//! The boundary policy every call passes before anything is stored: size limits, quotas and
//! the rate limiter, and secret redaction.

mod limits;
mod quota;
mod redact;

pub use limits::Limits;
pub use quota::{QuotaConfig, RateLimitConfig, RateLimiter};
pub use redact::{RedactionConfig, Redactor};
