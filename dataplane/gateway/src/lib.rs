//! natfw-gateway: everything around the engine on a gateway VM — the XDP loader and AF_XDP
//! sockets, netlink, the `run` loop, the admin API and metrics, `replay` over captures, `check`,
//! and the command line of the `natfw` binary.
pub mod admin;
pub mod afxdp;
pub mod check;
pub mod cli;
pub mod dns;
pub mod guard;
pub mod handover;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod neigh;
pub mod netlink;
pub mod notify;
pub mod replay;
pub mod run;
pub mod syslog;
pub mod xdp;
pub mod xsk_stats;

/// The rule deciding when `build.rs` reruns, compiled here for its tests.
#[cfg(test)]
#[allow(dead_code)] // items only build.rs uses
#[path = "../build/rerun.rs"]
mod build_rerun;
