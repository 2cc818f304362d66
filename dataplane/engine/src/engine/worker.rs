//! Which packet worker owns a packet when the gateway runs several engines, one per core.
//!
//! Flows are partitioned by port residue, so both directions of a flow reach the same engine
//! with no state shared between engines: a flow belongs to worker `port % workers`, where the
//! port is the client's source port (the ICMP echo id for pings). The SNAT allocator of worker
//! `w` hands out only ports `≡ w (mod workers)` ([`crate::snat::Snat::allocate`]), so a reply
//! addressed to `EIP:port` names its worker by its destination port. The steering program
//! (`natfw_steer`) applies the same rule to the headers it can read and gives every engine a
//! copy of what it cannot place (fragments, ICMP errors, IPv6 extension headers); each engine
//! then keeps only what [`WorkerSlot::owns`] says is its own and counts the rest
//! ([`crate::stats::EngineStats::other_worker`]).

use super::Side;
use crate::wire::{IcmpKind, PacketInfo, L4};

/// One engine's place among the gateway's packet workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSlot {
    /// This engine's worker index, `0..count`.
    pub index: u16,
    /// How many workers the gateway runs (1: this engine owns everything).
    pub count: u16,
}

impl Default for WorkerSlot {
    fn default() -> Self {
        WorkerSlot { index: 0, count: 1 }
    }
}

impl WorkerSlot {
    /// A slot, or `None` unless `index < count`.
    pub fn new(index: u16, count: u16) -> Option<WorkerSlot> {
        (index < count).then_some(WorkerSlot { index, count })
    }

    /// Whether `port` (a client source port, an SNAT port, an echo id) is this worker's.
    pub fn owns_port(self, port: u16) -> bool {
        self.count <= 1 || port % self.count == self.index
    }

    /// Whether this worker owns a parsed, unfragmented packet that arrived on `side`.
    pub fn owns(self, side: Side, info: &PacketInfo) -> bool {
        self.count <= 1 || owner(side, info, self.count) == self.index
    }
}

/// The worker (of `count`) that owns an unfragmented packet that arrived on `side`: by the
/// port of its flow's client (inside: source port; outside: destination port, the SNAT port),
/// by the quoted packet's for an ICMP error, worker 0 for anything without ports.
pub fn owner(side: Side, info: &PacketInfo, count: u16) -> u16 {
    if count <= 1 {
        return 0;
    }
    let port = match (side, info.l4) {
        (Side::Inside, L4::Tcp { sport, .. } | L4::Udp { sport, .. }) => sport,
        (Side::Outside, L4::Tcp { dport, .. } | L4::Udp { dport, .. }) => dport,
        (
            _,
            L4::Icmp {
                kind: IcmpKind::EchoRequest { id, .. } | IcmpKind::EchoReply { id, .. },
                ..
            },
        ) => id,
        // Inside: the quoted packet went server → client, its destination port is the client's.
        // Outside: it went EIP → server, its source port is the SNAT port. For a quoted echo
        // both are the id.
        (
            Side::Inside,
            L4::Icmp {
                kind: IcmpKind::Error { inner, .. },
                ..
            },
        ) if inner.has_ports => inner.dport,
        (
            Side::Outside,
            L4::Icmp {
                kind: IcmpKind::Error { inner, .. },
                ..
            },
        ) if inner.has_ports => inner.sport,
        _ => 0,
    };
    port % count
}

/// One name → address fact learned from a DNS answer that crossed this engine, for the other
/// workers: the answer went to one worker (by the client's port), the client's next flows to
/// that address may go to any. The gateway hands these to the other engines
/// ([`super::Engine::learn_shared_answer`]) before they see another packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedAnswer {
    pub client: std::net::IpAddr,
    pub name: Box<str>,
    pub addr: std::net::IpAddr,
    pub ttl: u32,
    /// The question's own name (not a CNAME target on the way).
    pub asked: bool,
}

/// At most this many facts wait for [`super::Engine::drain_shared_answers`]; more are counted
/// in `dns_answers_share_dropped` (the caller drains after every batch).
pub const SHARED_ANSWERS_MAX: usize = 65_536;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_ports() {
        assert!(WorkerSlot::new(2, 2).is_none());
        let one = WorkerSlot::default();
        assert!((0..=u16::MAX).all(|p| one.owns_port(p)));
        let a = WorkerSlot::new(0, 3).unwrap();
        let b = WorkerSlot::new(1, 3).unwrap();
        let c = WorkerSlot::new(2, 3).unwrap();
        for p in [0u16, 1, 2, 1023, 1024, 40000, 65535] {
            let n = [a, b, c].iter().filter(|s| s.owns_port(p)).count();
            assert_eq!(n, 1, "port {p} has exactly one owner");
        }
        assert!(b.owns_port(40000)); // 40000 = 3 * 13333 + 1
    }
}
