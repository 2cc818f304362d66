//! Containment sets over integer ranges: which ranges (IP prefixes, port ranges) contain a
//! given point, answered with one binary search.
//!
//! The ranges cut the key space into elementary intervals inside which the set of containing
//! ranges is constant. Each interval points to an interned list of *distinct ranges*, and each
//! distinct range to the payloads (rule ids) that use it. Going through distinct ranges rather
//! than storing payloads per interval keeps memory bounded when many rules share one broad
//! range: for IP prefixes, which are nested or disjoint, an interval list is at most 33 (IPv4)
//! or 129 (IPv6) entries long.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use rustc_hash::FxHashMap;

/// An unsigned key type usable in a [`RangeIndex`].
pub trait RangeKey: Copy + Ord + std::hash::Hash + std::fmt::Debug {
    /// The smallest key.
    const MIN: Self;
    /// `self + 1`, or `None` at the maximum.
    fn succ(self) -> Option<Self>;
}

macro_rules! range_key {
    ($($t:ty),*) => {$(
        impl RangeKey for $t {
            const MIN: Self = 0;
            fn succ(self) -> Option<Self> {
                self.checked_add(1)
            }
        }
    )*};
}
range_key!(u16, u32, u128);

/// Builder for a [`RangeIndex`].
#[derive(Debug, Clone)]
pub struct RangeIndexBuilder<K> {
    ranges: FxHashMap<(K, K), Vec<u32>>,
}

impl<K: RangeKey> Default for RangeIndexBuilder<K> {
    fn default() -> Self {
        RangeIndexBuilder {
            ranges: FxHashMap::default(),
        }
    }
}

impl<K: RangeKey> RangeIndexBuilder<K> {
    /// Add the inclusive range `lo..=hi` with `payload`. An empty range (`lo > hi`) is ignored.
    pub fn insert(&mut self, lo: K, hi: K, payload: u32) {
        if lo <= hi {
            self.ranges.entry((lo, hi)).or_default().push(payload);
        }
    }

    /// Compile the index.
    pub fn build(self) -> RangeIndex<K> {
        // Distinct ranges in a stable order; their payload lists sorted and deduplicated.
        let mut distinct: Vec<((K, K), Vec<u32>)> = self.ranges.into_iter().collect();
        distinct.sort_unstable_by_key(|a| a.0);
        for (_, p) in &mut distinct {
            p.sort_unstable();
            p.dedup();
        }
        // Events: range i becomes active at lo and inactive after hi.
        let mut starts: Vec<(K, u32)> = Vec::with_capacity(distinct.len());
        let mut ends: Vec<(K, u32)> = Vec::with_capacity(distinct.len());
        for (i, ((lo, hi), _)) in distinct.iter().enumerate() {
            starts.push((*lo, i as u32));
            if let Some(after) = hi.succ() {
                ends.push((after, i as u32));
            }
        }
        starts.sort_unstable();
        ends.sort_unstable();
        let mut points: Vec<K> = starts.iter().chain(ends.iter()).map(|e| e.0).collect();
        points.push(K::MIN);
        points.sort_unstable();
        points.dedup();

        let mut bounds = Vec::with_capacity(points.len());
        let mut slots = Vec::with_capacity(points.len());
        let mut interned: FxHashMap<Vec<u32>, u32> = FxHashMap::default();
        let mut lists: Vec<(u32, u32)> = Vec::new();
        let mut flat: Vec<u32> = Vec::new();
        let mut active = BTreeSet::new();
        let (mut si, mut ei) = (0, 0);
        for p in points {
            while ei < ends.len() && ends[ei].0 == p {
                active.remove(&ends[ei].1);
                ei += 1;
            }
            while si < starts.len() && starts[si].0 == p {
                active.insert(starts[si].1);
                si += 1;
            }
            let list: Vec<u32> = active.iter().copied().collect();
            let slot = *interned.entry(list).or_insert_with_key(|list| {
                lists.push((flat.len() as u32, list.len() as u32));
                flat.extend_from_slice(list);
                (lists.len() - 1) as u32
            });
            // Merge neighbours with the same list (fewer intervals, shorter search).
            if slots.last() != Some(&slot) {
                bounds.push(p);
                slots.push(slot);
            }
        }
        let mut payload_spans = Vec::with_capacity(distinct.len());
        let mut payloads = Vec::new();
        for (_, p) in distinct {
            payload_spans.push((payloads.len() as u32, p.len() as u32));
            payloads.extend_from_slice(&p);
        }
        RangeIndex {
            bounds,
            slots,
            lists,
            flat,
            payload_spans,
            payloads,
        }
    }
}

