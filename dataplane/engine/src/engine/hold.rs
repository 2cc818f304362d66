//! Payload held while a flow is identified; released in order on accept, discarded with RSTs on drop.

use super::*;

impl Engine {
    /// Count identification outcomes; free the side-table entry once nothing is pending and
    /// nothing is held.
    pub(super) fn after_analysis(&mut self, r: FlowRef) {
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        let d = &mut e.data;
        if d.facts_pending() {
            return;
        }
        let Some(idx) = d.ident else {
            return;
        };
        match d.domain_fact {
            FactState::Known => self.stats.l7_domain_found += 1,
            _ => self.stats.l7_unidentifiable += 1,
        }
        if d.app_fact == FactState::Known {
            self.stats.l7_app_found += 1;
        }
        let empty = self.idents.get(idx).is_none_or(Ident::idle);
        if empty && d.verdict() != FlowVerdict::Pending {
            d.ident = None;
            self.idents.remove(idx);
        }
    }

    pub(super) fn ensure_ident(&mut self, now: Timestamp, r: FlowRef) -> Option<IdentRef> {
        let e = self.table.get_mut(r)?;
        if let Some(idx) = e.data.ident {
            return Some(idx);
        }
        let stream = (e.key.proto == PROTO_TCP)
            .then(|| StreamBuf::new(e.data.isn_c, self.opts.per_flow_hold_bytes));
        let idx = self.idents.insert(Ident {
            flow: r,
            stream,
            server: Vec::new(),
            server_next: e.data.isn_s + 1,
            held: Vec::new(),
            bytes: 0,
            quic: None,
            started: now,
            server_ack: None,
            released_pre_name: 0,
            released_last: None,
            pass: 0,
            h2_from: None,
        })?;
        e.data.ident = Some(idx);
        let deadline = now.add(std::time::Duration::from_millis(
            self.opts.pending_timeout_ms,
        ));
        self.deadlines.push_back((deadline, r));
        Some(idx)
    }

    /// Keep a copy of a (translated) frame while the verdict is pending.
    pub(super) fn hold(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        seg: Seg,
        frame: &[u8],
        info: &PacketInfo,
    ) -> Verdict {
        let idx = self.ensure_ident(now, r);
        let Some(e) = self.table.get_mut(r) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let per_flow = idx
            .and_then(|i| self.idents.get(i))
            .map_or(0, |id| id.bytes);
        let over = per_flow + frame.len() > self.opts.per_flow_hold_bytes + 4096
            || self.idents.bytes + frame.len() > self.opts.global_hold_bytes;
        if over {
            // Cannot wait any longer: decide with what is known.
            e.data.give_up(flow::WHY_HOLD_LIMIT);
            self.evaluate(now, r);
            let verdict = self.table.get(r).map(|e| e.data.verdict());
            return match verdict {
                Some(FlowVerdict::Accept) => {
                    self.release(r);
                    self.emits.push(Emit {
                        side: Side::Outside,
                        frame: frame.to_vec(),
                    });
                    Verdict::Held
                }
                _ => {
                    self.deny(now, r, Some((frame, info)), true);
                    Verdict::Drop(DropReason::HoldFull)
                }
            };
        }
        self.push_held(r, seg, frame);
        Verdict::Held
    }

    /// Append a copy of `frame` to the flow's held frames.
    pub(super) fn push_held(&mut self, r: FlowRef, seg: Seg, frame: &[u8]) {
        let Some(e) = self.table.get(r) else {
            return;
        };
        let Some(idx) = e.data.ident else {
            return;
        };
        let tcp = e.key.proto == PROTO_TCP;
        let rel = seg.seq.0.wrapping_sub(e.data.isn_c.0);
        if let Some(id) = self.idents.get_mut(idx) {
            let order = if tcp { rel } else { id.held.len() as u32 };
            id.held.push((order, frame.to_vec()));
        }
        self.idents.recount(idx);
    }

