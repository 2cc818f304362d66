//! Engine counters: plain `u64`s, monotonically increasing unless noted (gauges say so).
//! The engine owns them and only ever adds; exporters read `Engine::stats()`.

/// Packet/byte pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    /// Count one packet of `len` bytes.
    #[inline]
    pub fn add(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }
}

/// Every counter of one engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Frames handed to `process` from the inside (private hosts).
    pub rx_inside: Counter,
    /// Frames handed to `process` from the outside (internet, addressed to an EIP).
    pub rx_outside: Counter,
    /// Frames forwarded inside → outside (SNAT applied).
    pub fwd_out: Counter,
    /// Frames forwarded outside → inside (reverse NAT applied).
    pub fwd_in: Counter,
    /// Frames passed to the kernel (bypassed, not SNAT-bound, for the gateway itself).
    pub to_kernel: Counter,
    /// Of `to_kernel`: sources in the bypass list (SNATed by the kernel).
    pub bypassed: Counter,
    /// Client payload frames held while the verdict was pending.
    pub held: Counter,
    /// Held frames released after an accept.
    pub released: Counter,
    /// Held frames discarded after a drop (or flow end before the verdict).
    pub discarded: Counter,
    /// Frames emitted by the engine (released payload, RSTs, ICMP errors).
    pub emitted: Counter,

    /// Drops: unparsable frames (truncated, bad header lengths...).
    pub drop_parse: Counter,
    /// Drops: fragments (reassembly refusals and datagrams too big to send whole).
    pub drop_fragment: Counter,
    /// Drops: policy said drop.
    pub drop_policy: Counter,
    /// Drops: return traffic that matches no flow.
    pub drop_no_flow: Counter,
    /// Drops: no SNAT port left / no SNAT entry.
    pub drop_no_port: Counter,
    /// Drops: conntrack table full and nothing evictable.
    pub drop_table_full: Counter,
    /// Drops: hold buffer (per flow or global) full.
    pub drop_hold_full: Counter,
    /// Drops: TCP segment not valid for the flow state (e.g. data before the handshake).
    pub drop_invalid_state: Counter,
    /// Drops: protocol not handled (not TCP/UDP/ICMP echo).
    pub drop_unsupported: Counter,
    /// Drops: L7 evasion attempt (conflicting retransmission) in strict mode.
    pub drop_evasion: Counter,
    /// Copies of packets another packet worker owns (fragments, ICMP errors and IPv6 extension
    /// headers go to every worker; each keeps its own): ignored, not dropped traffic.
    pub other_worker: Counter,

    /// Flows created.
    pub flows_created: u64,
    /// Flows ended, per end reason.
    pub flows_ended_fin: u64,
    pub flows_ended_rst: u64,
    pub flows_ended_timeout: u64,
    pub flows_ended_denied: u64,
    pub flows_ended_evicted: u64,
    pub flows_ended_shutdown: u64,
    /// Gauge: flows currently tracked.
    pub flows_active: u64,
    /// New flows refused because the table was full of non-evictable flows.
    pub table_full: u64,
    /// Flows evicted to make room.
    pub evictions: u64,
    /// Mid-stream TCP segments from the inside that belong to no flow (a flow of an earlier
    /// natfw process, one that timed out), answered with a RST to the client so it does not
    /// hang on a connection nothing forwards.
    pub resets_no_flow: u64,
    /// Interim records of live flows handed to the sink (`logging.interim_interval`).
    pub interim_records: u64,
    /// A client SYN with a new sequence number reused the tuple of a closed flow: the old flow
    /// ended and a new one was opened.
    pub tuple_reuses: u64,
    /// Segments for a closed flow that were not its stragglers (new data, a SYN): dropped.
    pub closed_flow_strays: u64,

    /// Gauge: payload bytes currently held across all flows.
    pub held_bytes: u64,
    /// Gauge: L7 reassembly bytes currently buffered across all flows.
    pub l7_bytes: u64,

    /// Policy evaluations performed.
    pub policy_evaluations: u64,
    /// L7 outcomes: a domain was identified (SNI, Host, QUIC SNI).
    pub l7_domain_found: u64,
    /// L7 outcomes: application identified.
    pub l7_app_found: u64,
    /// L7 outcomes: facts became unidentifiable (no SNI, invalid payload, limits, timeout).
    pub l7_unidentifiable: u64,
    /// L7 outcomes: the identification timed out.
    pub l7_timeouts: u64,
    /// L7 outcomes: conflicting retransmissions seen (evasion attempts).
    pub l7_conflicts: u64,
    /// Client segments released to the server while the verdict was pending because they lie
    /// wholly before the TLS server_name extension (handshake bytes, no application data).
    pub pre_name_released: Counter,
    /// DNS responses learned into the DNS cache.
    pub dns_answers_learned: u64,
    /// DNS facts learned from another packet worker (answers that crossed it).
    pub dns_answers_shared: u64,
    /// DNS facts not passed to the other workers: too many waiting (never drained).
    pub dns_answers_share_dropped: u64,
    /// Addresses learned from answers the gateway's DNS forwarder relayed.
    pub dns_answers_forwarded: u64,
    /// Names the engine asked the gateway to resolve (`fqdn_and_dns` verification).
    pub dns_resolve_requests: u64,
    /// Flows that waited for such a resolution.
    pub dns_resolve_waits: u64,
    /// Resolutions that did not answer in time (their flows' verification is unknown).
    pub dns_resolve_timeouts: u64,
    /// Flows that could not wait: too many names being resolved at once.
    pub dns_resolve_refused: u64,
    /// Resolution results not stored: the bound on names was reached.
    pub dns_gateway_names_full: u64,
    /// Gauge: names the gateway's own resolution holds.
    pub dns_gateway_names: u64,

    /// Fast path: flows handed to the kernel.
    pub offload_added: u64,
    /// Fast path: flows taken back (FIN/RST/SYN, end, reload, bypass change).
    pub offload_removed: u64,
    /// Fast path: entries the kernel table refused (the flow stayed in the engine).
    pub offload_add_failed: u64,
    /// Fast path: flows handed over to the next process at a graceful stop.
    pub offload_handed_over: u64,
    /// Fast path: handed-over flows adopted from the previous process.
    pub offload_adopted: u64,
    /// Gauge: flows the kernel forwards right now.
    pub offload_active: u64,
    /// Packets and bytes the kernel forwarded for offloaded flows (read back from its table).
    pub offload_forwarded: Counter,
}

