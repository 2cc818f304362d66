//! The compiled ACL: the same answer as [`naive_evaluate`](crate::eval::naive_evaluate)
//! without looking at every rule.
//!
//! Each rule condition is indexed by dimension (source prefix, protocol, destination port,
//! destination, application). For a flow, each dimension yields the bitset of rules that are
//! not definitely false on it: the rules without a condition there ("any") OR-ed with the
//! sparse hits of the dimension's matcher. The dimensions are AND-ed word by word in one
//! pass (the hits are held by reference, sparse ones as sorted cursors: nothing is copied or
//! allocated), and the surviving rules of each word are walked at once, in rule order, until
//! one decides, through the very same per-rule evaluation and walk as the
//! reference ([`rule_tri`], [`Walk`]). The index is conservative: it may let through a rule that
//! turns out false (that rule is then skipped by `rule_tri`), never drop one that is not false,
//! so the semantics cannot drift from the reference. One refinement: in loose mode a rule
//! whose truth is definitely *unknown* (its name or application will never be identified, and
//! no other condition is pending) is also left out, since the walk skips it exactly like a
//! false one; otherwise every flow without an SNI would walk all domain rules.

use rustc_hash::FxHashMap;

use crate::app::App;
use crate::counters::RuleCounters;
use crate::domain::DomainSet;
use crate::eval::{rule_tri, Evaluation, Fact, FlowFacts, IpProto, Resolution, Walk};
use crate::model::{
    Action, CountryCode, Destination, DomainMode, DomainPattern, Firewall, Mode, OnUnidentifiable,
    Protocol, Rule, RuleId,
};
use crate::ports::{PortSet, PortSetBuilder};
use crate::prefix::{PrefixSet, PrefixSetBuilder};

/// A fixed-size set of rule ids.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bits(Box<[u64]>);

impl Bits {
    fn new(words: usize) -> Self {
        Bits(vec![0; words].into_boxed_slice())
    }

    #[inline]
    fn set(&mut self, id: u32) {
        if let Some(w) = self.0.get_mut((id / 64) as usize) {
            *w |= 1 << (id % 64);
        }
    }

    #[inline]
    fn set_all(&mut self, ids: &[u32]) {
        for &id in ids {
            self.set(id);
        }
    }

    #[inline]
    fn and_with(&mut self, other: &[u64]) {
        for (a, b) in self.0.iter_mut().zip(other) {
            *a &= b;
        }
    }

    #[inline]
    fn or_with(&mut self, other: &[u64]) {
        for (a, b) in self.0.iter_mut().zip(other) {
            *a |= b;
        }
    }
}

/// The rule ids behind one matcher entry (a prefix, a port range, a pattern, a country): a
/// short list, or a bitset once the list is long enough that OR-ing whole words is cheaper
/// than setting bits one at a time (a broad range shared by many rules).
#[derive(Debug, Clone)]
enum Hits {
    Sparse(Box<[u32]>),
    Dense(Bits),
}

impl Hits {
    fn new(ids: &[u32], words: usize) -> Hits {
        if ids.len() >= (words / 2).max(8) {
            let mut b = Bits::new(words);
            b.set_all(ids);
            Hits::Dense(b)
        } else {
            Hits::Sparse(ids.into())
        }
    }
}

/// Hits one evaluation gathers per dimension, held by reference: that many dense bitsets
/// and sorted sparse id lists fit on the stack; beyond, they spill into an owned bitset (a
/// rare case: an address inside many distinct nested prefixes, a name matching many
/// patterns).
const PARTS: usize = 4;

