//! natfw-dataplane: the sans-I/O engine and the I/O around it.
pub mod cli;
pub mod engine;
pub mod flowlog;
pub mod stats;
pub mod time;
