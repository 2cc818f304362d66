//! The operator's console: server-rendered HTML pages under `/ui/` on the admin listener.
//!
//! - Authentication: `GET /ui/login` shows a form; `POST /ui/login` exchanges the admin token
//!   for a session cookie (`natfw_session`: 256 random bits, `HttpOnly; Secure;
//!   SameSite=Strict; Path=/ui/`), valid [`SESSION_TTL`] and at most [`SESSION_IDLE`] unused;
//!   the table holds at most [`MAX_SESSIONS`] (the least recently used goes first). Scripts
//!   and tests may send `Authorization: Bearer <token>` instead of the cookie.
//! - Every change is a `POST` that, with a cookie, must carry the session's CSRF token (form
//!   field `csrf` or header `X-CSRF-Token`) and an `Origin` (or `Referer`) naming this host.
//! - Every answer carries a strict Content-Security-Policy (`default-src 'none'`, the style
//!   sheet from the binary only, no script), `frame-ancestors 'none'`, `X-Frame-Options: DENY`
//!   and `Cache-Control: no-store`. Charts are inline SVG rendered here; nothing is loaded
//!   from outside the binary.
//! - Everything from a record or a request is HTML-escaped ([`esc`]); pages are bounded
//!   (rows per page, sources listed, characters per cell).
//!
//! One file per page group: [`overview`], [`connections`], [`audit`], [`policies`].

pub mod audit;
pub mod connections;
pub mod overview;
pub mod policies;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use natfw_engine::time::Timestamp;
use ring::rand::SecureRandom;

use super::http::{Request, Response};
use super::{Control, Token};

/// Sessions kept at once; a new login beyond it ends the least recently used one.
pub const MAX_SESSIONS: usize = 64;
/// A session's lifetime from login.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// A session unused this long is over.
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// The session cookie's name.
pub const COOKIE: &str = "natfw_session";
/// Largest body `POST /ui/login` (unauthenticated) may send.
pub const LOGIN_MAX_BODY: usize = 4096;
/// Characters of one record field shown in a table cell.
pub const MAX_CELL: usize = 256;

/// The Content-Security-Policy of every console answer.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("console.css");

/// Is `path` the console's?
pub fn is_ui(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

#[derive(Debug)]
struct Session {
    csrf: String,
    created: Instant,
    last_used: Instant,
    /// One message for the next page (after a POST's redirect).
    flash: Option<String>,
}

/// How a request authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer` with the admin token.
    Bearer,
    /// A live session: its table key and CSRF token.
    Session { key: String, csrf: String },
    /// Neither.
    None,
}

/// The console: the pages and the session table.
pub struct Console {
    control: Arc<Control>,
    token: Token,
    sessions: Mutex<HashMap<String, Session>>,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// Lower-case hex.
fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// Constant-time equality of two strings (length is not secret: both are fixed-size tokens).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The session table's key for a cookie value: its SHA-256, so neither a lookup's timing nor
/// a dump of the table gives the cookie away.
fn session_key(cookie: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, cookie.as_bytes()).as_ref())
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v.trim())
    })
}

/// Does the request's `Origin` (else `Referer`) name the host it was sent to? Requests with
/// neither fail.
pub fn same_origin(req: &Request) -> bool {
    let Some(host) = req.header("host") else {
        return false;
    };
    let src = req.header("origin").or_else(|| req.header("referer"));
    let Some(src) = src else {
        return false;
    };
    let rest = src
        .strip_prefix("https://")
        .or_else(|| src.strip_prefix("http://"));
    let Some(rest) = rest else {
        return false; // "null" and anything else
    };
    let authority = rest.split('/').next().unwrap_or_default();
    authority.eq_ignore_ascii_case(host.trim())
}

/// HTML-escapes `s` for a text node or a quoted attribute; control characters are dropped.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() => {}
            c => o.push(c),
        }
    }
    o
}

/// [`esc`] of at most [`MAX_CELL`] characters of `s` (an ellipsis marks the cut).
pub fn cell(s: &str) -> String {
    if s.chars().count() <= MAX_CELL {
        esc(s)
    } else {
        let cut: String = s.chars().take(MAX_CELL).collect();
        format!("{}…", esc(&cut))
    }
}