/// One dimension's candidate words for one flow, computed word by word: its "any" rules
/// OR-ed with its hits. Words must be asked for in increasing order (some may be skipped):
/// the sparse lists are consumed as cursors.
struct DimWords<'a> {
    base: &'a [u64],
    dense: [&'a [u64]; PARTS],
    dense_len: usize,
    sparse: [&'a [u32]; PARTS],
    sparse_len: usize,
    spill: Option<Bits>,
}

impl<'a> DimWords<'a> {
    fn new(base: &'a [u64]) -> Self {
        DimWords {
            base,
            dense: [&[]; PARTS],
            dense_len: 0,
            sparse: [&[]; PARTS],
            sparse_len: 0,
            spill: None,
        }
    }

    fn spill(&mut self) -> &mut Bits {
        let words = self.base.len();
        self.spill.get_or_insert_with(|| Bits::new(words))
    }

    #[inline]
    fn add(&mut self, h: &'a Hits) {
        match h {
            Hits::Dense(b) if self.dense_len < PARTS => {
                self.dense[self.dense_len] = &b.0;
                self.dense_len += 1;
            }
            Hits::Sparse(ids) if self.sparse_len < PARTS => {
                self.sparse[self.sparse_len] = ids;
                self.sparse_len += 1;
            }
            Hits::Dense(b) => self.spill().or_with(&b.0),
            Hits::Sparse(ids) => self.spill().set_all(ids),
        }
    }

    #[inline]
    fn word(&mut self, w: usize) -> u64 {
        let mut v = self.base.get(w).copied().unwrap_or(0);
        for d in &self.dense[..self.dense_len] {
            v |= d.get(w).copied().unwrap_or(0);
        }
        for ids in &mut self.sparse[..self.sparse_len] {
            while let Some((&id, rest)) = ids.split_first() {
                let iw = (id / 64) as usize;
                if iw > w {
                    break;
                }
                if iw == w {
                    v |= 1 << (id % 64);
                }
                *ids = rest;
            }
        }
        if let Some(b) = &self.spill {
            v |= b.0.get(w).copied().unwrap_or(0);
        }
        v
    }
}

fn hits_map<K: std::hash::Hash + Eq>(
    m: FxHashMap<K, Vec<u32>>,
    words: usize,
) -> FxHashMap<K, Hits> {
    m.into_iter()
        .map(|(k, mut ids)| {
            ids.sort_unstable();
            ids.dedup();
            (k, Hits::new(&ids, words))
        })
        .collect()
}

/// Flow protocol classes, the index of [`CompiledPolicy::proto`].
fn proto_class(p: IpProto) -> usize {
    match p {
        IpProto::Tcp => 0,
        IpProto::Udp => 1,
        IpProto::Icmp => 2,
        IpProto::Other(_) => 3,
    }
}

fn rule_proto_class(p: Protocol) -> Option<usize> {
    match p {
        Protocol::Any => None,
        Protocol::Tcp => Some(0),
        Protocol::Udp => Some(1),
        Protocol::Icmp => Some(2),
    }
}

/// The compiled, immutable form of a [`Firewall`]. Cheap to share (`Send + Sync`); build a
/// new one on every configuration change.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    fw: Firewall,
    /// Where a flow's candidates start, per destination variant (`DST_*`, only
    /// [`DST_ANY`] without a destination index) and flow protocol class (TCP, UDP, ICMP,
    /// other), at `variant * 4 + class`: the enabled rules whose protocol condition holds
    /// and whose destination condition holds whatever the address, country or names (no
    /// condition, or a sent-name rule while the name is missing, see [`DST_NAME`]).
    heads: Box<[Bits]>,
    /// All zeros: the "any" set of the destination hits.
    zero: Bits,
    /// Source. `None` when no enabled rule has a source condition (the dimension cannot
    /// exclude anything); likewise for the other dimensions.
    src: Option<RangeDim<PrefixSet>>,
    /// Destination port.
    port: Option<RangeDim<PortSet>>,
    dst: Option<DstIndex>,
    app: Option<AppIndex>,
    /// Hit counters, one per rule (shared with the previous policy by [`Self::inherit_counters`]).
    counters: RuleCounters,
}

/// A dimension indexed by a range matcher: rules without a condition there, and the hits.
#[derive(Debug, Clone)]
struct RangeDim<S> {
    any: Bits,
    hits: RangeHits<S>,
}

/// What a range matcher ([`PrefixSet`], [`PortSet`]) needs to expose for [`RangeHits`].
trait RangeMatcher {
    type Key: Copy;
    fn slot_of(&self, k: Self::Key) -> Option<u32>;
    fn slots(&self) -> usize;
    fn for_each_slot_range(&self, slot: u32, f: impl FnMut(u32));
    fn ranges(&self) -> usize;
    fn payloads_of(&self, range: u32) -> &[u32];
}

