//! The end of a flow: FIN, RST, timeout, eviction, shutdown; the flow-end event.

use super::decide::{decide, DnsView};
use super::*;

impl Engine {
    /// Both FINs acknowledged: write the record now, keep the entry briefly for stragglers.
    pub(super) fn close_fin(&mut self, now: Timestamp, r: FlowRef) {
        if self.table.get(r).is_some_and(|e| !e.data.recorded()) {
            self.stats.flows_ended_fin += 1;
            self.write_record(now, r, EndReason::Fin);
        }
    }

    /// End a flow now (RST): record and remove.
    pub(super) fn end_flow(&mut self, now: Timestamp, r: FlowRef, reason: EndReason) {
        if let Some(e) = self.table.remove(r) {
            self.finish(now, r, e, reason);
        }
    }

    /// A flow left the table: write its record unless written, free its side state.
    pub(super) fn finish(
        &mut self,
        now: Timestamp,
        r: FlowRef,
        mut e: Entry<FlowData>,
        reason: EndReason,
    ) {
        self.offload_finish(r, &mut e.data);
        self.watch.remove(r);
        self.interim.forget(r);
        if let Some(idx) = e.data.ident.take() {
            if let Some(id) = self.idents.remove(idx) {
                for (_, f) in &id.held {
                    self.stats.discarded.add(f.len());
                }
            }
            if e.data.facts_pending() && e.data.client_payload {
                e.data.give_up(WHY_ENDED_PENDING);
            }
        }
        self.stats.flows_active = self.table.len() as u64;
        if e.data.recorded() {
            return;
        }
        if e.data.verdict() == FlowVerdict::Pending && !e.data.fw_off {
            // Settle the verdict for the record with what is known now.
            let policy = self.policy.load_full();
            let view = DnsView {
                cache: &self.dns,
                gw: &self.gw_dns,
                on_demand: self.opts.on_demand_resolution,
            };
            let _ = decide(&policy, view, now, &e.key, &mut e.data, true);
        } else if e.data.verdict() == FlowVerdict::Pending {
            e.data.set_verdict(Settled::Accept);
        }
        let s = &mut self.stats;
        match reason {
            EndReason::Fin => s.flows_ended_fin += 1,
            EndReason::Rst => s.flows_ended_rst += 1,
            EndReason::Timeout => s.flows_ended_timeout += 1,
            EndReason::Denied => s.flows_ended_denied += 1,
            EndReason::Evicted => s.flows_ended_evicted += 1,
            EndReason::Shutdown => s.flows_ended_shutdown += 1,
        }
        credit_bytes(&e.data);
        let policy = &self.policy;
        let ev = e
            .data
            .into_end_event(&e.key, e.snat, now, reason, || policy.load_full());
        self.sink.flow_end(ev);
    }

    /// Write the record of a flow that stays in the table as a tombstone.
    pub(super) fn write_record(&mut self, now: Timestamp, r: FlowRef, reason: EndReason) {
        self.offload_before_record(r);
        let policy = self.policy.load_full();
        let Some(e) = self.table.get_mut(r) else {
            return;
        };
        if e.data.recorded() {
            return;
        }
        self.interim.forget(r);
        credit_bytes(&e.data);
        let ev = e.data.end_event(&e.key, e.snat, now, reason, policy);
        e.data.close();
        self.sink.flow_end(ev);
    }
}
