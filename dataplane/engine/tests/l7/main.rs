//! L7 identification on the real captures: expected results, mutations, fuzz seeds. One test binary per area; one module per topic.

mod apps;
mod corpus;
mod fuzz_seeds;
mod mutations;
#[path = "../../src/l7/testpcap.rs"]
mod testpcap;