macro_rules! range_matcher {
    ($t:ty, $k:ty) => {
        impl RangeMatcher for $t {
            type Key = $k;
            #[inline]
            fn slot_of(&self, k: $k) -> Option<u32> {
                <$t>::slot_of(self, k)
            }
            fn slots(&self) -> usize {
                <$t>::slots(self)
            }
            #[inline]
            fn for_each_slot_range(&self, slot: u32, f: impl FnMut(u32)) {
                <$t>::for_each_slot_range(self, slot, f)
            }
            fn ranges(&self) -> usize {
                <$t>::ranges(self)
            }
            fn payloads_of(&self, range: u32) -> &[u32] {
                <$t>::payloads_of(self, range)
            }
        }
    };
}
range_matcher!(PrefixSet, std::net::IpAddr);
range_matcher!(PortSet, u16);

/// Bytes of precomputed unions a [`RangeHits`] may hold (beyond it, lookups fall back to
/// OR-ing each range's hits).
const UNION_BUDGET: usize = 8 << 20;

/// Rule ids for a range matcher's answers. A key's elementary interval (slot) lists the
/// distinct ranges containing it; when that list has several ranges, the union of their
/// rules is precomputed (so one lookup is one OR, however many overlapping ranges there
/// are), within [`UNION_BUDGET`].
#[derive(Debug, Clone)]
struct RangeHits<S> {
    set: S,
    /// Per distinct range.
    per_range: Box<[Hits]>,
    /// Per slot: the union, if precomputed.
    per_slot: Box<[Option<Hits>]>,
}

impl<S: RangeMatcher> RangeHits<S> {
    fn new(set: S, words: usize) -> Self {
        let per_range = (0..set.ranges() as u32)
            .map(|r| Hits::new(set.payloads_of(r), words))
            .collect();
        let mut budget = UNION_BUDGET;
        let mut per_slot = Vec::with_capacity(set.slots());
        for slot in 0..set.slots() as u32 {
            let mut union = Vec::new();
            let mut ranges = 0;
            set.for_each_slot_range(slot, |r| {
                ranges += 1;
                union.extend_from_slice(set.payloads_of(r));
            });
            if ranges < 2 {
                per_slot.push(None);
                continue;
            }
            union.sort_unstable();
            union.dedup();
            let h = Hits::new(&union, words);
            let bytes = match &h {
                Hits::Sparse(ids) => ids.len() * 4,
                Hits::Dense(_) => words * 8,
            };
            per_slot.push((bytes <= budget).then(|| {
                budget -= bytes;
                h
            }));
        }
        RangeHits {
            set,
            per_range,
            per_slot: per_slot.into_boxed_slice(),
        }
    }

    #[inline]
    fn add_to<'a>(&'a self, key: S::Key, into: &mut DimWords<'a>) {
        let Some(slot) = self.set.slot_of(key) else {
            return;
        };
        match self.per_slot.get(slot as usize) {
            Some(Some(h)) => into.add(h),
            _ => self
                .set
                .for_each_slot_range(slot, |r| into.add(&self.per_range[r as usize])),
        }
    }
}

/// Destination variant: the name is known; only `Destination::Any` rules hold regardless.
const DST_ANY: usize = 0;
/// The name is pending (or, strict, unidentifiable): sent-name domain rules are pending or
/// unknown, not false, so they are candidates too.
const DST_NAME: usize = 1;
/// Loose, name unidentifiable, application pending: sent-name domain rules with an
/// application condition are pending (unknown AND pending); the others are skipped.
const DST_NAME_APPS: usize = 2;

#[derive(Debug, Clone)]
struct DstIndex {
    cidrs: RangeHits<PrefixSet>,
    countries: FxHashMap<CountryCode, Hits>,
    /// Every distinct pattern of every domain rule, whatever its mode (a hit is a candidate,
    /// conservatively) → index into `domain_hits`.
    domains: DomainSet<u32>,
    domain_hits: Box<[Hits]>,
}

#[derive(Debug, Clone)]
struct AppIndex {
    /// Rules without an application condition.
    any: Bits,
    /// `any` plus the sent-name domain rules: what loose mode keeps when the application is
    /// unidentifiable and the name pending.
    any_or_name_modes: Bits,
    by_app: FxHashMap<App, Hits>,
}