/// Which inserted ranges contain a key; see the module documentation.
#[derive(Debug, Clone)]
pub struct RangeIndex<K> {
    /// Sorted starts of the elementary intervals; `bounds[0] == K::MIN`.
    bounds: Vec<K>,
    /// Interval → index into `lists`.
    slots: Vec<u32>,
    /// Interned list of distinct ranges: (offset, len) into `flat`.
    lists: Vec<(u32, u32)>,
    flat: Vec<u32>,
    /// Distinct range → (offset, len) into `payloads`.
    payload_spans: Vec<(u32, u32)>,
    payloads: Vec<u32>,
}

impl<K: RangeKey> RangeIndex<K> {
    /// Call `f` with the payloads of each distinct range containing `key` (a payload inserted
    /// with several ranges that all contain `key` is reported once per range).
    #[inline]
    pub fn for_each(&self, key: K, mut f: impl FnMut(&[u32])) {
        let i = self.bounds.partition_point(|b| *b <= key);
        let Some(slot) = i.checked_sub(1).and_then(|i| self.slots.get(i)) else {
            return;
        };
        let (off, len) = self.lists[*slot as usize];
        for r in &self.flat[off as usize..(off + len) as usize] {
            let (po, pl) = self.payload_spans[*r as usize];
            f(&self.payloads[po as usize..(po + pl) as usize]);
        }
    }

    /// Call `f` with the index (`0..self.ranges()`) of each distinct range containing `key`.
    /// Lets a caller keep its own per-range data (say, a dense bitset for a range used by
    /// many rules) next to [`RangeIndex::payloads_of`].
    #[inline]
    pub fn for_each_range(&self, key: K, mut f: impl FnMut(u32)) {
        let i = self.bounds.partition_point(|b| *b <= key);
        let Some(slot) = i.checked_sub(1).and_then(|i| self.slots.get(i)) else {
            return;
        };
        let (off, len) = self.lists[*slot as usize];
        self.flat[off as usize..(off + len) as usize]
            .iter()
            .for_each(|r| f(*r));
    }

    /// Number of distinct ranges.
    pub fn ranges(&self) -> usize {
        self.payload_spans.len()
    }

    /// The interned list (`0..self.slots()`) of distinct ranges containing `key`: keys with
    /// the same slot are contained in exactly the same ranges.
    #[inline]
    pub fn slot_of(&self, key: K) -> Option<u32> {
        let i = self.bounds.partition_point(|b| *b <= key);
        i.checked_sub(1).and_then(|i| self.slots.get(i)).copied()
    }

    /// Number of interned range lists.
    pub fn slots(&self) -> usize {
        self.lists.len()
    }

    /// The distinct ranges of list `slot` (empty if out of bounds).
    pub fn slot_ranges(&self, slot: u32) -> &[u32] {
        match self.lists.get(slot as usize) {
            Some(&(off, len)) => &self.flat[off as usize..(off + len) as usize],
            None => &[],
        }
    }

    /// The payloads of distinct range `range` (sorted, deduplicated); empty if out of bounds.
    pub fn payloads_of(&self, range: u32) -> &[u32] {
        match self.payload_spans.get(range as usize) {
            Some(&(po, pl)) => &self.payloads[po as usize..(po + pl) as usize],
            None => &[],
        }
    }

