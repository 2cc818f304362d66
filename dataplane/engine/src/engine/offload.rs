//! The in-kernel fast path, seen from the engine: which flows may leave the engine (verdict
//! final, identification over, nothing held, no watch), when they must come back (SYN, FIN,
//! RST, a policy or bypass change) and how the packets the kernel forwarded for them are added
//! to their counters, so that records stay exact and idle timers see the traffic.
//!
//! The engine does no I/O: the caller hands it an [`OffloadTable`] (the gateway's eBPF maps;
//! tests use an in-memory one). The engine calls it synchronously: an entry is added right
//! after the packet that made the flow eligible was decided, and removed (its final counters
//! read) before anything ends the flow or writes its record.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::stats::Counter;

/// A flow the kernel forwards: TCP or UDP over IPv4 or IPv6, SNATed to `eip:eport`. The
/// three addresses are of one family ([`OffloadFlow::is_v6`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OffloadFlow {
    /// The private host (original source).
    pub client: SocketAddr,
    /// The remote host (original destination).
    pub server: SocketAddr,
    /// The translated source.
    pub eip: IpAddr,
    pub eport: u16,
    /// `6` (TCP) or `17` (UDP).
    pub proto: u8,
}

impl OffloadFlow {
    /// An IPv6 flow (the kernel keeps those in its `offload6` tables).
    pub fn is_v6(&self) -> bool {
        self.client.is_ipv6()
    }

    /// Client, server and EIP are of one family (a flow the engine can track and the kernel
    /// can carry).
    pub fn one_family(&self) -> bool {
        self.client.is_ipv6() == self.server.is_ipv6()
            && self.client.is_ipv6() == self.eip.is_ipv6()
    }
}

/// What the kernel forwarded of a flow since its entry was added: client to server (`out`)
/// and back (`inb`), in wire packets and bytes (Ethernet header included), as the engine
/// counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffloadCounts {
    pub out: Counter,
    pub inb: Counter,
}

/// The kernel's flow table, as the engine drives it. Implementations do the I/O.
pub trait OffloadTable: Send {
    /// Install both directions of `flow`; `false` when the table refused (full, error): the
    /// flow stays in the engine.
    fn add(&mut self, flow: &OffloadFlow) -> bool;
    /// Current counters of `flow`; `None` when its entries are gone.
    fn read(&mut self, flow: &OffloadFlow) -> Option<OffloadCounts>;
    /// Remove both directions and return their last counters (`None`: already gone).
    fn remove(&mut self, flow: &OffloadFlow) -> Option<OffloadCounts>;
}

/// How often offloaded flows' counters are read back (idle timers, live counters).
pub const OFFLOAD_SYNC: Duration = Duration::from_secs(1);
/// After the table refused an entry, no new entry is tried for this long.
const ADD_BACKOFF: Duration = Duration::from_secs(1);

/// The engine's side of the fast path.
#[derive(Default)]
pub(crate) struct OffloadState {
    pub(super) table: Option<Box<dyn OffloadTable>>,
    /// Offloaded flows with the counters already credited to them.
    pub(super) flows: HashMap<FlowRef, (OffloadFlow, OffloadCounts)>,
    /// The flow of the packet being processed.
    pub(crate) cur: Option<FlowRef>,
    pub(super) last_sync: Timestamp,
    no_add_until: Timestamp,
    /// The policy the offloaded flows were decided under; another one flushes the table.
    policy: Option<Arc<CompiledPolicy>>,
}

impl fmt::Debug for OffloadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OffloadState")
            .field("enabled", &self.table.is_some())
            .field("flows", &self.flows.len())
            .finish_non_exhaustive()
    }
}

fn add_delta(c: &mut Counter, now: Counter, before: Counter) {
    c.packets += now.packets.saturating_sub(before.packets);
    c.bytes += now.bytes.saturating_sub(before.bytes);
}

/// The kernel forwarded these packets: they count as forwarded by the gateway
/// (`fwd_out`/`fwd_in`) and, separately, as the fast path's.
fn credit_stats(s: &mut crate::stats::EngineStats, now: OffloadCounts, before: OffloadCounts) {
    add_delta(&mut s.offload_forwarded, now.out, before.out);
    add_delta(&mut s.offload_forwarded, now.inb, before.inb);
    add_delta(&mut s.fwd_out, now.out, before.out);
    add_delta(&mut s.fwd_in, now.inb, before.inb);
}

