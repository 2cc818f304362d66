//! natfw-flowlog: flow-log records (docs/CONTRACT.md "Flow-log record"): one JSON object per
//! line, every key present, unknown values `null`.
//!
//! The engine hands plain-data [`FlowEnd`] events to a [`FlowSink`]. In production that is a
//! [`ChannelSink`]: a bounded channel to a writer thread ([`spawn_writer`]) that renders each
//! event ([`render`]) and writes JSON lines to a file or stdout, rotating by size.
//! [`read_records`] streams them back for the offline views ([`views`]).

mod ecs;
mod read;
mod render;
mod timefmt;
pub mod views;
mod writer;

pub use ecs::{to_ecs, ECS_VERSION};
pub use natfw_engine::engine::{FlowEnd, FlowInterim, FlowSink};
pub use natfw_policy::RecordFormat;
pub use read::{read_records, ReadError, Records};
pub use render::{render, render_interim};
pub use timefmt::{format_rfc3339_millis, parse_rfc3339};
pub use writer::{
    spawn_writer, spawn_writer_tee, spawn_writer_with_capacity, ChannelSink, LineTee, Rotation,
    Target, Writer, WriterCounters, WriterHandle, WriterStats, DEFAULT_CHANNEL_CAPACITY,
};

use serde::{Deserialize, Serialize};

/// `log_type` of a flow's end record.
pub const LOG_TYPE_FLOW: &str = "flow";
/// `log_type` of a record of a flow that still lives (`logging.interim_interval`).
pub const LOG_TYPE_INTERIM: &str = "flow_interim";

/// One flow, as written to the flow log. Field names are the contract; do not rename.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// `"flow"` ([`LOG_TYPE_FLOW`]) at the flow's end; `"flow_interim"` ([`LOG_TYPE_INTERIM`])
    /// for a record of a live flow.
    pub log_type: String,
    pub gateway: String,
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-28T17:11:22.123Z`.
    pub start_time: String,
    pub end_time: String,
    /// Private side's view (before SNAT).
    pub src_ip: String,
    pub src_port: Option<u16>,
    pub dst_ip: String,
    pub dst_port: Option<u16>,
    /// `tcp`, `udp`, `icmp`.
    pub ip_protocol: String,
    /// Translated source; `None` when dropped before SNAT or bypassed.
    pub snat_ip: Option<String>,
    pub snat_port: Option<u16>,
    /// `HTTP`, `HTTPS`, `SSL`, `QUIC`, ... (see `natfw_policy::App`).
    pub app_name: Option<String>,
    pub domain: Option<String>,
    /// `sni`, `host`, `quic_sni`, `dns`.
    pub domain_source: Option<String>,
    /// The ClientHello carried encrypted_client_hello.
    pub ech: bool,
    pub dst_country: Option<String>,
    /// Name of the deciding rule; `None` for the default action.
    pub acl_rule_id: Option<String>,
    pub monitor_rules: Vec<String>,
    /// `accept` or `drop`.
    pub action: String,
    /// `success`, `analysing`, `no_payload`, `unknown_loose`, `unknown_strict`,
    /// `policy_discard`, `tcp_not_establish`.
    pub app_dpi_state: String,
    /// One human sentence: why this verdict.
    pub reason: String,
    pub out_packet_count: u64,
    pub out_packet_bytes: u64,
    pub in_packet_count: u64,
    pub in_packet_bytes: u64,
    /// `fin`, `rst`, `timeout`, `denied`, `evicted`, `shutdown`.
    pub end_reason: String,
    /// How the deciding rule tied the destination address to a name: `client_answer`,
    /// `gateway_resolution`, `forwarder`; `None` when no DNS fact decided the flow.
    #[serde(default)]
    pub dns_verified: Option<String>,
    /// Only in `flow_interim` records (absent from end records).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub interim: Option<InterimFields>,
}

impl FlowRecord {
    /// A record of a live flow (`flow_interim`): its bytes are counted again by the flow's
    /// later records, so totals (overview, ranking) skip it.
    pub fn is_interim(&self) -> bool {
        self.log_type == LOG_TYPE_INTERIM
    }
}

/// The fields only a `flow_interim` record has. Its `out_packet_*` / `in_packet_*` count since
/// the flow's start, as in the end record; these count the interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterimFields {
    /// 1 for the flow's first interim record; then the whole intervals the flow had lived.
    pub interim_seq: u32,
    /// Start of the interval (the previous interim record's `end_time`, or the flow's start);
    /// the interval ends at `end_time`.
    pub interval_start_time: String,
    pub interval_out_packet_count: u64,
    pub interval_out_packet_bytes: u64,
    pub interval_in_packet_count: u64,
    pub interval_in_packet_bytes: u64,
}

/// Keeps rendered records in memory (tests, replay into a buffer): the engine's
/// [`FlowSink`] that renders each [`FlowEnd`] at once.
#[derive(Debug, Clone, Default)]
pub struct RecordVec {
    /// Gateway name written into each record.
    pub gateway: String,
    pub records: Vec<FlowRecord>,
}

impl RecordVec {
    pub fn new(gateway: &str) -> RecordVec {
        RecordVec {
            gateway: gateway.to_string(),
            records: Vec::new(),
        }
    }
}

impl FlowSink for RecordVec {
    fn flow_end(&mut self, ev: FlowEnd) {
        self.records.push(render(&ev, &self.gateway));
    }

    fn flow_interim(&mut self, ev: FlowInterim) {
        self.records.push(render_interim(&ev, &self.gateway));
    }
}

/// Like [`RecordVec`], but readable while the engine (which owns its box) runs and after it is
/// gone: clones share one list. For tests and `natfw replay`'s in-memory records.
#[derive(Debug, Clone, Default)]
pub struct SharedRecords {
    gateway: String,
    records: std::sync::Arc<std::sync::Mutex<Vec<FlowRecord>>>,
}

impl SharedRecords {
    pub fn new(gateway: &str) -> SharedRecords {
        SharedRecords {
            gateway: gateway.to_string(),
            records: Default::default(),
        }
    }

    /// Take the records rendered so far.
    pub fn take(&self) -> Vec<FlowRecord> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A copy of the records rendered so far.
    pub fn snapshot(&self) -> Vec<FlowRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl FlowSink for SharedRecords {
    fn flow_end(&mut self, ev: FlowEnd) {
        let rec = render(&ev, &self.gateway);
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rec);
    }

    fn flow_interim(&mut self, ev: FlowInterim) {
        let rec = render_interim(&ev, &self.gateway);
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rec);
    }
}

#[cfg(test)]
mod tests;
