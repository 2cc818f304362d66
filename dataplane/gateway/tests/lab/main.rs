//! The network-namespace lab end to end (root; SKIP otherwise). One test binary per area; one module per topic.

mod compose;
mod console;
mod dns;
mod e2e;
mod evasion;
mod failclosed;
mod fastpath;
mod ha;
mod ops;
mod records;
mod topology;
