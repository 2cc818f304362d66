//! docs/admin-api.openapi.json against what the listeners serve: every routed method and path
//! is documented and every documented one is routed; every status code the admin code can
//! answer is documented; and real requests against real loopback listeners — valid ones, bad
//! parameters, no token, other methods, other paths — get only documented answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use natfw_engine::engine::{Engine, GeoDb};
use natfw_gateway::admin::http::{call, Server};
use natfw_gateway::admin::{api_handler, metrics_handler, Control, Token};

const TOKEN: &str = "openapi-test-token";
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "PATCH"];

fn doc() -> serde_json::Value {
    let text = include_str!("../../../../docs/admin-api.openapi.json");
    serde_json::from_str(text).expect("the OpenAPI document is JSON")
}

/// (METHOD, path) -> documented status codes.
fn documented(doc: &serde_json::Value) -> BTreeMap<(String, String), BTreeSet<u16>> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            let codes = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path}: no responses"))
                .keys()
                .map(|k| k.parse().expect("numeric status"))
                .collect();
            out.insert((method.to_uppercase(), path.clone()), codes);
        }
    }
    out
}

/// Every `("METHOD", "/path")` arm in the admin module's routers (the API's and the
/// console's).
fn routed() -> BTreeSet<(String, String)> {
    let src = concat!(
        include_str!("../../src/admin/mod.rs"),
        include_str!("../../src/admin/ui/mod.rs")
    );
    let mut out = BTreeSet::new();
    for m in METHODS {
        let pat = format!("(\"{m}\", \"/");
        let mut rest = src;
        while let Some(i) = rest.find(&pat) {
            let tail = &rest[i + pat.len() - 1..];
            let end = tail.find('"').unwrap();
            out.insert((m.to_string(), tail[..end].to_string()));
            rest = &tail[end..];
        }
    }
    out
}

