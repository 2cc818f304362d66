//! `/ui/logs`: the log audit. Search by source, destination, domain, action, rule,
//! application and time; newest first, [`PAGE`] records a page, at most [`MAX_PAGES`] pages
//! deep (memory stays bounded: only the newest `(page + 1) × PAGE` matches are kept while the
//! file streams by).

use std::collections::VecDeque;
use std::fmt::Write as _;

use natfw_engine::time::Timestamp;
use natfw_flowlog::views::logs::{parse_net, DomainQuery};
use natfw_flowlog::views::{for_each_record, human_bytes};
use natfw_flowlog::FlowRecord;

use super::{cell, esc, notice, num, page as html_page, qs, Console, Ctx, Range};
use crate::admin::http::{Request, Response};

/// Records per page.
pub const PAGE: usize = 50;
/// Deepest page (0-based) that can be asked for.
pub const MAX_PAGES: usize = 100;

/// The audit's search.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub filter: natfw_flowlog::views::logs::LogFilter,
    /// `acl_rule_id`; `default` for the default action.
    pub rule: Option<String>,
    /// `app_name`, case-insensitive.
    pub app: Option<String>,
}

impl Search {
    pub fn matches(&self, r: &FlowRecord) -> bool {
        if !self.filter.matches(r) {
            return false;
        }
        if let Some(rule) = &self.rule {
            let ok = match r.acl_rule_id.as_deref() {
                Some(id) => id == rule,
                None => rule == "default",
            };
            if !ok {
                return false;
            }
        }
        if let Some(app) = &self.app {
            if !r
                .app_name
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(app))
            {
                return false;
            }
        }
        true
    }
}

