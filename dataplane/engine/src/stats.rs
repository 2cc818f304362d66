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
