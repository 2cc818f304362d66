//! Per-flow state kept in the conntrack table (compact: the L7 buffers live in a side table)
//! and the flow-end event built from it.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use natfw_policy::compile::CompiledPolicy;
use natfw_policy::{App, CountryCode, DecidedBy, RuleId};

pub use super::event::{DnsVerified, DomainSrc, EndReason, FactState, FlowEnd, FlowVerdict};
pub(crate) use super::event::{
    WHY_DNS_QUERY, WHY_ENDED_PENDING, WHY_HOLD_LIMIT, WHY_NOT_TLS_HTTP, WHY_NO_NAME_PROTO,
    WHY_REASM_LIMIT, WHY_TIMEOUT, WHY_UDP_NO_NAME,
};
use crate::conntrack::{FlowKey, TcpTrack, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::stats::Counter;
use crate::time::Timestamp;
use crate::wire::tcp::SeqNumber;

/// Everything the engine keeps per flow besides the conntrack entry itself: the facts the
/// flow log wants whatever its phase, and the [`Phase`], which holds only each phase's data.
#[derive(Debug)]
pub(crate) struct FlowData {
    pub start: Timestamp,
    pub out: Counter,
    pub inb: Counter,
    pub tcp: TcpTrack,
    /// Where the flow is: identifying (no verdict), decided, or closed (recorded).
    pub phase: Phase,
    /// Name for the log (sent name, or the name the client resolved, see `domain_src`).
    pub domain: Option<Box<str>>,
    pub domain_src: DomainSrc,
    /// The domain fact for the policy (only names the client *sent* count as known).
    pub domain_fact: FactState,
    pub app: Option<App>,
    pub app_fact: FactState,
    /// First reason a fact became unidentifiable.
    pub why: Option<&'static str>,
    pub country: Option<CountryCode>,
    pub ech: bool,
    /// Conflicting retransmission seen.
    pub evasion: bool,
    /// The client sent payload.
    pub client_payload: bool,
    /// TCP reached ESTABLISHED at some point.
    pub established: bool,
    /// The flow only carried DNS (short UDP timeout).
    pub dns_only: bool,
    /// Firewall disabled when the flow started.
    pub fw_off: bool,
    /// Something of this flow left by the outside (else the record shows no SNAT).
    pub sent: bool,
    /// SYN sequence numbers (client, server).
    pub isn_c: SeqNumber,
    pub isn_s: SeqNumber,
    /// Sequence number of the FIN of each side (client, server), meaningful once
    /// `tcp.fin_out` / `tcp.fin_in`: a closed flow's stragglers must lie inside
    /// `[isn + 1, fin + 1]` of their side.
    pub fin_c: SeqNumber,
    pub fin_s: SeqNumber,
    /// The flow's L7 state in the side table, while there is any. Not part of [`Phase`]: it
    /// outlives the verdict (facts the log wants, inspected bytes the server has not
    /// acknowledged yet) and may outlive the record (a FIN-closed flow keeps it until it leaves
    /// the table).
    pub ident: Option<IdentRef>,
    /// The flow's DNS verification (one byte: the entry is kept compact).
    pub dns_wait: DnsWait,
}

/// A flow's place in its life, holding only that phase's data.
#[derive(Debug)]
pub(crate) enum Phase {
    /// No verdict yet: facts are being identified (or the policy waits for a resolution).
    /// Handshake packets pass; payload is held.
    Identifying,
    /// The verdict is made.
    Decided(Decided),
    /// The record is written; the entry only absorbs stragglers until it times out. Keeps
    /// only the verdict it was recorded with (a denied flow stays denied).
    Closed { verdict: FlowVerdict },
}

/// What a flow's decision left: the verdict and who made it.
#[derive(Debug)]
pub(crate) struct Decided {
    pub verdict: Settled,
    pub decided_by: Option<DecidedBy>,
    pub rule: Option<RuleId>,
    /// Boxed twice: rare, and a thin pointer keeps the entry within its size budget.
    #[allow(clippy::box_collection, clippy::redundant_allocation)]
    pub monitors: Option<Box<Box<[RuleId]>>>,
    /// The policy that decided the flow: `rule` and `monitors` index into it, so the record
    /// names the right rules after a hot reload swapped in another policy. `None`: accepted
    /// with the firewall disabled, or dropped before any policy decided.
    pub decided_under: Option<Arc<CompiledPolicy>>,
}

/// A verdict that is made (a [`FlowVerdict`] other than `Pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Accept,
    Drop,
}