impl EngineStats {
    /// Add another engine's counters (the gateway's packet workers, one engine each). Gauges
    /// add up too, but for `dns_gateway_names`: every engine holds the same names, so the
    /// largest is taken. Every field is named, so a new one cannot be forgotten here.
    pub fn accumulate(&mut self, other: &EngineStats) {
        let EngineStats {
            rx_inside,
            rx_outside,
            fwd_out,
            fwd_in,
            to_kernel,
            bypassed,
            held,
            released,
            discarded,
            emitted,
            drop_parse,
            drop_fragment,
            drop_policy,
            drop_no_flow,
            drop_no_port,
            drop_table_full,
            drop_hold_full,
            drop_invalid_state,
            drop_unsupported,
            drop_evasion,
            other_worker,
            flows_created,
            flows_ended_fin,
            flows_ended_rst,
            flows_ended_timeout,
            flows_ended_denied,
            flows_ended_evicted,
            flows_ended_shutdown,
            flows_active,
            table_full,
            evictions,
            resets_no_flow,
            interim_records,
            tuple_reuses,
            closed_flow_strays,
            held_bytes,
            l7_bytes,
            policy_evaluations,
            l7_domain_found,
            l7_app_found,
            l7_unidentifiable,
            l7_timeouts,
            l7_conflicts,
            pre_name_released,
            dns_answers_learned,
            dns_answers_shared,
            dns_answers_share_dropped,
            dns_answers_forwarded,
            dns_resolve_requests,
            dns_resolve_waits,
            dns_resolve_timeouts,
            dns_resolve_refused,
            dns_gateway_names_full,
            dns_gateway_names,
            offload_added,
            offload_removed,
            offload_add_failed,
            offload_handed_over,
            offload_adopted,
            offload_active,
            offload_forwarded,
        } = other;
        self.rx_inside.packets += rx_inside.packets;
        self.rx_inside.bytes += rx_inside.bytes;
        self.rx_outside.packets += rx_outside.packets;
        self.rx_outside.bytes += rx_outside.bytes;
        self.fwd_out.packets += fwd_out.packets;
        self.fwd_out.bytes += fwd_out.bytes;
        self.fwd_in.packets += fwd_in.packets;
        self.fwd_in.bytes += fwd_in.bytes;
        self.to_kernel.packets += to_kernel.packets;
        self.to_kernel.bytes += to_kernel.bytes;
        self.bypassed.packets += bypassed.packets;
        self.bypassed.bytes += bypassed.bytes;
        self.held.packets += held.packets;
        self.held.bytes += held.bytes;
        self.released.packets += released.packets;
        self.released.bytes += released.bytes;
        self.discarded.packets += discarded.packets;
        self.discarded.bytes += discarded.bytes;
        self.emitted.packets += emitted.packets;
        self.emitted.bytes += emitted.bytes;
        self.drop_parse.packets += drop_parse.packets;
        self.drop_parse.bytes += drop_parse.bytes;
        self.drop_fragment.packets += drop_fragment.packets;
        self.drop_fragment.bytes += drop_fragment.bytes;
        self.drop_policy.packets += drop_policy.packets;
        self.drop_policy.bytes += drop_policy.bytes;
        self.drop_no_flow.packets += drop_no_flow.packets;
        self.drop_no_flow.bytes += drop_no_flow.bytes;
        self.drop_no_port.packets += drop_no_port.packets;
        self.drop_no_port.bytes += drop_no_port.bytes;
        self.drop_table_full.packets += drop_table_full.packets;
        self.drop_table_full.bytes += drop_table_full.bytes;
        self.drop_hold_full.packets += drop_hold_full.packets;
        self.drop_hold_full.bytes += drop_hold_full.bytes;
        self.drop_invalid_state.packets += drop_invalid_state.packets;
        self.drop_invalid_state.bytes += drop_invalid_state.bytes;
        self.drop_unsupported.packets += drop_unsupported.packets;
        self.drop_unsupported.bytes += drop_unsupported.bytes;
        self.drop_evasion.packets += drop_evasion.packets;
        self.drop_evasion.bytes += drop_evasion.bytes;
        self.other_worker.packets += other_worker.packets;
        self.other_worker.bytes += other_worker.bytes;
        self.flows_created += *flows_created;
        self.flows_ended_fin += *flows_ended_fin;
        self.flows_ended_rst += *flows_ended_rst;
        self.flows_ended_timeout += *flows_ended_timeout;
        self.flows_ended_denied += *flows_ended_denied;
        self.flows_ended_evicted += *flows_ended_evicted;
        self.flows_ended_shutdown += *flows_ended_shutdown;
        self.flows_active += *flows_active;
        self.table_full += *table_full;
        self.evictions += *evictions;
        self.resets_no_flow += *resets_no_flow;
        self.interim_records += *interim_records;
        self.tuple_reuses += *tuple_reuses;
        self.closed_flow_strays += *closed_flow_strays;
        self.held_bytes += *held_bytes;
        self.l7_bytes += *l7_bytes;
        self.policy_evaluations += *policy_evaluations;
        self.l7_domain_found += *l7_domain_found;
        self.l7_app_found += *l7_app_found;
        self.l7_unidentifiable += *l7_unidentifiable;
        self.l7_timeouts += *l7_timeouts;
        self.l7_conflicts += *l7_conflicts;
        self.pre_name_released.packets += pre_name_released.packets;
        self.pre_name_released.bytes += pre_name_released.bytes;
        self.dns_answers_learned += *dns_answers_learned;
        self.dns_answers_shared += *dns_answers_shared;
        self.dns_answers_share_dropped += *dns_answers_share_dropped;
        self.dns_answers_forwarded += *dns_answers_forwarded;
        self.dns_resolve_requests += *dns_resolve_requests;
        self.dns_resolve_waits += *dns_resolve_waits;
        self.dns_resolve_timeouts += *dns_resolve_timeouts;
        self.dns_resolve_refused += *dns_resolve_refused;
        self.dns_gateway_names_full += *dns_gateway_names_full;
        self.dns_gateway_names = self.dns_gateway_names.max(*dns_gateway_names);
        self.offload_added += *offload_added;
        self.offload_removed += *offload_removed;
        self.offload_add_failed += *offload_add_failed;
        self.offload_handed_over += *offload_handed_over;
        self.offload_adopted += *offload_adopted;
        self.offload_active += *offload_active;
        self.offload_forwarded.packets += offload_forwarded.packets;
        self.offload_forwarded.bytes += offload_forwarded.bytes;
    }
}
