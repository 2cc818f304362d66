//! Bounded IPv4 / IPv6 fragment reassembly.
//!
//! Bounds: datagrams in flight, bytes per datagram, bytes in total, fragments per datagram and
//! a timeout from the first fragment. When the table is full the *oldest* datagram is evicted:
//! legitimate datagrams complete within milliseconds, so under a fragment flood it is the
//! flood's half-built junk that gets pushed out. Overlapping fragments are accepted only when
//! the overlap carries identical bytes; a conflicting overlap drops the whole datagram (the
//! receiver's choice of which copy wins would differ from ours — an evasion vector, RFC 5722).

use crate::time::Timestamp;
use crate::wire::{self, ipv6, L3};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Reassembly limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragConfig {
    /// Datagrams being reassembled at once.
    pub max_datagrams: usize,
    /// Bytes held for one datagram (headers included).
    pub max_datagram_bytes: usize,
    /// Bytes held over all datagrams.
    pub max_total_bytes: usize,
    /// Fragments stored for one datagram.
    pub max_fragments: usize,
    /// Lifetime of an incomplete datagram, from its first fragment.
    pub timeout: Duration,
}

impl Default for FragConfig {
    fn default() -> Self {
        FragConfig {
            max_datagrams: 256,
            max_datagram_bytes: 65_535 + 128,
            max_total_bytes: 4 << 20,
            max_fragments: 64,
            timeout: Duration::from_secs(15),
        }
    }
}

/// Why a fragment (or its datagram) was dropped. [`FragDrop::as_str`] is a counter label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FragDrop {
    /// The frame is not an IP fragment (callers should only pass fragments).
    NotFragment,
    /// Unparsable, a non-final fragment not a multiple of 8 bytes, or inconsistent ends.
    Malformed,
    /// The datagram would exceed 65535 bytes or the per-datagram/total byte bound.
    TooBig,
    /// Two fragments overlap with different bytes: the datagram is dropped.
    ConflictingOverlap,
    /// More fragments than `max_fragments`.
    TooManyFragments,
}

impl FragDrop {
    /// Stable snake_case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            FragDrop::NotFragment => "not_fragment",
            FragDrop::Malformed => "frag_malformed",
            FragDrop::TooBig => "frag_too_big",
            FragDrop::ConflictingOverlap => "frag_conflicting_overlap",
            FragDrop::TooManyFragments => "frag_too_many",
        }
    }
}

/// Outcome of [`Reassembler::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FragResult {
    /// The datagram is whole: a complete Ethernet frame (Ethernet and IP headers of the first
    /// fragment, fragmentation undone: IPv4 MF/offset cleared and checksum recomputed, IPv6
    /// fragment header removed).
    Complete(Vec<u8>),
    /// Stored; waiting for the rest.
    Held,
    /// Dropped (the fragment, and for datagram-level reasons its whole datagram).
    Dropped(FragDrop),
}

/// Counters (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragStats {
    pub completed: u64,
    pub held: u64,
    pub duplicates: u64,
    pub dropped_malformed: u64,
    pub dropped_too_big: u64,
    pub dropped_conflict: u64,
    pub dropped_too_many: u64,
    pub dropped_not_fragment: u64,
    /// Incomplete datagrams evicted to make room.
    pub evicted: u64,
    /// Incomplete datagrams expired by [`Reassembler::expire`].
    pub timed_out: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    /// IPv4 protocol (part of the v4 key, RFC 791); 0 for IPv6 (RFC 8200 keys on src, dst, id).
    proto: u8,
    id: u32,
}

#[derive(Debug)]
struct Datagram {
    created: Timestamp,
    /// Ethernet + IP header (+ IPv6 unfragmentable part) of the offset-0 fragment.
    header: Option<Vec<u8>>,
    /// IPv6: offset in `header` of the next-header byte naming the fragment header, and the
    /// protocol after it.
    v6_nh: Option<(usize, u8)>,
    /// Payload length, known once the last fragment arrived.
    total: Option<usize>,
    /// Fragment data by offset (unsorted).
    pieces: Vec<(usize, Vec<u8>)>,
    bytes: usize,
}

/// Bounded fragment reassembly table.
#[derive(Debug)]
pub struct Reassembler {
    cfg: FragConfig,
    table: HashMap<Key, Datagram>,
    total_bytes: usize,
    stats: FragStats,
}

/// One fragment, located in its frame.
struct Frag<'a> {
    key: Key,
    offset: usize,
    more: bool,
    data: &'a [u8],
    /// Header bytes to keep if this is the first fragment.
    header: &'a [u8],
    v6_nh: Option<(usize, u8)>,
}

