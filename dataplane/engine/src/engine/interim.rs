//! Interim records of long flows (`logging.interim_interval`): while a flow lives, one
//! [`FlowInterim`] per interval with its counters since the start and since the previous record.
//!
//! Bounded work per [`Engine::poll`]: a cursor sweeps the table's slots, at most
//! [`SWEEP_PER_POLL`] of them per call, so a table of up to that many slots is looked at on every
//! poll (a record is at most one poll late) and a bigger one within `slots / SWEEP_PER_POLL`
//! polls. Nothing is done per packet. Flows get state here only once they had a record (the
//! counters the next interval starts from); it is forgotten when the flow ends, so it never
//! outgrows the table. The counters are the flow's own (`FlowData::out` / `inb`), whoever
//! keeps them up to date.

use std::collections::HashMap;

use super::event::FlowInterim;
use super::{EndReason, Engine};
use crate::conntrack::FlowRef;
use crate::stats::Counter;
use crate::time::Timestamp;

/// Table slots looked at per poll.
pub const SWEEP_PER_POLL: usize = 8192;

/// Where a flow stood at its latest interim record.
#[derive(Debug, Clone, Copy)]
struct Mark {
    gen: u32,
    seq: u32,
    at: Timestamp,
    out: Counter,
    inb: Counter,
}

/// The sweep's state.
#[derive(Debug, Default)]
pub(super) struct Interim {
    /// Nanoseconds; 0 = off.
    interval: u64,
    cursor: u32,
    /// By slot index: flows that had an interim record.
    marks: HashMap<u32, Mark>,
}

impl Interim {
    pub(super) fn new(interval_ms: u64) -> Interim {
        Interim {
            interval: interval_ms.saturating_mul(1_000_000),
            ..Interim::default()
        }
    }

    /// The flow ended (or its record was written): no more interim records for it.
    pub(super) fn forget(&mut self, r: FlowRef) {
        if !self.marks.is_empty() && self.marks.get(&r.idx).is_some_and(|m| m.gen == r.gen) {
            self.marks.remove(&r.idx);
        }
    }

    /// Flows that have had an interim record and are still tracked.
    #[cfg(test)]
    pub(super) fn marked(&self) -> usize {
        self.marks.len()
    }
}

fn minus(a: Counter, b: Counter) -> Counter {
    Counter {
        packets: a.packets.saturating_sub(b.packets),
        bytes: a.bytes.saturating_sub(b.bytes),
    }
}