/// Credit what the kernel counted between `before` and `now` to the flow `d` and the stats.
pub(super) fn credit(
    s: &mut crate::stats::EngineStats,
    d: &mut FlowData,
    now: OffloadCounts,
    before: OffloadCounts,
) {
    add_delta(&mut d.out, now.out, before.out);
    add_delta(&mut d.inb, now.inb, before.inb);
    credit_stats(s, now, before);
}

impl Engine {
    /// Hand decided flows to a kernel fast path from now on. Without it every packet stays
    /// in the engine.
    pub fn set_offload(&mut self, table: Box<dyn OffloadTable>) {
        self.offload.table = Some(table);
        self.offload.policy = Some(self.policy.load_full());
    }

    /// Flows currently forwarded by the fast path.
    pub fn offloaded_flows(&self) -> usize {
        self.offload.flows.len()
    }

    /// A packet of flow `r` reached the engine. A SYN, FIN or RST of an offloaded flow
    /// takes it back first (the tc program never forwards those itself, so this is the flow
    /// ending or a new connection on its tuple): its counters are read, its entries removed.
    #[inline]
    pub(super) fn offload_seen(&mut self, r: FlowRef, info: &PacketInfo) {
        if self.offload.table.is_none() {
            return;
        }
        self.offload.cur = Some(r);
        if let L4::Tcp { flags, .. } = info.l4 {
            if (flags.syn() || flags.fin() || flags.rst()) && self.offload.flows.contains_key(&r) {
                self.offload_take(r);
            }
        }
    }

    /// After a packet was decided: offload its flow if it became eligible, take it back if
    /// it no longer is.
    #[inline(always)]
    pub(super) fn offload_after(&mut self, now: Timestamp) {
        // Without a fast path nothing set `cur`: the per-packet cost is this test.
        if let Some(r) = self.offload.cur.take() {
            self.offload_after_flow(now, r);
        }
    }

    fn offload_after_flow(&mut self, now: Timestamp, r: FlowRef) {
        let eligible = self.offload_eligible(r);
        let offloaded = self.offload.flows.contains_key(&r);
        match (eligible, offloaded) {
            (Some(flow), false) if now >= self.offload.no_add_until => {
                let Some(t) = self.offload.table.as_mut() else {
                    return;
                };
                if t.add(&flow) {
                    self.offload
                        .flows
                        .insert(r, (flow, OffloadCounts::default()));
                    self.stats.offload_added += 1;
                } else {
                    self.stats.offload_add_failed += 1;
                    self.offload.no_add_until = now.add(ADD_BACKOFF);
                }
            }
            (None, true) => self.offload_take(r),
            _ => {}
        }
        self.stats.offload_active = self.offload.flows.len() as u64;
    }

    /// The flow `r` as the fast path would carry it, if it may: accepted for good, nothing
    /// left to identify, hold or compare (`ident` freed once the server acknowledged every
    /// inspected byte; UDP: nothing held), no protocol watch, TCP established with no FIN;
    /// IPv4 or IPv6 (the kernel matches IPv6 packets without extension headers only, the
    /// others keep coming to the engine).
    fn offload_eligible(&self, r: FlowRef) -> Option<OffloadFlow> {
        let e = self.table.get(r)?;
        let d = &e.data;
        let k = &e.key;
        if k.proto != PROTO_TCP && k.proto != PROTO_UDP {
            return None;
        }
        if d.verdict() != FlowVerdict::Accept
            || d.recorded()
            || d.facts_pending()
            || d.dns_only
            || d.app == Some(natfw_policy::App::Dns)
            || d.evasion
            || !d.sent
            || self.watch.contains(r)
        {
            return None;
        }
        // TCP: the side table goes once the server acknowledged every inspected byte (until
        // then a retransmission must be compared with them). UDP has no stream: an entry with
        // nothing held and nothing to verify is done.
        let ident_done = match d.ident {
            None => true,
            Some(i) => k.proto == PROTO_UDP && self.idents.get(i).is_none_or(Ident::idle),
        };
        if !ident_done {
            return None;
        }
        if k.proto == PROTO_TCP
            && (d.tcp.state != TcpState::Established || d.tcp.fin_in || d.tcp.fin_out)
        {
            return None;
        }
        let (eip, eport) = e.snat?;
        let flow = OffloadFlow {
            client: SocketAddr::new(k.src, k.sport),
            server: SocketAddr::new(k.dst, k.dport),
            eip,
            eport,
            proto: k.proto,
        };
        flow.one_family().then_some(flow)
    }

