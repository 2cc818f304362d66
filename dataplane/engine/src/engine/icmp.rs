//! ICMP errors about a flow, in either direction: translated like the flow they quote.

use super::*;

impl Engine {
    /// An ICMP error from a private host about a packet of one of its flows that came in (port
    /// unreachable, packet too big): the quoted packet and the outer source get the EIP side.
    pub(super) fn outbound_icmp_error(
        &mut self,
        now: Timestamp,
        inner: wire::InnerTuple,
        frame: &mut [u8],
        info: &PacketInfo,
    ) -> Verdict {
        if !inner.has_ports || inner.dst != info.src {
            return Verdict::Drop(DropReason::Unsupported);
        }
        // The quoted packet went remote → private host: the flow's reverse direction.
        let key = FlowKey {
            src: inner.dst,
            dst: inner.src,
            sport: inner.dport,
            dport: inner.sport,
            proto: inner.proto,
        };
        let Some(r) = self.table.lookup(&key) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let len = frame.len();
        let Some(e) = self.table.get_mut(r) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let Some((eip, eport)) = e.snat else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        if e.data.verdict() == FlowVerdict::Drop {
            return Verdict::Drop(DropReason::Policy);
        }
        if !e.data.recorded() {
            e.data.out.add(len);
            let class = e.class;
            self.table.touch(r, class, now);
        }
        match rewrite::rewrite_icmp_error_inner(frame, info, End::Dst, eip, eport, self.ck) {
            Ok(()) if rewrite::decrement_ttl(frame, info) => Verdict::Forward,
            Ok(()) => Verdict::Drop(DropReason::TtlExceeded),
            Err(_) => Verdict::Drop(DropReason::Malformed),
        }
    }

    pub(super) fn inbound_icmp_error(
        &mut self,
        now: Timestamp,
        rk: ReplyKey,
        frame: &mut [u8],
        info: &PacketInfo,
    ) -> Verdict {
        let Some(r) = self.table.lookup_reply(&rk) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        let len = frame.len();
        let Some(e) = self.table.get_mut(r) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        if e.data.verdict() == FlowVerdict::Drop {
            return Verdict::Drop(DropReason::Policy);
        }
        let key = e.key;
        if !e.data.recorded() {
            e.data.inb.add(len);
            let class = e.class;
            self.table.touch(r, class, now);
        }
        match rewrite::rewrite_icmp_error_inner(frame, info, End::Src, key.src, key.sport, self.ck)
        {
            Ok(()) if rewrite::decrement_ttl(frame, info) => Verdict::Forward,
            Ok(()) => Verdict::Drop(DropReason::TtlExceeded),
            Err(_) => Verdict::Drop(DropReason::Malformed),
        }
    }
}