/// `key=value&...`, form-encoded.
pub fn qs(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Parameters of a form-encoded body.
pub fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body)
        .take(64)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The time range a page covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// `1h`, `24h`, `7d` or `custom`.
    pub key: String,
    pub since: Timestamp,
    pub until: Timestamp,
    /// The custom range as typed (for the form).
    pub from: String,
    pub to: String,
}

/// Longest custom range.
pub const MAX_RANGE: Duration = Duration::from_secs(400 * 86_400);

impl Range {
    /// From `range` (default `1h`) and, for `custom`, `from`/`to` (RFC 3339 or the browser's
    /// `2026-12-01T12:00`, UTC). A bad custom range falls back to the last hour with a message.
    pub fn from_request(req: &Request, now: Timestamp) -> (Range, Option<String>) {
        let last = |key: &str, secs: u64| Range {
            key: key.into(),
            since: Timestamp(now.as_nanos().saturating_sub(secs * 1_000_000_000)),
            until: now,
            from: String::new(),
            to: String::new(),
        };
        match req.param("range").as_deref() {
            None | Some("1h") => (last("1h", 3600), None),
            Some("24h") => (last("24h", 86_400), None),
            Some("7d") => (last("7d", 7 * 86_400), None),
            Some("custom") => {
                let from = req.param("from").unwrap_or_default();
                let to = req.param("to").unwrap_or_default();
                let f = natfw_flowlog::parse_rfc3339(&from);
                let t = if to.trim().is_empty() {
                    Some(now)
                } else {
                    natfw_flowlog::parse_rfc3339(&to)
                };
                match (f, t) {
                    (Some(f), Some(t))
                        if f < t && t.since(f) <= MAX_RANGE =>
                    {
                        (
                            Range {
                                key: "custom".into(),
                                since: f,
                                until: t,
                                from,
                                to,
                            },
                            None,
                        )
                    }
                    _ => (
                        last("1h", 3600),
                        Some(format!(
                            "custom range `{from}` .. `{to}`: want two times (UTC), the first earlier, at most 400 days apart; showing the last hour"
                        )),
                    ),
                }
            }
            Some(o) => (
                last("1h", 3600),
                Some(format!("range `{o}`: want 1h, 24h, 7d or custom")),
            ),
        }
    }

    /// The chart's interval: 1 min for an hour, 15 min for a day, 1 h for a week; for a custom
    /// range the finest of the overview's intervals that needs at most 400 points.
    pub fn interval(&self) -> Duration {
        match self.key.as_str() {
            "1h" => Duration::from_secs(60),
            "24h" => Duration::from_secs(15 * 60),
            "7d" => Duration::from_secs(3600),
            _ => {
                let span = self.until.since(self.since);
                natfw_flowlog::views::overview::AUTO_INTERVALS
                    .iter()
                    .copied()
                    .find(|iv| span.as_secs() / iv.as_secs().max(1) <= 400)
                    .unwrap_or(Duration::from_secs(7 * 86_400))
            }
        }
    }

    /// The query pairs that select this range (for links).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![("range", self.key.clone())];
        if self.key == "custom" {
            v.push(("from", self.from.clone()));
            v.push(("to", self.to.clone()));
        }
        v
    }

    /// Records of flows active in the range.
    pub fn filter(&self) -> natfw_flowlog::views::logs::LogFilter {
        natfw_flowlog::views::logs::LogFilter {
            since: Some(self.since),
            until: Some(self.until),
            ..Default::default()
        }
    }

    /// The range's `<select>` and custom inputs (inside a GET form).
    pub fn form_fields(&self) -> String {
        let mut s = String::from(r#"<label>Range <select name="range" id="range">"#);
        for (k, label) in [
            ("1h", "last hour"),
            ("24h", "last 24 hours"),
            ("7d", "last 7 days"),
            ("custom", "custom (UTC)"),
        ] {
            let sel = if self.key == k { " selected" } else { "" };
            let _ = write!(s, r#"<option value="{k}"{sel}>{label}</option>"#);
        }
        let _ = write!(
            s,
            r#"</select></label> <label>from <input type="datetime-local" name="from" value="{}"></label> <label>to <input type="datetime-local" name="to" value="{}"></label>"#,
            esc(&self.from),
            esc(&self.to)
        );
        s
    }
}

/// What a page needs from the request's authentication.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The session's CSRF token (None with a bearer token: no form needs one).
    pub csrf: Option<String>,
    /// A message left by the last change.
    pub flash: Option<String>,
}

