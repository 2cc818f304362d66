//! Connection tracking: a bounded flow table with O(1) lookup in both directions and timers
//! that cost O(expired).
//!
//! Layout, chosen for 1,000,000 flows in well under 300 MB:
//! - flows live in a slab (`Vec`) and are named by a `u32` index;
//! - the two hash indexes (original tuple → flow, reply tuple → flow) store only that index and
//!   hash/compare through the slab, so each costs ~5 bytes per bucket instead of a key copy;
//! - every flow sits on exactly one intrusive LRU list, one list per [`TimerClass`]. Within a
//!   class every flow has the same idle timeout, so the list's head is always the next to
//!   expire: [`Table::expire`] pops heads until one is still alive (O(expired)), and eviction
//!   under pressure pops the head of the most expendable non-empty class.
//!
//! The table is generic over the per-flow payload `T` (the engine's verdict/L7 summary) so that
//! tracking can be tested on its own.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::time::Timestamp;

/// IANA protocol numbers the table distinguishes.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// The original (private side) tuple of a flow. For ICMP echo both ports hold the echo id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// The tuple return traffic arrives with, seen from the gateway: (EIP, translated port or echo
/// id, remote address, remote port). For ICMP echo `rport` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyKey {
    pub eip: IpAddr,
    pub remote: IpAddr,
    pub eport: u16,
    pub rport: u16,
    pub proto: u8,
}

/// An address as one integer (IPv4 tagged so it never equals an IPv6 address): hashing three
/// words is cheaper than the derived field-by-field hash on the per-packet path.
#[inline]
fn addr_word(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)) | (1 << 127),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u128(addr_word(self.src));
        h.write_u128(addr_word(self.dst));
        h.write_u64(
            u64::from(self.sport) << 24 | u64::from(self.dport) << 8 | u64::from(self.proto),
        );
    }
}

impl Hash for ReplyKey {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u128(addr_word(self.eip));
        h.write_u128(addr_word(self.remote));
        h.write_u64(
            u64::from(self.eport) << 24 | u64::from(self.rport) << 8 | u64::from(self.proto),
        );
    }
}

impl FlowKey {
    /// The reply key of this flow once translated to `eip`:`eport`.
    pub fn reply_key(&self, eip: IpAddr, eport: u16) -> ReplyKey {
        let icmp = self.proto == PROTO_ICMP || self.proto == PROTO_ICMPV6;
        ReplyKey {
            eip,
            remote: self.dst,
            eport,
            rport: if icmp { 0 } else { self.dport },
            proto: self.proto,
        }
    }
}

/// Timer classes, in eviction order (most expendable first). Each has one idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerClass {
    /// TCP handshake not completed (SYN sent, SYN-ACK seen).
    Embryonic = 0,
    /// TCP closed (RST, or both FINs acknowledged): kept briefly for stragglers.
    Closed = 1,
    /// TCP with at least one FIN seen.
    Closing = 2,
    /// UDP flow that only carried DNS.
    DnsUdp = 3,
    /// ICMP echo.
    Icmp = 4,
    /// Other UDP.
    Udp = 5,
    /// Established TCP.
    Established = 6,
}

const CLASSES: usize = 7;
const ALL_CLASSES: [TimerClass; CLASSES] = [
    TimerClass::Embryonic,
    TimerClass::Closed,
    TimerClass::Closing,
    TimerClass::DnsUdp,
    TimerClass::Icmp,
    TimerClass::Udp,
    TimerClass::Established,
];

/// Idle timeouts per class, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub embryonic: u64,
    pub closed: u64,
    pub closing: u64,
    pub dns_udp: u64,
    pub icmp: u64,
    pub udp: u64,
    pub established: u64,
}

const SEC: u64 = 1_000_000_000;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            embryonic: 30 * SEC,
            closed: 10 * SEC,
            closing: 60 * SEC,
            dns_udp: 10 * SEC,
            icmp: 10 * SEC,
            udp: 60 * SEC,
            established: 3600 * SEC,
        }
    }
}

impl Timeouts {
    /// Timeouts with the established TCP idle timeout set to `secs`.
    pub fn with_established_secs(secs: u32) -> Self {
        Timeouts {
            established: u64::from(secs) * SEC,
            ..Timeouts::default()
        }
    }