impl CompiledPolicy {
    /// Compile `fw`. Disabled rules are left out of every index (they never match).
    pub fn new(fw: &Firewall) -> CompiledPolicy {
        let n = fw.rules.len();
        let words = n.div_ceil(64).max(1);
        let mut proto = [
            Bits::new(words),
            Bits::new(words),
            Bits::new(words),
            Bits::new(words),
        ];
        let mut src_any = Bits::new(words);
        let mut src = PrefixSetBuilder::default();
        let mut src_used = false;
        let mut port_any = Bits::new(words);
        let mut ports = PortSetBuilder::default();
        let mut port_used = false;
        let mut dst_any = Bits::new(words);
        let mut cidrs = PrefixSetBuilder::default();
        let mut countries: FxHashMap<CountryCode, Vec<u32>> = FxHashMap::default();
        let mut patterns: FxHashMap<&DomainPattern, Vec<u32>> = FxHashMap::default();
        let mut name_modes = Bits::new(words);
        let mut name_modes_with_apps = Bits::new(words);
        let mut dst_used = false;
        let mut app_any = Bits::new(words);
        let mut by_app: FxHashMap<App, Vec<u32>> = FxHashMap::default();
        let mut app_used = false;

        for (i, rule) in fw.rules.iter().enumerate() {
            if !rule.enabled {
                continue;
            }
            let id = i as u32;
            match rule_proto_class(rule.protocol) {
                None => proto.iter_mut().for_each(|b| b.set(id)),
                Some(c) => proto[c].set(id),
            }
            match &rule.source {
                None => src_any.set(id),
                Some(nets) => {
                    src_used = true;
                    nets.iter().for_each(|net| src.insert(net, id));
                }
            }
            match &rule.ports {
                None => port_any.set(id),
                Some(ranges) => {
                    port_used = true;
                    ranges.iter().for_each(|r| ports.insert(r, id));
                }
            }
            match &rule.destination {
                Destination::Any => dst_any.set(id),
                Destination::Cidrs(nets) => {
                    dst_used = true;
                    nets.iter().for_each(|net| cidrs.insert(net, id));
                }
                Destination::Location(ccs) => {
                    dst_used = true;
                    for cc in ccs {
                        countries.entry(*cc).or_default().push(id);
                    }
                }
                Destination::Domains(pats) => {
                    dst_used = true;
                    pats.iter()
                        .for_each(|p| patterns.entry(p).or_default().push(id));
                    if rule.domain_mode != DomainMode::Dns {
                        name_modes.set(id);
                        if rule.applications.is_some() {
                            name_modes_with_apps.set(id);
                        }
                    }
                }
            }
            match &rule.applications {
                None => app_any.set(id),
                Some(apps) => {
                    app_used = true;
                    for a in apps {
                        by_app.entry(*a).or_default().push(id);
                    }
                }
            }
        }
        let mut domains = DomainSet::new();
        let mut domain_hits = Vec::with_capacity(patterns.len());
        for (i, (p, mut ids)) in patterns.into_iter().enumerate() {
            ids.dedup(); // pushed in rule order: duplicates are adjacent
            domains.insert(p, i as u32);
            domain_hits.push(Hits::new(&ids, words));
        }
        let variants: &[&[&Bits]] = if dst_used {
            &[
                &[&dst_any],
                &[&dst_any, &name_modes],
                &[&dst_any, &name_modes_with_apps],
            ]
        } else {
            &[&[]]
        };
        let mut heads = Vec::with_capacity(variants.len() * 4);
        for parts in variants {
            for p in &proto {
                let mut h = p.clone();
                if !parts.is_empty() {
                    let mut d = Bits::new(words);
                    parts.iter().for_each(|b| d.or_with(&b.0));
                    h.and_with(&d.0);
                }
                heads.push(h);
            }
        }
        let mut any_or_name_modes = app_any.clone();
        any_or_name_modes.or_with(&name_modes.0);
        CompiledPolicy {
            counters: RuleCounters::new(&fw.rules),
            fw: fw.clone(),
            heads: heads.into_boxed_slice(),
            zero: Bits::new(words),
            src: src_used.then(|| RangeDim {
                any: src_any,
                hits: RangeHits::new(src.build(), words),
            }),
            port: port_used.then(|| RangeDim {
                any: port_any,
                hits: RangeHits::new(ports.build(), words),
            }),
            dst: dst_used.then(|| DstIndex {
                cidrs: RangeHits::new(cidrs.build(), words),
                countries: hits_map(countries, words),
                domains,
                domain_hits: domain_hits.into_boxed_slice(),
            }),
            app: app_used.then(|| AppIndex {
                any: app_any,
                any_or_name_modes,
                by_app: hits_map(by_app, words),
            }),
        }
    }