impl Ctx {
    /// The hidden CSRF field of a POST form.
    pub fn csrf_field(&self) -> String {
        match &self.csrf {
            Some(t) => format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(t)),
            None => String::new(),
        }
    }
}

/// Adds the security headers every console answer carries.
pub fn secure(mut r: Response) -> Response {
    r.headers.push(("Content-Security-Policy", CSP.into()));
    r.headers.push(("X-Frame-Options", "DENY".into()));
    r.headers.push(("X-Content-Type-Options", "nosniff".into()));
    // Same-origin keeps the Origin header on POSTs (no-referrer would send `Origin: null`).
    r.headers.push(("Referrer-Policy", "same-origin".into()));
    r.headers.push(("Cache-Control", "no-store".into()));
    r.headers
        .push(("Cross-Origin-Opener-Policy", "same-origin".into()));
    r.headers
        .push(("Cross-Origin-Resource-Policy", "same-origin".into()));
    r
}

/// A `303 See Other` to `to` (a path of ours).
pub fn redirect(to: &str) -> Response {
    let mut r = Response::text(303, format!("see {to}\n"));
    r.headers.push(("Location", to.to_string()));
    r
}

fn html(status: u16, body: String) -> Response {
    Response {
        status,
        content_type: "text/html; charset=utf-8",
        body: body.into_bytes(),
        headers: Vec::new(),
    }
}