    /// While the verdict waits for a TLS server name: send on, in stream order, the held
    /// client segments that lie wholly before the ClientHello's server_name extension
    /// ([`crate::l7::tls::bytes_before_name`]: handshake structure, no application data, no
    /// name). The server acknowledges them, so a client that cut its ClientHello into more
    /// segments than its window holds can go on sending up to the name. The segment that
    /// reaches into server_name and everything after it stay held until the verdict.
    pub(super) fn release_pre_name(&mut self, r: FlowRef) {
        let Some(e) = self.table.get(r) else {
            return;
        };
        let d = &e.data;
        if e.key.proto != PROTO_TCP
            || d.verdict() != FlowVerdict::Pending
            || d.domain_fact != FactState::Pending
        {
            return;
        }
        let Some(idx) = d.ident else {
            return;
        };
        let Some(id) = self.idents.get_mut(idx) else {
            return;
        };
        let Some(stream) = id.stream.as_ref() else {
            return;
        };
        let safe = crate::l7::tls::bytes_before_name(stream.contiguous()) as u32;
        if safe <= id.released_pre_name || id.held.is_empty() {
            return;
        }
        id.held.sort_by_key(|(rel, _)| *rel);
        let mut upto = id.released_pre_name;
        let mut n = 0;
        for (rel, f) in &id.held {
            // Stream offset of the first payload byte (the SYN took relative sequence 0).
            let off = rel.wrapping_sub(1);
            let Ok(info) = wire::parse(f) else { break };
            let L4::Tcp { flags, .. } = info.l4 else {
                break;
            };
            let end = off.wrapping_add(info.payload_len as u32);
            if off > upto || end > safe || flags.fin() || flags.syn() || flags.rst() {
                break;
            }
            upto = upto.max(end);
            n += 1;
        }
        if n == 0 {
            return;
        }
        id.released_pre_name = upto;
        let out: Vec<(u32, Vec<u8>)> = id.held.drain(..n).collect();
        id.released_last = out.last().map(|(_, f)| f.clone());
        self.idents.recount(idx);
        for (_, f) in out {
            self.stats.pre_name_released.add(f.len());
            self.emits.push(Emit {
                side: Side::Outside,
                frame: f,
            });
        }
    }

    /// The segment's payload lies wholly in what [`Engine::release_pre_name`] sent on.
    pub(super) fn released_before_name(&self, r: FlowRef, seg: Seg) -> bool {
        let Some(e) = self.table.get(r) else {
            return false;
        };
        let Some(id) = e.data.ident.and_then(|i| self.idents.get(i)) else {
            return false;
        };
        let end = seg.seq + seg.payload_len;
        id.released_pre_name > 0 && end.diff(e.data.isn_c + 1 + id.released_pre_name as usize) <= 0
    }

    /// Accepted: send every held frame, in stream order, exactly once.
    pub(super) fn release(&mut self, r: FlowRef) {
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        let Some(idx) = e.data.ident else {
            return;
        };
        let pending = e.data.facts_pending();
        let Some(id) = self.idents.get_mut(idx) else {
            return;
        };
        let mut held = std::mem::take(&mut id.held);
        held.sort_by_key(|(order, _)| *order);
        for (_, f) in held {
            self.stats.released.add(f.len());
            self.emits.push(Emit {
                side: Side::Outside,
                frame: f,
            });
        }
        let idle = id.idle();
        self.idents.recount(idx);
        if !pending && idle {
            e.data.ident = None;
            self.idents.remove(idx);
        }
    }

    /// The server acknowledged up to `ack`: once it holds every inspected client byte, no later
    /// segment can change what it reads, and the inspected bytes need not be kept.
    pub(super) fn server_acked(&mut self, r: FlowRef, ack: SeqNumber) {
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        let Some(idx) = e.data.ident else {
            return;
        };
        let Some(id) = self.idents.get_mut(idx) else {
            return;
        };
        if id.server_ack.is_none_or(|a| ack > a) {
            id.server_ack = Some(ack);
        }
        if id.idle() && !e.data.facts_pending() && e.data.verdict() != FlowVerdict::Pending {
            e.data.ident = None;
            self.idents.remove(idx);
        }
    }

    /// A client segment after identification: it must agree with the inspected bytes it
    /// overlaps. `false`: it carries other bytes (an insertion evasion).
    pub(super) fn consistent_with_inspected(&self, r: FlowRef, seg: Seg, frame: &[u8]) -> bool {
        let Some(e) = self.table.get(r) else {
            return true;
        };
        e.data
            .ident
            .and_then(|i| self.idents.get(i))
            .and_then(|id| id.stream.as_ref())
            .is_none_or(|s| s.consistent(seg.seq, seg.payload(frame)))
    }

