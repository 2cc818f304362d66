//! IP fragments: reassembled (bounded) before the flow sees them.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- fragments

    /// A fragment of SNAT-bound (or return) traffic. It is stored; the fragment that completes
    /// its datagram gets [`Verdict::Held`] (the engine consumed it) and the whole datagram goes
    /// through the normal path: if that forwards it, the rewritten datagram is queued as an
    /// [`Emit`] out of the other side. Releasing through the emit queue keeps `process`'s
    /// in-place contract (the caller's frame buffer cannot grow to the datagram's size).
    pub(super) fn fragment(&mut self, now: Timestamp, side: Side, frame: &[u8]) -> Verdict {
        let mut whole = match self.frags.push(now, frame) {
            FragResult::Held => return Verdict::Held,
            FragResult::Dropped(_) => return Verdict::Drop(DropReason::Fragment),
            FragResult::Complete(whole) => whole,
        };
        if whole.len() > self.opts.max_frame_len {
            return Verdict::Drop(DropReason::ReassembledTooBig);
        }
        let info = match wire::parse(&whole) {
            // The reassembler undid the fragmentation: anything else is a bad datagram (and
            // never recursion).
            Ok(info) if info.fragment.is_none() => info,
            _ => return Verdict::Drop(DropReason::Malformed),
        };
        let v = match side {
            Side::Inside => self.outbound(now, &mut whole, &info),
            Side::Outside => self.inbound(now, &mut whole, &info),
        };
        match v {
            Verdict::Forward => {
                self.emits.push(Emit {
                    side: side.other(),
                    frame: whole,
                });
                Verdict::Held
            }
            // The engine kept what it needs of the datagram (TCP hold) or nothing is sent.
            Verdict::Held | Verdict::Drop(_) => v,
            // Not possible past the SNAT / EIP checks; the kernel cannot use one fragment.
            Verdict::ToKernel => Verdict::Drop(DropReason::Unsupported),
        }
    }
}
