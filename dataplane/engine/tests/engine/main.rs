//! The whole engine: SNAT and conntrack, fragments, fuzz regressions. One test binary per area; one module per topic.

mod evasion;
mod frag;
mod fuzz_regress;
mod nat;