    /// Denied: discard what is held, reset both ends (TCP), write the record, keep a tombstone.
    /// `current` is the frame being processed (`translated`: already SNAT-rewritten).
    pub(super) fn deny(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        current: Option<(&[u8], &PacketInfo)>,
        translated: bool,
    ) {
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        if e.data.recorded() {
            return;
        }
        e.data.set_verdict(Settled::Drop);
        let key = e.key;
        let isn_c = e.data.isn_c;
        let (held, server_ack, released, released_last) = e
            .data
            .ident
            .take()
            .and_then(|i| self.idents.remove(i))
            .map(|id| {
                (
                    id.held,
                    id.server_ack,
                    id.released_pre_name,
                    id.released_last,
                )
            })
            .unwrap_or_default();
        for (_, f) in &held {
            self.stats.discarded.add(f.len());
        }
        if key.proto == PROTO_TCP {
            // Template for the server-side RST: the first held frame in stream order, else the
            // current frame; its sequence number moved to where the server expects the next
            // byte (what it acknowledged, or the end of what was released before the name),
            // so the server takes the RST rather than answering a challenge ACK.
            let tmpl: Option<(Vec<u8>, bool)> = held
                .iter()
                .min_by_key(|(rel, _)| *rel)
                .map(|(_, f)| (f.clone(), true))
                .or_else(|| current.map(|(f, _)| (f.to_vec(), translated)))
                .or_else(|| released_last.map(|f| (f, true)));
            let expected =
                server_ack.or_else(|| (released > 0).then(|| isn_c + 1 + released as usize));
            if let Some((mut f, is_translated)) = tmpl {
                if let Some(seq) = expected {
                    set_tcp_seq(&mut f, seq);
                }
                self.emit_rsts(r, &f, is_translated);
            }
        }
        self.stats.flows_ended_denied += 1;
        self.write_record(now, r, EndReason::Denied);
        let class = TimerClass::Closed;
        self.table.touch(r, class, now);
    }

    /// RST to the client (inside) and, when the server saw the connection, to the server.
    /// `frame` is a segment of the flow as it left (`translated`) or as the client sent it.
    pub(super) fn emit_rsts(&mut self, r: FlowRef, frame: &[u8], translated: bool) {
        let Some(e) = self.table.get(r) else {
            return;
        };
        let (key, snat) = (e.key, e.snat);
        // The server knows the connection once our SYN went out (anything past SYN_SENT here
        // means its SYN-ACK came back).
        let server_knows = e.data.tcp.state != TcpState::SynSent;
        let Ok(info) = wire::parse(frame) else {
            return;
        };
        let mut private = frame.to_vec();
        let mut public = frame.to_vec();
        let ok = if translated {
            rewrite::set_src(&mut private, &info, key.src, Some(key.sport), self.ck).is_ok()
        } else {
            snat.is_some_and(|(ip, port)| {
                rewrite::set_src(&mut public, &info, ip, Some(port), self.ck).is_ok()
            })
        };
        if !ok {
            return;
        }
        // The builder reads addresses from the parsed view: parse the rewritten copies.
        if server_knows {
            let rst = wire::parse(&public)
                .ok()
                .and_then(|pi| tcp_rst(&public, &pi, RstTo::Receiver { delivered: false }));
            if let Some(rst) = rst {
                self.emits.push(Emit {
                    side: Side::Outside,
                    frame: rst,
                });
            }
        }
        let rst = wire::parse(&private)
            .ok()
            .and_then(|pi| tcp_rst(&private, &pi, RstTo::Sender));
        if let Some(rst) = rst {
            self.emits.push(Emit {
                side: Side::Inside,
                frame: rst,
            });
        }
    }
}

/// Overwrite the sequence number of a TCP frame (a template for an RST; its checksum is not
/// kept valid: the RST builder computes its own).
fn set_tcp_seq(frame: &mut [u8], seq: SeqNumber) {
    if let Ok(info) = wire::parse(frame) {
        let off = info.l4_offset + 4;
        if let Some(b) = frame.get_mut(off..off + 4) {
            b.copy_from_slice(&seq.0.to_be_bytes());
        }
    }
}