impl Engine {
    /// One step of the sweep (from `poll`).
    pub(super) fn interim_tick(&mut self, now: Timestamp) {
        let iv = self.interim.interval;
        let slots = self.table.slot_count();
        if iv == 0 || slots == 0 {
            return;
        }
        let policy = self.policy.load_full();
        for _ in 0..slots.min(SWEEP_PER_POLL) {
            let idx = if (self.interim.cursor as usize) < slots {
                self.interim.cursor
            } else {
                0
            };
            self.interim.cursor = idx + 1;
            let Some((r, e)) = self.table.at(idx) else {
                continue;
            };
            if e.data.recorded() {
                continue;
            }
            let mark = self
                .interim
                .marks
                .get(&idx)
                .filter(|m| m.gen == r.gen)
                .copied();
            let (seq, from, out0, inb0) = match mark {
                Some(m) => (m.seq, m.at, m.out, m.inb),
                None => (0, e.data.start, Counter::default(), Counter::default()),
            };
            let age = now.as_nanos().saturating_sub(e.data.start.as_nanos());
            let lived = age / iv;
            if lived <= u64::from(seq) {
                continue;
            }
            let seq = u32::try_from(lived).unwrap_or(u32::MAX);
            let flow = e
                .data
                .end_event(&e.key, e.snat, now, EndReason::Timeout, policy.clone());
            let ev = FlowInterim {
                interval_start: from,
                interval_out: minus(e.data.out, out0),
                interval_inb: minus(e.data.inb, inb0),
                seq,
                flow,
            };
            self.interim.marks.insert(
                idx,
                Mark {
                    gen: r.gen,
                    seq,
                    at: now,
                    out: e.data.out,
                    inb: e.data.inb,
                },
            );
            self.stats.interim_records += 1;
            self.sink.flow_interim(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::engine::EngineOptions;
    use crate::engine::{FlowEnd, FlowSink, GeoDb, Side, Verdict};

    #[derive(Clone, Default)]
    struct Seen {
        ends: Arc<Mutex<Vec<FlowEnd>>>,
        interims: Arc<Mutex<Vec<FlowInterim>>>,
    }

    impl FlowSink for Seen {
        fn flow_end(&mut self, ev: FlowEnd) {
            self.ends.lock().unwrap().push(ev);
        }
        fn flow_interim(&mut self, ev: FlowInterim) {
            self.interims.lock().unwrap().push(ev);
        }
    }

    fn engine(interval_ms: u64) -> (Engine, Seen) {
        let seen = Seen::default();
        let cfg = natfw_policy::config::embedded_default();
        let opts = EngineOptions {
            interim_interval_ms: interval_ms,
            ..EngineOptions::default()
        };
        let e =
            Engine::with_options(&cfg, GeoDb::embedded(), Box::new(seen.clone()), opts).unwrap();
        (e, seen)
    }

    /// A UDP datagram 10.0.0.5:5000 → 203.0.113.5:9000 with `len` payload bytes.
    fn udp(sport: u16, len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 5], [203, 0, 113, 5], 64)
            .udp(sport, 9000)
            .write(&mut v, &vec![0x5a; len])
            .unwrap();
        v
    }

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + ms)
    }

    fn send(e: &mut Engine, at: Timestamp, sport: u16, len: usize) -> usize {
        let mut f = udp(sport, len);
        assert_eq!(e.process(at, Side::Inside, &mut f), Verdict::Forward);
        f.len()
    }

    #[test]
    fn records_at_interval_boundaries_with_interval_and_total_counters() {
        let (mut e, seen) = engine(1000);
        let a = send(&mut e, t(0), 5000, 100);
        e.poll(t(500));
        e.poll(t(999));
        assert!(
            seen.interims.lock().unwrap().is_empty(),
            "interim before 1 s"
        );
        let b = send(&mut e, t(600), 5000, 200);
        e.poll(t(1000));
        {
            let iv = seen.interims.lock().unwrap();
            assert_eq!(iv.len(), 1, "one record at the first boundary");
            let r = &iv[0];
            assert_eq!(r.seq, 1);
            assert_eq!(r.interval_start, t(0));
            assert_eq!(r.flow.end, t(1000));
            assert_eq!(r.interval_out.packets, 2);
            assert_eq!(r.interval_out.bytes, (a + b) as u64);
            assert_eq!(r.flow.out.bytes, (a + b) as u64);
        }
        // Nothing more until the next boundary.
        e.poll(t(1500));
        let c = send(&mut e, t(1600), 5000, 300);
        e.poll(t(1999));
        assert_eq!(seen.interims.lock().unwrap().len(), 1);
        e.poll(t(2000));
        {
            let iv = seen.interims.lock().unwrap();
            assert_eq!(iv.len(), 2);
            let r = &iv[1];
            assert_eq!(r.seq, 2);
            assert_eq!(r.interval_start, t(1000));
            assert_eq!(
                r.interval_out.packets, 1,
                "interval counts only its own packets"
            );
            assert_eq!(r.interval_out.bytes, c as u64);
            assert_eq!(r.flow.out.packets, 3, "total since start");
            assert_eq!(r.flow.out.bytes, (a + b + c) as u64);
        }
        // An idle interval still gets its record, with zero interval counters.
        e.poll(t(3000));
        {
            let iv = seen.interims.lock().unwrap();
            assert_eq!(iv.len(), 3);
            assert_eq!(iv[2].interval_out, Counter::default());
            assert_eq!(iv[2].flow.out.bytes, (a + b + c) as u64);
        }
        assert_eq!(e.interim.marked(), 1);
        e.shutdown(t(3100));
        // The end record is the end record: totals since the start, as without interim.
        let ends = seen.ends.lock().unwrap();
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].out.bytes, (a + b + c) as u64);
        assert_eq!(ends[0].end_reason, EndReason::Shutdown);
        assert_eq!(e.interim.marked(), 0, "state forgotten at the end");
        assert_eq!(e.stats().interim_records, 3);
    }

    #[test]
    fn flow_ended_before_the_interval_gets_none() {
        let (mut e, seen) = engine(60_000);
        send(&mut e, t(0), 5000, 10);
        e.poll(t(30_000));
        e.shutdown(t(59_999));
        assert!(seen.interims.lock().unwrap().is_empty());
        assert_eq!(seen.ends.lock().unwrap().len(), 1);
    }

    #[test]
    fn off_by_default_and_late_sweeps_skip_numbers() {
        let (mut e, seen) = engine(0);
        send(&mut e, t(0), 5000, 10);
        e.poll(t(10_000));
        assert!(seen.interims.lock().unwrap().is_empty(), "0 = off");

        let (mut e, seen) = engine(1000);
        send(&mut e, t(0), 5000, 10);
        // UDP idles out after its timeout; keep the flow alive.
        send(&mut e, t(2000), 5000, 10);
        e.poll(t(3500));
        let iv = seen.interims.lock().unwrap();
        assert_eq!(
            iv.len(),
            1,
            "one record for a late sweep, not one per missed interval"
        );
        assert_eq!(iv[0].seq, 3);
        assert_eq!(iv[0].interval_out.packets, 2);
    }

    #[test]
    fn work_per_poll_is_bounded() {
        let (mut e, seen) = engine(1000);
        let n = SWEEP_PER_POLL + 100;
        for i in 0..n {
            // Distinct source ports: distinct flows.
            let sport = 1024 + (i % 60_000) as u16;
            let mut f = udp(sport, 1);
            // Vary the source address past 60,000 ports.
            if i >= 60_000 {
                f[29] = 6;
            }
            assert_eq!(e.process(t(0), Side::Inside, &mut f), Verdict::Forward);
        }
        assert_eq!(e.flow_count(), n);
        e.poll(t(1000));
        assert_eq!(seen.interims.lock().unwrap().len(), SWEEP_PER_POLL);
        e.poll(t(1100));
        assert_eq!(
            seen.interims.lock().unwrap().len(),
            n,
            "the rest on the next poll"
        );
        e.poll(t(1200));
        assert_eq!(seen.interims.lock().unwrap().len(), n, "once per interval");
    }
}
