//! natfw-dataplane: the sans-I/O engine and the I/O around it.
pub mod cli;
pub mod flowlog;
pub mod frag;
pub mod reasm;
pub mod time;
pub mod wire;
