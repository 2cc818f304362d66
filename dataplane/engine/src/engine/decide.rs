//! Policy evaluation of a flow whose verdict is pending, and the identification deadline.

use super::*;

/// The DNS facts a decision may use.
#[derive(Clone, Copy)]
pub(super) struct DnsView<'a> {
    pub cache: &'a DnsCache,
    pub gw: &'a GatewayFacts,
    /// The gateway resolves names flows present (`fqdn_and_dns` verification) on request.
    pub on_demand: bool,
}

/// Why [`decide`] did not decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// A fact of the flow (name, application) is still being identified.
    Facts,
    /// A rule needs the gateway's resolution of the flow's name, which it does not have yet.
    Resolve,
}

/// Evaluate `policy` on what is known of a flow and, if it decides, record the outcome in `d`
/// and credit the deciding rule. `settle` (the flow is ending): facts still pending count as
/// unidentifiable, so the policy must decide. The one place a flow's [`FlowFacts`] are built.
///
/// The first evaluation assumes the gateway may still resolve the flow's name (when it
/// resolves on demand); only when a rule's outcome hangs on that is the resolution state looked
/// up, so flows that need no DNS fact pay nothing for the verification path.
pub(super) fn decide(
    policy: &Arc<CompiledPolicy>,
    dns: DnsView<'_>,
    now: Timestamp,
    key: &FlowKey,
    d: &mut FlowData,
    settle: bool,
) -> Result<DecidedBy, Wait> {
    let mut names: Vec<&str> = dns.cache.names_for_client(now, key.src, key.dst).collect();
    names.extend(dns.gw.names_for(now, key.dst));
    let mut facts = FlowFacts {
        src: key.src,
        dst: key.dst,
        proto: ip_proto(key.proto),
        dst_port: (!is_icmp(key.proto)).then_some(key.dport),
        country: d.country,
        domain: d.domain_for_policy(),
        app: d.app_for_policy(),
        dns_names: &names,
        resolution: match d.dns_wait {
            DnsWait::Failed => Resolution::Failed,
            _ if dns.on_demand => Resolution::Pending,
            _ => Resolution::Final,
        },
    };
    if settle {
        if matches!(facts.domain, natfw_policy::Fact::Pending) {
            facts.domain = natfw_policy::Fact::Unidentifiable;
        }
        if matches!(facts.app, natfw_policy::Fact::Pending) {
            facts.app = natfw_policy::Fact::Unidentifiable;
        }
    }
    let mut ev = policy.evaluate(&facts);
    if let Outcome::Pending { needs, .. } = ev.outcome {
        if needs.dns {
            let state = match facts.domain {
                natfw_policy::Fact::Known(n) => dns.gw.state(now, n),
                _ => NameState::Unknown,
            };
            facts.resolution = match state {
                NameState::Resolved => Resolution::Final,
                NameState::Failed => Resolution::Failed,
                NameState::Unknown if settle => Resolution::Failed,
                NameState::Unknown => return Err(Wait::Resolve),
            };
            ev = policy.evaluate(&facts);
        }
    }
    let Outcome::Decided { rule, action, by } = ev.outcome else {
        return Err(Wait::Facts);
    };
    if action == Action::Accept && unreadable_name_matters(policy, &facts, d) {
        // Loose mode, `on_unidentifiable: drop`: the client made the name unreadable and the
        // verdict depends on it (it would not be decided if the fact were still pending).
        d.settle(Decided {
            decided_under: Some(Arc::clone(policy)),
            ..Decided::unattributed(Settled::Drop)
        });
        return Ok(DecidedBy::UnknownStrict);
    }
    let verified = match (by, rule) {
        (DecidedBy::Match, Some(id)) => dns_verified(policy.rule(id), &facts, dns, now),
        _ => None,
    };
    if let Some(v) = verified {
        d.dns_wait = DnsWait::Verified(v);
    }
    policy.counters().get(rule).hit(now.as_nanos());
    d.settle(Decided {
        verdict: match action {
            Action::Accept => Settled::Accept,
            Action::Drop => Settled::Drop,
        },
        decided_by: Some(by),
        rule,
        monitors: (!ev.monitors.is_empty()).then(|| Box::new(ev.monitors.into_boxed_slice())),
        decided_under: Some(Arc::clone(policy)),
    });
    Ok(by)
}

