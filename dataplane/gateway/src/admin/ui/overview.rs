//! `/ui/overview`: the traffic trend per interval (in/out Mbit/s) against the protected
//! bandwidth, intervals above it marked and listed, flow totals and the firewall's state.

use std::collections::HashMap;
use std::fmt::Write as _;

use natfw_engine::time::Timestamp;
use natfw_flowlog::views::overview::{fmt_mbps, overview_where, Bucket, Overview};
use natfw_flowlog::views::{human_bytes, svg};

use super::{esc, notice, num, page as html_page, qs, Console, Ctx, Range};
use crate::admin::http::{Request, Response};

/// Intervals above the bandwidth listed under the chart.
pub const MAX_PEAKS_LISTED: usize = 50;
/// Most points a chart may have (a custom range picks a coarser interval before this).
pub const MAX_POINTS: u64 = 2_000;

/// Totals over the range.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub accepted: u64,
    pub dropped: u64,
}

/// The trend over `range`: every interval of the range (zeros where there was no traffic).
pub fn trend(
    files: &[std::path::PathBuf],
    range: &Range,
    bandwidth_mbps: Option<f64>,
) -> Result<(Overview, Totals), String> {
    let iv = range.interval();
    let ivn = iv.as_nanos() as u64;
    let filter = range.filter();
    let mut totals = Totals::default();
    let (o, _) = overview_where(files, iv, bandwidth_mbps, &mut |r| {
        if !filter.matches(r) {
            return false;
        }
        // Interim records (a flow still running) are counted once, by its end record.
        if r.log_type == "flow" {
            if r.action == "drop" {
                totals.dropped += 1;
            } else {
                totals.accepted += 1;
            }
        }
        true
    })
    .map_err(|e| e.to_string())?;
    let (first, last) = (range.since.as_nanos() / ivn, range.until.as_nanos() / ivn);
    if last - first >= MAX_POINTS {
        return Err("the range has too many intervals".into());
    }
    let by_start: HashMap<u64, Bucket> = o
        .buckets
        .iter()
        .map(|b| (b.start.as_nanos() / ivn, *b))
        .collect();
    let buckets = (first..=last)
        .map(|i| {
            by_start.get(&i).copied().unwrap_or(Bucket {
                start: Timestamp(i * ivn),
                ..Bucket::default()
            })
        })
        .collect();
    Ok((
        Overview {
            interval: iv,
            bandwidth_mbps,
            buckets,
        },
        totals,
    ))
}

pub fn page(c: &Console, req: &Request, ctx: &Ctx, now: Timestamp) -> Response {
    let (range, range_err) = Range::from_request(req, now);
    let mut m = String::with_capacity(64 * 1024);
    if let Some(e) = range_err {
        m.push_str(&notice(&e));
    }
    let p = c.control.policy.load();
    let cfg = c.control.running();
    let bw = cfg.gateway.protected_bandwidth_mbps.map(|b| b as f64);
    let _ = write!(
        m,
        r#"<section class="state"><h2>Firewall</h2><p id="firewall-state" data-enabled="{}">{} · mode {} · default action {} · {} rules · gateway {}</p></section>"#,
        p.enabled(),
        if p.enabled() {
            "<strong class=\"on\">on</strong>"
        } else {
            "<strong class=\"off\">off (SNAT only)</strong>"
        },
        esc(&format!("{:?}", p.mode()).to_lowercase()),
        esc(&format!("{:?}", p.default_action()).to_lowercase()),
        p.rules().len(),
        esc(&cfg.gateway.name),
    );
    let _ = write!(
        m,
        r#"<form method="get" action="/ui/overview" class="filters">{}<button type="submit" id="apply">Show</button></form>"#,
        range.form_fields()
    );
    let file = match c.flow_log() {
        Ok(f) => f,
        Err(e) => {
            m.push_str(&notice(&e));
            return html_page(200, "Overview", "overview", ctx, &m);
        }
    };
    match trend(&[file], &range, bw) {
        Ok((o, t)) => {
            let (out, inb) = o.buckets.iter().fold((0u64, 0u64), |a, b| {
                (
                    a.0.saturating_add(b.bytes_out),
                    a.1.saturating_add(b.bytes_in),
                )
            });
            let peak_out = o.buckets.iter().map(|b| b.mbps_out).fold(0.0, f64::max);
            let peak_in = o.buckets.iter().map(|b| b.mbps_in).fold(0.0, f64::max);
            let _ = write!(
                m,
                r#"<section class="totals"><dl>
<div><dt>Accepted flows</dt><dd id="flows-accepted">{}</dd></div>
<div><dt>Dropped flows</dt><dd id="flows-dropped">{}</dd></div>
<div><dt>Bytes out</dt><dd id="bytes-out" data-bytes="{out}">{}</dd></div>
<div><dt>Bytes in</dt><dd id="bytes-in" data-bytes="{inb}">{}</dd></div>
<div><dt>Peak out / in</dt><dd>{} / {} Mbit/s</dd></div>
<div><dt>Protected bandwidth</dt><dd id="bandwidth">{}</dd></div>
<div><dt>Intervals above it</dt><dd id="exceeded">{} of {}</dd></div>
</dl></section>"#,
                num(t.accepted),
                num(t.dropped),
                human_bytes(out),
                human_bytes(inb),
                fmt_mbps(peak_out),
                fmt_mbps(peak_in),
                bw.map_or("unknown (gateway.protected_bandwidth_mbps)".into(), |b| {
                    format!("{b} Mbit/s")
                }),
                o.exceeded(),
                o.buckets.len(),
            );
            let title = format!(
                "Traffic per {} s interval, {}",
                o.interval.as_secs(),
                match range.key.as_str() {
                    "1h" => "last hour",
                    "24h" => "last 24 hours",
                    "7d" => "last 7 days",
                    _ => "custom range",
                }
            );
            let chart = svg::overview_chart(&o, &title);
            // Inline: drop the XML declaration of the standalone document.
            let chart = chart
                .split_once("?>")
                .map_or(chart.as_str(), |(_, rest)| rest)
                .trim_start();
            let _ = write!(m, r#"<figure id="trend" class="chart">{chart}</figure>"#);
            let peaks: Vec<&Bucket> = o.buckets.iter().filter(|b| b.exceeded).collect();
            if !peaks.is_empty() {
                m.push_str(
                    r#"<h2>Intervals above the protected bandwidth</h2><table id="peaks"><thead><tr><th>Interval start (UTC)</th><th>Out Mbit/s</th><th>In Mbit/s</th><th>Flows started</th><th></th></tr></thead><tbody>"#,
                );
                for b in peaks.iter().rev().take(MAX_PEAKS_LISTED) {
                    let from = natfw_flowlog::format_rfc3339_millis(b.start);
                    let to = natfw_flowlog::format_rfc3339_millis(b.start.add(o.interval));
                    let link = qs(&[("range", "custom"), ("from", &from), ("to", &to)]);
                    let _ = write!(
                        m,
                        r#"<tr class="peak"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href="/ui/connections?{}">sources</a> · <a href="/ui/logs?{}">records</a></td></tr>"#,
                        esc(&from),
                        fmt_mbps(b.mbps_out),
                        fmt_mbps(b.mbps_in),
                        b.flows,
                        esc(&link),
                        esc(&link),
                    );
                }
                m.push_str("</tbody></table>");
            }
        }
        Err(e) => m.push_str(&notice(&format!("flow log: {e}"))),
    }
    html_page(200, "Overview", "overview", ctx, &m)
}