/// A whole page: head, navigation (with `active` marked), the flash message, `main`.
pub fn page(status: u16, title: &str, active: &str, ctx: &Ctx, main: &str) -> Response {
    let mut s = String::with_capacity(main.len() + 2048);
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · natfw</title><link rel="stylesheet" href="/ui/static/console.css"></head>
<body><header><span class="brand">natfw</span><nav>"#,
        esc(title)
    );
    for (href, id, label) in [
        ("/ui/overview", "overview", "Overview"),
        ("/ui/connections", "connections", "Outbound connections"),
        ("/ui/logs", "logs", "Log audit"),
        ("/ui/policies", "policies", "Policies"),
    ] {
        let cls = if id == active {
            r#" class="active""#
        } else {
            ""
        };
        let _ = write!(s, r#"<a href="{href}" id="nav-{id}"{cls}>{label}</a>"#);
    }
    if ctx.csrf.is_some() {
        let _ = write!(
            s,
            r#"<form method="post" action="/ui/logout" class="logout">{}<button type="submit" id="logout">Log out</button></form>"#,
            ctx.csrf_field()
        );
    }
    s.push_str("</nav></header><main>");
    let _ = write!(s, "<h1>{}</h1>", esc(title));
    if let Some(m) = &ctx.flash {
        let _ = write!(s, r#"<p class="flash" id="flash">{}</p>"#, cell(m));
    }
    s.push_str(main);
    s.push_str("</main></body></html>\n");
    html(status, s)
}

/// An error notice inside a page.
pub fn notice(msg: &str) -> String {
    format!(r#"<p class="error">{}</p>"#, cell(msg))
}

impl Console {
    pub fn new(control: Arc<Control>, token: Token) -> Console {
        Console {
            control,
            token,
            sessions: Mutex::new(HashMap::new()),
            rng: ring::rand::SystemRandom::new(),
        }
    }

    fn random_hex(&self) -> Option<String> {
        let mut b = [0u8; 32];
        self.rng.fill(&mut b).ok()?;
        Some(hex(&b))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions alive now.
    pub fn sessions(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|s| alive(s, now)).count()
    }

    /// A new session: (cookie value, CSRF token). Expired sessions go first; when the table is
    /// still full, the least recently used.
    pub fn new_session(&self) -> Option<(String, String)> {
        let id = self.random_hex()?;
        let csrf = self.random_hex()?;
        let now = Instant::now();
        let mut t = self.lock();
        t.retain(|_, s| alive(s, now));
        while t.len() >= MAX_SESSIONS {
            let oldest = t
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => t.remove(&k),
                None => break,
            };
        }
        t.insert(
            session_key(&id),
            Session {
                csrf: csrf.clone(),
                created: now,
                last_used: now,
                flash: None,
            },
        );
        Some((id, csrf))
    }

    /// How `req` authenticates (a session's use is recorded).
    pub fn auth(&self, req: &Request) -> Auth {
        if req.header("authorization").is_some() {
            return if self.token.check(req.header("authorization")) {
                Auth::Bearer
            } else {
                Auth::None
            };
        }
        let Some(id) = req.header("cookie").and_then(|c| cookie_value(c, COOKIE)) else {
            return Auth::None;
        };
        let key = session_key(id);
        let now = Instant::now();
        let mut t = self.lock();
        match t.get_mut(&key) {
            Some(s) if alive(s, now) => {
                s.last_used = now;
                Auth::Session {
                    csrf: s.csrf.clone(),
                    key,
                }
            }
            Some(_) => {
                t.remove(&key);
                Auth::None
            }
            None => Auth::None,
        }
    }

    fn take_flash(&self, auth: &Auth) -> Option<String> {
        match auth {
            Auth::Session { key, .. } => self.lock().get_mut(key).and_then(|s| s.flash.take()),
            _ => None,
        }
    }

    fn set_flash(&self, auth: &Auth, msg: String) {
        if let Auth::Session { key, .. } = auth {
            if let Some(s) = self.lock().get_mut(key) {
                s.flash = Some(msg);
            }
        }
    }

    /// The head check (before the body is read): the login page, its POST (small bodies only)
    /// and the style sheet are open; everything else needs the bearer token or a session.
    pub fn gate(&self, req: &Request) -> Option<Response> {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/ui/login" | "/ui/static/console.css") => None,
            ("POST", "/ui/login") => {
                let len = req
                    .header("content-length")
                    .and_then(|l| l.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                (len > LOGIN_MAX_BODY).then(|| secure(Response::text(413, "login too large\n")))
            }
            _ => match self.auth(req) {
                Auth::None => Some(self.unauthenticated(req)),
                _ => None,
            },
        }
    }

    fn unauthenticated(&self, req: &Request) -> Response {
        if req.method == "GET" && req.header("authorization").is_none() {
            secure(redirect("/ui/login"))
        } else {
            secure(Response::text(
                401,
                "log in at /ui/login or send the bearer token\n",
            ))
        }
    }

    /// The flow log the pages read, or why there is none.
    pub fn flow_log(&self) -> Result<PathBuf, String> {
        let p = self.control.running().logging.flow_log;
        if p == "-" || p.is_empty() || p == "stdout" {
            return Err("the flow log goes to stdout: nothing to show".into());
        }
        Ok(PathBuf::from(p))
    }

    /// A console request (after the gate).
    pub fn handle(&self, req: &Request) -> Response {
        secure(self.route(req))
    }

    fn route(&self, req: &Request) -> Response {
        let ctx0 = Ctx {
            csrf: None,
            flash: None,
        };
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/ui/login") => return login_page(200, None),
            ("POST", "/ui/login") => return self.login(req),
            ("GET", "/ui/static/console.css") => {
                return Response {
                    status: 200,
                    content_type: "text/css; charset=utf-8",
                    body: CSS.as_bytes().to_vec(),
                    headers: Vec::new(),
                }
            }
            _ => {}
        }
        let auth = self.auth(req);
        if auth == Auth::None {
            return self.unauthenticated(req);
        }
        if req.method == "POST" {
            if let Err(r) = check_post(req, &auth) {
                return r;
            }
        }
        let ctx = Ctx {
            csrf: match &auth {
                Auth::Session { csrf, .. } => Some(csrf.clone()),
                _ => None,
            },
            flash: if req.method == "GET" {
                self.take_flash(&auth)
            } else {
                None
            },
        };
        let now = Timestamp::now();
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/ui" | "/ui/") => redirect("/ui/overview"),
            ("GET", "/ui/overview") => overview::page(self, req, &ctx, now),
            ("GET", "/ui/connections") => connections::page(self, req, &ctx, now),
            ("GET", "/ui/logs") => audit::page(self, req, &ctx, now),
            ("GET", "/ui/policies") => policies::page(self, &ctx),
            ("POST", "/ui/firewall") => self.after_change(&auth, policies::firewall(self, req)),
            ("POST", "/ui/bypass") => self.after_change(&auth, policies::bypass(self, req)),
            ("POST", "/ui/logout") => {
                if let Auth::Session { key, .. } = &auth {
                    self.lock().remove(key);
                }
                let mut r = redirect("/ui/login");
                r.headers.push((
                    "Set-Cookie",
                    format!("{COOKIE}=; Path=/ui/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"),
                ));
                r
            }
            (
                _,
                "/ui/overview" | "/ui/connections" | "/ui/logs" | "/ui/policies" | "/ui/firewall"
                | "/ui/bypass" | "/ui/logout",
            ) => page(405, "Method not allowed", "", &ctx0, ""),
            _ => page(404, "Not found", "", &ctx0, &notice("no such page")),
        }
    }

    /// After a change: with a session, a redirect to the policies page carrying the outcome
    /// (Post/Redirect/Get); with a bearer token, the policies page itself.
    fn after_change(&self, auth: &Auth, (status, msg): (u16, String)) -> Response {
        match auth {
            Auth::Session { .. } => {
                self.set_flash(auth, msg);
                redirect("/ui/policies")
            }
            _ => {
                let mut r = policies::page(
                    self,
                    &Ctx {
                        csrf: None,
                        flash: Some(msg),
                    },
                );
                r.status = status;
                r
            }
        }
    }

    fn login(&self, req: &Request) -> Response {
        // Login CSRF: a browser always sends Origin on a POST; it must be ours.
        if req.header("origin").is_some() && !same_origin(req) {
            return login_page(403, Some("cross-origin login refused"));
        }
        let f = form(&req.body);
        let given = f.get("token").map(|t| t.trim()).unwrap_or_default();
        if given.is_empty() || !self.token.check(Some(&format!("Bearer {given}"))) {
            return login_page(401, Some("wrong token"));
        }
        let Some((id, _)) = self.new_session() else {
            return login_page(500, Some("no random numbers for a session"));
        };
        let mut r = redirect("/ui/overview");
        r.headers.push((
            "Set-Cookie",
            format!(
                "{COOKIE}={id}; Path=/ui/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
                SESSION_TTL.as_secs()
            ),
        ));
        r
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.created) < SESSION_TTL && now.duration_since(s.last_used) < SESSION_IDLE
}

