//! The operator's console in a real browser: headless Debian chromium driven through
//! chromedriver (WebDriver, the fantoccini crate) against `natfw run` in the shared-DMZ lab
//! (three VPC hosts behind one gateway), with real curl traffic through the gateway.
//!
//! The walk: a page without the cookie sends the browser to the login page; logging in with
//! the admin token shows the overview with the trend SVG and the flow totals (a screenshot is
//! taken; `NATFW_SCREENSHOT=$PWD/docs/console-overview.png` from the repository root keeps it,
//! the path must be absolute: tests run in dataplane/gateway/); the outbound-connection view
//! ranks the busiest source first; its link opens the log audit of that source, which lists
//! exactly its flows with their ports; the policies page switches the firewall off and on
//! (checked through `GET /v1/status`) and adds and removes a bypass entry (checked through the
//! API's answer in the page). Around it, with curl: no token or cookie → redirect/401, a wrong
//! bearer token → 401, the session cookie without the CSRF token or from another origin → 403
//! and no change.
//!
//! Root only (`SKIP` otherwise). Without chromedriver it prints `SKIP`, except under `CI=true`,
//! where it fails: CI installs chromium and chromium-driver (scripts/lab-deps.sh).
//! chromedriver and chromium run in the gateway's namespace (the admin listener is on its
//! loopback); a socat bridge on the host's loopback carries the WebDriver calls to them. The
//! lab guard kills everything left in the namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use natfw_lab::{self, gateway_config_text, plan, GatewayMode, Lab, LabGuard, Options, Scenario};

const ADMIN: &str = "127.0.0.1:9444";
const TOKEN: &str = "lab-console-token-0123456789";
const DRIVER_PORT: u16 = 9515;

/// Child processes this test started; SIGKILLed on drop.
struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn on_path(prog: &str) -> bool {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .any(|d| d.join(prog).is_file())
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// curl inside `ns`; returns (HTTP status, body).
fn curl(lab: &Lab, ns: &str, args: &[&str]) -> (u16, String) {
    let mut a = vec![
        "curl",
        "-sk",
        "--max-time",
        "10",
        "-o",
        "/dev/stderr",
        "-w",
        "%{http_code}",
    ];
    a.extend_from_slice(args);
    let o = lab
        .exec(ns, &a, Duration::from_secs(20))
        .expect("curl runs");
    let code = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code, String::from_utf8_lossy(&o.stderr).into_owned())
}

