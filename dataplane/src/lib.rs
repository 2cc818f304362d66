//! natfw-dataplane: the sans-I/O engine and the I/O around it.
pub mod afxdp;
pub mod cli;
pub mod engine;
pub mod flowlog;
pub mod lab;
pub mod neigh;
pub mod netlink;
pub mod run;
pub mod stats;
pub mod time;
pub mod xdp;
pub mod wire;
