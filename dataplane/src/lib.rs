//! natfw-dataplane: the sans-I/O engine and the I/O around it.
pub mod check;
pub mod cli;
pub mod conntrack;
pub mod dnscache;
pub mod engine;
pub mod flowlog;
pub mod frag;
pub mod l7;
pub mod pcap;
pub mod reasm;
pub mod replay;
pub mod snat;
pub mod stats;
pub mod time;
pub mod views;
pub mod wire;