fn api_status(lab: &Lab, ns: &str) -> serde_json::Value {
    let (code, body) = curl(
        lab,
        ns,
        &[
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &format!("https://{ADMIN}/v1/status"),
        ],
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

fn records(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn console_in_chromium_login_trend_rank_audit_switch_and_refusals() {
    if let Err(why) = natfw_lab::prerequisites() {
        eprintln!("SKIP lab console test: {why}");
        return;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !(on_path("chromedriver") && on_path("chromium") && on_path("socat")) {
        assert!(
            !ci,
            "CI=true but chromium/chromium-driver/socat are missing (scripts/lab-deps.sh)"
        );
        eprintln!("SKIP lab console test: chromium, chromedriver or socat not installed");
        return;
    }
    let mut o = Options::new(PathBuf::from(env!("CARGO_BIN_EXE_natfw")));
    o.mode = GatewayMode::Natfw;
    o.tx_csum_off = true;
    let lab = LabGuard(Lab::up(plan(Scenario::SharedDmz, "c1"), o).expect("lab up"));
    let g = lab.plan.gateways[0].clone();
    let base = gateway_config_text(&g).expect("embedded config");
    let (cert, key) = (lab.dir.join("admin.crt"), lab.dir.join("admin.key"));
    let t = Duration::from_secs(30);
    let gen = lab
        .exec(
            &g.ns,
            &[
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=natfw-admin",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
            t,
        )
        .expect("openssl");
    assert!(gen.status.success(), "{gen:?}");
    let token = lab.dir.join("console-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    // A protected bandwidth for the chart's line (under gateway:, after its name).
    let text = format!(
        "{base}admin:\n  listen: \"{ADMIN}\"\n  token_file: {}\n  tls_cert: {}\n  tls_key: {}\n",
        token.display(),
        cert.display(),
        key.display()
    )
    .replacen(
        "  name: lab-dmz\n",
        "  name: lab-dmz\n  protected_bandwidth_mbps: 1\n",
        1,
    );
    assert!(text.contains("protected_bandwidth_mbps"), "{text}");
    let cfg = lab.dir.join("console.yaml");
    std::fs::write(&cfg, &text).unwrap();
    let log = lab.dir.join("console-natfw.log");
    let out = std::fs::File::create(&log).unwrap();
    let natfw = Command::new("ip")
        .args(["netns", "exec", &g.ns])
        .arg(env!("CARGO_BIN_EXE_natfw"))
        .args(["run", "--config"])
        .arg(&cfg)
        .current_dir(&lab.dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn natfw run");
    let mut kids = Kids(vec![natfw]);
    wait_for("natfw run to start", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("SIGINT/SIGTERM to stop")
            || kids.0[0].try_wait().ok().flatten().is_some()
    });
    assert!(
        kids.0[0].try_wait().ok().flatten().is_none(),
        "natfw run exited: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = lab.exec(&g.ns, &["ip", "link", "set", "lo", "up"], t);

    // Real traffic through the gateway: vpca fetches the most (it must rank first by bytes),
    // vpcb one page and one denied domain, vpcc one page.
    let host = |n: &str| lab.plan.host(n).expect("host").clone();
    let (a, b, c) = (host("vpca"), host("vpcb"), host("vpcc"));
    let get = |h: &natfw_lab::HostSpec, name: &str, ip: &str| {
        let o = lab
            .exec(
                &h.ns,
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "5",
                    "--resolve",
                    &format!("{name}:80:{ip}"),
                    &format!("http://{name}/"),
                ],
                t,
            )
            .expect("curl");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for _ in 0..4 {
        assert_eq!(get(&a, "api.vendor.test", "203.0.113.11"), "200");
    }
    // 16 MB in a few seconds: above the 1 Mbit/s protected bandwidth for its minute.
    let bulk = lab
        .exec(
            &a.ns,
            &["iperf3", "-c", "203.0.113.5", "-p", "5201", "-n", "16M"],
            Duration::from_secs(120),
        )
        .expect("iperf3");
    assert!(bulk.status.success(), "iperf3: {bulk:?}");
    assert_eq!(get(&b, "updates.vendor.test", "203.0.113.10"), "200");
    assert_ne!(get(&b, "blocked.example.test", "203.0.113.13"), "200");
    assert_eq!(get(&c, "api.vendor.test", "203.0.113.11"), "200");
    let flow_log = lab.dir.join("flow-dmz.jsonl");
    wait_for("the flow records", || {
        let r = records(&flow_log);
        let from = |ip: &str| r.iter().filter(|x| x["src_ip"] == ip).count();
        from(&a.addr.to_string()) >= 6
            && from(&b.addr.to_string()) >= 2
            && from(&c.addr.to_string()) >= 1
    });
    let recs = records(&flow_log);
    // For the record (not asserted here: byte accounting is the flow log's tests' business).
    let bulk_out: u64 = recs
        .iter()
        .filter(|r| r["dst_port"] == 5201)
        .map(|r| r["out_packet_bytes"].as_u64().unwrap_or(0))
        .sum();
    eprintln!("console: iperf3 sent 16777216 payload bytes; the flow log has {bulk_out} bytes out to port 5201");
    let a_recs: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|x| x["src_ip"] == a.addr.to_string())
        .collect();

    // Refusals without credentials (curl in the gateway's namespace).
    let ui = format!("https://{ADMIN}/ui");
    let (code, _) = curl(&lab, &g.ns, &[&format!("{ui}/overview")]);
    assert_eq!(code, 303, "no cookie: sent to the login page");
    let (code, _) = curl(
        &lab,
        &g.ns,
        &[
            "-H",
            "Authorization: Bearer wrong",
            &format!("{ui}/overview"),
        ],
    );
    assert_eq!(code, 401, "wrong bearer token");
    let (code, _) = curl(
        &lab,
        &g.ns,
        &[
            "-d",
            "enabled=false&allow_open=true",
            &format!("{ui}/firewall"),
        ],
    );
    assert_eq!(code, 401, "POST without credentials");
    let (code, page) = curl(
        &lab,
        &g.ns,
        &[
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &format!("{ui}/overview"),
        ],
    );
    assert_eq!(code, 200, "bearer token instead of the cookie");
    assert!(page.contains("<svg"), "{page}");

    // The browser: chromedriver in the gateway's namespace, bridged to the host's loopback.
    let bridge_port = 20000 + (std::process::id() % 20000) as u16;
    let driver = Command::new("ip")
        .args(["netns", "exec", &g.ns, "chromedriver"])
        .arg(format!("--port={DRIVER_PORT}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver");
    kids.0.push(driver);
    let bridge = Command::new("socat")
        .arg(format!(
            "TCP-LISTEN:{bridge_port},bind=127.0.0.1,reuseaddr,fork"
        ))
        .arg(format!(
            "EXEC:ip netns exec {} socat STDIO TCP\\:127.0.0.1\\:{DRIVER_PORT}",
            g.ns
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat");
    kids.0.push(bridge);
    wait_for("chromedriver", || {
        lab.exec(
            &g.ns,
            &[
                "curl",
                "-sf",
                &format!("http://127.0.0.1:{DRIVER_PORT}/status"),
            ],
            t,
        )
        .is_ok_and(|o| o.status.success())
            && std::net::TcpStream::connect(("127.0.0.1", bridge_port)).is_ok()
    });
    let profile = lab.dir.join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shot = lab.dir.join("console-overview.png");
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert("acceptInsecureCerts".into(), true.into());
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1500",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{bridge_port}"))
            .await
            .expect("WebDriver session");
        let r = walk(&client, &lab, &g.ns, &a, &a_recs, &shot).await;
        let _ = client.close().await;
        r
    })
    .unwrap_or_else(|e| panic!("{e}"));
    if let Ok(keep) = std::env::var("NATFW_SCREENSHOT") {
        std::fs::copy(&shot, &keep).expect("copy the screenshot");
    }
    drop(kids);
}

async fn text_of(c: &Client, css: &str) -> Result<String, String> {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .map_err(|e| format!("{css}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("{css}: {e}"))
}

async fn click(c: &Client, css: &str) -> Result<(), String> {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .map_err(|e| format!("{css}: {e}"))?
        .click()
        .await
        .map_err(|e| format!("click {css}: {e}"))
}

/// Click something that loads a new page and wait until the old one is gone (its `<html>`
/// element goes stale), so that what is read next is from the new page.
async fn submit(c: &Client, css: &str) -> Result<(), String> {
    let old = c
        .find(Locator::Css("html"))
        .await
        .map_err(|e| e.to_string())?;
    click(c, css).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.attr("lang").await.is_ok() {
        if Instant::now() > deadline {
            return Err(format!("{css}: no new page"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn path(c: &Client) -> Result<String, String> {
    c.current_url()
        .await
        .map(|u| u.path().to_string())
        .map_err(|e| e.to_string())
}

/// The browser walk; `Err` says where it went wrong.
async fn walk(
    c: &Client,
    lab: &Lab,
    gw_ns: &str,
    top: &natfw_lab::HostSpec,
    top_recs: &[&serde_json::Value],
    shot: &Path,
) -> Result<(), String> {
    let base = format!("https://{ADMIN}");
    let e = |e: fantoccini::error::CmdError| e.to_string();
    // Not logged in: every page leads to the login form.
    c.goto(&format!("{base}/ui/connections")).await.map_err(e)?;
    if path(c).await? != "/ui/login" {
        return Err(format!("no login redirect: at {}", path(c).await?));
    }
    // A wrong token stays on the login page.
    let field = c.find(Locator::Css("#token")).await.map_err(e)?;
    field.send_keys("not-the-token").await.map_err(e)?;
    submit(c, "#login").await?;
    let err = text_of(c, "p.error").await?;
    if !err.contains("wrong token") {
        return Err(format!("wrong token accepted? {err}"));
    }
    let field = c.find(Locator::Css("#token")).await.map_err(e)?;
    field.send_keys(TOKEN).await.map_err(e)?;
    submit(c, "#login").await?;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#trend svg"))
        .await
        .map_err(|e| format!("no trend chart after login: {e}"))?;
    if path(c).await? != "/ui/overview" {
        return Err(format!("login led to {}", path(c).await?));
    }
    let lines = c
        .find_all(Locator::Css("#trend svg g.series polyline"))
        .await
        .map_err(e)?;
    if lines.len() != 2 {
        return Err(format!("{} trend lines, want in and out", lines.len()));
    }
    c.find(Locator::Css("#trend svg .bandwidth"))
        .await
        .map_err(|e| format!("no protected-bandwidth line: {e}"))?;
    let accepted: u64 = text_of(c, "#flows-accepted")
        .await?
        .replace('\u{202f}', "")
        .parse()
        .map_err(|e| format!("accepted flows: {e}"))?;
    let dropped: u64 = text_of(c, "#flows-dropped")
        .await?
        .replace('\u{202f}', "")
        .parse()
        .map_err(|e| format!("dropped flows: {e}"))?;
    if accepted < 6 || dropped < 1 {
        return Err(format!("totals: {accepted} accepted, {dropped} dropped"));
    }
    // The iperf3 minute is above the protected bandwidth: shaded in the chart and listed.
    let shaded = c
        .find_all(Locator::Css("#trend svg g.exceeded rect"))
        .await
        .map_err(e)?
        .len();
    let peaks = c
        .find_all(Locator::Css("#peaks tr.peak"))
        .await
        .map_err(e)?
        .len();
    if shaded == 0 || peaks != shaded {
        return Err(format!("{shaded} shaded intervals, {peaks} listed peaks"));
    }
    let state = text_of(c, "#firewall-state").await?;
    if !state.contains("on") {
        return Err(format!("firewall state: {state}"));
    }
    let png = c.screenshot().await.map_err(e)?;
    std::fs::write(shot, &png).map_err(|e| e.to_string())?;

    // The session cookie: HttpOnly, Secure, SameSite=Strict.
    let cookies = c.get_all_cookies().await.map_err(e)?;
    let session = cookies
        .iter()
        .find(|k| k.name() == "natfw_session")
        .ok_or("no session cookie")?;
    if session.http_only() != Some(true) || session.secure() != Some(true) {
        return Err(format!("cookie flags: {session:?}"));
    }
    let cookie = format!("natfw_session={}", session.value());

    // Outbound connections: the busiest source first; its link opens its log audit.
    submit(c, "#nav-connections").await?;
    let first = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#sources tbody tr.source"))
        .await
        .map_err(e)?;
    let first_src = first.attr("data-src").await.map_err(e)?.unwrap_or_default();
    if first_src != top.addr.to_string() {
        return Err(format!("first source {first_src}, want {}", top.addr));
    }
    // The ranking's bytes are the flow log's bytes of that source.
    let out_cell = first
        .find(Locator::Css("td[data-bytes]"))
        .await
        .map_err(e)?
        .attr("data-bytes")
        .await
        .map_err(e)?
        .unwrap_or_default();
    let logged: u64 = top_recs
        .iter()
        .map(|r| r["out_packet_bytes"].as_u64().unwrap_or(0))
        .sum();
    if out_cell != logged.to_string() {
        return Err(format!(
            "bytes out {out_cell} in the ranking, {logged} in the log"
        ));
    }
    let n_sources = c
        .find_all(Locator::Css("#sources tr.source"))
        .await
        .map_err(e)?
        .len();
    if n_sources != 3 {
        return Err(format!("{n_sources} sources ranked, want 3"));
    }
    drop(first);
    let css = format!("#sources tr.source[data-src=\"{}\"] a.audit", top.addr);
    submit(c, &css).await?;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#records"))
        .await
        .map_err(e)?;
    if path(c).await? != "/ui/logs" {
        return Err(format!("source link led to {}", path(c).await?));
    }
    let rows = c
        .find_all(Locator::Css("#records tr.record"))
        .await
        .map_err(e)?;
    if rows.len() != top_recs.len() {
        return Err(format!(
            "{} audit rows for {}, the flow log has {}",
            rows.len(),
            top.addr,
            top_recs.len()
        ));
    }
    for row in &rows {
        let src = row.attr("data-src").await.map_err(e)?.unwrap_or_default();
        let dport = row
            .attr("data-dst-port")
            .await
            .map_err(e)?
            .unwrap_or_default();
        let sport = row
            .attr("data-src-port")
            .await
            .map_err(e)?
            .unwrap_or_default();
        if src != top.addr.to_string() || !(dport == "80" || dport == "5201") {
            return Err(format!("audit row {src} -> port {dport}"));
        }
        if !top_recs
            .iter()
            .any(|r| r["src_port"].as_u64().map(|p| p.to_string()) == Some(sport.clone()))
        {
            return Err(format!(
                "source port {sport} is in no record of {}",
                top.addr
            ));
        }
        let text = row.text().await.map_err(e)?;
        if dport == "80" && !text.contains("api.vendor.test") {
            return Err(format!("audit row without its domain: {text}"));
        }
    }

    // Policies: switch the firewall off (consent box ticked), then on; the API agrees.
    submit(c, "#nav-policies").await?;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#rules tr.rule"))
        .await
        .map_err(e)?;
    // Without the consent box the API's refusal is shown and nothing changes.
    submit(c, "#firewall-off").await?;
    let flash = text_of(c, "#flash").await?;
    if !flash.contains("allow_open") || api_status(lab, gw_ns)["firewall_enabled"] != true {
        return Err(format!("turning off without consent: {flash}"));
    }
    click(c, "#allow-open").await?;
    submit(c, "#firewall-off").await?;
    let flash = text_of(c, "#flash").await?;
    if !flash.contains("off") || api_status(lab, gw_ns)["firewall_enabled"] != false {
        return Err(format!("firewall off: {flash}"));
    }
    // CSRF: the session cookie alone, or with the token from another origin, changes nothing.
    let html = c.source().await.map_err(e)?;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .ok_or("no CSRF field in the page")?
        .to_string();
    let post = |body: String, origin: &str| {
        curl(
            lab,
            gw_ns,
            &[
                "-H",
                &format!("Cookie: {cookie}"),
                "-H",
                &format!("Origin: {origin}"),
                "-d",
                &body,
                &format!("{base}/ui/firewall"),
            ],
        )
        .0
    };
    let own = format!("https://{ADMIN}");
    if post("enabled=true".into(), &own) != 403
        || post(format!("enabled=true&csrf={csrf}"), "https://evil.example") != 403
        || api_status(lab, gw_ns)["firewall_enabled"] != false
    {
        return Err("a POST without the CSRF token or cross-origin was not refused".into());
    }
    submit(c, "#firewall-on").await?;
    let flash = text_of(c, "#flash").await?;
    if !flash.contains("on") || api_status(lab, gw_ns)["firewall_enabled"] != true {
        return Err(format!("firewall on: {flash}"));
    }
    // Bypass add and remove through the API's code path.
    let net = "10.3.1.99/32";
    let field = c.find(Locator::Css("#bypass-source")).await.map_err(e)?;
    field.send_keys(net).await.map_err(e)?;
    submit(c, "#bypass-add-button").await?;
    let flash = text_of(c, "#flash").await?;
    let entry = format!("#bypass li.bypass[data-net=\"{net}\"] button.remove");
    if !flash.contains("added") {
        return Err(format!("bypass add: {flash}"));
    }
    submit(c, &entry).await?;
    let flash = text_of(c, "#flash").await?;
    if !flash.contains("removed") || c.find(Locator::Css(&entry)).await.is_ok() {
        return Err(format!("bypass remove: {flash}"));
    }
    // Log out: the cookie is dead.
    submit(c, "#logout").await?;
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#login-form"))
        .await
        .map_err(e)?;
    let (code, _) = curl(
        lab,
        gw_ns,
        &[
            "-H",
            &format!("Cookie: {cookie}"),
            &format!("{base}/ui/overview"),
        ],
    );
    if code != 303 {
        return Err(format!("the logged-out cookie still works ({code})"));
    }
    Ok(())
}
