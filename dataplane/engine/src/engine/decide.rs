//! Policy evaluation of a flow whose verdict is pending, and the identification deadline.

use super::*;

/// Evaluate `policy` on what is known of a flow and, if it decides, record the outcome in `d`
/// and credit the deciding rule. `settle` (the flow is ending): facts still pending count as
/// unidentifiable, so the policy must decide. The one place a flow's [`FlowFacts`] are built.
pub(super) fn decide(
    policy: &Arc<CompiledPolicy>,
    dns: &DnsCache,
    now: Timestamp,
    key: &FlowKey,
    d: &mut FlowData,
    settle: bool,
) -> Option<DecidedBy> {
    let names: Vec<&str> = dns.names_for(now, key.dst).collect();
    let mut facts = FlowFacts {
        src: key.src,
        dst: key.dst,
        proto: ip_proto(key.proto),
        dst_port: (!is_icmp(key.proto)).then_some(key.dport),
        country: d.country,
        domain: d.domain_for_policy(),
        app: d.app_for_policy(),
        dns_names: &names,
    };
    if settle {
        if matches!(facts.domain, natfw_policy::Fact::Pending) {
            facts.domain = natfw_policy::Fact::Unidentifiable;
        }
        if matches!(facts.app, natfw_policy::Fact::Pending) {
            facts.app = natfw_policy::Fact::Unidentifiable;
        }
    }
    let ev = policy.evaluate(&facts);
    let Outcome::Decided { rule, action, by } = ev.outcome else {
        return None;
    };
    if action == Action::Accept && unreadable_name_matters(policy, &facts, d) {
        // Loose mode, `on_unidentifiable: drop`: the client made the name unreadable and the
        // verdict depends on it (it would not be decided if the fact were still pending).
        d.verdict = FlowVerdict::Drop;
        d.rule = None;
        d.decided_by = None;
        d.decided_under = Some(Arc::clone(policy));
        return Some(DecidedBy::UnknownStrict);
    }
    d.verdict = match action {
        Action::Accept => FlowVerdict::Accept,
        Action::Drop => FlowVerdict::Drop,
    };
    d.rule = rule;
    d.decided_by = Some(by);
    policy.counters().get(rule).hit(now.as_nanos());
    d.decided_under = Some(Arc::clone(policy));
    if !ev.monitors.is_empty() {
        d.monitors = Some(Box::new(ev.monitors.into_boxed_slice()));
    }
    Some(by)
}

/// `firewall.on_unidentifiable: drop` applies: loose mode, a fact unidentifiable because the
/// client made it unreadable, and the policy could not decide without it.
fn unreadable_name_matters(policy: &CompiledPolicy, facts: &FlowFacts<'_>, d: &FlowData) -> bool {
    use natfw_policy::{Fact, Mode, OnUnidentifiable};
    if policy.mode() != Mode::Loose
        || policy.on_unidentifiable() != OnUnidentifiable::Drop
        || !d.why.is_some_and(super::event::client_made_unreadable)
    {
        return false;
    }
    let mut open = *facts;
    if matches!(open.domain, Fact::Unidentifiable) {
        open.domain = Fact::Pending;
    }
    if matches!(open.app, Fact::Unidentifiable) {
        open.app = Fact::Pending;
    }
    !matches!(policy.evaluate(&open).outcome, Outcome::Decided { .. })
}

impl Engine {
    pub(super) fn class_of(proto: u8, d: &FlowData) -> TimerClass {
        match proto {
            PROTO_TCP => d.tcp.class(),
            PROTO_UDP if d.dns_only => TimerClass::DnsUdp,
            PROTO_UDP => TimerClass::Udp,
            _ => TimerClass::Icmp,
        }
    }

    /// Evaluate the policy for a flow whose verdict is pending; record the outcome.
    pub(super) fn evaluate(&mut self, now: Timestamp, r: FlowRef) {
        let policy = self.policy.load_full();
        let Some(e) = self.table.get(r) else {
            return;
        };
        if e.data.verdict != FlowVerdict::Pending {
            return;
        }
        if !policy.enabled() {
            let d = &mut self.table.get_mut(r).expect("flow looked up above").data;
            d.fw_off = true;
            d.verdict = FlowVerdict::Accept;
            return;
        }
        let by = {
            let d = &mut self.table.get_mut(r).expect("flow looked up above");
            let by = decide(&policy, &self.dns, now, &d.key, &mut d.data, false);
            self.stats.policy_evaluations += 1;
            by
        };
        if let Some(by) = by {
            let d = &mut self.table.get_mut(r).expect("flow looked up above").data;
            if by == DecidedBy::UnknownStrict {
                // Nothing more to learn from a flow that is being dropped.
                d.give_up("not identified");
            }
        }
    }

    /// The identification deadline of `r` passed: pending facts become unidentifiable.
    pub(super) fn identification_timeout(&mut self, now: Timestamp, r: FlowRef) {
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        if e.data.ident == NO_IDENT || e.data.recorded || !e.data.facts_pending() {
            return;
        }
        let timeout = std::time::Duration::from_millis(self.opts.pending_timeout_ms);
        match self.idents.get(e.data.ident) {
            Some(id) if id.flow == r && id.started.add(timeout) <= now => {}
            _ => return,
        }
        e.data.give_up(flow::WHY_TIMEOUT);
        self.stats.l7_timeouts += 1;
        let was_pending = e.data.verdict == FlowVerdict::Pending;
        self.evaluate(now, r);
        match self.table.get(r).map(|e| e.data.verdict) {
            Some(FlowVerdict::Accept) => self.release(r),
            Some(FlowVerdict::Drop) if was_pending => self.deny(now, r, None, true),
            _ => {}
        }
        self.after_analysis(r);
    }
}
