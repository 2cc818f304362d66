//! The `natfw` binary as a user runs it: `check` and `replay`. One test binary per area; one module per topic.

mod build_rerun;
mod check;
mod daemon;
mod replay;
