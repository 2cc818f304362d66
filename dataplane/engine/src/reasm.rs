//! Bounded in-order view of one direction of a TCP byte stream, for L7 identification.
//!
//! Only the first `limit` bytes of the stream are kept (a ClientHello or an HTTP request head
//! is all we look at). Segments may arrive out of order and are held until the gap before them
//! fills; exact retransmissions are recognised; a retransmission that overlaps stored bytes
//! with *different* bytes is reported as [`PushResult::Conflict`] and not stored — the classic
//! IDS-evasion trick (the endpoint and the middlebox would see different streams), so the
//! caller should treat the flow as hostile rather than pick a side. Sequence numbers use
//! serial arithmetic ([`SeqNumber`]), so streams crossing 2^32 work.

use crate::wire::tcp::SeqNumber;

/// Most disjoint out-of-order ranges held at once (bounds the per-push work).
pub const MAX_RANGES: usize = 32;

/// Bytes the buffer allocates at once on its first segment (at most the limit, at least the
/// segment).
const FIRST_ALLOC: usize = 2048;

/// What [`StreamBuf::push`] did with a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushResult {
    /// New bytes stored (possibly out of order).
    Ok,
    /// Every byte was already held, identical.
    Retransmission,
    /// The segment overlaps held bytes with different content; nothing was stored.
    Conflict,
    /// The segment lies before the stream start, or beyond `limit` while a gap before it is
    /// still open (too far ahead to be useful). Nothing stored.
    OutOfWindow,
    /// The buffer is at its bound: the segment (or its tail) lies beyond `limit` and the prefix
    /// up to the limit is complete, or too many disjoint ranges are held. What fitted was stored.
    Full,
}

/// One direction of a TCP stream, from its first data byte, up to `limit` bytes.
#[derive(Debug, Clone)]
pub struct StreamBuf {
    /// Sequence number of stream offset 0.
    base: SeqNumber,
    limit: usize,
    /// Stream bytes by offset; meaningful only inside `ranges`.
    data: Vec<u8>,
    /// Held byte ranges `[start, end)`, sorted, disjoint and not adjacent.
    ranges: Vec<(usize, usize)>,
}

impl StreamBuf {
    /// A stream whose SYN carried sequence number `isn`: the first data byte is `isn + 1`.
    pub fn new(isn: SeqNumber, limit: usize) -> Self {
        Self::starting_at(isn + 1, limit)
    }

    /// A stream whose first data byte has sequence number `first_seq` (mid-stream pickup).
    pub fn starting_at(first_seq: SeqNumber, limit: usize) -> Self {
        StreamBuf {
            base: first_seq,
            limit,
            data: Vec::new(),
            ranges: Vec::new(),
        }
    }

    /// The bound given at construction.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes from the stream start with no gap.
    pub fn contiguous(&self) -> &[u8] {
        match self.ranges.first() {
            Some(&(0, end)) => &self.data[..end],
            _ => &[],
        }
    }

    /// Sequence number just after the contiguous prefix.
    pub fn next_seq(&self) -> SeqNumber {
        self.base + self.contiguous().len()
    }

