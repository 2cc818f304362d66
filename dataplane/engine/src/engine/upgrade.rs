//! Protocols that change inside one connection: the STARTTLS plaintext negotiation that may pass
//! while the verdict waits for the ClientHello, the h2c authority watch that keeps an accepted
//! HTTP/2 cleartext connection on the authority it was decided on, and DNS-over-TCP answers.
//!
//! Side tables keyed by flow, freed when the flow ends (`finish`); both bounded in entries and
//! bytes per entry.

use std::collections::HashMap;

use super::*;
use crate::l7::dns::TcpMessages;
use crate::l7::h2::{H2Watch, WatchStep};

/// Most h2c connections watched at once; past it a new h2c flow is refused (fail closed).
pub(crate) const MAX_H2_WATCHES: usize = 16_384;
/// Most DNS-over-TCP server streams followed at once; past it answers are not learned.
pub(crate) const MAX_DNS_TCP: usize = 16_384;

/// An accepted h2c connection under watch.
#[derive(Debug)]
pub(crate) struct H2Entry {
    watch: H2Watch,
    /// Next client sequence number the watch expects.
    next: SeqNumber,
}

/// The side tables.
#[derive(Debug, Default)]
pub(crate) struct Watches {
    h2: HashMap<FlowRef, H2Entry>,
    dns_tcp: HashMap<FlowRef, TcpMessages>,
}

impl Watches {
    /// Flow `r` is under a watch (h2c authority, DNS-over-TCP answers).
    pub(crate) fn contains(&self, r: FlowRef) -> bool {
        self.h2.contains_key(&r) || self.dns_tcp.contains_key(&r)
    }

    /// Flow `r` is under the h2c authority watch.
    #[inline]
    pub(crate) fn h2_watched(&self, r: FlowRef) -> bool {
        !self.h2.is_empty() && self.h2.contains_key(&r)
    }

    pub(crate) fn remove(&mut self, r: FlowRef) {
        if !self.h2.is_empty() {
            self.h2.remove(&r);
        }
        if !self.dns_tcp.is_empty() {
            self.dns_tcp.remove(&r);
        }
    }
}

/// What the h2c watch decided for a client segment of an accepted flow.
pub(super) enum H2Seg {
    /// Not watched: carry on.
    NotWatched,
    /// Watched and fine: forward.
    Pass,
    /// Ahead of the bytes the watch has seen (a gap): drop, the client retransmits.
    Gap,
    /// Another authority: the flow was denied.
    Denied,
}

impl Engine {
    /// STARTTLS: the frame is negotiation the client may send while the verdict waits for the
    /// name. Earlier held frames that became negotiation (a command completed by this
    /// segment) are released too.
    pub(super) fn starttls_pass(&mut self, r: FlowRef, seg: Seg) -> bool {
        let Some(e) = self.table.get(r) else {
            return false;
        };
        let isn = e.data.isn_c;
        let Some(idx) = e.data.ident else {
            return false;
        };
        let Some(id) = self.idents.get_mut(idx) else {
            return false;
        };
        if id.pass == 0 {
            return false;
        }
        let pass = id.pass;
        let off = seg.seq.0.wrapping_sub(isn.0).wrapping_sub(1) as usize;
        let fits = off
            .checked_add(seg.payload_len)
            .is_some_and(|end| end <= pass);
        if !fits {
            return false;
        }
        // Held frames now wholly inside the negotiation leave, in order.
        let mut held = std::mem::take(&mut id.held);
        held.sort_by_key(|(rel, _)| *rel);
        let mut keep = Vec::new();
        for (rel, f) in held {
            let len = wire::parse(&f).map_or(usize::MAX, |i| i.payload_len);
            let start = rel.wrapping_sub(1) as usize;
            if start.checked_add(len).is_some_and(|end| end <= pass) {
                self.stats.released.add(f.len());
                self.emits.push(Emit {
                    side: Side::Outside,
                    frame: f,
                });
            } else {
                keep.push((rel, f));
            }
        }
        id.held = keep;
        self.idents.recount(idx);
        true
    }