/// The newest matches of page `page` (newest first) and the number of matches.
pub fn search(
    files: &[std::path::PathBuf],
    s: &Search,
    page: usize,
) -> Result<(Vec<FlowRecord>, u64), String> {
    let keep = (page.min(MAX_PAGES) + 1) * PAGE;
    let mut last: VecDeque<FlowRecord> = VecDeque::with_capacity(keep.min(1024));
    let mut total = 0u64;
    for_each_record(files, |r| {
        if s.matches(&r) {
            total += 1;
            if last.len() == keep {
                last.pop_front();
            }
            last.push_back(r);
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let skip = page.min(MAX_PAGES) * PAGE;
    Ok((
        last.into_iter().rev().skip(skip).take(PAGE).collect(),
        total,
    ))
}

fn endpoint(ip: &str, port: Option<u16>) -> String {
    match port {
        None => cell(ip),
        Some(p) if ip.contains(':') => format!("[{}]:{p}", cell(ip)),
        Some(p) => format!("{}:{p}", cell(ip)),
    }
}

fn opt(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| "-".into(), cell)
}

fn text_input(name: &str, label: &str, value: &str, placeholder: &str) -> String {
    format!(
        r#"<label>{label} <input type="text" name="{name}" id="q-{name}" value="{}" placeholder="{placeholder}" maxlength="300"></label> "#,
        esc(value)
    )
}

pub fn page(c: &Console, req: &Request, ctx: &Ctx, now: Timestamp) -> Response {
    let (range, range_err) = Range::from_request(req, now);
    let mut m = String::with_capacity(96 * 1024);
    let mut errors: Vec<String> = range_err.into_iter().collect();
    let p = |k: &str| {
        req.param(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let (src, dst, domain, action, rule, app) = (
        p("src"),
        p("dst"),
        p("domain"),
        p("action"),
        p("rule"),
        p("app"),
    );
    let page_no = p("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_PAGES);
    let mut s = Search {
        filter: range.filter(),
        rule: rule.clone(),
        app: app.clone(),
    };
    if let Some(v) = &src {
        match parse_net(v) {
            Ok(n) => s.filter.src = Some(n),
            Err(e) => errors.push(format!("source: {e}")),
        }
    }
    if let Some(v) = &dst {
        match parse_net(v) {
            Ok(n) => s.filter.dst = Some(n),
            Err(e) => errors.push(format!("destination: {e}")),
        }
    }
    if let Some(v) = &domain {
        match DomainQuery::parse(v) {
            Ok(q) => s.filter.domain = Some(q),
            Err(e) => errors.push(format!("domain: {e}")),
        }
    }
    match action.as_deref() {
        None => {}
        Some(a @ ("accept" | "drop")) => s.filter.action = Some(a.to_string()),
        Some(o) => errors.push(format!("action `{o}`: accept or drop")),
    }
    let val = |v: &Option<String>| v.clone().unwrap_or_default();
    m.push_str(r#"<form method="get" action="/ui/logs" class="filters search">"#);
    m.push_str(&text_input(
        "src",
        "Source",
        &val(&src),
        "10.0.1.10 or 10.0.1.0/24",
    ));
    m.push_str(&text_input("dst", "Destination", &val(&dst), "IP or CIDR"));
    m.push_str(&text_input(
        "domain",
        "Domain",
        &val(&domain),
        "api.example.com or *.example.com",
    ));
    let _ = write!(
        m,
        r#"<label>Action <select name="action" id="q-action"><option value="">any</option><option value="accept"{}>accept</option><option value="drop"{}>drop</option></select></label> "#,
        if action.as_deref() == Some("accept") {
            " selected"
        } else {
            ""
        },
        if action.as_deref() == Some("drop") {
            " selected"
        } else {
            ""
        },
    );
    m.push_str(&text_input(
        "rule",
        "Rule",
        &val(&rule),
        "rule name or default",
    ));
    m.push_str(&text_input(
        "app",
        "Application",
        &val(&app),
        "HTTPS, DNS, ...",
    ));
    m.push_str(&range.form_fields());
    m.push_str(r#"<button type="submit" id="search">Search</button></form>"#);
    if !errors.is_empty() {
        for e in &errors {
            m.push_str(&notice(e));
        }
        return html_page(400, "Log audit", "logs", ctx, &m);
    }
    let file = match c.flow_log() {
        Ok(f) => f,
        Err(e) => {
            m.push_str(&notice(&e));
            return html_page(200, "Log audit", "logs", ctx, &m);
        }
    };
    let (recs, total) = match search(&[file], &s, page_no) {
        Ok(x) => x,
        Err(e) => {
            m.push_str(&notice(&format!("flow log: {e}")));
            return html_page(200, "Log audit", "logs", ctx, &m);
        }
    };
    let first = page_no * PAGE;
    let _ = write!(
        m,
        r#"<p id="matches" data-total="{total}">{} matching records, newest first{}.</p>"#,
        num(total),
        if recs.is_empty() {
            String::new()
        } else {
            format!("; showing {} to {}", first + 1, first + recs.len())
        }
    );
    if !recs.is_empty() {
        m.push_str(r#"<table id="records"><thead><tr><th>Start / end (UTC)</th><th>Source</th><th>Destination</th><th>Proto</th><th>App</th><th>Domain (source)</th><th>Action</th><th>Rule</th><th>Reason</th><th>Bytes out / in</th><th>End</th></tr></thead><tbody>"#);
        for r in &recs {
            let _ = write!(
                m,
                r#"<tr class="record {action}" data-src="{}" data-src-port="{}" data-dst-port="{}"><td>{}<br>{}</td><td class="src">{}</td><td class="dst">{}</td><td>{}</td><td>{}</td><td class="domain">{} <span class="dsrc">({})</span></td><td>{action}</td><td>{}</td><td class="reason">{}</td><td>{} / {}</td><td>{}</td></tr>"#,
                cell(&r.src_ip),
                r.src_port.map_or_else(String::new, |p| p.to_string()),
                r.dst_port.map_or_else(String::new, |p| p.to_string()),
                cell(&r.start_time),
                cell(&r.end_time),
                endpoint(&r.src_ip, r.src_port),
                endpoint(&r.dst_ip, r.dst_port),
                cell(&r.ip_protocol),
                opt(&r.app_name),
                opt(&r.domain),
                opt(&r.domain_source),
                r.acl_rule_id
                    .as_deref()
                    .map_or_else(|| "default".into(), cell),
                cell(&r.reason),
                human_bytes(r.out_packet_bytes),
                human_bytes(r.in_packet_bytes),
                cell(&r.end_reason),
                action = cell(&r.action),
            );
        }
        m.push_str("</tbody></table>");
    }
    // Pagination links keep the search.
    let mut pairs: Vec<(&str, String)> = range.pairs();
    for (k, v) in [
        ("src", &src),
        ("dst", &dst),
        ("domain", &domain),
        ("action", &action),
        ("rule", &rule),
        ("app", &app),
    ] {
        if let Some(v) = v {
            pairs.push((k, v.clone()));
        }
    }
    let link = |p: usize| {
        let mut q: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let ps = p.to_string();
        q.push(("page", &ps));
        esc(&qs(&q))
    };
    m.push_str(r#"<nav class="pages">"#);
    if page_no > 0 {
        let _ = write!(
            m,
            r#"<a id="newer" href="/ui/logs?{}">← newer</a> "#,
            link(page_no - 1)
        );
    }
    if ((page_no + 1) * PAGE) < total as usize && page_no < MAX_PAGES {
        let _ = write!(
            m,
            r#"<a id="older" href="/ui/logs?{}">older →</a>"#,
            link(page_no + 1)
        );
    }
    m.push_str("</nav>");
    html_page(200, "Log audit", "logs", ctx, &m)
}
