//! Differential test of `StreamBuf` against a byte-map model: for arbitrary segment sequences
//! both must agree on every push result and on the contiguous prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natfw_engine::reasm::{PushResult, StreamBuf, MAX_RANGES};
use natfw_engine::wire::tcp::SeqNumber;

/// The model: which stream bytes below `limit` are known.
struct Model {
    limit: usize,
    bytes: Vec<Option<u8>>,
}

impl Model {
    fn runs(b: &[Option<u8>]) -> usize {
        let mut n = 0;
        let mut prev = false;
        for x in b {
            if x.is_some() && !prev {
                n += 1;
            }
            prev = x.is_some();
        }
        n
    }

    fn prefix(&self) -> Vec<u8> {
        self.bytes.iter().map_while(|b| *b).collect()
    }

    fn push(&mut self, rel: i64, data: &[u8]) -> PushResult {
        if data.is_empty() {
            return PushResult::Ok;
        }
        let end = rel + data.len() as i64;
        if end <= 0 {
            return PushResult::OutOfWindow;
        }
        let (s, data) = if rel < 0 {
            (0, &data[(-rel) as usize..])
        } else {
            (rel as usize, data)
        };
        if s >= self.limit {
            return if self.prefix().len() >= self.limit {
                PushResult::Full
            } else {
                PushResult::OutOfWindow
            };
        }
        let e = (s + data.len()).min(self.limit);
        let truncated = s + data.len() > self.limit;
        let seg = &data[..e - s];
        if (s..e).any(|i| self.bytes[i].is_some_and(|b| b != seg[i - s])) {
            return PushResult::Conflict;
        }
        if (s..e).all(|i| self.bytes[i].is_some()) {
            return if truncated {
                PushResult::Full
            } else {
                PushResult::Retransmission
            };
        }
        let mut next = self.bytes.clone();
        for i in s..e {
            next[i] = Some(seg[i - s]);
        }
        if Self::runs(&next) > MAX_RANGES {
            return PushResult::Full;
        }
        self.bytes = next;
        if truncated {
            PushResult::Full
        } else {
            PushResult::Ok
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [a, b, c, d, l, rest @ ..] = data else {
        return;
    };
    let isn = u32::from_be_bytes([*a, *b, *c, *d]);
    let limit = (usize::from(*l) % 64 + 1) * 16;
    let mut buf = StreamBuf::new(SeqNumber(isn), limit);
    let mut model = Model {
        limit,
        bytes: vec![None; limit],
    };
    let mut rest = rest;
    // Each op: i16 offset from the stream start (big-endian), a length, that many bytes.
    while let [h, lo, len, tail @ ..] = rest {
        let rel = i16::from_be_bytes([*h, *lo]);
        let n = usize::from(*len).min(tail.len());
        let (seg, tail) = tail.split_at(n);
        rest = tail;
        // Far-away offsets too: scale some by 2^16 to cross the serial-arithmetic horizon.
        let rel = if *len & 0x80 != 0 {
            i64::from(rel) << 16
        } else {
            i64::from(rel)
        };
        let seq = isn.wrapping_add(1).wrapping_add(rel as i32 as u32);
        let serial = i64::from((rel as i32 as u32) as i32);
        let got = buf.push(SeqNumber(seq), seg);
        let want = model.push(serial, seg);
        assert_eq!(got, want, "push at {serial} len {n}");
        assert_eq!(buf.contiguous(), &model.prefix()[..]);
        assert!(buf.contiguous().len() <= limit && buf.held() <= limit);
    }
});