    /// The flow was just accepted: when its name came from h2c, start watching the client's
    /// HTTP/2 bytes from where they start. Returns false when the bytes seen so far already
    /// name another authority (the flow is then denied).
    pub(super) fn h2_watch_start(&mut self, now: Timestamp, r: FlowRef) -> bool {
        let Some(e) = self.table.get(r) else {
            return true;
        };
        let Some(id) = e.data.ident.and_then(|i| self.idents.get_mut(i)) else {
            return true;
        };
        let Some(from) = id.h2_from.take() else {
            return true;
        };
        let Some(stream) = id.stream.as_ref() else {
            return true;
        };
        let bytes = stream.contiguous();
        let gap = stream.held() > bytes.len();
        let next = stream.next_seq();
        // The name the flow was decided on (none: an IP literal or no Host, so no later request
        // may name a host either).
        let expect = (e.data.domain_fact == FactState::Known)
            .then(|| e.data.domain.as_deref().map(str::to_owned))
            .flatten();
        let mut watch = H2Watch::new(expect);
        let step = if gap {
            WatchStep::Violation("h2c: bytes out of order at the decision")
        } else if self.watch.h2.len() >= MAX_H2_WATCHES {
            WatchStep::Violation("h2c: too many connections under watch")
        } else {
            watch.push(&bytes[from.min(bytes.len())..])
        };
        match step {
            WatchStep::Violation(why) => {
                self.h2_deny(now, r, why, None);
                false
            }
            WatchStep::Done => true,
            WatchStep::Pass | WatchStep::InBlock => {
                self.watch.h2.insert(r, H2Entry { watch, next });
                true
            }
        }
    }

    /// A client segment of an accepted flow: run it through the flow's h2c watch, if any.
    #[inline]
    pub(super) fn h2_segment(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        seg: Seg,
        frame: &[u8],
        info: &PacketInfo,
    ) -> H2Seg {
        if self.watch.h2.is_empty() || seg.payload_len == 0 {
            return H2Seg::NotWatched;
        }
        self.h2_segment_watched(now, r, seg, frame, info)
    }

    fn h2_segment_watched(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        seg: Seg,
        frame: &[u8],
        info: &PacketInfo,
    ) -> H2Seg {
        let Some(w) = self.watch.h2.get_mut(&r) else {
            return H2Seg::NotWatched;
        };
        let payload = seg.payload(frame);
        let ahead = seg.seq.0.wrapping_sub(w.next.0) as i32;
        if ahead > 0 {
            return H2Seg::Gap;
        }
        let old = ahead.unsigned_abs() as usize;
        if old >= payload.len() {
            // A retransmission of bytes already checked.
            return H2Seg::Pass;
        }
        let new = &payload[old..];
        w.next = w.next + new.len();
        match w.watch.push(new) {
            WatchStep::Pass | WatchStep::InBlock => H2Seg::Pass,
            WatchStep::Done => {
                self.watch.h2.remove(&r);
                H2Seg::Pass
            }
            WatchStep::Violation(why) => {
                self.h2_deny(now, r, why, Some((frame, info)));
                H2Seg::Denied
            }
        }
    }

    fn h2_deny(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        why: &'static str,
        current: Option<(&[u8], &PacketInfo)>,
    ) {
        self.watch.h2.remove(&r);
        self.stats.l7_conflicts += 1;
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        let d = &mut e.data;
        d.evasion = true;
        d.why = Some(why);
        d.drop_unattributed();
        self.deny(now, r, current, false);
    }

    /// Server bytes of a DNS-over-TCP flow: answers teach the cache, as for UDP.
    pub(super) fn dns_tcp_answers(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        key: &FlowKey,
        seg: Seg,
        payload: &[u8],
    ) {
        let Some(e) = self.table.get(r) else {
            return;
        };
        let first = e.data.isn_s + 1;
        if !self.watch.dns_tcp.contains_key(&r) {
            if self.watch.dns_tcp.len() >= MAX_DNS_TCP {
                return;
            }
            self.watch.dns_tcp.insert(r, TcpMessages::new(first.0));
        }
        let Some(m) = self.watch.dns_tcp.get_mut(&r) else {
            return;
        };
        let mut learned = Vec::new();
        m.push(seg.seq.0, payload, |msg| {
            if let Ok(msg) = crate::l7::dns::parse(msg) {
                if msg.is_response {
                    learned.push(msg);
                }
            }
        });
        for msg in learned {
            self.learn_answer(now, key.src, &msg);
        }
    }

    /// Learn a DNS response's addresses for the client that asked (UDP and TCP).
    pub(super) fn learn_answer(
        &mut self,
        now: Timestamp,
        client: IpAddr,
        msg: &crate::l7::dns::DnsMessage,
    ) {
        let asked = msg.qname.as_deref().unwrap_or("");
        for (name, ip, ttl) in msg.resolved() {
            self.dns
                .learn_name(now, Some(client), &name, ip, ttl, name == asked);
            self.stats.dns_answers_learned += 1;
            if self.opts.worker.count > 1 {
                if self.shared_answers.len() < worker::SHARED_ANSWERS_MAX {
                    self.shared_answers.push(worker::SharedAnswer {
                        client,
                        asked: name == asked,
                        name: name.into(),
                        addr: ip,
                        ttl,
                    });
                } else {
                    self.stats.dns_answers_share_dropped += 1;
                }
            }
        }
    }
}
