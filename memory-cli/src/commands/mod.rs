//! One module per command group.

pub mod demo;
pub mod episode;
pub mod learned;
pub mod status;
