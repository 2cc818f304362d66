//! Stand-ins for `natfw_policy::geo::GeoDb` and `natfw_policy::compile::CompiledPolicy` until the
//! `matcher` branch lands. Same names and signatures as CONTRACTS.md; import them through
//! `natfw_dataplane::engine::{GeoDb, CompiledPolicy}` and the switch will be invisible.

use std::net::IpAddr;
use std::sync::Arc;

use natfw_policy::eval::{naive_evaluate, Evaluation, FlowFacts};
use natfw_policy::{Action, CountryCode, Firewall, Mode, Rule, RuleId};

/// Country database stand-in: knows no country.
#[derive(Debug, Default)]
pub struct GeoDb;

impl GeoDb {
    /// The database shipped in the binary.
    pub fn embedded() -> Arc<GeoDb> {
        Arc::new(GeoDb)
    }

    /// Country of `ip`, if known.
    pub fn lookup(&self, _ip: IpAddr) -> Option<CountryCode> {
        None
    }
}

/// Compiled policy stand-in: the reference evaluator over a copy of the firewall.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    fw: Firewall,
}

impl CompiledPolicy {
    /// Compile `fw`.
    pub fn new(fw: &Firewall) -> CompiledPolicy {
        CompiledPolicy { fw: fw.clone() }
    }

    /// Evaluate one flow (same answer as `naive_evaluate`).
    pub fn evaluate(&self, f: &FlowFacts<'_>) -> Evaluation {
        naive_evaluate(&self.fw, f)
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.fw.rules
    }

    /// One rule by id.
    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.fw.rules[id.0 as usize]
    }

    pub fn mode(&self) -> Mode {
        self.fw.mode
    }

    pub fn default_action(&self) -> Action {
        self.fw.default_action
    }

    pub fn enabled(&self) -> bool {
        self.fw.enabled
    }
}
