//! The XDP program and the AF_XDP data path (root; SKIP otherwise). One test binary per area; one module per topic.

mod classifier;
mod fastpath;
mod forward;
mod program;
mod support;
mod workers;