    fn of(&self, c: TimerClass) -> u64 {
        match c {
            TimerClass::Embryonic => self.embryonic,
            TimerClass::Closed => self.closed,
            TimerClass::Closing => self.closing,
            TimerClass::DnsUdp => self.dns_udp,
            TimerClass::Icmp => self.icmp,
            TimerClass::Udp => self.udp,
            TimerClass::Established => self.established,
        }
    }
}

/// TCP flag bits (as in the header's low byte).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// Direction of a packet relative to the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Private host → internet.
    Out,
    /// Internet → private host.
    In,
}

/// Where a TCP connection is, as seen from the middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// Client SYN seen.
    SynSent,
    /// Server SYN-ACK seen.
    SynRecv,
    /// Handshake completed (client ACK of the SYN-ACK, or data).
    Established,
    /// One side has sent FIN.
    FinWait,
    /// Both sides have sent FIN.
    Closing,
    /// Both FINs acknowledged, or RST seen.
    Closed,
}

/// What a TCP segment did to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEvent {
    /// Valid for the state (maybe moved it).
    Ok,
    /// The segment does not belong here (e.g. a SYN-ACK from the client, data before the
    /// handshake); drop it, state unchanged.
    Invalid,
    /// RST: the connection is over.
    Reset,
}

/// Per-flow TCP tracking: state and which directions have sent FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTrack {
    pub state: TcpState,
    pub fin_out: bool,
    pub fin_in: bool,
}

impl TcpTrack {
    /// A connection started by a client SYN.
    pub fn new() -> Self {
        TcpTrack {
            state: TcpState::SynSent,
            fin_out: false,
            fin_in: false,
        }
    }

    /// Feed one segment's flags (and whether it carries payload).
    pub fn on_segment(&mut self, dir: Dir, flags: u8, has_payload: bool) -> TcpEvent {
        use tcp_flags::*;
        use TcpState::*;
        if flags & RST != 0 {
            self.state = Closed;
            return TcpEvent::Reset;
        }
        let syn = flags & SYN != 0;
        let ack = flags & ACK != 0;
        match (self.state, dir) {
            // Retransmitted SYN.
            (SynSent, Dir::Out) if syn && !ack => {}
            (SynSent, Dir::In) if syn && ack => self.state = SynRecv,
            (SynSent, _) => return TcpEvent::Invalid,
            (SynRecv, Dir::In) if syn && ack => {}
            (SynRecv, Dir::Out) if syn && !ack => {}
            (SynRecv, Dir::Out) if ack && !syn => self.state = Established,
            (SynRecv, _) => return TcpEvent::Invalid,
            (Closed, _) if has_payload || syn => return TcpEvent::Invalid,
            // Late SYN / SYN-ACK retransmissions after the handshake are harmless.
            (_, Dir::In) if syn && ack => {}
            (_, Dir::Out) if syn => return TcpEvent::Invalid,
            (_, Dir::In) if syn => return TcpEvent::Invalid,
            _ => {}
        }
        if flags & FIN != 0 && !matches!(self.state, SynSent | SynRecv) {
            match dir {
                Dir::Out => self.fin_out = true,
                Dir::In => self.fin_in = true,
            }
        }
        self.state = match self.state {
            Established | FinWait | Closing if self.fin_out && self.fin_in => {
                // The ACK of the second FIN closes; until then we are closing.
                if self.state == Closing && ack && flags & FIN == 0 {
                    Closed
                } else {
                    Closing
                }
            }
            Established if self.fin_out || self.fin_in => FinWait,
            s => s,
        };
        TcpEvent::Ok
    }

    /// Timer class of this state.
    pub fn class(&self) -> TimerClass {
        match self.state {
            TcpState::SynSent | TcpState::SynRecv => TimerClass::Embryonic,
            TcpState::Established => TimerClass::Established,
            TcpState::FinWait | TcpState::Closing => TimerClass::Closing,
            TcpState::Closed => TimerClass::Closed,
        }
    }
}

impl Default for TcpTrack {
    fn default() -> Self {
        TcpTrack::new()
    }
}

/// Index of a flow in the table, with a generation so stale references are detectable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowRef {
    pub idx: u32,
    pub gen: u32,
}

const NIL: u32 = u32::MAX;

/// One tracked flow.
#[derive(Debug)]
pub struct Entry<T> {
    pub key: FlowKey,
    /// Translated source; `None` until SNAT is applied (then also in the reply index).
    pub snat: Option<(IpAddr, u16)>,
    pub class: TimerClass,
    pub last_seen: Timestamp,
    pub data: T,
    prev: u32,
    next: u32,
    gen: u32,
}