    /// The payloads of every range containing `key`, sorted and deduplicated.
    pub fn lookup(&self, key: K) -> Vec<u32> {
        let mut out = Vec::new();
        self.for_each(key, |p| out.extend_from_slice(p));
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Number of elementary intervals (after merging equal neighbours).
    pub fn intervals(&self) -> usize {
        self.bounds.len()
    }
}

/// Builder for a [`PrefixSet`].
#[derive(Debug, Clone, Default)]
pub struct PrefixSetBuilder {
    v4: RangeIndexBuilder<u32>,
    v6: RangeIndexBuilder<u128>,
}

impl PrefixSetBuilder {
    /// Add a prefix (host bits ignored) with `payload`.
    pub fn insert(&mut self, net: &IpNet, payload: u32) {
        match net {
            IpNet::V4(n) => {
                self.v4
                    .insert(u32::from(n.network()), u32::from(n.broadcast()), payload)
            }
            IpNet::V6(n) => {
                self.v6
                    .insert(u128::from(n.network()), u128::from(n.broadcast()), payload)
            }
        }
    }

    /// Compile the set.
    pub fn build(self) -> PrefixSet {
        PrefixSet {
            v4: self.v4.build(),
            v6: self.v6.build(),
        }
    }
}

/// IPv4 and IPv6 prefixes with payloads: which prefixes contain an address. An IPv4 prefix
/// never contains an IPv6 address and vice versa (as [`IpNet::contains`]).
#[derive(Debug, Clone)]
pub struct PrefixSet {
    v4: RangeIndex<u32>,
    v6: RangeIndex<u128>,
}

impl PrefixSet {
    /// Call `f` with the payloads of each distinct prefix containing `addr`.
    #[inline]
    pub fn for_each(&self, addr: IpAddr, f: impl FnMut(&[u32])) {
        match addr {
            IpAddr::V4(a) => self.v4.for_each(u32::from(a), f),
            IpAddr::V6(a) => self.v6.for_each(u128::from(a), f),
        }
    }

    /// Call `f` with the index (`0..self.ranges()`) of each distinct prefix containing
    /// `addr`; see [`RangeIndex::for_each_range`].
    #[inline]
    pub fn for_each_range(&self, addr: IpAddr, mut f: impl FnMut(u32)) {
        match addr {
            IpAddr::V4(a) => self.v4.for_each_range(u32::from(a), f),
            IpAddr::V6(a) => {
                let base = self.v4.ranges() as u32;
                self.v6.for_each_range(u128::from(a), |r| f(base + r))
            }
        }
    }

    /// The interned list of distinct prefixes containing `addr` (IPv4 lists first, then
    /// IPv6); see [`RangeIndex::slot_of`].
    #[inline]
    pub fn slot_of(&self, addr: IpAddr) -> Option<u32> {
        match addr {
            IpAddr::V4(a) => self.v4.slot_of(u32::from(a)),
            IpAddr::V6(a) => self
                .v6
                .slot_of(u128::from(a))
                .map(|s| s + self.v4.slots() as u32),
        }
    }

    /// Number of interned prefix lists.
    pub fn slots(&self) -> usize {
        self.v4.slots() + self.v6.slots()
    }

    /// Call `f` with the distinct prefixes (as indexes for [`PrefixSet::payloads_of`]) of
    /// list `slot`.
    #[inline]
    pub fn for_each_slot_range(&self, slot: u32, mut f: impl FnMut(u32)) {
        match slot.checked_sub(self.v4.slots() as u32) {
            None => self.v4.slot_ranges(slot).iter().for_each(|r| f(*r)),
            Some(s) => {
                let base = self.v4.ranges() as u32;
                self.v6.slot_ranges(s).iter().for_each(|r| f(base + r))
            }
        }
    }

    /// Number of distinct prefixes (IPv4 first, then IPv6).
    pub fn ranges(&self) -> usize {
        self.v4.ranges() + self.v6.ranges()
    }

    /// The payloads of distinct prefix `range`.
    pub fn payloads_of(&self, range: u32) -> &[u32] {
        match range.checked_sub(self.v4.ranges() as u32) {
            None => self.v4.payloads_of(range),
            Some(r) => self.v6.payloads_of(r),
        }
    }

