//! Destination port ranges compiled for lookup: which ranges contain a port.

use std::ops::RangeInclusive;

use crate::prefix::{RangeIndex, RangeIndexBuilder};

/// Builder for a [`PortSet`].
#[derive(Debug, Clone, Default)]
pub struct PortSetBuilder(RangeIndexBuilder<u16>);

impl PortSetBuilder {
    /// Add an inclusive port range with `payload`; an empty range is ignored.
    pub fn insert(&mut self, range: &RangeInclusive<u16>, payload: u32) {
        self.0.insert(*range.start(), *range.end(), payload);
    }

    /// Compile the set.
    pub fn build(self) -> PortSet {
        PortSet(self.0.build())
    }
}

/// Port ranges with payloads; one binary search over the elementary intervals per lookup.
#[derive(Debug, Clone)]
pub struct PortSet(RangeIndex<u16>);

impl PortSet {
    /// Call `f` with the payloads of each distinct range containing `port`.
    #[inline]
    pub fn for_each(&self, port: u16, f: impl FnMut(&[u32])) {
        self.0.for_each(port, f);
    }

    /// Call `f` with the index of each distinct range containing `port`; see
    /// [`RangeIndex::for_each_range`].
    #[inline]
    pub fn for_each_range(&self, port: u16, f: impl FnMut(u32)) {
        self.0.for_each_range(port, f);
    }

    /// The interned list of distinct ranges containing `port`; see
    /// [`RangeIndex::slot_of`].
    #[inline]
    pub fn slot_of(&self, port: u16) -> Option<u32> {
        self.0.slot_of(port)
    }

    /// Number of interned range lists.
    pub fn slots(&self) -> usize {
        self.0.slots()
    }

    /// Call `f` with the distinct ranges of list `slot`.
    #[inline]
    pub fn for_each_slot_range(&self, slot: u32, mut f: impl FnMut(u32)) {
        self.0.slot_ranges(slot).iter().for_each(|r| f(*r));
    }

    /// Number of distinct ranges.
    pub fn ranges(&self) -> usize {
        self.0.ranges()
    }

    /// The payloads of distinct range `range`.
    pub fn payloads_of(&self, range: u32) -> &[u32] {
        self.0.payloads_of(range)
    }

    /// The payloads of every range containing `port`, sorted and deduplicated.
    pub fn lookup(&self, port: u16) -> Vec<u32> {
        self.0.lookup(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn overlapping_ranges() {
        let mut b = PortSetBuilder::default();
        b.insert(&(443..=443), 0);
        b.insert(&(1..=1023), 1);
        b.insert(&(1024..=65535), 2);
        b.insert(&(400..=500), 3);
        b.insert(&(443..=443), 4);
        let s = b.build();
        assert_eq!(s.lookup(0), Vec::<u32>::new());
        assert_eq!(s.lookup(443), vec![0, 1, 3, 4]);
        assert_eq!(s.lookup(501), vec![1]);
        assert_eq!(s.lookup(1024), vec![2]);
        assert_eq!(s.lookup(65535), vec![2]);
    }

    proptest! {
        #[test]
        fn agrees_with_range_contains(
            ranges in proptest::collection::vec((0u16..40, 0u16..40), 0..16),
            ports in proptest::collection::vec(0u16..45, 1..16),
        ) {
            let ranges: Vec<RangeInclusive<u16>> = ranges.iter().map(|&(a, b)| a..=b).collect();
            let mut b = PortSetBuilder::default();
            for (i, r) in ranges.iter().enumerate() {
                b.insert(r, i as u32);
            }
            let s = b.build();
            for p in ports {
                let want: Vec<u32> =
                    (0..ranges.len() as u32).filter(|&i| ranges[i as usize].contains(&p)).collect();
                prop_assert_eq!(s.lookup(p), want);
            }
        }
    }
}