#[derive(Debug)]
enum Slot<T> {
    Used(Entry<T>),
    Free { gen: u32 },
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

/// Inserting failed: the table holds `capacity` flows. Evict first ([`Table::evict_one`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// Inserting failed: the reply key is already taken by another flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTaken;

/// The bounded flow table.
#[derive(Debug)]
pub struct Table<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    fwd: HashTable<u32>,
    rev: HashTable<u32>,
    lists: [List; CLASSES],
    hasher: DefaultHashBuilder,
    capacity: usize,
    len: usize,
    timeouts: Timeouts,
}

impl<T> Table<T> {
    /// An empty table for at most `capacity` flows.
    pub fn new(capacity: usize, timeouts: Timeouts) -> Self {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            fwd: HashTable::new(),
            rev: HashTable::new(),
            lists: [List {
                head: NIL,
                tail: NIL,
            }; CLASSES],
            hasher: DefaultHashBuilder::default(),
            capacity: capacity.clamp(1, NIL as usize - 1),
            len: 0,
            timeouts,
        }
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No flows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of flows.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    fn entry(&self, idx: u32) -> &Entry<T> {
        match &self.slots[idx as usize] {
            Slot::Used(e) => e,
            Slot::Free { .. } => unreachable!("index of a free slot in a live structure"),
        }
    }

    fn entry_mut(&mut self, idx: u32) -> &mut Entry<T> {
        match &mut self.slots[idx as usize] {
            Slot::Used(e) => e,
            Slot::Free { .. } => unreachable!("index of a free slot in a live structure"),
        }
    }