/// A state change with a session cookie needs the session's CSRF token and a same-origin
/// `Origin`/`Referer`; with the bearer token (no ambient credential) neither.
pub fn check_post(req: &Request, auth: &Auth) -> Result<(), Response> {
    let Auth::Session { csrf, .. } = auth else {
        return Ok(());
    };
    let given = req
        .header("x-csrf-token")
        .map(str::to_string)
        .or_else(|| form(&req.body).remove("csrf"))
        .unwrap_or_default();
    if !ct_eq(given.trim(), csrf) {
        return Err(Response::text(403, "CSRF token missing or wrong\n"));
    }
    if !same_origin(req) {
        return Err(Response::text(
            403,
            "cross-origin request refused (Origin/Referer)\n",
        ));
    }
    Ok(())
}

fn login_page(status: u16, error: Option<&str>) -> Response {
    let mut main = String::new();
    if let Some(e) = error {
        main.push_str(&notice(e));
    }
    main.push_str(
        r#"<form method="post" action="/ui/login" class="login" id="login-form">
<label>Admin token <input type="password" name="token" id="token" autocomplete="current-password" required></label>
<button type="submit" id="login">Log in</button></form>
<p class="hint">The token is the admin API's bearer token (admin.token_file).</p>"#,
    );
    page(
        status,
        "Log in",
        "",
        &Ctx {
            csrf: None,
            flash: None,
        },
        &main,
    )
}

/// A number with thousands separators.
pub fn num(n: u64) -> String {
    let s = n.to_string();
    let mut o = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            o.push('\u{202f}');
        }
        o.push(c);
    }
    o
}

#[cfg(test)]
mod tests;
