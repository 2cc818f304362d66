//! The packet layer: parsing, rewriting, fragments and stream reassembly on real captures. One test binary per area; one module per topic.

mod corpus;
mod frag;
mod parse;
mod reasm;
mod too_big;
