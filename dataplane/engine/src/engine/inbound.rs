//! Packets arriving at an EIP (outside): the reply direction of a flow.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- inbound

    pub(super) fn inbound(
        &mut self,
        now: Timestamp,
        frame: &mut [u8],
        info: &PacketInfo,
    ) -> Verdict {
        if !self.snat.is_eip(info.dst) {
            return Verdict::ToKernel;
        }
        if info.fragment.is_some() {
            return self.fragment(now, Side::Outside, frame);
        }
        if !self.opts.worker.owns(Side::Outside, info) {
            return Verdict::Drop(DropReason::OtherWorker);
        }
        let rk = match info.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => ReplyKey {
                eip: info.dst,
                remote: info.src,
                eport: dport,
                rport: sport,
                proto: info.proto,
            },
            L4::Icmp {
                kind: IcmpKind::EchoReply { id, .. },
                ..
            } => ReplyKey {
                eip: info.dst,
                remote: info.src,
                eport: id,
                rport: 0,
                proto: info.proto,
            },
            L4::Icmp {
                kind: IcmpKind::Error { inner, .. },
                ..
            } => {
                if !inner.has_ports || inner.src != info.dst {
                    return Verdict::Drop(DropReason::Unsupported);
                }
                let rk = ReplyKey {
                    eip: inner.src,
                    remote: inner.dst,
                    eport: inner.sport,
                    rport: if is_icmp(inner.proto) { 0 } else { inner.dport },
                    proto: inner.proto,
                };
                return self.inbound_icmp_error(now, rk, frame, info);
            }
            // Pings and anything else addressed to the EIP are the gateway's own business.
            _ => return Verdict::ToKernel,
        };
        let Some(r) = self.table.lookup_reply(&rk) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        self.offload_seen(r, info);
        if let Some(v) = self.inbound_established(now, r, frame, info) {
            return v;
        }
        let seg = Seg::of(info);
        let len = frame.len();
        let Some(e) = self.table.get_mut(r) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let key = e.key;
        let d = &mut e.data;
        if d.recorded() {
            // Tombstone: only the server's stragglers of the closed connection pass.
            return if d.verdict() == FlowVerdict::Drop {
                Verdict::Drop(DropReason::Policy)
            } else if key.proto != PROTO_TCP
                || (seg.flags & crate::conntrack::tcp_flags::SYN == 0
                    && d.is_straggler(false, seg.seq, seg.payload_len))
            {
                self.translate_in(frame, info, &key)
            } else {
                self.stats.closed_flow_strays += 1;
                Verdict::Drop(DropReason::InvalidState)
            };
        }
        let mut reset = false;
        let mut closed = false;
        if key.proto == PROTO_TCP {
            let before = d.tcp.state;
            match d.tcp.on_segment(Dir::In, seg.flags, seg.payload_len > 0) {
                TcpEvent::Invalid => return Verdict::Drop(DropReason::InvalidState),
                TcpEvent::Reset => reset = true,
                TcpEvent::Ok => closed = d.tcp.state == TcpState::Closed,
            }
            if before == TcpState::SynSent && d.tcp.state == TcpState::SynRecv {
                d.isn_s = seg.seq;
            }
            if seg.flags & crate::conntrack::tcp_flags::FIN != 0 && d.tcp.fin_in {
                d.fin_s = seg.seq + seg.payload_len;
            }
            d.established |= d.tcp.state != TcpState::SynSent && d.tcp.state != TcpState::SynRecv;
        }
        d.inb.add(len);
        let class = Self::class_of(key.proto, d);
        let ident = d.ident;
        self.table.touch(r, class, now);
        if ident.is_some() && key.proto == PROTO_TCP {
            if let L4::Tcp { ack, flags, .. } = info.l4 {
                if flags.ack() {
                    self.server_acked(r, SeqNumber(ack));
                }
            }
        }
        if seg.payload_len > 0 {
            self.inbound_payload(now, r, &key, seg, frame);
        }
        if reset {
            let v = self.translate_in(frame, info, &key);
            self.end_flow(now, r, EndReason::Rst);
            return v;
        }
        // Server bytes may have settled a pending verdict (server-speaks-first protocols).
        if self.table.get(r).map(|e| e.data.verdict()) == Some(FlowVerdict::Pending)
            && self.table.get(r).is_some_and(|e| !e.data.facts_pending())
        {
            self.evaluate(now, r);
            match self.table.get(r).map(|e| e.data.verdict()) {
                Some(FlowVerdict::Accept) => self.release(r),
                Some(FlowVerdict::Drop) => {
                    self.deny(now, r, None, true);
                    return Verdict::Drop(DropReason::Policy);
                }
                _ => {}
            }
        }
        let v = self.translate_in(frame, info, &key);
        if closed {
            self.close_fin(now, r);
        }
        v
    }

    /// The established-flow path, as `outbound_established`: a server segment without SYN,
    /// FIN or RST of an established connection, or a UDP datagram, of a flow accepted for good
    /// with nothing left to identify ([`FlowData::plain_accepted`]) that is no DNS flow (their
    /// answers teach the cache). One entry lookup, then exactly what `inbound` does to such a
    /// packet. `None`: not such a packet, nothing changed.
    #[inline]
    fn inbound_established(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        frame: &mut [u8],
        info: &PacketInfo,
    ) -> Option<Verdict> {
        plain_segment(info)?;
        let ck = self.ck;
        let len = frame.len();
        let e = self.table.get_mut(r)?;
        let d = &mut e.data;
        if !d.plain_accepted() || d.app == Some(natfw_policy::App::Dns) {
            return None;
        }
        let class = Self::plain_class(e.key.proto, d)?;
        d.inb.add(len);
        let v = super::outbound::translate(frame, info, End::Dst, e.key.src, e.key.sport, ck);
        self.table.touch(r, class, now);
        Some(v)
    }

    pub(super) fn inbound_payload(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        key: &FlowKey,
        seg: Seg,
        frame: &[u8],
    ) {
        let payload = seg.payload(frame);
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        // DNS answers crossing the gateway teach the cache (scoped to the asking client).
        if key.proto == PROTO_UDP && e.data.app == Some(natfw_policy::App::Dns) {
            if let Ok(msg) = crate::l7::dns::parse(payload) {
                if msg.is_response {
                    self.learn_answer(now, key.src, &msg);
                }
            }
            return;
        }
        if key.proto == PROTO_TCP && e.data.app == Some(natfw_policy::App::Dns) {
            self.dns_tcp_answers(now, r, key, seg, payload);
            return;
        }
        // Server bytes matter while a fact is pending: server-first protocols, STARTTLS replies.
        if key.proto != PROTO_TCP || !e.data.facts_pending() {
            return;
        }
        let idx = self.ensure_ident(now, r);
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        if let Some(idx) = idx {
            if let Some(id) = self.idents.get_mut(idx) {
                ident::feed_server(id, seg.seq, payload);
                ident::analyse_tcp(&mut e.data, id, key.dport);
            }
            self.idents.recount(idx);
        }
        self.after_analysis(r);
    }

    pub(super) fn translate_in(
        &self,
        frame: &mut [u8],
        info: &PacketInfo,
        key: &FlowKey,
    ) -> Verdict {
        super::outbound::translate(frame, info, End::Dst, key.src, key.sport, self.ck)
    }
}