    /// Bytes held in total, in order or not.
    pub fn held(&self) -> usize {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether the first `limit` bytes are all here.
    pub fn is_full(&self) -> bool {
        self.contiguous().len() >= self.limit
    }

    /// Sequence number just after the last byte held (in order or not).
    pub fn end_seq(&self) -> SeqNumber {
        self.base + self.ranges.last().map_or(0, |&(_, e)| e)
    }

    /// Whether a segment's payload at `seq` agrees byte for byte with every held byte it
    /// overlaps (bytes outside the held ranges are not judged). Stores nothing.
    pub fn consistent(&self, seq: SeqNumber, data: &[u8]) -> bool {
        let rel = i64::from(seq.diff(self.base));
        let end = rel + data.len() as i64;
        self.ranges.iter().all(|&(rs, re)| {
            let (os, oe) = (rel.max(rs as i64), end.min(re as i64));
            os >= oe
                || self.data[os as usize..oe as usize]
                    == data[(os - rel) as usize..(oe - rel) as usize]
        })
    }

    /// Offer a segment's payload starting at sequence number `seq`.
    pub fn push(&mut self, seq: SeqNumber, data: &[u8]) -> PushResult {
        if data.is_empty() {
            return PushResult::Ok;
        }
        // Serial arithmetic: offsets within ±2^31 of the stream start.
        let rel = i64::from(seq.diff(self.base));
        let end = rel + data.len() as i64;
        if end <= 0 {
            return PushResult::OutOfWindow;
        }
        let (start, data) = if rel < 0 {
            (0usize, &data[(-rel) as usize..])
        } else {
            (rel as usize, data)
        };
        if start >= self.limit {
            return if self.is_full() {
                PushResult::Full
            } else {
                PushResult::OutOfWindow
            };
        }
        let end = start + data.len();
        let (end, truncated) = if end > self.limit {
            (self.limit, true)
        } else {
            (end, false)
        };
        let data = &data[..end - start];

        // Overlaps must agree byte for byte; a single range covering us means nothing is new.
        let mut covered = false;
        for &(rs, re) in &self.ranges {
            if re <= start || rs >= end {
                continue;
            }
            let (os, oe) = (start.max(rs), end.min(re));
            if self.data[os..oe] != data[os - start..oe - start] {
                return PushResult::Conflict;
            }
            covered |= rs <= start && end <= re;
        }
        if covered {
            return if truncated {
                PushResult::Full
            } else {
                PushResult::Retransmission
            };
        }

        // Merge [start, end) into the range list.
        let first = self.ranges.partition_point(|&(_, re)| re < start);
        let last = self.ranges.partition_point(|&(rs, _)| rs <= end);
        let merged_len = self.ranges.len() - (last - first) + 1;
        if merged_len > MAX_RANGES {
            return PushResult::Full;
        }
        // Bytes past the end of `data` are appended (no zero fill first); a gap before them is
        // zeroed (meaningless until a range covers it).
        let have = self.data.len();
        if self.data.capacity() == 0 {
            // One allocation for what usually comes: a ClientHello that spans two segments
            // (post-quantum ones are about 1.9 KB) or a request head.
            self.data
                .reserve_exact(end.max(FIRST_ALLOC.min(self.limit)));
        }
        if start >= have {
            self.data.resize(start, 0);
            self.data.extend_from_slice(data);
        } else if end > have {
            let (old, new) = data.split_at(have - start);
            self.data[start..have].copy_from_slice(old);
            self.data.extend_from_slice(new);
        } else {
            self.data[start..end].copy_from_slice(data);
        }
        let mut ns = start;
        let mut ne = end;
        if first < last {
            ns = ns.min(self.ranges[first].0);
            ne = ne.max(self.ranges[last - 1].1);
        }
        match last - first {
            0 => self.ranges.insert(first, (ns, ne)),
            // The common in-order case: the segment extends the range before it.
            1 => self.ranges[first] = (ns, ne),
            _ => {
                self.ranges.splice(first..last, std::iter::once((ns, ne)));
            }
        }
        if truncated {
            PushResult::Full
        } else {
            PushResult::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_out_of_order() {
        let mut s = StreamBuf::new(SeqNumber(1000), 64);
        assert_eq!(s.push(SeqNumber(1001), b"hello "), PushResult::Ok);
        assert_eq!(s.push(SeqNumber(1013), b"!"), PushResult::Ok);
        assert_eq!(s.contiguous(), b"hello ");
        assert_eq!(s.push(SeqNumber(1007), b"world"), PushResult::Ok);
        assert_eq!(s.contiguous(), b"hello world");
        assert_eq!(s.push(SeqNumber(1012), b"_"), PushResult::Ok); // fills the last one-byte gap
        assert_eq!(s.contiguous(), b"hello world_!");
        assert_eq!(s.next_seq(), SeqNumber(1014));
    }

    #[test]
    fn retransmission_and_conflict() {
        let mut s = StreamBuf::starting_at(SeqNumber(0), 64);
        assert_eq!(s.push(SeqNumber(0), b"GET / HTTP/1.1\r\n"), PushResult::Ok);
        assert_eq!(s.push(SeqNumber(4), b"/ HTTP"), PushResult::Retransmission);
        assert_eq!(
            s.push(SeqNumber(0), b"GET / HTTP/1.1\r\n"),
            PushResult::Retransmission
        );
        // Overlap with new tail but one differing byte inside the overlap: evasion.
        assert_eq!(s.push(SeqNumber(9), b"P/1.0\r\nHost"), PushResult::Conflict);
        assert_eq!(s.contiguous(), b"GET / HTTP/1.1\r\n");
        // Same overlap, identical bytes, with a new tail: accepted.
        assert_eq!(s.push(SeqNumber(9), b"P/1.1\r\nHost"), PushResult::Ok);
        assert_eq!(s.contiguous(), b"GET / HTTP/1.1\r\nHost");
        // Conflict against an out-of-order range too.
        assert_eq!(s.push(SeqNumber(30), b"abc"), PushResult::Ok);
        assert_eq!(s.push(SeqNumber(29), b"xabd"), PushResult::Conflict);
    }

    #[test]
    fn wraps_around_2_pow_32() {
        let mut s = StreamBuf::new(SeqNumber(u32::MAX - 4), 32); // first byte at u32::MAX - 3
        assert_eq!(s.push(SeqNumber(0), b"efgh"), PushResult::Ok); // after the wrap, out of order
        assert_eq!(s.push(SeqNumber(u32::MAX - 3), b"abcdef"), PushResult::Ok); // crosses 2^32
        assert_eq!(s.contiguous(), b"abcdefgh");
        assert_eq!(s.next_seq(), SeqNumber(4));
    }

    #[test]
    fn window_and_limit() {
        let mut s = StreamBuf::starting_at(SeqNumber(100), 8);
        assert_eq!(
            s.push(SeqNumber(90), b"0123456789"),
            PushResult::OutOfWindow
        ); // ends at the start
        assert_eq!(s.push(SeqNumber(108), b"x"), PushResult::OutOfWindow); // beyond limit, gap open
        assert_eq!(
            s.push(SeqNumber(100u32.wrapping_add(1 << 31)), b"x"),
            PushResult::OutOfWindow
        );
        assert_eq!(s.push(SeqNumber(98), b"..abc"), PushResult::Ok); // front before the start is trimmed
        assert_eq!(s.contiguous(), b"abc");
        assert_eq!(s.push(SeqNumber(103), b"defghijk"), PushResult::Full); // tail beyond the limit
        assert_eq!(s.contiguous(), b"abcdefgh");
        assert!(s.is_full());
        assert_eq!(s.push(SeqNumber(108), b"more"), PushResult::Full);
        assert_eq!(s.held(), 8);
    }

    #[test]
    fn consistency_of_later_segments() {
        let mut s = StreamBuf::starting_at(SeqNumber(100), 64);
        assert_eq!(s.push(SeqNumber(100), b"hello"), PushResult::Ok);
        assert_eq!(s.push(SeqNumber(110), b"world"), PushResult::Ok);
        assert_eq!(s.end_seq(), SeqNumber(115));
        assert!(s.consistent(SeqNumber(100), b"hello"));
        assert!(s.consistent(SeqNumber(98), b"..hel")); // before the start: not judged
        assert!(s.consistent(SeqNumber(103), b"lo?????wor")); // the gap is not judged
        assert!(s.consistent(SeqNumber(113), b"ld and more"));
        assert!(!s.consistent(SeqNumber(100), b"hellO"));
        assert!(!s.consistent(SeqNumber(112), b"rX"));
        assert!(s.consistent(SeqNumber(200), b"far ahead"));
        assert!(s.consistent(SeqNumber(100), b""));
    }

    #[test]
    fn range_count_is_bounded() {
        let mut s = StreamBuf::starting_at(SeqNumber(0), 1 << 16);
        for i in 0..MAX_RANGES as u32 {
            assert_eq!(s.push(SeqNumber(10 + i * 2), b"x"), PushResult::Ok);
        }
        assert_eq!(s.push(SeqNumber(1000), b"y"), PushResult::Full);
        assert_eq!(s.push(SeqNumber(11), b"z"), PushResult::Ok); // joins two ranges: fewer, accepted
        assert_eq!(s.push(SeqNumber(1000), b"y"), PushResult::Ok);
    }
}
