//! natfw-dataplane: the sans-I/O engine and the I/O around it.
pub mod cli;
pub mod flowlog;
pub mod lab;
pub mod time;
