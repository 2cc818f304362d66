//! The whole engine: SNAT and conntrack, DNS facts, fragments, fuzz regressions, several packet workers. One test binary per area; one module per topic.

mod dns;
mod evasion;
mod frag;
mod fuzz_regress;
mod nat;
mod offload;
mod workers;