impl Reassembler {
    /// An empty table with the given bounds.
    pub fn new(cfg: FragConfig) -> Self {
        Reassembler {
            cfg,
            table: HashMap::new(),
            total_bytes: 0,
            stats: FragStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &FragStats {
        &self.stats
    }

    /// Datagrams currently held.
    pub fn in_flight(&self) -> usize {
        self.table.len()
    }

    /// Bytes currently held.
    pub fn held_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Offer one fragment (a whole Ethernet frame).
    pub fn push(&mut self, now: Timestamp, frame: &[u8]) -> FragResult {
        let f = match locate(frame) {
            Ok(f) => f,
            Err(r) => return self.count(FragResult::Dropped(r)),
        };
        let res = self.insert(now, f);
        self.count(res)
    }

    /// Drop datagrams older than the timeout; returns how many.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let timeout = self.cfg.timeout;
        let before = self.table.len();
        let mut freed = 0;
        self.table.retain(|_, d| {
            let keep = now.since(d.created) < timeout;
            if !keep {
                freed += d.bytes;
            }
            keep
        });
        self.total_bytes -= freed;
        let n = before - self.table.len();
        self.stats.timed_out += n as u64;
        n
    }

    fn count(&mut self, r: FragResult) -> FragResult {
        let s = &mut self.stats;
        match &r {
            FragResult::Complete(_) => s.completed += 1,
            FragResult::Held => s.held += 1,
            FragResult::Dropped(FragDrop::NotFragment) => s.dropped_not_fragment += 1,
            FragResult::Dropped(FragDrop::Malformed) => s.dropped_malformed += 1,
            FragResult::Dropped(FragDrop::TooBig) => s.dropped_too_big += 1,
            FragResult::Dropped(FragDrop::ConflictingOverlap) => s.dropped_conflict += 1,
            FragResult::Dropped(FragDrop::TooManyFragments) => s.dropped_too_many += 1,
        }
        r
    }

    fn remove(&mut self, key: &Key) {
        if let Some(d) = self.table.remove(key) {
            self.total_bytes -= d.bytes;
        }
    }

    /// Evict the oldest datagram other than `keep`; false if there is none.
    fn evict_oldest(&mut self, keep: &Key) -> bool {
        let oldest = self
            .table
            .iter()
            .filter(|(k, _)| *k != keep)
            .min_by_key(|(_, d)| d.created)
            .map(|(k, _)| *k);
        match oldest {
            Some(k) => {
                self.remove(&k);
                self.stats.evicted += 1;
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, now: Timestamp, f: Frag<'_>) -> FragResult {
        let end = f.offset + f.data.len();
        let header_len = if f.offset == 0 { f.header.len() } else { 0 };
        let cost = f.data.len() + header_len;
        if end > 65_535 || cost > self.cfg.max_datagram_bytes || cost > self.cfg.max_total_bytes {
            self.remove(&f.key);
            return FragResult::Dropped(FragDrop::TooBig);
        }
        if !self.table.contains_key(&f.key) {
            while self.table.len() >= self.cfg.max_datagrams.max(1) {
                if !self.evict_oldest(&f.key) {
                    break;
                }
            }
            self.table.insert(
                f.key,
                Datagram {
                    created: now,
                    header: None,
                    v6_nh: None,
                    total: None,
                    pieces: Vec::new(),
                    bytes: 0,
                },
            );
        }
        let Some(d) = self.table.get(&f.key) else {
            return FragResult::Dropped(FragDrop::Malformed);
        };

        // Consistency of the datagram's end.
        let verdict = if !f.more {
            match d.total {
                Some(t) if t != end => Some(FragDrop::Malformed),
                _ if d.pieces.iter().any(|(s, p)| s + p.len() > end) => Some(FragDrop::Malformed),
                _ => None,
            }
        } else if d.total.is_some_and(|t| end > t) {
            Some(FragDrop::Malformed)
        } else {
            None
        };
        if let Some(r) = verdict {
            self.remove(&f.key);
            return FragResult::Dropped(r);
        }
        // Overlaps must agree; a fragment wholly inside one stored piece is a duplicate.
        let mut duplicate = false;
        for (s, p) in &d.pieces {
            let pe = s + p.len();
            if pe <= f.offset || *s >= end {
                continue;
            }
            let (os, oe) = (f.offset.max(*s), end.min(pe));
            if p[os - s..oe - s] != f.data[os - f.offset..oe - f.offset] {
                self.remove(&f.key);
                return FragResult::Dropped(FragDrop::ConflictingOverlap);
            }
            duplicate |= *s <= f.offset && end <= pe;
        }
        if duplicate && (f.offset != 0 || d.header.is_some()) && (f.more || d.total.is_some()) {
            self.stats.duplicates += 1;
            return FragResult::Held;
        }
        if d.pieces.len() >= self.cfg.max_fragments {
            self.remove(&f.key);
            return FragResult::Dropped(FragDrop::TooManyFragments);
        }
        if d.bytes + cost > self.cfg.max_datagram_bytes {
            self.remove(&f.key);
            return FragResult::Dropped(FragDrop::TooBig);
        }
        while self.total_bytes + cost > self.cfg.max_total_bytes {
            if !self.evict_oldest(&f.key) {
                self.remove(&f.key);
                return FragResult::Dropped(FragDrop::TooBig);
            }
        }
        let Some(d) = self.table.get_mut(&f.key) else {
            return FragResult::Dropped(FragDrop::Malformed);
        };
        if f.offset == 0 && d.header.is_none() {
            d.header = Some(f.header.to_vec());
            d.v6_nh = f.v6_nh;
            d.bytes += f.header.len();
            self.total_bytes += f.header.len();
        }
        if !f.more {
            d.total = Some(end);
        }
        d.pieces.push((f.offset, f.data.to_vec()));
        d.bytes += f.data.len();
        self.total_bytes += f.data.len();

        match assemble(d) {
            Some(frame) => {
                self.remove(&f.key);
                FragResult::Complete(frame)
            }
            None => FragResult::Held,
        }
    }
}

/// Find the fragment's key, offset and data in `frame`.
fn locate(frame: &[u8]) -> Result<Frag<'_>, FragDrop> {
    let info = wire::parse(frame).map_err(|_| FragDrop::Malformed)?;
    let fi = info.fragment.ok_or(FragDrop::NotFragment)?;
    let (data_start, header, v6_nh, proto) = match info.l3 {
        L3::V4 => (info.l4_offset, &frame[..info.l4_offset], None, info.proto),
        L3::V6 => {
            let ip = ipv6::Packet::new_checked(&frame[info.l3_offset..])
                .map_err(|_| FragDrop::Malformed)?;
            let up = ip.upper_layer().map_err(|_| FragDrop::Malformed)?;
            let fh = up.fragment.ok_or(FragDrop::Malformed)?;
            let hstart = info.l3_offset + ipv6::HEADER_LEN + fh.header_offset;
            // prev_nh_offset is relative to the IPv6 header; make it relative to the frame.
            (
                hstart + 8,
                &frame[..hstart],
                Some((info.l3_offset + fh.prev_nh_offset, fh.next_header)),
                0,
            )
        }
    };
    let data = frame
        .get(data_start..info.ip_end)
        .ok_or(FragDrop::Malformed)?;
    if fi.more && (data.is_empty() || data.len() % 8 != 0) {
        return Err(FragDrop::Malformed);
    }
    Ok(Frag {
        key: Key {
            src: info.src,
            dst: info.dst,
            proto,
            id: fi.id,
        },
        offset: usize::from(fi.offset),
        more: fi.more,
        data,
        header,
        v6_nh,
    })
}

/// The whole frame if every byte of the datagram is here.
fn assemble(d: &mut Datagram) -> Option<Vec<u8>> {
    let total = d.total?;
    let header = d.header.as_ref()?;
    d.pieces.sort_unstable_by_key(|(s, _)| *s);
    let mut covered = 0;
    for (s, p) in &d.pieces {
        if *s > covered {
            return None;
        }
        covered = covered.max(s + p.len());
    }
    if covered < total {
        return None;
    }
    let mut out = Vec::with_capacity(header.len() + total);
    out.extend_from_slice(header);
    out.resize(header.len() + total, 0);
    for (s, p) in &d.pieces {
        out[header.len() + s..header.len() + s + p.len()].copy_from_slice(p);
    }
    let l3 = wire::ethernet::walk(&out).ok()?.0;
    match d.v6_nh {
        None => {
            let len = (out.len() - l3) as u16;
            out[l3 + 2..l3 + 4].copy_from_slice(&len.to_be_bytes());
            out[l3 + 6] &= 0x40; // keep DF, clear MF and the offset
            out[l3 + 7] = 0;
            let mut ip = wire::ipv4::Packet::new_checked(&mut out[l3..]).ok()?;
            ip.fill_checksum();
        }
        Some((nh_off, nh)) => {
            *out.get_mut(nh_off)? = nh;
            let plen = (out.len() - l3 - ipv6::HEADER_LEN) as u16;
            out[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        }
    }
    Some(out)
}