/// Status literals the admin code can answer with.
fn answered_codes() -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for src in [
        include_str!("../../src/admin/mod.rs"),
        include_str!("../../src/admin/http.rs"),
        include_str!("../../src/admin/ui/mod.rs"),
        include_str!("../../src/admin/ui/overview.rs"),
        include_str!("../../src/admin/ui/connections.rs"),
        include_str!("../../src/admin/ui/audit.rs"),
        include_str!("../../src/admin/ui/policies.rs"),
    ] {
        for pat in ["Response::json(", "Response::text(", "status: "] {
            for (i, _) in src.match_indices(pat) {
                let digits: String = src[i + pat.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if digits.len() == 3 {
                    out.insert(digits.parse().unwrap());
                }
            }
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_documented_route_is_served() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    let ops: BTreeSet<_> = documented(&doc).into_keys().collect();
    assert_eq!(routed(), ops);
    // Every status code in the code is in the document (per operation, or the 404/405/400/413
    // every listener gives, described in info.description).
    let mut in_doc: BTreeSet<u16> = documented(&doc).into_values().flatten().collect();
    let general = doc["info"]["description"].as_str().unwrap();
    for c in [400, 404, 405, 413] {
        assert!(
            general.contains(&format!(" {c}")),
            "{c} in info.description"
        );
        in_doc.insert(c);
    }
    let missing: Vec<_> = answered_codes().difference(&in_doc).copied().collect();
    assert!(
        missing.is_empty(),
        "status codes not documented: {missing:?}"
    );
}

fn config(flow_log: &std::path::Path) -> String {
    format!(
        "gateway:
  name: gw-openapi
  inside: in0
  outside: out0
  eips: [192.0.2.1]
  snat:
    - {{name: all, source: 10.0.0.0/8}}
firewall:
  default_action: accept
  rules:
    - {{name: r1, destination: {{domain: blocked.example}}, action: drop}}
logging: {{flow_log: {}}}
",
        flow_log.display()
    )
}

#[test]
fn real_requests_get_only_documented_answers() {
    let dir = tempfile::tempdir().unwrap();
    let flow_log = dir.path().join("flows.jsonl");
    std::fs::write(&flow_log, "").unwrap();
    let text = config(&flow_log);
    let (cfg, _) = natfw_gateway::admin::load("natfw.yaml", &text).expect("config");
    let engine = Engine::new(
        &cfg,
        GeoDb::embedded(),
        Box::new(natfw_engine::engine::NullSink),
    )
    .expect("engine");
    let control = Arc::new(Control::new(
        cfg,
        "natfw.yaml".into(),
        engine.policy_handle(),
    ));
    let any = "127.0.0.1:0".parse().unwrap();
    let api = Server::start(
        any,
        None,
        api_handler(Arc::clone(&control), Token::new(TOKEN)),
    )
    .unwrap();
    let metrics = Server::start(any, None, metrics_handler(Arc::clone(&control))).unwrap();
    let api_url = format!("http://{}", api.addr);
    let metrics_url = format!("http://{}", metrics.addr);

    let doc = documented(&doc());
    let mut exercised = BTreeSet::new();
    let mut check = |method: &str, target: &str, token: Option<&str>, body: Option<&[u8]>| -> u16 {
        let path = target.split('?').next().unwrap();
        let url = if path == "/metrics" {
            &metrics_url
        } else {
            &api_url
        };
        let (status, _) = call(url, method, target, token, body, None).expect("request");
        let key = (method.to_string(), path.to_string());
        match doc.get(&key) {
            Some(codes) => {
                assert!(
                    codes.contains(&status),
                    "{method} {target}: {status} not documented ({codes:?})"
                );
                exercised.insert(key);
            }
            None if doc.keys().any(|(_, p)| p == path) => {
                let want = if path == "/metrics" { 404 } else { 405 };
                assert_eq!(
                    status, want,
                    "{method} {target}: undocumented method is not served"
                );
            }
            None => assert_eq!(
                status, 404,
                "{method} {target}: undocumented path is not served"
            ),
        }
        status
    };
    let t = Some(TOKEN);
    assert_eq!(check("GET", "/v1/status", t, None), 200);
    assert_eq!(check("GET", "/v1/status", None, None), 401);
    assert_eq!(check("GET", "/v1/policy", t, None), 200);
    assert_eq!(check("PUT", "/v1/policy", t, Some(text.as_bytes())), 200);
    assert_eq!(check("PUT", "/v1/policy", t, Some(b"firewall: [")), 400);
    assert_eq!(
        check("POST", "/v1/firewall", t, Some(b"{\"enabled\": true}")),
        200
    );
    assert_eq!(check("POST", "/v1/firewall", t, Some(b"{}")), 400);
    assert_eq!(check("GET", "/v1/top?by=flows&limit=5", t, None), 200);
    assert_eq!(check("GET", "/v1/top?by=size", t, None), 400);
    assert_eq!(check("GET", "/v1/trend?interval=5m", t, None), 200);
    assert_eq!(check("GET", "/v1/trend?interval=5x", t, None), 400);
    assert_eq!(
        check(
            "GET",
            "/v1/logs?src=10.0.0.0%2F8&domain=%2A.example.com",
            t,
            None
        ),
        200
    );
    assert_eq!(check("GET", "/v1/logs?src=10.0.0.0%2F99", t, None), 400);
    // No `natfw run` data path behind this control: bypass changes cannot be applied.
    assert_eq!(
        check("POST", "/v1/bypass", t, Some(b"{\"source\": \"10.0.1.5\"}")),
        503
    );
    assert_eq!(check("DELETE", "/v1/bypass", t, Some(b"{}")), 400);
    assert_eq!(check("GET", "/metrics", None, None), 200);
    // Nothing published yet: starting (what keepalived must not take for healthy).
    assert_eq!(check("GET", "/healthz", t, None), 503);
    // The console, with the bearer token (the browser's cookie walk is the lab's console test).
    assert_eq!(check("GET", "/ui", t, None), 303);
    assert_eq!(check("GET", "/ui/login", None, None), 200);
    assert_eq!(check("POST", "/ui/login", None, Some(b"token=wrong")), 401);
    let login = format!("token={TOKEN}");
    assert_eq!(
        check("POST", "/ui/login", None, Some(login.as_bytes())),
        303
    );
    assert_eq!(check("GET", "/ui/static/console.css", None, None), 200);
    for p in [
        "/ui/overview",
        "/ui/connections?by=flows&range=24h",
        "/ui/policies",
    ] {
        assert_eq!(check("GET", p, t, None), 200, "{p}");
        assert_eq!(check("GET", p, Some("wrong"), None), 401, "{p}");
    }
    assert_eq!(check("GET", "/ui/overview", None, None), 303);
    assert_eq!(
        check("GET", "/ui/logs?src=10.0.0.0%2F8&action=drop", t, None),
        200
    );
    assert_eq!(check("GET", "/ui/logs?src=nope", t, None), 400);
    assert_eq!(check("POST", "/ui/firewall", t, Some(b"enabled=true")), 200);
    assert_eq!(
        check("POST", "/ui/firewall", t, Some(b"enabled=false")),
        400
    );
    assert_eq!(
        check("POST", "/ui/firewall", None, Some(b"enabled=true")),
        401
    );
    assert_eq!(
        check("POST", "/ui/bypass", t, Some(b"op=add&source=10.0.1.5")),
        503
    );
    assert_eq!(check("POST", "/ui/logout", t, None), 303);
    // Nothing else is served.
    for m in METHODS {
        for p in [
            "/v1/status",
            "/v1/policy",
            "/v1/firewall",
            "/v1/top",
            "/v1/bypass",
            "/metrics",
            "/v1",
            "/",
            "/v2/status",
            "/v1/status/x",
        ] {
            check(m, p, t, Some(b"{}"));
        }
    }
    let all: BTreeSet<_> = doc.keys().cloned().collect();
    assert_eq!(exercised, all, "every documented operation was requested");
    api.stop();
    metrics.stop();
    drop(engine);
}