    /// Evaluate a flow: identical to [`naive_evaluate`](crate::eval::naive_evaluate) on the
    /// firewall this policy was compiled from.
    ///
    /// One fused pass over the rule words: each word of the candidate set is computed from
    /// every dimension at once (no intermediate bitsets, no allocation) and its candidates
    /// are walked right away, so the pass stops at the deciding rule.
    pub fn evaluate(&self, f: &FlowFacts<'_>) -> Evaluation {
        let loose = self.fw.mode == Mode::Loose;
        let class = proto_class(f.proto);
        let mut walk = Walk::new(self.fw.mode);
        let mut outcome = None;

        // Destination: the most selective dimension, pre-AND-ed with the protocol. Its hits
        // are not filtered by protocol: a superset is fine, `rule_tri` decides.
        let (head, mut dst) = match &self.dst {
            None => (&self.heads[class], None),
            Some(d) => {
                let variant = match f.domain {
                    Fact::Known(_) => DST_ANY,
                    Fact::Pending => DST_NAME,
                    Fact::Unidentifiable if !loose => DST_NAME,
                    // Loose: a sent-name rule is now unknown, which the walk skips, unless
                    // its application condition is still pending (unknown AND pending =
                    // pending).
                    Fact::Unidentifiable if f.app == Fact::Pending => DST_NAME_APPS,
                    Fact::Unidentifiable => DST_ANY,
                };
                let mut acc = DimWords::new(&self.zero.0);
                d.cidrs.add_to(f.dst, &mut acc);
                if let Some(h) = f.country.and_then(|c| d.countries.get(&c)) {
                    acc.add(h);
                }
                let mut domain_hit = |groups: &[u32]| {
                    for g in groups {
                        acc.add(&d.domain_hits[*g as usize]);
                    }
                };
                if let Fact::Known(name) = f.domain {
                    d.domains.for_each_match(name, &mut domain_hit);
                }
                for name in f.dns_names {
                    d.domains.for_each_match(name, &mut domain_hit);
                }
                (&self.heads[variant * 4 + class], Some(acc))
            }
        };
        let mut src = self.src.as_ref().map(|d| {
            let mut acc = DimWords::new(&d.any.0);
            d.hits.add_to(f.src, &mut acc);
            acc
        });
        let mut port = self.port.as_ref().map(|d| {
            let mut acc = DimWords::new(&d.any.0);
            if let Some(p) = f.dst_port {
                d.hits.add_to(p, &mut acc);
            }
            acc
        });
        let mut app = self.app.as_ref().and_then(|a| match f.app {
            Fact::Pending => None,
            Fact::Unidentifiable if !loose => None,
            Fact::Known(app) => {
                let mut acc = DimWords::new(&a.any.0);
                if let Some(h) = a.by_app.get(&app) {
                    acc.add(h);
                }
                Some(acc)
            }
            // Loose: an application rule is now unknown (skipped by the walk) unless its
            // destination is still pending: a sent-name rule while the name is pending.
            // Likewise while the gateway still resolves a known name (an `fqdn_and_dns`
            // verification is pending).
            Fact::Unidentifiable => Some(DimWords::new(match (&self.dst, f.domain) {
                (Some(_), Fact::Pending) => &a.any_or_name_modes.0,
                (Some(_), Fact::Known(_)) if f.resolution == Resolution::Pending => {
                    &a.any_or_name_modes.0
                }
                _ => &a.any.0,
            })),
        });

        'words: for (w, &h) in head.0.iter().enumerate() {
            let mut word = h;
            if let Some(d) = &mut dst {
                word |= d.word(w);
            }
            // Most words end up empty: stop AND-ing as soon as one is.
            for dim in [&mut src, &mut port, &mut app] {
                if word == 0 {
                    continue 'words;
                }
                if let Some(d) = dim {
                    word &= d.word(w);
                }
            }
            while word != 0 {
                let id = (w * 64) as u32 + word.trailing_zeros();
                word &= word - 1;
                let rule = &self.fw.rules[id as usize];
                if let Some(o) = walk.step(RuleId(id), rule, rule_tri(rule, f)) {
                    outcome = Some(o);
                    break 'words;
                }
            }
        }
        walk.finish(outcome, self.fw.default_action)
    }

    /// The per-rule hit counters.
    pub fn counters(&self) -> &RuleCounters {
        &self.counters
    }

    /// Keep counting where `old` left off: rules with the same name share their counters.
    pub fn inherit_counters(mut self, old: &CompiledPolicy) -> CompiledPolicy {
        self.counters
            .inherit(&self.fw.rules, &old.fw.rules, &old.counters);
        self
    }

    /// The rules, in order; [`RuleId`] indexes this slice.
    pub fn rules(&self) -> &[Rule] {
        &self.fw.rules
    }

    /// One rule. Panics if `id` did not come from this policy (an [`Evaluation`] of it).
    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.fw.rules[id.0 as usize]
    }

    /// Loose or strict.
    pub fn mode(&self) -> Mode {
        self.fw.mode
    }

    /// Loose mode's handling of a flow whose name the client made unreadable.
    pub fn on_unidentifiable(&self) -> OnUnidentifiable {
        self.fw.on_unidentifiable
    }

    /// The action when no rule decides.
    pub fn default_action(&self) -> Action {
        self.fw.default_action
    }

    /// Whether the firewall inspects traffic at all (`false` = SNAT only).
    pub fn enabled(&self) -> bool {
        self.fw.enabled
    }

    /// The firewall this policy was compiled from.
    pub fn firewall(&self) -> &Firewall {
        &self.fw
    }

    /// Exact names used by enabled rules in a DNS-based domain mode (`dns`, `fqdn_or_dns`,
    /// `fqdn_and_dns`): the gateway resolves these itself so that their addresses are known
    /// even when the client's own lookup did not cross the gateway. Wildcards cannot be
    /// resolved and are left out. Sorted, without duplicates; empty when the firewall is off.
    pub fn dns_mode_domains(&self) -> Vec<DomainPattern> {
        if !self.fw.enabled {
            return Vec::new();
        }
        let mut out: Vec<DomainPattern> = self
            .fw
            .rules
            .iter()
            .filter(|r| r.enabled && r.domain_mode != DomainMode::Fqdn)
            .filter_map(|r| match &r.destination {
                Destination::Domains(p) => Some(p),
                _ => None,
            })
            .flatten()
            .filter(|p| matches!(p, DomainPattern::Exact(_)))
            .cloned()
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{naive_evaluate, DecidedBy, Needs, Outcome};
    use crate::model::{Pos, RuleAction};
    use std::net::IpAddr;

    fn rule(name: &str, action: RuleAction) -> Rule {
        Rule {
            name: name.into(),
            description: String::new(),
            source: None,
            destination: Destination::Any,
            domain_mode: DomainMode::Fqdn,
            protocol: Protocol::Any,
            ports: None,
            applications: None,
            action,
            enabled: true,
            pos: Pos::default(),
        }
    }

    fn fw(rules: Vec<Rule>) -> Firewall {
        Firewall {
            enabled: true,
            mode: Mode::Loose,
            on_unidentifiable: OnUnidentifiable::Accept,
            default_action: Action::Drop,
            rules,
        }
    }

    fn flow<'a>(dst: &str, port: u16, domain: Fact<&'a str>) -> FlowFacts<'a> {
        FlowFacts {
            src: "10.0.0.5".parse().unwrap(),
            dst: dst.parse::<IpAddr>().unwrap(),
            proto: IpProto::Tcp,
            dst_port: Some(port),
            country: CountryCode::new("DE"),
            domain,
            app: Fact::Pending,
            dns_names: &[],
            resolution: Resolution::Final,
        }
    }

    #[test]
    fn picks_first_matching_rule_and_collects_monitors() {
        let mut log = rule("log-web", RuleAction::Log);
        log.ports = Some(vec![443..=443]);
        let mut cidr = rule("drop-net", RuleAction::Drop);
        cidr.destination = Destination::Cidrs(vec!["203.0.113.0/24".parse().unwrap()]);
        let mut disabled = rule("off", RuleAction::Accept);
        disabled.enabled = false;
        let mut dom = rule("ok-example", RuleAction::Accept);
        dom.destination = Destination::Domains(vec![DomainPattern::Wildcard("example.com".into())]);
        let fw = fw(vec![log, disabled, cidr, dom]);
        let p = CompiledPolicy::new(&fw);
        for f in [
            flow("203.0.113.9", 443, Fact::Known("a.example.com")),
            flow("198.51.100.1", 443, Fact::Known("a.example.com")),
            flow("198.51.100.1", 443, Fact::Pending),
            flow("198.51.100.1", 80, Fact::Known("example.org")),
        ] {
            assert_eq!(p.evaluate(&f), naive_evaluate(&fw, &f), "{f:?}");
        }
        let e = p.evaluate(&flow("198.51.100.1", 443, Fact::Known("a.example.com")));
        assert_eq!(e.monitors, vec![RuleId(0)]);
        assert_eq!(
            e.outcome,
            Outcome::Decided {
                rule: Some(RuleId(3)),
                action: Action::Accept,
                by: DecidedBy::Match
            }
        );
        let e = p.evaluate(&flow("198.51.100.1", 443, Fact::Pending));
        assert_eq!(
            e.outcome,
            Outcome::Pending {
                rule: RuleId(3),
                needs: Needs {
                    domain: true,
                    app: false,
                    dns: false
                }
            }
        );
        let e = p.evaluate(&flow("198.51.100.1", 80, Fact::Known("example.org")));
        assert_eq!(e.outcome, default_with(Action::Drop));
    }

    fn default_with(action: Action) -> Outcome {
        Outcome::Decided {
            rule: None,
            action,
            by: DecidedBy::Default,
        }
    }

    #[test]
    fn dns_mode_domains_lists_exact_names_of_dns_rules() {
        let mk = |mode, pats: &[&str], enabled| {
            let mut r = rule("d", RuleAction::Accept);
            r.domain_mode = mode;
            r.enabled = enabled;
            r.destination = Destination::Domains(
                pats.iter()
                    .map(|p| match p.strip_prefix("*.") {
                        Some(s) => DomainPattern::Wildcard(s.into()),
                        None => DomainPattern::Exact((*p).into()),
                    })
                    .collect(),
            );
            r
        };
        let fw = fw(vec![
            mk(DomainMode::Fqdn, &["fqdn.example"], true),
            mk(DomainMode::Dns, &["b.example", "*.w.example"], true),
            mk(DomainMode::FqdnOrDns, &["a.example", "b.example"], true),
            mk(DomainMode::FqdnAndDns, &["c.example"], true),
            mk(DomainMode::Dns, &["off.example"], false),
        ]);
        let names: Vec<String> = CompiledPolicy::new(&fw)
            .dns_mode_domains()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(names, ["a.example", "b.example", "c.example"]);
    }

    #[test]
    fn empty_policy_uses_default_action() {
        let fw = fw(vec![]);
        let p = CompiledPolicy::new(&fw);
        let f = flow("198.51.100.1", 1, Fact::Unidentifiable);
        assert_eq!(p.evaluate(&f), naive_evaluate(&fw, &f));
        assert_eq!(p.evaluate(&f).outcome, default_with(Action::Drop));
    }

    /// A tiny deterministic generator for [`matches_naive_over_many_words`].
    struct Xs(u64);
    impl Xs {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
        fn pick<T: Clone>(&mut self, v: &[T]) -> T {
            v[self.below(v.len() as u64) as usize].clone()
        }
    }

    /// The fused pass walks many words with sparse cursors, dense hits and spills: compare
    /// with the reference on firewalls of hundreds of rules (the property test in
    /// `tests/equivalence.rs` keeps to one word), nested prefixes and colliding names.
    #[test]
    fn matches_naive_over_many_words() {
        let mut rng = Xs(0x9e37_79b9_7f4a_7c15);
        let names = ["a", "b", "a.b", "b.a", "a.a.b", "c.a.b", "b.c.a.b"];
        let ports = [22u16, 53, 80, 443, 8080];
        let cc = [CountryCode::new("DE"), CountryCode::new("FR")].map(Option::unwrap);
        let apps = [App::Https, App::Http, App::Dns];
        let modes = [
            DomainMode::Fqdn,
            DomainMode::Dns,
            DomainMode::FqdnOrDns,
            DomainMode::FqdnAndDns,
        ];
        let net = |rng: &mut Xs| -> ipnet::IpNet {
            let a = std::net::Ipv4Addr::new(10, rng.below(3) as u8, rng.below(4) as u8 * 64, 1);
            ipnet::IpNet::new(a.into(), rng.pick(&[8u8, 16, 18, 24, 26, 32]))
                .unwrap()
                .trunc()
        };
        let pat = |rng: &mut Xs| {
            let n: String = rng.pick(&names).into();
            if rng.below(2) == 0 {
                DomainPattern::Exact(n)
            } else {
                DomainPattern::Wildcard(n)
            }
        };
        for round in 0..60 {
            let n = 64 + rng.below(400) as usize;
            let rules = (0..n)
                .map(|i| {
                    let mut r = rule(
                        &format!("r{i}"),
                        rng.pick(&[RuleAction::Accept, RuleAction::Drop, RuleAction::Log]),
                    );
                    // Mostly conditions that rarely hold, so that the walk goes deep.
                    r.destination = match rng.below(8) {
                        0 => Destination::Any,
                        1..=3 => {
                            Destination::Cidrs((0..=rng.below(2)).map(|_| net(&mut rng)).collect())
                        }
                        4 => Destination::Location(vec![rng.pick(&cc)]),
                        _ => Destination::Domains(
                            (0..=rng.below(3)).map(|_| pat(&mut rng)).collect(),
                        ),
                    };
                    r.domain_mode = rng.pick(&modes);
                    r.source = (rng.below(3) == 0).then(|| vec![net(&mut rng)]);
                    r.protocol = rng.pick(&[Protocol::Any, Protocol::Tcp, Protocol::Udp]);
                    r.ports = (rng.below(2) == 0).then(|| {
                        let p = rng.pick(&ports);
                        vec![p..=p.saturating_add(rng.pick(&[0, 0, 100]))]
                    });
                    r.applications = (rng.below(5) == 0).then(|| vec![rng.pick(&apps)]);
                    r.enabled = rng.below(10) != 0;
                    r
                })
                .collect();
            let mut fw = fw(rules);
            fw.mode = if round % 2 == 0 {
                Mode::Loose
            } else {
                Mode::Strict
            };
            let p = CompiledPolicy::new(&fw);
            for _ in 0..200 {
                let (name, app) = (rng.pick(&names), rng.pick(&apps));
                let dns: Vec<&str> = (0..rng.below(3)).map(|_| rng.pick(&names)).collect();
                let f = FlowFacts {
                    src: net(&mut rng).network(),
                    dst: net(&mut rng).network(),
                    proto: rng.pick(&[IpProto::Tcp, IpProto::Udp, IpProto::Icmp]),
                    dst_port: (rng.below(8) != 0).then(|| rng.pick(&ports)),
                    country: (rng.below(4) != 0).then(|| rng.pick(&cc)),
                    domain: rng.pick(&[Fact::Known(name), Fact::Pending, Fact::Unidentifiable]),
                    app: rng.pick(&[Fact::Known(app), Fact::Pending, Fact::Unidentifiable]),
                    dns_names: &dns,
                    resolution: rng.pick(&[
                        Resolution::Final,
                        Resolution::Pending,
                        Resolution::Failed,
                    ]),
                };
                assert_eq!(p.evaluate(&f), naive_evaluate(&fw, &f), "{f:?}");
            }
        }
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CompiledPolicy>();
    }
}
