//! natfw-policy: the configuration model of a natfw gateway, its validation, address books,
//! matchers (domains, prefixes, ports, countries) and the compiled ACL.
//!
//! The flow of data is one way:
//!
//! ```text
//! YAML text ──yaml::parse──► spanned tree ──config::load──► model::Config (+ every error/warning)
//!                                                               │
//!                                                   compile::CompiledPolicy::new
//!                                                               │
//!                      eval::FlowFacts ──CompiledPolicy::evaluate──► eval::Evaluation
//! ```
//!
//! [`eval::naive_evaluate`] is the top-to-bottom reference semantics; the compiled policy must
//! give the same answer for every flow (a property test checks it).

pub mod app;
pub mod compile;
pub mod config;
pub mod counters;
pub mod countries;
pub mod domain;
pub mod eval;
pub mod geo;
pub mod model;
pub mod ports;
pub mod prefix;
pub mod yaml;

pub use app::App;
pub use eval::{
    naive_evaluate, DecidedBy, Evaluation, Fact, FlowFacts, Needs, Outcome, Resolution,
};
pub use model::*;
