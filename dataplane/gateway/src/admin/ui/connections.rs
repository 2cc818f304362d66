//! `/ui/connections`: the private sources ranked by bytes or flows over the range, each
//! linking to the log audit of its records.

use std::fmt::Write as _;

use natfw_engine::time::Timestamp;
use natfw_flowlog::views::human_bytes;
use natfw_flowlog::views::top::{top_where, TopBy};

use super::{cell, esc, notice, num, page as html_page, qs, Console, Ctx, Range};
use crate::admin::http::{Request, Response};

/// Sources listed.
pub const MAX_SOURCES: usize = 100;

pub fn page(c: &Console, req: &Request, ctx: &Ctx, now: Timestamp) -> Response {
    let (range, range_err) = Range::from_request(req, now);
    let mut m = String::with_capacity(32 * 1024);
    if let Some(e) = range_err {
        m.push_str(&notice(&e));
    }
    let (by, by_key) = match req.param("by").as_deref() {
        Some("flows") => (TopBy::Flows, "flows"),
        None | Some("bytes") => (TopBy::Bytes, "bytes"),
        Some(o) => {
            m.push_str(&notice(&format!(
                "by `{o}`: bytes or flows; ranking by bytes"
            )));
            (TopBy::Bytes, "bytes")
        }
    };
    let _ = write!(
        m,
        r#"<form method="get" action="/ui/connections" class="filters">{}<label>Rank by <select name="by" id="by"><option value="bytes"{}>bytes</option><option value="flows"{}>flows</option></select></label><button type="submit" id="apply">Show</button></form>"#,
        range.form_fields(),
        if by_key == "bytes" { " selected" } else { "" },
        if by_key == "flows" { " selected" } else { "" },
    );
    let file = match c.flow_log() {
        Ok(f) => f,
        Err(e) => {
            m.push_str(&notice(&e));
            return html_page(200, "Outbound connections", "connections", ctx, &m);
        }
    };
    let filter = range.filter();
    let talkers = top_where(&[file], by, &mut |r| filter.matches(r)).map(|(t, _)| t);
    match talkers {
        Ok(t) if t.is_empty() => m.push_str(r#"<p id="no-sources">No flows in this range.</p>"#),
        Ok(t) => {
            m.push_str(r#"<table id="sources"><thead><tr><th>#</th><th>Source</th><th>Flows</th><th>Dropped</th><th>Bytes out</th><th>Bytes in</th><th>Top domains</th></tr></thead><tbody>"#);
            let rp = range.pairs();
            for (i, s) in t.iter().take(MAX_SOURCES).enumerate() {
                let mut pairs: Vec<(&str, &str)> =
                    rp.iter().map(|(k, v)| (*k, v.as_str())).collect();
                pairs.push(("src", &s.src_ip));
                let link = qs(&pairs);
                let domains: Vec<String> = s
                    .top_domains
                    .iter()
                    .map(|(d, b)| format!("{} ({})", cell(d), human_bytes(*b)))
                    .collect();
                let _ = write!(
                    m,
                    r#"<tr class="source" data-src="{src}"><td>{}</td><td><a class="audit" href="/ui/logs?{}">{src}</a></td><td>{}</td><td>{}</td><td data-bytes="{}">{}</td><td data-bytes="{}">{}</td><td>{}</td></tr>"#,
                    i + 1,
                    esc(&link),
                    num(s.flows),
                    num(s.dropped),
                    s.bytes_out,
                    human_bytes(s.bytes_out),
                    s.bytes_in,
                    human_bytes(s.bytes_in),
                    if domains.is_empty() {
                        "-".into()
                    } else {
                        domains.join(", ")
                    },
                    src = cell(&s.src_ip),
                );
            }
            m.push_str("</tbody></table>");
            if t.len() > MAX_SOURCES {
                let _ = write!(
                    m,
                    "<p>{} more sources not listed.</p>",
                    t.len() - MAX_SOURCES
                );
            }
        }
        Err(e) => m.push_str(&notice(&format!("flow log: {e}"))),
    }
    html_page(200, "Outbound connections", "connections", ctx, &m)
}