/// Which DNS fact made `rule` (which matched) true, if its destination condition went through
/// DNS: the client's own answer first, then the gateway's resolution.
fn dns_verified(
    rule: &natfw_policy::Rule,
    f: &FlowFacts<'_>,
    dns: DnsView<'_>,
    now: Timestamp,
) -> Option<DnsVerified> {
    let natfw_policy::Destination::Domains(patterns) = &rule.destination else {
        return None;
    };
    let sent = match f.domain {
        natfw_policy::Fact::Known(n) => Some(n),
        _ => None,
    };
    let name = match rule.domain_mode {
        DomainMode::Fqdn => return None,
        DomainMode::FqdnAndDns => sent?,
        // The sent name matched: no DNS fact was needed.
        DomainMode::FqdnOrDns if sent.is_some_and(|n| patterns.iter().any(|p| p.matches(n))) => {
            return None
        }
        DomainMode::Dns | DomainMode::FqdnOrDns => *f
            .dns_names
            .iter()
            .find(|n| patterns.iter().any(|p| p.matches(n)))?,
    };
    match dns.cache.source_of(now, f.src, f.dst, name) {
        Some(AnswerSource::Crossing) => Some(DnsVerified::ClientAnswer),
        Some(AnswerSource::Forwarder) => Some(DnsVerified::Forwarder),
        None => dns
            .gw
            .has(now, name, f.dst)
            .then_some(DnsVerified::GatewayResolution),
    }
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
    /// The idle-timer class of a packet on an established-flow path (both directions): an
    /// established TCP connection (marked so) or a UDP flow; `None` sends it the general way.
    #[inline]
    pub(super) fn plain_class(proto: u8, d: &mut FlowData) -> Option<TimerClass> {
        match proto {
            PROTO_TCP if d.tcp.state == TcpState::Established => {
                d.established = true;
                Some(TimerClass::Established)
            }
            PROTO_UDP => Some(Self::class_of(PROTO_UDP, d)),
            _ => None,
        }
    }

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
        if e.data.verdict() != FlowVerdict::Pending {
            return;
        }
        if !policy.enabled() {
            let d = &mut self.table.get_mut(r).expect("flow looked up above").data;
            d.fw_off = true;
            d.set_verdict(Settled::Accept);
            return;
        }
        let view = DnsView {
            cache: &self.dns,
            gw: &self.gw_dns,
            on_demand: self.opts.on_demand_resolution,
        };
        let by = {
            let d = &mut self.table.get_mut(r).expect("flow looked up above");
            let by = decide(&policy, view, now, &d.key, &mut d.data, false);
            self.stats.policy_evaluations += 1;
            by
        };
        match by {
            Ok(DecidedBy::UnknownStrict) => {
                // Nothing more to learn from a flow that is being dropped.
                let d = &mut self.table.get_mut(r).expect("flow looked up above").data;
                d.give_up("not identified");
            }
            Ok(_) | Err(Wait::Facts) => {}
            Err(Wait::Resolve) => self.await_resolution(now, r),
        }
    }

    /// A rule waits for the gateway's resolution of the flow's (sent) name: join the name's
    /// waiters, asking the gateway for it unless already asked. Over the concurrency bound the
    /// flow does not wait: its verification is unknown.
    fn await_resolution(&mut self, now: Timestamp, r: FlowRef) {
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        if matches!(e.data.dns_wait, DnsWait::Waiting | DnsWait::Failed) {
            return;
        }
        let Some(name) = e
            .data
            .domain
            .as_deref()
            .filter(|_| e.data.domain_fact == FactState::Known)
        else {
            return;
        };
        if let Some(w) = self.resolving.get_mut(name) {
            e.data.dns_wait = DnsWait::Waiting;
            w.waiters.push(r);
            self.stats.dns_resolve_waits += 1;
            return;
        }
        if self.resolving.len() >= self.opts.max_resolving {
            self.stats.dns_resolve_refused += 1;
            e.data.dns_wait = DnsWait::Failed;
            self.evaluate(now, r);
            return;
        }
        let name: Arc<str> = Arc::from(name);
        e.data.dns_wait = DnsWait::Waiting;
        self.resolving.insert(
            Arc::clone(&name),
            Resolving {
                asked: now,
                waiters: vec![r],
            },
        );
        let deadline = now.add(std::time::Duration::from_millis(
            self.opts.resolve_timeout_ms,
        ));
        self.resolve_deadlines
            .push_back((deadline, Arc::clone(&name)));
        self.resolve_requests.push(name);
        self.stats.dns_resolve_requests += 1;
        self.stats.dns_resolve_waits += 1;
    }

    /// The name's resolution arrived (or timed out): decide its waiting flows again.
    pub(super) fn resolution_done(&mut self, now: Timestamp, name: &str, failed: bool) {
        let Some(w) = self.resolving.remove(name) else {
            return;
        };
        for r in w.waiters {
            let Some(e) = self.table.get_mut(r) else {
                continue;
            };
            if e.data.dns_wait != DnsWait::Waiting {
                continue;
            }
            e.data.dns_wait = if failed { DnsWait::Failed } else { DnsWait::No };
            self.resume(now, r);
        }
    }

    /// Decide a pending flow again after something it waited for arrived; act on the verdict.
    pub(super) fn resume(&mut self, now: Timestamp, r: FlowRef) {
        let was_pending = self
            .table
            .get(r)
            .is_some_and(|e| e.data.verdict() == FlowVerdict::Pending && !e.data.recorded());
        if !was_pending {
            return;
        }
        self.evaluate(now, r);
        match self.table.get(r).map(|e| e.data.verdict()) {
            Some(FlowVerdict::Accept) => self.release(r),
            Some(FlowVerdict::Drop) => self.deny(now, r, None, true),
            _ => {}
        }
        self.after_analysis(r);
    }

    /// The identification deadline of `r` passed: pending facts become unidentifiable.
    pub(super) fn identification_timeout(&mut self, now: Timestamp, r: FlowRef) {
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        let Some(idx) = e.data.ident else {
            return;
        };
        if e.data.recorded() || !e.data.facts_pending() {
            return;
        }
        let timeout = std::time::Duration::from_millis(self.opts.pending_timeout_ms);
        match self.idents.get(idx) {
            Some(id) if id.flow == r && id.started.add(timeout) <= now => {}
            _ => return,
        }
        e.data.give_up(flow::WHY_TIMEOUT);
        self.stats.l7_timeouts += 1;
        let was_pending = e.data.verdict() == FlowVerdict::Pending;
        self.evaluate(now, r);
        match self.table.get(r).map(|e| e.data.verdict()) {
            Some(FlowVerdict::Accept) => self.release(r),
            Some(FlowVerdict::Drop) if was_pending => self.deny(now, r, None, true),
            _ => {}
        }
        self.after_analysis(r);
    }
}