impl From<Settled> for FlowVerdict {
    fn from(v: Settled) -> Self {
        match v {
            Settled::Accept => FlowVerdict::Accept,
            Settled::Drop => FlowVerdict::Drop,
        }
    }
}

impl Decided {
    /// A verdict no policy rule made (firewall off, dropped before a decision).
    pub(crate) fn unattributed(verdict: Settled) -> Self {
        Decided {
            verdict,
            decided_by: None,
            rule: None,
            monitors: None,
            decided_under: None,
        }
    }
}

/// Handle of a flow's entry in the L7 side table ([`super::ident::IdentTable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdentRef(NonZeroU32);

impl IdentRef {
    /// The handle of slot `index`; `None` past the last representable slot.
    pub(crate) fn from_index(index: usize) -> Option<Self> {
        u32::try_from(index)
            .ok()
            .and_then(|i| i.checked_add(1))
            .and_then(NonZeroU32::new)
            .map(IdentRef)
    }

    /// The slot this handle names.
    pub(crate) fn index(self) -> usize {
        (self.0.get() - 1) as usize
    }
}

/// A flow's DNS verification: its wait for the gateway's resolution of its name
/// (`fqdn_and_dns`), and how the deciding rule tied the destination to a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DnsWait {
    /// Not waiting, nothing verified.
    No,
    /// Waiting: the flow is among the name's waiters.
    Waiting,
    /// The resolution failed or timed out for this flow: a missing address is unknown.
    Failed,
    /// The deciding rule tied the destination to a name this way.
    Verified(DnsVerified),
}

impl FlowData {
    pub(crate) fn new(now: Timestamp, proto: u8, country: Option<CountryCode>) -> Self {
        let icmp = proto == PROTO_ICMP || proto == PROTO_ICMPV6;
        let l7 = proto == PROTO_TCP || proto == PROTO_UDP;
        FlowData {
            start: now,
            out: Counter::default(),
            inb: Counter::default(),
            tcp: TcpTrack::new(),
            phase: Phase::Identifying,
            domain: None,
            domain_src: DomainSrc::None,
            domain_fact: if l7 {
                FactState::Pending
            } else {
                FactState::Unidentifiable
            },
            app: icmp.then_some(App::Icmp),
            app_fact: if icmp {
                FactState::Known
            } else if l7 {
                FactState::Pending
            } else {
                FactState::Unidentifiable
            },
            why: None,
            country,
            ech: false,
            evasion: false,
            client_payload: false,
            established: false,
            dns_only: false,
            fw_off: false,
            sent: false,
            isn_c: SeqNumber(0),
            isn_s: SeqNumber(0),
            fin_c: SeqNumber(0),
            fin_s: SeqNumber(0),
            ident: None,
            dns_wait: DnsWait::No,
        }
    }

    /// The verdict as the record and the packet path see it.
    pub(crate) fn verdict(&self) -> FlowVerdict {
        match &self.phase {
            Phase::Identifying => FlowVerdict::Pending,
            Phase::Decided(d) => d.verdict.into(),
            Phase::Closed { verdict } => *verdict,
        }
    }

    /// The decision, once made (not kept past the record).
    pub(crate) fn decided(&self) -> Option<&Decided> {
        match &self.phase {
            Phase::Decided(d) => Some(d),
            _ => None,
        }
    }

    /// Accepted, not recorded, nothing left to identify, hold or compare (no side-table
    /// entry, no pending fact): the flow's packets need only tracking and translation.
    #[inline]
    pub(crate) fn plain_accepted(&self) -> bool {
        matches!(
            &self.phase,
            Phase::Decided(Decided {
                verdict: Settled::Accept,
                ..
            })
        ) && self.ident.is_none()
            && !self.facts_pending()
    }

    /// The record has been written; the entry only absorbs stragglers until it times out.
    pub(crate) fn recorded(&self) -> bool {
        matches!(self.phase, Phase::Closed { .. })
    }

    /// The policy decided: enter the decided phase (a closed flow keeps only the verdict).
    pub(crate) fn settle(&mut self, decided: Decided) {
        match &mut self.phase {
            Phase::Closed { verdict } => *verdict = decided.verdict.into(),
            _ => self.phase = Phase::Decided(decided),
        }
    }

