//! Packets from the VPC (inside): new flows, SNAT, client payload into identification.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- outbound

    pub(super) fn outbound(
        &mut self,
        now: Timestamp,
        frame: &mut [u8],
        info: &PacketInfo,
    ) -> Verdict {
        let entry = match self.snat.classify(info.src) {
            SourceClass::NotOurs => return Verdict::ToKernel,
            SourceClass::Bypass => {
                self.stats.bypassed.add(frame.len());
                return Verdict::ToKernel;
            }
            SourceClass::Entry(e) => e,
        };
        if info.fragment.is_some() {
            return self.fragment(now, Side::Inside, frame);
        }
        if !self.opts.worker.owns(Side::Inside, info) {
            return Verdict::Drop(DropReason::OtherWorker);
        }
        let key = match info.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => FlowKey {
                src: info.src,
                dst: info.dst,
                sport,
                dport,
                proto: info.proto,
            },
            L4::Icmp {
                kind: IcmpKind::EchoRequest { id, .. },
                ..
            } => FlowKey {
                src: info.src,
                dst: info.dst,
                sport: id,
                dport: id,
                proto: info.proto,
            },
            L4::Icmp {
                kind: IcmpKind::Error { inner, .. },
                ..
            } => return self.outbound_icmp_error(now, inner, frame, info),
            _ => return Verdict::Drop(DropReason::Unsupported),
        };
        let r = match self.table.lookup(&key) {
            Some(r) if !self.is_new_connection(r, info) => r,
            found => {
                if let Some(old) = found {
                    // A new connection on the tuple of a closed one: the old flow ends here
                    // (its record, if not written yet), the SYN opens a flow of its own.
                    self.stats.tuple_reuses += 1;
                    self.end_flow(now, old, EndReason::Fin);
                }
                match self.new_flow(now, entry, key, info) {
                    Ok(r) => r,
                    Err(v) => return v,
                }
            }
        };
        self.offload_seen(r, info);
        self.outbound_flow(now, r, frame, info)
    }

    /// A client SYN (no ACK) on the tuple of a flow that has closed or is closing, with an
    /// initial sequence number other than that flow's: a new connection reusing the tuple
    /// (TIME_WAIT reuse, a client binding the same source port again), not a retransmission.
    fn is_new_connection(&self, r: FlowRef, info: &PacketInfo) -> bool {
        let L4::Tcp { flags, seq, .. } = info.l4 else {
            return false;
        };
        if !flags.syn() || flags.ack() || flags.rst() {
            return false;
        }
        let Some(e) = self.table.get(r) else {
            return false;
        };
        let d = &e.data;
        let closing = d.recorded()
            || matches!(
                d.tcp.state,
                TcpState::FinWait | TcpState::Closing | TcpState::Closed
            );
        closing && SeqNumber(seq) != d.isn_c
    }

    pub(super) fn new_flow(
        &mut self,
        now: Timestamp,
        entry: usize,
        key: FlowKey,
        info: &PacketInfo,
    ) -> Result<FlowRef, Verdict> {
        let mut isn = SeqNumber(0);
        if let L4::Tcp { flags, seq, .. } = info.l4 {
            // Only a SYN opens a TCP flow: no mid-stream pickup past the firewall. The client
            // gets a RST (see `reset_unknown`) instead of hanging.
            if !flags.syn() || flags.ack() || flags.rst() {
                self.reset_unknown = true;
                return Err(Verdict::Drop(DropReason::InvalidState));
            }
            isn = SeqNumber(seq);
        }
        let Some(eip) = self.snat.pick_eip(entry, key.src) else {
            return Err(Verdict::Drop(DropReason::NoSnatPort));
        };
        if self.table.len() >= self.table.capacity() {
            let Some(victim) = self.table.eviction_candidate() else {
                self.stats.table_full += 1;
                return Err(Verdict::Drop(DropReason::TableFull));
            };
            if let Some(e) = self.table.remove(victim) {
                self.stats.evictions += 1;
                self.finish(now, victim, e, EndReason::Evicted);
            }
        }
        let mut data = FlowData::new(now, key.proto, self.geo.lookup(key.dst));
        data.isn_c = isn;
        data.fw_off = !self.policy.load().enabled();
        // The name this client just resolved to this address, for the log.
        if let Some(n) = self.dns.name_for_client(now, key.src, key.dst) {
            data.domain = Some(n.into());
            data.domain_src = DomainSrc::Dns;
        }
        let class = match key.proto {
            PROTO_TCP => TimerClass::Embryonic,
            PROTO_UDP => TimerClass::Udp,
            _ => TimerClass::Icmp,
        };
        let r = match self.table.insert(key, class, now, data) {
            Ok(r) => r,
            Err(_) => return Err(Verdict::Drop(DropReason::TableFull)),
        };
        let Some(port) = self.snat.allocate(&self.table, &key, eip) else {
            self.table.remove(r);
            return Err(Verdict::Drop(DropReason::NoSnatPort));
        };
        if self.table.set_snat(r, eip, port).is_err() {
            self.table.remove(r);
            return Err(Verdict::Drop(DropReason::NoSnatPort));
        }
        self.stats.flows_created += 1;
        self.stats.flows_active = self.table.len() as u64;
        // TCP and ICMP can be judged on L3/L4 facts right away; UDP after its first datagram.
        if key.proto != PROTO_UDP {
            self.evaluate(now, r);
        }
        Ok(r)
    }

    pub(super) fn outbound_flow(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        frame: &mut [u8],
        info: &PacketInfo,
    ) -> Verdict {
        if let Some(v) = self.outbound_established(now, r, frame, info) {
            return v;
        }
        let seg = Seg::of(info);
        let len = frame.len();
        let Some(e) = self.table.get_mut(r) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let Some((eip, eport)) = e.snat else {
            return Verdict::Drop(DropReason::NoSnatPort);
        };
        let proto = e.key.proto;
        let d = &mut e.data;
        if info.ttl <= 1 {
            // Would expire here: not forwarded, so neither inspected nor tracked.
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        if d.recorded() {
            // Tombstone: a denied flow stays denied; a closed one lets through only stragglers
            // whose sequence numbers lie in what the client sent before its FIN.
            return if d.verdict() == FlowVerdict::Drop {
                Verdict::Drop(DropReason::Policy)
            } else if proto != PROTO_TCP
                || (seg.flags & crate::conntrack::tcp_flags::SYN == 0
                    && d.is_straggler(true, seg.seq, seg.payload_len))
            {
                self.translate_out(frame, info, eip, eport)
            } else {
                self.stats.closed_flow_strays += 1;
                Verdict::Drop(DropReason::InvalidState)
            };
        }
        let mut reset = false;
        let mut closed = false;
        if proto == PROTO_TCP {
            match d.tcp.on_segment(Dir::Out, seg.flags, seg.payload_len > 0) {
                TcpEvent::Invalid => return Verdict::Drop(DropReason::InvalidState),
                TcpEvent::Reset => reset = true,
                TcpEvent::Ok => closed = d.tcp.state == TcpState::Closed,
            }
            if seg.flags & crate::conntrack::tcp_flags::FIN != 0 && d.tcp.fin_out {
                d.fin_c = seg.seq + seg.payload_len;
            }
            d.established |= d.tcp.state != TcpState::SynSent && d.tcp.state != TcpState::SynRecv;
        }
        d.out.add(len);
        let class = Self::class_of(proto, d);
        self.table.touch(r, class, now);

        if reset {
            // The client gives up: nothing held may leave; the RST itself goes out.
            let v = self.translate_out(frame, info, eip, eport);
            self.end_flow(now, r, EndReason::Rst);
            return v;
        }

        // L7: feed payload while facts are pending (even when already accepted: the log wants
        // them) and decide.
        let payload_new = seg.payload_len > 0;
        let mut evasion = false;
        let mut duplicate = false;
        if payload_new {
            let d = &mut self.table.get_mut(r).expect("flow looked up above").data;
            d.client_payload = true;
            if d.ident.is_some() && !d.facts_pending() && proto == PROTO_TCP {
                // Identification is over but the server has not acknowledged every inspected
                // byte yet: a segment covering them must carry the same bytes.
                if !self.consistent_with_inspected(r, seg, frame) {
                    evasion = true;
                }
            } else if d.facts_pending() {
                match proto {
                    PROTO_TCP => match self.feed_tcp_client(now, r, seg, frame) {
                        Fed::Conflict => evasion = true,
                        Fed::Duplicate => duplicate = true,
                        Fed::New | Fed::Full => {}
                    },
                    PROTO_UDP => self.feed_udp_client(now, r, seg, frame),
                    _ => {}
                }
            }
        }
        if evasion {
            // The same sequence numbers with other bytes: what was inspected may not be what
            // the server reads (a TTL-limited decoy, an overlapping rewrite). In every mode the
            // flow is reset both ways; the record says why.
            self.stats.l7_conflicts += 1;
            let d = &mut self.table.get_mut(r).expect("flow looked up above").data;
            d.evasion = true;
            if !d.fw_off {
                d.give_up("conflicting TCP retransmission");
                d.drop_unattributed();
                self.deny(now, r, Some((frame, info)), false);
                return Verdict::Drop(DropReason::Evasion);
            }
        }
        let verdict_before = self.table.get(r).map(|e| e.data.verdict());
        if verdict_before == Some(FlowVerdict::Pending) {
            self.evaluate(now, r);
        }
        let Some(e) = self.table.get(r) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let d = &e.data;
        let v = match d.verdict() {
            FlowVerdict::Drop => {
                self.deny(now, r, Some((frame, info)), false);
                Verdict::Drop(DropReason::Policy)
            }
            FlowVerdict::Accept => {
                // h2c: the bytes after the decision must keep to the authority it was made on.
                let started = self.table.get(r).is_some_and(|e| e.data.ident.is_some())
                    && !self.h2_watch_start(now, r);
                if started {
                    return Verdict::Drop(DropReason::Policy);
                }
                match self.h2_segment(now, r, seg, frame, info) {
                    upgrade::H2Seg::NotWatched | upgrade::H2Seg::Pass => {}
                    upgrade::H2Seg::Gap => return Verdict::Drop(DropReason::InvalidState),
                    upgrade::H2Seg::Denied => return Verdict::Drop(DropReason::Policy),
                }
                let Some(e) = self.table.get(r) else {
                    return Verdict::Drop(DropReason::NoFlow);
                };
                let d = &e.data;
                let had_held = d
                    .ident
                    .and_then(|i| self.idents.get(i))
                    .is_some_and(|id| !id.held.is_empty());
                if had_held {
                    // This frame joins the held ones, all released in stream order.
                    let v = self.translate_out(frame, info, eip, eport);
                    if v == Verdict::Forward && !duplicate {
                        self.push_held(r, seg, frame);
                    }
                    self.release(r);
                    if v == Verdict::Forward {
                        Verdict::Held
                    } else {
                        v
                    }
                } else {
                    self.translate_out(frame, info, eip, eport)
                }
            }
            FlowVerdict::Pending => {
                let has_held = d
                    .ident
                    .and_then(|i| self.idents.get(i))
                    .is_some_and(|id| !id.held.is_empty());
                let fin = seg.flags & crate::conntrack::tcp_flags::FIN != 0;
                if payload_new && proto == PROTO_TCP && self.starttls_pass(r, seg) {
                    // STARTTLS negotiation: passes while the name is awaited.
                    let v = self.translate_out(frame, info, eip, eport);
                    if v == Verdict::Forward {
                        if let Some(e) = self.table.get_mut(r) {
                            e.data.sent = true;
                        }
                    }
                    return v;
                }
                if payload_new || (fin && has_held) || proto == PROTO_UDP {
                    if duplicate {
                        // Bytes already sent on before the name (the client retransmits
                        // because the server's ACK was lost): they go out again. Otherwise
                        // already held once: exactly-once release.
                        if self.released_before_name(r, seg) {
                            return self.translate_out(frame, info, eip, eport);
                        }
                        return Verdict::Held;
                    }
                    match self.translate_out(frame, info, eip, eport) {
                        Verdict::Forward => {
                            let v = self.hold(now, r, seg, frame, info);
                            if v == Verdict::Held && proto == PROTO_TCP {
                                self.release_pre_name(r);
                            }
                            v
                        }
                        other => other,
                    }
                } else {
                    // Handshake and bare ACKs pass while the verdict is pending.
                    self.translate_out(frame, info, eip, eport)
                }
            }
        };
        if matches!(v, Verdict::Forward | Verdict::Held) {
            if let Some(e) = self.table.get_mut(r) {
                e.data.sent = true;
            }
        }
        if closed {
            self.close_fin(now, r);
        }
        v
    }

    /// The established-flow path: a TCP segment without SYN, FIN or RST of an established
    /// connection, or a UDP datagram, of a flow accepted for good with nothing left to identify,
    /// hold or compare ([`FlowData::plain_accepted`]) and no h2c watch on its payload. One
    /// entry lookup, then exactly what `outbound_flow` does to such a packet: counters, TCP
    /// tracking (a no-op in that state), idle timer, translation. `None`: not such a packet,
    /// nothing changed (the general path takes it).
    #[inline]
    fn outbound_established(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        frame: &mut [u8],
        info: &PacketInfo,
    ) -> Option<Verdict> {
        plain_segment(info)?;
        let payload = info.payload_len > 0;
        if info.ttl <= 1 || (payload && self.watch.h2_watched(r)) {
            return None;
        }
        let ck = self.ck;
        let len = frame.len();
        let e = self.table.get_mut(r)?;
        let (eip, eport) = e.snat?;
        let d = &mut e.data;
        if !d.plain_accepted() {
            return None;
        }
        let class = Self::plain_class(e.key.proto, d)?;
        d.out.add(len);
        d.client_payload |= payload;
        let v = translate(frame, info, End::Src, eip, eport, ck);
        if v == Verdict::Forward {
            d.sent = true;
        }
        self.table.touch(r, class, now);
        Some(v)
    }

    /// Feed a client TCP segment to the flow's stream; analyse.
    pub(super) fn feed_tcp_client(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        seg: Seg,
        frame: &[u8],
    ) -> Fed {
        let Some(idx) = self.ensure_ident(now, r) else {
            return Fed::New;
        };
        let Some(e) = self.table.get_mut(r) else {
            return Fed::New;
        };
        let Some(id) = self.idents.get_mut(idx) else {
            return Fed::New;
        };
        let fed = ident::feed_client(id, seg.seq, seg.payload(frame));
        ident::analyse_tcp(&mut e.data, id, e.key.dport);
        if fed == Fed::Full && e.data.facts_pending() {
            e.data.give_up(flow::WHY_REASM_LIMIT);
        }
        self.idents.recount(idx);
        self.after_analysis(r);
        fed
    }

    pub(super) fn feed_udp_client(&mut self, now: Timestamp, r: FlowRef, seg: Seg, frame: &[u8]) {
        let Some(idx) = self.ensure_ident(now, r) else {
            return;
        };
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        let Some(id) = self.idents.get_mut(idx) else {
            return;
        };
        let qname = ident::analyse_udp(&mut e.data, &mut id.quic, e.key.dport, seg.payload(frame));
        if let Some(q) = qname {
            // A DNS query flow carries the name it asked for.
            e.data.domain = Some(q.into());
            e.data.domain_src = DomainSrc::Dns;
        }
        let class = Self::class_of(e.key.proto, &e.data);
        self.table.touch(r, class, now);
        self.idents.recount(idx);
        self.after_analysis(r);
    }

    // ---------------------------------------------------------------- shared

    pub(super) fn translate_out(
        &self,
        frame: &mut [u8],
        info: &PacketInfo,
        eip: IpAddr,
        eport: u16,
    ) -> Verdict {
        translate(frame, info, End::Src, eip, eport, self.ck)
    }
}

/// Rewrite `end` of a forwarded packet to `ip`:`port` and decrement its TTL: the verdict.
#[inline]
pub(super) fn translate(
    frame: &mut [u8],
    info: &PacketInfo,
    end: End,
    ip: IpAddr,
    port: u16,
    ck: ChecksumMode,
) -> Verdict {
    match rewrite::translate(frame, info, end, ip, port, ck) {
        Ok(true) => Verdict::Forward,
        Ok(false) => Verdict::Drop(DropReason::TtlExceeded),
        Err(_) => Verdict::Drop(DropReason::Malformed),
    }
}