    /// The payloads of every prefix containing `addr`, sorted and deduplicated.
    pub fn lookup(&self, addr: IpAddr) -> Vec<u32> {
        match addr {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(nets: &[&str]) -> PrefixSet {
        let mut b = PrefixSetBuilder::default();
        for (i, n) in nets.iter().enumerate() {
            b.insert(&n.parse().unwrap(), i as u32);
        }
        b.build()
    }

    #[test]
    fn nested_and_disjoint_prefixes() {
        let s = set(&[
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.0/24",
            "192.0.2.0/24",
            "0.0.0.0/0",
            "2001:db8::/32",
            "2001:db8:1::/48",
            "10.1.0.0/16",
        ]);
        let l = |a: &str| s.lookup(a.parse().unwrap());
        assert_eq!(l("10.1.2.3"), vec![0, 1, 2, 4, 7]);
        assert_eq!(l("10.1.3.3"), vec![0, 1, 4, 7]);
        assert_eq!(l("10.255.255.255"), vec![0, 4]);
        assert_eq!(l("11.0.0.0"), vec![4]);
        assert_eq!(l("255.255.255.255"), vec![4]);
        assert_eq!(l("192.0.2.255"), vec![3, 4]);
        assert_eq!(l("2001:db8:1::5"), vec![5, 6]);
        assert_eq!(l("2001:db9::"), Vec::<u32>::new());
        assert_eq!(l("::ffff:10.1.2.3"), Vec::<u32>::new());
    }

    #[test]
    fn range_edges_including_key_max() {
        let mut b = RangeIndexBuilder::<u16>::default();
        b.insert(0, 0, 1);
        b.insert(10, 20, 2);
        b.insert(15, 65535, 3);
        b.insert(30, 10, 4); // empty, ignored
        let r = b.build();
        assert_eq!(r.lookup(0), vec![1]);
        assert_eq!(r.lookup(1), Vec::<u32>::new());
        assert_eq!(r.lookup(10), vec![2]);
        assert_eq!(r.lookup(15), vec![2, 3]);
        assert_eq!(r.lookup(20), vec![2, 3]);
        assert_eq!(r.lookup(21), vec![3]);
        assert_eq!(r.lookup(65535), vec![3]);
        let empty = RangeIndexBuilder::<u128>::default().build();
        assert_eq!(empty.lookup(u128::MAX), Vec::<u32>::new());
        assert_eq!(empty.intervals(), 1);
    }

    proptest! {
        /// Against `IpNet::contains` for random nested/overlapping prefixes inside 10/8 and
        /// addresses drawn from the same small space.
        #[test]
        fn agrees_with_ipnet_contains(
            nets in proptest::collection::vec((0u32..64, 0u8..=32, any::<bool>()), 0..20),
            addrs in proptest::collection::vec((0u32..64, any::<bool>()), 1..20),
        ) {
            let mk = |x: u32, v6: bool, len: u8| -> IpNet {
                if v6 {
                    let a = std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(x) << 90);
                    IpNet::new(a.into(), 32 + len * 3).unwrap().trunc()
                } else {
                    let a = std::net::Ipv4Addr::from(0x0a00_0000 | x << 18);
                    IpNet::new(a.into(), len).unwrap().trunc()
                }
            };
            let nets: Vec<IpNet> = nets.iter().map(|&(x, l, v6)| mk(x, v6, l)).collect();
            let mut b = PrefixSetBuilder::default();
            for (i, n) in nets.iter().enumerate() {
                b.insert(n, i as u32);
            }
            let s = b.build();
            for &(x, v6) in &addrs {
                let a = mk(x, v6, 32).addr();
                let want: Vec<u32> =
                    (0..nets.len() as u32).filter(|&i| nets[i as usize].contains(&a)).collect();
                prop_assert_eq!(s.lookup(a), want.clone());
                let mut via_ranges = Vec::new();
                s.for_each_range(a, |r| via_ranges.extend_from_slice(s.payloads_of(r)));
                if let Some(slot) = s.slot_of(a) {
                    s.for_each_slot_range(slot, |r| via_ranges.extend_from_slice(s.payloads_of(r)));
                }
                via_ranges.sort_unstable();
                via_ranges.dedup();
                prop_assert_eq!(via_ranges, want);
            }
        }
    }
}