    /// Take flow `r` back from the fast path: remove its entries, credit what they counted.
    fn offload_take(&mut self, r: FlowRef) {
        let Some((flow, before)) = self.offload.flows.remove(&r) else {
            return;
        };
        let last = self.offload.table.as_mut().and_then(|t| t.remove(&flow));
        self.stats.offload_removed += 1;
        self.stats.offload_active = self.offload.flows.len() as u64;
        if let (Some(now), Some(e)) = (last, self.table.get_mut(r)) {
            add_delta(&mut e.data.out, now.out, before.out);
            add_delta(&mut e.data.inb, now.inb, before.inb);
            credit_stats(&mut self.stats, now, before);
        }
    }

    /// A flow leaves the table (`finish`): take it back, its counters into `d`.
    pub(super) fn offload_finish(&mut self, r: FlowRef, d: &mut FlowData) {
        if self.offload.flows.is_empty() {
            return; // nothing offloaded (no fast path): no key to hash
        }
        let Some((flow, before)) = self.offload.flows.remove(&r) else {
            return;
        };
        self.stats.offload_removed += 1;
        self.stats.offload_active = self.offload.flows.len() as u64;
        if let Some(now) = self.offload.table.as_mut().and_then(|t| t.remove(&flow)) {
            add_delta(&mut d.out, now.out, before.out);
            add_delta(&mut d.inb, now.inb, before.inb);
            credit_stats(&mut self.stats, now, before);
        }
    }

    /// A flow's record is about to be written while it stays in the table.
    pub(super) fn offload_before_record(&mut self, r: FlowRef) {
        if self.offload.flows.contains_key(&r) {
            self.offload_take(r);
        }
    }

    /// Take every flow back (policy reload, `firewall off`, bypass change): the engine
    /// decides again which of them the fast path may carry.
    pub fn offload_flush(&mut self) {
        let refs: Vec<FlowRef> = self.offload.flows.keys().copied().collect();
        for r in refs {
            self.offload_take(r);
        }
        self.offload.policy = Some(self.policy.load_full());
    }

    /// From `poll`: flush on a new policy; every [`OFFLOAD_SYNC`], read the counters back
    /// and refresh the idle timer of every flow the kernel forwarded something for.
    pub(super) fn offload_poll(&mut self, now: Timestamp) {
        if self.offload.table.is_none() {
            return;
        }
        let current = self.policy.load_full();
        if !self
            .offload
            .policy
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &current))
        {
            self.offload_flush();
        }
        if now < self.offload.last_sync.add(OFFLOAD_SYNC) {
            return;
        }
        self.offload.last_sync = now;
        let refs: Vec<FlowRef> = self.offload.flows.keys().copied().collect();
        for r in refs {
            self.offload_sync_one(now, r);
        }
    }

    fn offload_sync_one(&mut self, now: Timestamp, r: FlowRef) {
        let Some(&(flow, before)) = self.offload.flows.get(&r) else {
            return;
        };
        let Some(t) = self.offload.table.as_mut() else {
            return;
        };
        let Some(counts) = t.read(&flow) else {
            // Gone from the kernel: the flow is the engine's again.
            self.offload_take(r);
            return;
        };
        if counts == before {
            return;
        }
        self.offload.flows.insert(r, (flow, counts));
        credit_stats(&mut self.stats, counts, before);
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        add_delta(&mut e.data.out, counts.out, before.out);
        add_delta(&mut e.data.inb, counts.inb, before.inb);
        let class = Self::class_of(e.key.proto, &e.data);
        self.table.touch(r, class, now);
    }
}