    /// Settle the verdict on `verdict`, keeping who decided (a drop that overrides an accept,
    /// say, keeps the policy that accepted); an undecided flow gets a verdict no rule made.
    pub(crate) fn set_verdict(&mut self, verdict: Settled) {
        match &mut self.phase {
            Phase::Identifying => self.phase = Phase::Decided(Decided::unattributed(verdict)),
            Phase::Decided(d) => d.verdict = verdict,
            Phase::Closed { verdict: v } => *v = verdict.into(),
        }
    }

    /// Dropped with no deciding rule (an evasion, a violated protocol watch): the verdict
    /// becomes `Drop` and the deciding rule is forgotten.
    pub(crate) fn drop_unattributed(&mut self) {
        self.set_verdict(Settled::Drop);
        if let Phase::Decided(d) = &mut self.phase {
            d.decided_by = None;
            d.rule = None;
        }
    }

    /// The record is written: keep only what a tombstone needs.
    pub(crate) fn close(&mut self) {
        self.phase = Phase::Closed {
            verdict: self.verdict(),
        };
    }

    /// A segment of this (closed) flow's `dir` side, `seq` and `len` payload bytes, lies inside
    /// what that side sent before its FIN (a retransmission, the last ACK): a TIME_WAIT
    /// straggler. Anything else (new data, a SYN, an unknown FIN) does not belong to the flow.
    pub(crate) fn is_straggler(&self, out: bool, seq: SeqNumber, len: usize) -> bool {
        let (isn, fin, seen) = if out {
            (self.isn_c, self.fin_c, self.tcp.fin_out)
        } else {
            (self.isn_s, self.fin_s, self.tcp.fin_in)
        };
        if !seen {
            return false;
        }
        let end = seq + len;
        seq > isn && seq.diff(fin + 1) <= 0 && end.diff(fin + 1) <= 0
    }

    /// Dropped by `firewall.on_unidentifiable: drop`: dropped without a deciding rule, not for
    /// an evasion, with a reason the client chose (the one way the engine reaches this state).
    pub(crate) fn unidentifiable_drop(&self) -> bool {
        self.verdict() == FlowVerdict::Drop
            && self.decided().is_none_or(|d| d.decided_by.is_none())
            && !self.evasion
            && self.why.is_some_and(super::event::client_made_unreadable)
    }

    /// Some fact may still arrive.
    pub(crate) fn facts_pending(&self) -> bool {
        self.domain_fact == FactState::Pending || self.app_fact == FactState::Pending
    }

    /// Mark every pending fact unidentifiable, for `why`.
    pub(crate) fn give_up(&mut self, why: &'static str) {
        if self.domain_fact == FactState::Pending {
            self.domain_fact = FactState::Unidentifiable;
            self.why.get_or_insert(why);
        }
        if self.app_fact == FactState::Pending {
            self.app_fact = FactState::Unidentifiable;
            self.why.get_or_insert(why);
        }
    }

    /// Set the name the client sent.
    pub(crate) fn set_sent_domain(&mut self, name: String, src: DomainSrc) {
        self.domain = Some(name.into_boxed_str());
        self.domain_src = src;
        self.domain_fact = FactState::Known;
    }

    /// The domain fact as the policy sees it.
    pub(crate) fn domain_for_policy(&self) -> natfw_policy::Fact<&str> {
        use natfw_policy::Fact;
        match (self.domain_fact, self.domain.as_deref()) {
            (FactState::Pending, _) => Fact::Pending,
            (FactState::Known, Some(d)) => Fact::Known(d),
            _ => Fact::Unidentifiable,
        }
    }

    /// The app fact as the policy sees it.
    pub(crate) fn app_for_policy(&self) -> natfw_policy::Fact<App> {
        use natfw_policy::Fact;
        match (self.app_fact, self.app) {
            (FactState::Pending, _) => Fact::Pending,
            (FactState::Known, Some(a)) => Fact::Known(a),
            _ => Fact::Unidentifiable,
        }
    }

    /// The plain-data event of this flow's end, for the flow log.
    pub(crate) fn end_event(
        &self,
        key: &FlowKey,
        snat: Option<(IpAddr, u16)>,
        end: Timestamp,
        end_reason: EndReason,
        policy: Arc<CompiledPolicy>,
    ) -> FlowEnd {
        self.event(key, snat, end, end_reason, || policy, self.domain.clone())
    }

