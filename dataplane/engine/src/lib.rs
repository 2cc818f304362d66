//! natfw-engine: the sans-I/O core of natfw.
//!
//! [`Engine::process`] takes the time, the side a frame arrived on and the frame, and returns a
//! verdict; frames it wants sent are drained with [`Engine::drain_emits`], finished flows leave
//! as plain-data [`FlowEnd`] events through a [`FlowSink`]. Nothing here reads a clock, a file
//! or a socket, starts a thread or uses `unsafe`: the crate's dependency rule (natfw-policy and
//! small pure crates only) is checked by `tests/tests/layout.rs`.
#![forbid(unsafe_code)]

pub mod conntrack;
pub mod dnscache;
pub mod engine;
pub mod frag;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod l7;
pub mod reasm;
pub mod snat;
pub mod stats;
pub mod steer;
pub mod time;
pub mod wire;

pub use engine::{Engine, EngineOptions, Side, Verdict};
