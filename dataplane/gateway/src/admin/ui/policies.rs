//! `/ui/policies`: the ordered rules with hits, bytes and last hit; the firewall switch and
//! the bypass list. Changes go through the admin API's own routes (`POST /v1/firewall`,
//! `POST|DELETE /v1/bypass` via [`Control::route`](crate::admin::Control::route)), so the
//! console refuses what the API refuses (e.g. opening everything without `allow_open`).

use std::fmt::Write as _;

use serde_json::json;

use super::{cell, esc, form, num, page as html_page, Console, Ctx};
use crate::admin::http::{Request, Response};
use crate::metrics::{rule_stats, DEFAULT_RULE};

/// Rules listed.
pub const MAX_RULES: usize = 2_000;

pub fn page(c: &Console, ctx: &Ctx) -> Response {
    let p = c.control.policy.load();
    let stats = rule_stats(&p);
    let cfg = c.control.running();
    let mut m = String::with_capacity(32 * 1024);
    let on = p.enabled();
    let _ = write!(
        m,
        r#"<section class="state"><h2>Firewall</h2><p id="firewall-state" data-enabled="{on}">The firewall is {}.</p>"#,
        if on {
            "<strong class=\"on\">on</strong>: new flows are decided by the rules below"
        } else {
            "<strong class=\"off\">off</strong>: new flows are only SNATed, nothing is inspected or dropped"
        }
    );
    if on {
        let _ = write!(
            m,
            r#"<form method="post" action="/ui/firewall" id="firewall-form">{}<input type="hidden" name="enabled" value="false"><label><input type="checkbox" name="allow_open" value="true" id="allow-open"> I understand this lets every flow through</label> <button type="submit" id="firewall-off" class="danger">Switch the firewall off</button></form>"#,
            ctx.csrf_field()
        );
    } else {
        let _ = write!(
            m,
            r#"<form method="post" action="/ui/firewall" id="firewall-form">{}<input type="hidden" name="enabled" value="true"><button type="submit" id="firewall-on">Switch the firewall on</button></form>"#,
            ctx.csrf_field()
        );
    }
    m.push_str("</section>");

    let _ = write!(
        m,
        r#"<h2>Rules</h2><p>Mode {} · evaluated top to bottom, the first match decides.</p><table id="rules"><thead><tr><th>#</th><th>Name</th><th>Description</th><th>Enabled</th><th>Action</th><th>Hits</th><th>Bytes</th><th>Last hit (UTC)</th></tr></thead><tbody>"#,
        esc(&format!("{:?}", p.mode()).to_lowercase())
    );
    for (i, r) in p.rules().iter().take(MAX_RULES).enumerate() {
        let s = stats.get(&r.name).cloned().unwrap_or_default();
        let _ = write!(
            m,
            r#"<tr class="rule" data-name="{name}"><td>{}</td><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td class="hits">{}</td><td data-bytes="{}">{}</td><td>{}</td></tr>"#,
            i + 1,
            cell(&r.description),
            if r.enabled { "yes" } else { "no" },
            esc(&format!("{:?}", r.action).to_lowercase()),
            num(s.hits),
            s.bytes,
            natfw_flowlog::views::human_bytes(s.bytes),
            s.last_hit.as_deref().map_or_else(|| "never".into(), cell),
            name = cell(&r.name),
        );
    }
    let d = stats.get(DEFAULT_RULE).cloned().unwrap_or_default();
    let _ = write!(
        m,
        r#"<tr class="rule default"><td></td><td>default</td><td>no rule matched</td><td>yes</td><td>{}</td><td class="hits">{}</td><td data-bytes="{}">{}</td><td>{}</td></tr></tbody></table>"#,
        esc(&format!("{:?}", p.default_action()).to_lowercase()),
        num(d.hits),
        d.bytes,
        natfw_flowlog::views::human_bytes(d.bytes),
        d.last_hit.as_deref().map_or_else(|| "never".into(), cell),
    );

    let list: Vec<String> = c
        .control
        .bypass_now
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .unwrap_or_else(|| cfg.gateway.bypass.iter().map(|n| n.to_string()).collect());
    m.push_str(r#"<h2>Bypass</h2><p>Sources whose flows go around the firewall (SNAT by the kernel, no inspection, no records).</p><ul id="bypass">"#);
    if list.is_empty() {
        m.push_str(r#"<li class="empty">none</li>"#);
    }
    for n in &list {
        let _ = write!(
            m,
            r#"<li class="bypass" data-net="{n}">{n} <form method="post" action="/ui/bypass" class="inline">{}<input type="hidden" name="op" value="remove"><input type="hidden" name="source" value="{n}"><button type="submit" class="remove">Remove</button></form></li>"#,
            ctx.csrf_field(),
            n = cell(n),
        );
    }
    let _ = write!(
        m,
        r#"</ul><form method="post" action="/ui/bypass" id="bypass-add">{}<input type="hidden" name="op" value="add"><label>Source <input type="text" name="source" id="bypass-source" placeholder="10.0.2.15 or 10.0.2.0/24" maxlength="64" required></label> <label><input type="checkbox" name="allow_open" value="true"> even if it covers every SNAT source</label> <button type="submit" id="bypass-add-button">Add to bypass</button></form>"#,
        ctx.csrf_field()
    );
    html_page(200, "Policies", "policies", ctx, &m)
}

/// The API's answer as (status, message).
fn outcome(r: &Response, ok: impl FnOnce(&serde_json::Value) -> String) -> (u16, String) {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    if r.status == 200 {
        (200, ok(&v))
    } else {
        let e = v
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("the change failed");
        (r.status, format!("refused: {e}"))
    }
}

/// `POST /ui/firewall` (`enabled`, `allow_open`) → `POST /v1/firewall`.
pub fn firewall(c: &Console, req: &Request) -> (u16, String) {
    let f = form(&req.body);
    let Some(on) = f.get("enabled").and_then(|v| v.parse::<bool>().ok()) else {
        return (400, "expected enabled=true or enabled=false".into());
    };
    let allow = f.get("allow_open").is_some_and(|v| v == "true");
    let api = Request {
        method: "POST".into(),
        path: "/v1/firewall".into(),
        body: json!({"enabled": on, "allow_open": allow})
            .to_string()
            .into_bytes(),
        ..Request::default()
    };
    let r = c.control.route(&api);
    outcome(&r, |_| {
        if on {
            "the firewall is on".into()
        } else {
            "the firewall is off: new flows are only SNATed".into()
        }
    })
}

/// `POST /ui/bypass` (`op` = add|remove, `source`, `allow_open`) → `POST|DELETE /v1/bypass`.
pub fn bypass(c: &Console, req: &Request) -> (u16, String) {
    let f = form(&req.body);
    let method = match f.get("op").map(String::as_str) {
        Some("add") => "POST",
        Some("remove") => "DELETE",
        _ => return (400, "expected op=add or op=remove".into()),
    };
    let Some(source) = f.get("source").map(|s| s.trim().to_string()) else {
        return (400, "expected a source".into());
    };
    let allow = f.get("allow_open").is_some_and(|v| v == "true");
    let api = Request {
        method: method.into(),
        path: "/v1/bypass".into(),
        body: json!({"source": source, "allow_open": allow})
            .to_string()
            .into_bytes(),
        ..Request::default()
    };
    let r = c.control.route(&api);
    outcome(&r, |v| {
        let list: Vec<&str> = v
            .get("bypass")
            .and_then(|b| b.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        format!(
            "bypass {} {}; the list is now: {}",
            if method == "POST" { "added" } else { "removed" },
            source,
            if list.is_empty() {
                "empty".to_string()
            } else {
                list.join(", ")
            }
        )
    })
}