    /// [`FlowData::end_event`] of a flow that left the table: its name moves into the event,
    /// and `policy` (the live policy) is only asked for when no policy decided the flow.
    pub(crate) fn into_end_event(
        mut self,
        key: &FlowKey,
        snat: Option<(IpAddr, u16)>,
        end: Timestamp,
        end_reason: EndReason,
        policy: impl FnOnce() -> Arc<CompiledPolicy>,
    ) -> FlowEnd {
        let domain = self.domain.take();
        self.event(key, snat, end, end_reason, policy, domain)
    }

    fn event(
        &self,
        key: &FlowKey,
        snat: Option<(IpAddr, u16)>,
        end: Timestamp,
        end_reason: EndReason,
        policy: impl FnOnce() -> Arc<CompiledPolicy>,
        domain: Option<Box<str>>,
    ) -> FlowEnd {
        let decided = self.decided();
        FlowEnd {
            key: *key,
            snat: snat.filter(|_| self.sent),
            start: self.start,
            end: end.max(self.start),
            end_reason,
            verdict: self.verdict(),
            decided_by: decided.and_then(|d| d.decided_by),
            rule: decided.and_then(|d| d.rule),
            monitors: decided.and_then(|d| d.monitors.as_deref().cloned()),
            policy: decided
                .and_then(|d| d.decided_under.clone())
                .unwrap_or_else(policy),
            domain,
            domain_src: self.domain_src,
            domain_fact: self.domain_fact,
            app: self.app,
            app_fact: self.app_fact,
            why: self.why,
            dns_verified: match self.dns_wait {
                DnsWait::Verified(v) => Some(v),
                _ => None,
            },
            dns_failed: self.dns_wait == DnsWait::Failed,
            country: self.country,
            ech: self.ech,
            evasion: self.evasion,
            unidentifiable_drop: self.unidentifiable_drop(),
            client_payload: self.client_payload,
            established: self.established,
            fw_off: self.fw_off,
            out: self.out,
            inb: self.inb,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Entry;

    /// Per-flow state is what makes 1,000,000 flows fit: keep an eye on it. (224 until the
    /// one-byte DNS verification state crossed an 8-byte boundary: 8 MB per million flows.)
    #[test]
    fn per_flow_state_is_compact() {
        let entry = std::mem::size_of::<Entry<FlowData>>();
        assert!(entry <= 232, "conntrack entry grew to {entry} bytes");
    }

    #[test]
    fn ident_handles_name_their_slot() {
        for i in [0usize, 1, 41, u32::MAX as usize - 1] {
            assert_eq!(IdentRef::from_index(i).map(IdentRef::index), Some(i));
        }
        assert_eq!(IdentRef::from_index(u32::MAX as usize), None);
        assert_eq!(std::mem::size_of::<Option<IdentRef>>(), 4);
    }

    #[test]
    fn phases_keep_only_their_data() {
        let mut d = FlowData::new(Timestamp::from_secs(1), PROTO_TCP, None);
        assert_eq!(d.verdict(), FlowVerdict::Pending);
        assert!(d.decided().is_none() && !d.recorded());
        // A verdict no rule made: nothing to credit, no rule to name.
        d.set_verdict(Settled::Accept);
        let dec = d.decided().expect("decided");
        assert_eq!(dec.verdict, Settled::Accept);
        assert!(dec.decided_by.is_none() && dec.rule.is_none() && dec.decided_under.is_none());
        // An evasion or a violated watch: dropped, no deciding rule.
        d.drop_unattributed();
        assert_eq!(d.verdict(), FlowVerdict::Drop);
        // Recorded: only the verdict stays, and a later decision cannot reopen the flow.
        d.close();
        assert!(d.recorded() && d.decided().is_none());
        assert_eq!(d.verdict(), FlowVerdict::Drop);
        d.settle(Decided::unattributed(Settled::Accept));
        assert!(d.recorded());
        assert_eq!(d.verdict(), FlowVerdict::Accept);
        // A flow recorded before any verdict keeps `Pending` for its tombstone.
        let mut p = FlowData::new(Timestamp::from_secs(1), PROTO_UDP, None);
        p.close();
        assert_eq!(p.verdict(), FlowVerdict::Pending);
    }
}
