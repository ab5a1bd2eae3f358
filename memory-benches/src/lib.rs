//! Shared harness for the benchmarks.