    /// Flow with this original tuple.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<FlowRef> {
        let h = self.hasher.hash_one(key);
        self.fwd
            .find(h, |&i| self.entry(i).key == *key)
            .map(|&i| self.fref(i))
    }

    /// Flow whose translated tuple return traffic matches.
    #[inline]
    pub fn lookup_reply(&self, key: &ReplyKey) -> Option<FlowRef> {
        let h = self.hasher.hash_one(key);
        self.rev
            .find(h, |&i| self.reply_key_is(i, key))
            .map(|&i| self.fref(i))
    }

    /// Is this reply key used by some flow?
    pub fn reply_taken(&self, key: &ReplyKey) -> bool {
        self.lookup_reply(key).is_some()
    }

    /// Flow `i` is translated and `key` is its reply key ([`FlowKey::reply_key`]), compared
    /// field by field without building the key.
    #[inline]
    fn reply_key_is(&self, i: u32, key: &ReplyKey) -> bool {
        let e = self.entry(i);
        let Some((ip, port)) = e.snat else {
            return false;
        };
        let icmp = e.key.proto == PROTO_ICMP || e.key.proto == PROTO_ICMPV6;
        port == key.eport
            && e.key.proto == key.proto
            && (if icmp { 0 } else { e.key.dport }) == key.rport
            && ip == key.eip
            && e.key.dst == key.remote
    }

    fn fref(&self, idx: u32) -> FlowRef {
        FlowRef {
            idx,
            gen: self.entry(idx).gen,
        }
    }

    /// Slots the table has used so far (live or free): the range [`Table::at`] takes. Never
    /// above the capacity; a sweep over `0..slot_count()` visits every live flow.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The flow in slot `idx`, if the slot is in use.
    pub fn at(&self, idx: u32) -> Option<(FlowRef, &Entry<T>)> {
        match self.slots.get(idx as usize) {
            Some(Slot::Used(e)) => Some((FlowRef { idx, gen: e.gen }, e)),
            _ => None,
        }
    }

    /// The flow, if `r` still names it.
    pub fn get(&self, r: FlowRef) -> Option<&Entry<T>> {
        match self.slots.get(r.idx as usize) {
            Some(Slot::Used(e)) if e.gen == r.gen => Some(e),
            _ => None,
        }
    }

    /// The flow, mutably, if `r` still names it.
    pub fn get_mut(&mut self, r: FlowRef) -> Option<&mut Entry<T>> {
        match self.slots.get_mut(r.idx as usize) {
            Some(Slot::Used(e)) if e.gen == r.gen => Some(e),
            _ => None,
        }
    }

    /// Insert a new flow (not yet translated). Fails when full or the key exists (returns the
    /// existing flow then).
    pub fn insert(
        &mut self,
        key: FlowKey,
        class: TimerClass,
        now: Timestamp,
        data: T,
    ) -> Result<FlowRef, InsertError> {
        if let Some(r) = self.lookup(&key) {
            return Err(InsertError::Exists(r));
        }
        if self.len >= self.capacity {
            return Err(InsertError::Full);
        }
        let (idx, gen) = match self.free.pop() {
            Some(i) => match self.slots[i as usize] {
                Slot::Free { gen } => (i, gen.wrapping_add(1)),
                Slot::Used(_) => unreachable!("free list holds a used slot"),
            },
            None => {
                self.slots.push(Slot::Free { gen: 0 });
                ((self.slots.len() - 1) as u32, 0)
            }
        };
        self.slots[idx as usize] = Slot::Used(Entry {
            key,
            snat: None,
            class,
            last_seen: now,
            data,
            prev: NIL,
            next: NIL,
            gen,
        });
        let h = self.hasher.hash_one(key);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.fwd
            .insert_unique(h, idx, |&i| match &slots[i as usize] {
                Slot::Used(e) => hasher.hash_one(e.key),
                Slot::Free { .. } => 0,
            });
        self.link_tail(idx, class);
        self.len += 1;
        Ok(FlowRef { idx, gen })
    }

    /// Record the translation of a flow and index its reply key.
    pub fn set_snat(&mut self, r: FlowRef, eip: IpAddr, eport: u16) -> Result<(), ReplyTaken> {
        let Some(e) = self.get(r) else {
            return Ok(());
        };
        let rk = e.key.reply_key(eip, eport);
        if e.snat.is_some() || self.reply_taken(&rk) {
            return Err(ReplyTaken);
        }
        self.entry_mut(r.idx).snat = Some((eip, eport));
        let h = self.hasher.hash_one(rk);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.rev
            .insert_unique(h, r.idx, |&i| match &slots[i as usize] {
                Slot::Used(e) => e
                    .snat
                    .map(|(ip, p)| hasher.hash_one(e.key.reply_key(ip, p)))
                    .unwrap_or(0),
                Slot::Free { .. } => 0,
            });
        Ok(())
    }

    /// Mark activity: the flow becomes the youngest of `class`.
    #[inline(always)]
    pub fn touch(&mut self, r: FlowRef, class: TimerClass, now: Timestamp) {
        let Some(e) = self.get_mut(r) else {
            return;
        };
        e.last_seen = now;
        let old = e.class;
        // Already youngest of its class: nothing to move (the common fast-path case).
        if old == class && e.next == NIL {
            return;
        }
        self.relink(r, old, class);
    }

    /// Move flow `r` from the list of `old` to the tail of the list of `class`.
    #[inline(never)]
    fn relink(&mut self, r: FlowRef, old: TimerClass, class: TimerClass) {
        self.unlink(r.idx, old);
        self.entry_mut(r.idx).class = class;
        self.link_tail(r.idx, class);
    }

    /// Remove a flow, returning it.
    pub fn remove(&mut self, r: FlowRef) -> Option<Entry<T>> {
        self.get(r)?;
        let idx = r.idx;
        let (key, rk, class) = {
            let e = self.entry(idx);
            (e.key, e.snat.map(|(ip, p)| e.key.reply_key(ip, p)), e.class)
        };
        self.unlink(idx, class);
        let h = self.hasher.hash_one(key);
        if let Ok(o) = self.fwd.find_entry(h, |&i| i == idx) {
            o.remove();
        }
        if let Some(rk) = rk {
            let h = self.hasher.hash_one(rk);
            if let Ok(o) = self.rev.find_entry(h, |&i| i == idx) {
                o.remove();
            }
        }
        let gen = r.gen;
        let old = std::mem::replace(&mut self.slots[idx as usize], Slot::Free { gen });
        self.free.push(idx);
        self.len -= 1;
        match old {
            Slot::Used(e) => Some(e),
            Slot::Free { .. } => None,
        }
    }

    /// The oldest flow of the most expendable class, if any (what eviction would take).
    pub fn eviction_candidate(&self) -> Option<FlowRef> {
        self.eviction_candidate_upto(TimerClass::Established)
    }

    /// Like [`Table::eviction_candidate`], but only from classes up to `max` in eviction order.
    pub fn eviction_candidate_upto(&self, max: TimerClass) -> Option<FlowRef> {
        ALL_CLASSES
            .iter()
            .take_while(|&&c| c <= max)
            .map(|&c| self.lists[c as usize].head)
            .find(|&h| h != NIL)
            .map(|h| self.fref(h))
    }

    /// Remove and return one flow whose idle timer ran out by `now`, if any. Call until `None`.
    pub fn pop_expired(&mut self, now: Timestamp) -> Option<(FlowRef, Entry<T>)> {
        for c in ALL_CLASSES {
            let h = self.lists[c as usize].head;
            if h == NIL {
                continue;
            }
            let e = self.entry(h);
            if e.last_seen.as_nanos().saturating_add(self.timeouts.of(c)) <= now.as_nanos() {
                let r = self.fref(h);
                return self.remove(r).map(|e| (r, e));
            }
        }
        None
    }

    /// Remove and return any flow (shutdown).
    pub fn pop_any(&mut self) -> Option<(FlowRef, Entry<T>)> {
        let r = self.eviction_candidate()?;
        self.remove(r).map(|e| (r, e))
    }

    fn link_tail(&mut self, idx: u32, class: TimerClass) {
        let tail = self.lists[class as usize].tail;
        {
            let e = self.entry_mut(idx);
            e.prev = tail;
            e.next = NIL;
        }
        if tail == NIL {
            self.lists[class as usize].head = idx;
        } else {
            self.entry_mut(tail).next = idx;
        }
        self.lists[class as usize].tail = idx;
    }

    fn unlink(&mut self, idx: u32, class: TimerClass) {
        let (prev, next) = {
            let e = self.entry(idx);
            (e.prev, e.next)
        };
        if prev == NIL {
            self.lists[class as usize].head = next;
        } else {
            self.entry_mut(prev).next = next;
        }
        if next == NIL {
            self.lists[class as usize].tail = prev;
        } else {
            self.entry_mut(next).prev = prev;
        }
        let e = self.entry_mut(idx);
        e.prev = NIL;
        e.next = NIL;
    }
}

