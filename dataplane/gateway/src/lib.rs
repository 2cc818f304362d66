//! natfw-gateway: everything around the engine on a gateway VM — the XDP loader and AF_XDP
//! sockets, netlink, the `run` loop, the admin API and metrics, `replay` over captures, `check`,
//! and the command line of the `natfw` binary.
pub mod admin;
pub mod afxdp;
pub mod check;
pub mod cli;
pub mod guard;
pub mod metrics;
pub mod neigh;
pub mod netlink;
pub mod replay;
pub mod run;
pub mod xdp;
pub mod xsk_stats;
