//! `logging.format: ecs`: a flow record as Elastic Common Schema fields (nested objects, absent
//! instead of `null`). The same facts as [`FlowRecord`]; the mapping is in docs/OPERATIONS.md
//! ("Flow records in Elastic Common Schema"). natfw's own facts without an ECS field go under
//! `natfw.*`.

use serde_json::{json, Map, Value};

use crate::FlowRecord;

/// The ECS version the fields follow.
pub const ECS_VERSION: &str = "8.11.0";

/// `rec` as one ECS document.
pub fn to_ecs(rec: &FlowRecord) -> Value {
    let mut source = obj([
        ("ip", json!(rec.src_ip)),
        ("port", opt(rec.src_port)),
        ("packets", json!(rec.out_packet_count)),
        ("bytes", json!(rec.out_packet_bytes)),
    ]);
    let nat = obj([
        ("ip", opt(rec.snat_ip.as_ref())),
        ("port", opt(rec.snat_port)),
    ]);
    if !nat.is_empty() {
        source.insert("nat".into(), Value::Object(nat));
    }
    let mut destination = obj([
        ("ip", json!(rec.dst_ip)),
        ("port", opt(rec.dst_port)),
        ("domain", opt(rec.domain.as_ref())),
        ("packets", json!(rec.in_packet_count)),
        ("bytes", json!(rec.in_packet_bytes)),
    ]);
    if let Some(c) = &rec.dst_country {
        destination.insert("geo".into(), json!({ "country_iso_code": c }));
    }
    let mut doc = obj([
        ("@timestamp", json!(rec.end_time)),
        ("ecs", json!({ "version": ECS_VERSION })),
        (
            "event",
            Value::Object(obj([
                ("kind", json!("event")),
                ("category", json!(["network"])),
                (
                    "type",
                    json!(match (rec.is_interim(), rec.action == "drop") {
                        // A live flow's record: ECS event.type `info` instead of `end`.
                        (true, true) => vec!["connection", "info", "denied"],
                        (true, false) => vec!["connection", "info", "allowed"],
                        (false, true) => vec!["connection", "end", "denied"],
                        (false, false) => vec!["connection", "end", "allowed"],
                    }),
                ),
                ("action", json!(rec.action)),
                ("outcome", json!("success")),
                ("reason", json!(rec.reason)),
                ("start", json!(rec.start_time)),
                ("end", json!(rec.end_time)),
                (
                    "dataset",
                    json!(if rec.is_interim() {
                        "natfw.flow_interim"
                    } else {
                        "natfw.flow"
                    }),
                ),
                ("module", json!("natfw")),
            ])),
        ),
        (
            "observer",
            json!({ "name": rec.gateway, "type": "firewall", "vendor": "natfw", "product": "natfw" }),
        ),
        ("source", Value::Object(source)),
        ("destination", Value::Object(destination)),
        (
            "network",
            Value::Object(obj([
                ("transport", json!(rec.ip_protocol)),
                (
                    "protocol",
                    opt(rec.app_name.as_ref().map(|a| a.to_ascii_lowercase())),
                ),
                ("packets", json!(rec.out_packet_count + rec.in_packet_count)),
                ("bytes", json!(rec.out_packet_bytes + rec.in_packet_bytes)),
                ("direction", json!("egress")),
            ])),
        ),
        (
            "rule",
            // The default action decided: no rule name, the ruleset's default instead.
            json!({ "name": rec.acl_rule_id.as_deref().unwrap_or("(default)") }),
        ),
    ]);
    if let Some(d) = &rec.domain {
        doc.insert("url".into(), json!({ "domain": d }));
        if matches!(rec.domain_source.as_deref(), Some("sni" | "quic_sni")) {
            doc.insert("tls".into(), json!({ "client": { "server_name": d } }));
        }
    }
    let natfw = obj([
        ("domain_source", opt(rec.domain_source.as_ref())),
        ("ech", json!(rec.ech)),
        ("monitor_rules", json!(rec.monitor_rules)),
        ("app_dpi_state", json!(rec.app_dpi_state)),
        ("end_reason", json!(rec.end_reason)),
        ("app_name", opt(rec.app_name.as_ref())),
    ]);
    let mut natfw = natfw;
    if let Some(i) = &rec.interim {
        natfw.insert("interim".into(), json!(i));
    }
    doc.insert("natfw".into(), Value::Object(natfw));
    Value::Object(doc)
}

fn opt<T: serde::Serialize>(v: Option<T>) -> Value {
    v.map_or(Value::Null, |v| json!(v))
}

/// An object of the non-null entries.
fn obj<const N: usize>(entries: [(&str, Value); N]) -> Map<String, Value> {
    entries
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}