/// Inserting a flow failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The table is full.
    Full,
    /// A flow with this key exists.
    Exists(FlowRef),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(i: u32) -> FlowKey {
        FlowKey {
            src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 16))),
            dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)),
            sport: i as u16,
            dport: 443,
            proto: PROTO_TCP,
        }
    }

    fn t(s: u64) -> Timestamp {
        Timestamp::from_secs(s)
    }

    #[test]
    fn insert_lookup_remove() {
        let mut tb: Table<u32> = Table::new(100, Timeouts::default());
        let r = tb.insert(key(1), TimerClass::Embryonic, t(1), 7).unwrap();
        assert_eq!(tb.lookup(&key(1)), Some(r));
        assert_eq!(tb.lookup(&key(2)), None);
        assert_eq!(
            tb.insert(key(1), TimerClass::Embryonic, t(1), 0),
            Err(InsertError::Exists(r))
        );
        let eip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        tb.set_snat(r, eip, 5000).unwrap();
        let rk = key(1).reply_key(eip, 5000);
        assert_eq!(tb.lookup_reply(&rk), Some(r));
        let e = tb.remove(r).unwrap();
        assert_eq!(e.data, 7);
        assert!(tb.lookup(&key(1)).is_none());
        assert!(tb.lookup_reply(&rk).is_none());
        assert!(tb.get(r).is_none());
        // The slot is reused with a new generation: the stale ref stays dead.
        let r2 = tb.insert(key(2), TimerClass::Udp, t(1), 8).unwrap();
        assert_eq!(r2.idx, r.idx);
        assert_ne!(r2.gen, r.gen);
        assert!(tb.get(r).is_none());
    }

    #[test]
    fn reply_key_collision_refused() {
        let mut tb: Table<()> = Table::new(100, Timeouts::default());
        let eip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let a = tb.insert(key(1), TimerClass::Udp, t(1), ()).unwrap();
        let mut k2 = key(2);
        k2.dport = key(1).dport;
        let b = tb.insert(k2, TimerClass::Udp, t(1), ()).unwrap();
        tb.set_snat(a, eip, 4000).unwrap();
        assert_eq!(tb.set_snat(b, eip, 4000), Err(ReplyTaken));
        tb.set_snat(b, eip, 4001).unwrap();
    }

    #[test]
    fn full_table_and_eviction_order() {
        let mut tb: Table<u32> = Table::new(3, Timeouts::default());
        let est = tb.insert(key(1), TimerClass::Established, t(1), 1).unwrap();
        let emb_old = tb.insert(key(2), TimerClass::Embryonic, t(2), 2).unwrap();
        let _emb_new = tb.insert(key(3), TimerClass::Embryonic, t(3), 3).unwrap();
        assert_eq!(
            tb.insert(key(4), TimerClass::Udp, t(4), 4),
            Err(InsertError::Full)
        );
        // Embryonic before established, oldest first.
        assert_eq!(tb.eviction_candidate(), Some(emb_old));
        tb.remove(emb_old);
        tb.remove(tb.eviction_candidate().unwrap());
        assert_eq!(tb.eviction_candidate(), Some(est));
        assert_eq!(
            tb.eviction_candidate_upto(TimerClass::Udp),
            None,
            "established flows are not taken below their class"
        );
    }

    #[test]
    fn timers_expire_in_order_and_touch_renews() {
        let mut tb: Table<u32> = Table::new(10, Timeouts::default());
        let a = tb.insert(key(1), TimerClass::Udp, t(0), 1).unwrap();
        let b = tb.insert(key(2), TimerClass::Udp, t(10), 2).unwrap();
        let c = tb.insert(key(3), TimerClass::Embryonic, t(0), 3).unwrap();
        assert!(tb.pop_expired(t(29)).is_none());
        let (r, e) = tb.pop_expired(t(30)).unwrap();
        assert_eq!((r, e.data), (c, 3));
        assert!(tb.pop_expired(t(59)).is_none());
        tb.touch(a, TimerClass::Udp, t(50));
        let (r, _) = tb.pop_expired(t(70)).unwrap();
        assert_eq!(r, b);
        assert!(tb.pop_expired(t(109)).is_none());
        assert_eq!(tb.pop_expired(t(110)).map(|x| x.0), Some(a));
        assert!(tb.is_empty());
    }

    #[test]
    fn class_change_moves_lists() {
        let mut tb: Table<u32> = Table::new(10, Timeouts::default());
        let a = tb.insert(key(1), TimerClass::Embryonic, t(0), 1).unwrap();
        tb.touch(a, TimerClass::Established, t(1));
        // Not expired at the embryonic timeout any more.
        assert!(tb.pop_expired(t(100)).is_none());
        assert_eq!(tb.get(a).unwrap().class, TimerClass::Established);
        assert!(tb.pop_expired(t(3601)).is_some());
    }

    #[test]
    fn many_flows_consistent() {
        let mut tb: Table<u32> = Table::new(50_000, Timeouts::default());
        let refs: Vec<_> = (0..50_000)
            .map(|i| tb.insert(key(i), TimerClass::Udp, t(0), i).unwrap())
            .collect();
        for (i, r) in refs.iter().enumerate().step_by(2) {
            assert_eq!(tb.remove(*r).unwrap().data, i as u32);
        }
        for i in 0..50_000u32 {
            assert_eq!(tb.lookup(&key(i)).is_some(), i % 2 == 1);
        }
        let mut n = 0;
        while tb.pop_expired(t(60)).is_some() {
            n += 1;
        }
        assert_eq!(n, 25_000);
    }

    #[test]
    fn tcp_state_machine() {
        use tcp_flags::*;
        let mut tr = TcpTrack::new();
        assert_eq!(tr.on_segment(Dir::In, ACK, true), TcpEvent::Invalid);
        assert_eq!(tr.on_segment(Dir::Out, SYN, false), TcpEvent::Ok);
        assert_eq!(tr.on_segment(Dir::In, SYN | ACK, false), TcpEvent::Ok);
        assert_eq!(tr.state, TcpState::SynRecv);
        assert_eq!(tr.on_segment(Dir::Out, ACK, false), TcpEvent::Ok);
        assert_eq!(tr.state, TcpState::Established);
        assert_eq!(tr.class(), TimerClass::Established);
        tr.on_segment(Dir::Out, FIN | ACK, false);
        assert_eq!(tr.state, TcpState::FinWait);
        tr.on_segment(Dir::In, FIN | ACK, false);
        assert_eq!(tr.state, TcpState::Closing);
        tr.on_segment(Dir::Out, ACK, false);
        assert_eq!(tr.state, TcpState::Closed);
        assert_eq!(tr.on_segment(Dir::Out, ACK, true), TcpEvent::Invalid);

        let mut tr = TcpTrack::new();
        tr.on_segment(Dir::Out, SYN, false);
        assert_eq!(tr.on_segment(Dir::In, RST | ACK, false), TcpEvent::Reset);
        assert_eq!(tr.state, TcpState::Closed);
    }
}
