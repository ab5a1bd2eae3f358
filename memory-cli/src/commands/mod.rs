//! One module per command group.

pub mod backup;
pub mod consolidate;
pub mod correct;
pub mod demo;
pub mod episode;
pub mod eval;
pub mod forget;
pub mod keys;
pub mod learned;
pub mod mcp;
pub mod recommend;
pub mod serve;
pub mod status;
pub mod transfer;
