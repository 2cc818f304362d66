//! Per-rule hit counters: atomics indexed by rule, shared by name across policy reloads.
//!
//! The engine credits a rule when the rule decides a flow ([`RuleCounter::hit`]) and adds the
//! flow's bytes when it ends; operators read them through the admin API and metrics. Each
//! [`CompiledPolicy`](crate::compile::CompiledPolicy) holds one counter per rule plus one for
//! the default action; [`RuleCounters::inherit`] makes a reloaded policy reuse the counters of
//! rules with the same name, so totals survive reloads and flows decided before a reload still
//! count for the rule that decided them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::model::{Rule, RuleId};

/// The counters of one rule (or of the default action).
#[derive(Debug, Default)]
pub struct RuleCounter {
    hits: AtomicU64,
    bytes: AtomicU64,
    /// Time of the last hit, ns since the UNIX epoch; 0 = never.
    last_hit_ns: AtomicU64,
}

/// A copy of one [`RuleCounter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCount {
    /// Flows this rule decided.
    pub hits: u64,
    /// Bytes (out + in) of those flows, added as they end.
    pub bytes: u64,
    /// When it last decided a flow (ns since the UNIX epoch).
    pub last_hit_ns: Option<u64>,
}

impl RuleCounter {
    /// The rule decided a flow at `now_ns`.
    pub fn hit(&self, now_ns: u64) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.last_hit_ns.fetch_max(now_ns, Ordering::Relaxed);
    }

    /// Bytes of a flow this rule decided.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> RuleCount {
        let last = self.last_hit_ns.load(Ordering::Relaxed);
        RuleCount {
            hits: self.hits.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            last_hit_ns: (last != 0).then_some(last),
        }
    }
}

/// One counter per rule, in rule order, and one for the default action.
#[derive(Debug, Clone)]
pub struct RuleCounters {
    rules: Box<[Arc<RuleCounter>]>,
    default: Arc<RuleCounter>,
}

impl RuleCounters {
    /// Fresh counters for `rules`.
    pub fn new(rules: &[Rule]) -> RuleCounters {
        RuleCounters {
            rules: rules.iter().map(|_| Arc::default()).collect(),
            default: Arc::default(),
        }
    }

    /// The counter of `rule`, or of the default action for `None` (and for an id that is not
    /// this policy's).
    pub fn get(&self, rule: Option<RuleId>) -> &RuleCounter {
        rule.and_then(|id| self.rules.get(id.0 as usize))
            .unwrap_or(&self.default)
    }

    /// The default action's counter.
    pub fn default_action(&self) -> &RuleCounter {
        &self.default
    }

    /// Reuse `old`'s counters for rules of the same name (and the default action's).
    pub fn inherit(&mut self, rules: &[Rule], old_rules: &[Rule], old: &RuleCounters) {
        let by_name: HashMap<&str, &Arc<RuleCounter>> = old_rules
            .iter()
            .map(|r| r.name.as_str())
            .zip(old.rules.iter())
            .collect();
        for (slot, r) in self.rules.iter_mut().zip(rules) {
            if let Some(c) = by_name.get(r.name.as_str()) {
                *slot = Arc::clone(c);
            }
        }
        self.default = Arc::clone(&old.default);
    }
}
