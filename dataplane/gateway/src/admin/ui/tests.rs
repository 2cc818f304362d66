//! The console's pure logic: escaping, cookies, origins, CSRF, ranges, sessions.

use super::*;

fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
        query: String::new(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn escaping_covers_markup_quotes_and_controls() {
    assert_eq!(
        esc(r#"<script>alert("x")</script>&'"#),
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
    );
    assert_eq!(esc("a\u{0}b\u{1b}c\nd"), "abcd");
    let long = "x".repeat(MAX_CELL + 10);
    let c = cell(&long);
    assert_eq!(c.chars().count(), MAX_CELL + 1, "cut and an ellipsis");
    // The cut happens before escaping, so an entity is never split.
    let amp = "&".repeat(MAX_CELL + 1);
    assert!(cell(&amp).ends_with("&amp;…"));
}

#[test]
fn cookie_header_parsing() {
    let h = "a=1; natfw_session=abc123 ; b=2";
    assert_eq!(cookie_value(h, COOKIE), Some("abc123"));
    assert_eq!(cookie_value("natfw_session_x=1", COOKIE), None);
    assert_eq!(cookie_value("", COOKIE), None);
}

#[test]
fn origin_must_name_the_host() {
    let ok = req(
        "POST",
        "/ui/firewall",
        &[
            ("host", "10.0.0.1:9443"),
            ("origin", "https://10.0.0.1:9443"),
        ],
        "",
    );
    assert!(same_origin(&ok));
    let referer = req(
        "POST",
        "/ui/firewall",
        &[
            ("host", "gw:9443"),
            ("referer", "https://gw:9443/ui/policies?x=1"),
        ],
        "",
    );
    assert!(same_origin(&referer));
    for (h, o) in [
        ("gw:9443", "https://evil.example"),
        ("gw:9443", "https://gw:9444"),
        ("gw:9443", "https://gw:9443.evil.example"),
        ("gw:9443", "null"),
    ] {
        let r = req("POST", "/", &[("host", h), ("origin", o)], "");
        assert!(!same_origin(&r), "{o} for {h}");
    }
    assert!(
        !same_origin(&req("POST", "/", &[("host", "gw")], "")),
        "no origin"
    );
    assert!(!same_origin(&req(
        "POST",
        "/",
        &[("origin", "https://gw")],
        ""
    )));
}

#[test]
fn csrf_needs_the_token_and_the_origin_with_a_session_only() {
    let auth = Auth::Session {
        key: "k".into(),
        csrf: "c".repeat(64),
    };
    let good = format!("csrf={}&enabled=false", "c".repeat(64));
    let origin = [("host", "gw:9443"), ("origin", "https://gw:9443")];
    assert!(check_post(&req("POST", "/ui/firewall", &origin, &good), &auth).is_ok());
    // Header instead of the field.
    let hdr = [
        ("host", "gw:9443"),
        ("origin", "https://gw:9443"),
        ("x-csrf-token", &*"c".repeat(64)),
    ];
    assert!(check_post(&req("POST", "/ui/firewall", &hdr, "enabled=true"), &auth).is_ok());
    for body in [
        "enabled=false".to_string(),
        format!("csrf={}&enabled=false", "d".repeat(64)),
        format!("csrf={}", "c".repeat(63)),
        "csrf=".to_string(),
    ] {
        let r = check_post(&req("POST", "/ui/firewall", &origin, &body), &auth);
        assert_eq!(r.map_err(|r| r.status), Err(403), "{body}");
    }
    let cross = [("host", "gw:9443"), ("origin", "https://evil.example")];
    let r = check_post(&req("POST", "/ui/firewall", &cross, &good), &auth);
    assert_eq!(
        r.map_err(|r| r.status),
        Err(403),
        "right token, wrong origin"
    );
    // The bearer token is no ambient credential: no CSRF token needed.
    assert!(check_post(
        &req("POST", "/ui/firewall", &[], "enabled=true"),
        &Auth::Bearer
    )
    .is_ok());
}

#[test]
fn security_headers_on_every_answer() {
    let r = secure(Response::text(200, "x"));
    let h = |k: &str| {
        r.headers
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
    };
    let csp = h("Content-Security-Policy").unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline") && !csp.contains("script-src"));
    assert_eq!(h("X-Frame-Options").as_deref(), Some("DENY"));
    assert_eq!(h("Cache-Control").as_deref(), Some("no-store"));
    assert_eq!(h("Referrer-Policy").as_deref(), Some("same-origin"));
}

#[test]
fn ranges_and_their_intervals() {
    let now = Timestamp::from_secs(1_800_000_000);
    let mut r = req("GET", "/ui/overview", &[], "");
    let (range, err) = Range::from_request(&r, now);
    assert_eq!((range.key.as_str(), err), ("1h", None));
    assert_eq!(range.until.since(range.since).as_secs(), 3600);
    assert_eq!(range.interval().as_secs(), 60);
    r.query = "range=24h".into();
    assert_eq!(Range::from_request(&r, now).0.interval().as_secs(), 900);
    r.query = "range=7d".into();
    assert_eq!(Range::from_request(&r, now).0.interval().as_secs(), 3600);
    r.query = "range=custom&from=2026-12-01T10%3A00&to=2026-12-01T10%3A30".into();
    let (c, err) = Range::from_request(&r, now);
    assert_eq!(err, None);
    assert_eq!(c.key, "custom");
    assert_eq!(c.until.since(c.since).as_secs(), 1800);
    assert_eq!(c.interval().as_secs(), 60);
    r.query = "range=custom&from=2025-01-01T00%3A00&to=2026-01-01T00%3A00".into();
    let (c, _) = Range::from_request(&r, now);
    assert_eq!(c.interval().as_secs(), 86_400, "a year: daily points");
    for bad in [
        "range=custom&from=2026-12-01T10%3A30&to=2026-12-01T10%3A00",
        "range=custom&from=yesterday",
        "range=custom&from=2000-01-01T00%3A00&to=2026-01-01T00%3A00",
        "range=1y",
    ] {
        r.query = bad.into();
        let (c, err) = Range::from_request(&r, now);
        assert_eq!(c.key, "1h", "{bad}");
        assert!(err.is_some(), "{bad}");
    }
}

fn console() -> Console {
    let text = "gateway:
  name: gw-ui
  inside: in0
  outside: out0
  eips: [192.0.2.1]
  snat:
    - {name: all, source: 10.0.0.0/8}
firewall:
  default_action: accept
  rules: []
";
    let (cfg, _) = crate::admin::load("natfw.yaml", text).expect("config");
    let policy = Arc::new(arc_swap::ArcSwap::from_pointee(
        natfw_policy::compile::CompiledPolicy::new(&cfg.firewall),
    ));
    let control = Arc::new(Control::new(cfg, "natfw.yaml".into(), policy));
    Console::new(control, Token::new("tok"))
}

#[test]
fn sessions_are_random_bounded_and_authenticate_by_cookie() {
    let c = console();
    let (a, csrf_a) = c.new_session().unwrap();
    let (b, _) = c.new_session().unwrap();
    assert_ne!(a, b);
    assert_eq!(a.len(), 64);
    assert_ne!(a, csrf_a);
    let with = |id: &str| {
        req(
            "GET",
            "/ui/overview",
            &[("cookie", &format!("{COOKIE}={id}"))],
            "",
        )
    };
    match c.auth(&with(&a)) {
        Auth::Session { csrf, .. } => assert_eq!(csrf, csrf_a),
        o => panic!("{o:?}"),
    }
    assert_eq!(c.auth(&with(&"0".repeat(64))), Auth::None);
    assert_eq!(c.auth(&with("")), Auth::None);
    // A wrong bearer token is not saved by a good cookie.
    let both = req(
        "GET",
        "/ui/overview",
        &[
            ("cookie", &format!("{COOKIE}={a}")),
            ("authorization", "Bearer nope"),
        ],
        "",
    );
    assert_eq!(c.auth(&both), Auth::None);
    let bearer = req(
        "GET",
        "/ui/overview",
        &[("authorization", "Bearer tok")],
        "",
    );
    assert_eq!(c.auth(&bearer), Auth::Bearer);
    // Bounded: the oldest sessions make room.
    for _ in 0..MAX_SESSIONS + 5 {
        c.new_session().unwrap();
    }
    assert_eq!(c.sessions(), MAX_SESSIONS);
    assert_eq!(c.auth(&with(&b)), Auth::None, "evicted");
}

#[test]
fn gate_opens_only_the_login_and_the_style_sheet() {
    let c = console();
    assert!(c.gate(&req("GET", "/ui/login", &[], "")).is_none());
    assert!(c
        .gate(&req("GET", "/ui/static/console.css", &[], ""))
        .is_none());
    assert!(c
        .gate(&req("POST", "/ui/login", &[("content-length", "20")], ""))
        .is_none());
    let big = c
        .gate(&req(
            "POST",
            "/ui/login",
            &[("content-length", "100000")],
            "",
        ))
        .unwrap();
    assert_eq!(big.status, 413);
    let r = c.gate(&req("GET", "/ui/overview", &[], "")).unwrap();
    assert_eq!(r.status, 303, "a browser is sent to the login page");
    let r = c.gate(&req("POST", "/ui/firewall", &[], "")).unwrap();
    assert_eq!(r.status, 401);
    let r = c
        .gate(&req(
            "GET",
            "/ui/overview",
            &[("authorization", "Bearer x")],
            "",
        ))
        .unwrap();
    assert_eq!(
        r.status, 401,
        "a script with a wrong token gets 401, not a redirect"
    );
}

#[test]
fn login_sets_a_strict_cookie_and_a_wrong_token_does_not() {
    let c = console();
    let h = [("host", "gw:9443"), ("origin", "https://gw:9443")];
    let r = c.handle(&req("POST", "/ui/login", &h, "token=tok"));
    assert_eq!(r.status, 303);
    let cookie = r
        .headers
        .iter()
        .find(|(k, _)| *k == "Set-Cookie")
        .map(|(_, v)| v.clone())
        .unwrap();
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/ui/",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let r = c.handle(&req("POST", "/ui/login", &h, "token=toke"));
    assert_eq!(r.status, 401);
    assert!(!r.headers.iter().any(|(k, _)| *k == "Set-Cookie"));
    let cross = [("host", "gw:9443"), ("origin", "https://evil.example")];
    let r = c.handle(&req("POST", "/ui/login", &cross, "token=tok"));
    assert_eq!(r.status, 403, "login CSRF");
}
