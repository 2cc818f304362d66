//! Fail closed, in the lab's scenario 1 (prod gateway), through the real path: `natfw run`
//! killed with SIGKILL and stopped with SIGTERM under traffic, with tcpdump on the internet's
//! end of the gateway's outside link proving that no packet with a private source leaves and nginx proving that
//! no request to the denied domain arrives; a restart that resets the connections the crash
//! broke; spoofed and foreign sources dropped and counted while natfw runs; a second
//! `natfw run` refused before it touches anything; a full flow-log disk whose counters move
//! while natfw runs, with rotation freeing space; the default route restored after the
//! outside link goes down and up; `fail_mode: open` forwarding uninspected once natfw is
//! stopped. Root only (prints `SKIP` otherwise); namespace tags
//! `natfw-f1-*`, `natfw-f2-*`, torn down by a guard even on failure.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use natfw_lab::{gateway_config_text, plan, GatewayMode, Lab, LabGuard, Options, Scenario};

use super::support::metric;

const T: Duration = Duration::from_secs(30);
const ALLOWED: &str = "api.vendor.test";
const ALLOWED_ADDR: &str = "203.0.113.11";

/// A `natfw run` this test started; SIGKILLed on drop if still running.
struct Natfw {
    child: Child,
    log: PathBuf,
}

impl Drop for Natfw {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Natfw {
    fn start(lab: &Lab, ns: &str, cfg: &Path, log_name: &str) -> Natfw {
        let log = lab.dir.join(log_name);
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(env!("CARGO_BIN_EXE_natfw"))
            .args(["run", "--config"])
            .arg(cfg)
            .current_dir(&lab.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn natfw run");
        Natfw { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self.output();
            if out.contains(needle) {
                return out;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("natfw run exited ({st}) before `{needle}`:\n{out}");
            }
            assert!(Instant::now() < deadline, "no `{needle}` in:\n{out}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ready(&mut self) {
        self.wait_for("SIGINT/SIGTERM to stop");
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig}");
    }

    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn up(tag: &str) -> Option<LabGuard> {
    if let Err(why) = natfw_lab::prerequisites() {
        eprintln!("SKIP lab fail-closed test {tag}: {why}");
        return None;
    }
    let mut o = Options::new(PathBuf::from(env!("CARGO_BIN_EXE_natfw")));
    o.mode = GatewayMode::Natfw;
    o.tx_csum_off = true;
    Some(LabGuard(
        Lab::up(plan(Scenario::ProdTest, tag), o).expect("lab up"),
    ))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Wait (at most `within`) until `f` holds; returns whether it did.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The source address of a `tcpdump -nn` line (`... IP 198.51.100.11.40000 > ...`).
fn source_of(line: &str) -> Option<Ipv4Addr> {
    let rest = line.split(" IP ").nth(1)?;
    let src = rest.split_whitespace().next()?;
    let parts: Vec<&str> = src.split('.').collect();
    parts.get(..4)?.join(".").parse().ok()
}

/// Private, shared or documentation sources a NAT gateway must never send to the internet
/// (the lab's public addresses are 198.51.100.0/24 and 203.0.113.0/24).
fn must_not_leave(a: Ipv4Addr) -> bool {
    let o = a.octets();
    a.is_private()
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 192 && o[1] == 0 && o[2] == 2)
}

fn guard_counter(lab: &Lab, ns: &str, name: &str) -> u64 {
    let o = lab
        .exec(
            ns,
            &["nft", "-j", "list", "counter", "inet", "natfw_guard", name],
            T,
        )
        .expect("nft");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|i| i["counter"]["packets"].as_u64())
        .unwrap_or(0)
}

#[test]
fn crash_stop_and_restart_fail_closed_foreign_sources_dropped_second_instance_refused() {
    let Some(lab) = up("f1") else { return };
    let g = lab
        .plan
        .gateways
        .iter()
        .find(|g| g.name == "prod")
        .expect("prod gateway")
        .clone();
    let host = lab.plan.host("prod").expect("host").clone();
    let base = gateway_config_text(&g).expect("embedded config");
    let metrics = "127.0.0.1:9129";
    let cfg = lab.dir.join("fc-prod.yaml");
    std::fs::write(&cfg, format!("{base}metrics:\n  listen: \"{metrics}\"\n")).unwrap();
    let _ = lab.exec(&g.ns, &["ip", "link", "set", "lo", "up"], T);
    let natfw_bin = env!("CARGO_BIN_EXE_natfw");
    let curl = |path: &str, name: &str, addr: &str| -> Output {
        lab.exec(
            &host.ns,
            &[
                "curl",
                "-sS",
                "--max-time",
                "3",
                "--resolve",
                &format!("{name}:80:{addr}"),
                &format!("http://{name}/{path}"),
            ],
            T,
        )
        .expect("curl")
    };

    // Everything the gateway sends to the internet, from before the first start to the end,
    // seen from the internet's end of its outside link (frames sent by XDP bypass a capture
    // on the gateway itself).
    let cap = lab
        .capture(lab.plan.inet_ns(), &format!("to-{}", g.name), "ip")
        .expect("tcpdump");

    let mut first = Natfw::start(&lab, &g.ns, &cfg, "fc-natfw-1.log");
    first.ready();
    assert!(curl("fc-warmup", ALLOWED, ALLOWED_ADDR).status.success());

    // A second instance in the same namespace refuses before touching anything.
    let ruleset = || text(&lab.exec(&g.ns, &["nft", "list", "ruleset"], T).unwrap());
    let before = ruleset();
    assert!(before.contains("table inet natfw_guard"), "{before}");
    let mut second = Natfw::start(&lab, &g.ns, &cfg, "fc-natfw-2.log");
    let st = second.wait_exit(Duration::from_secs(60));
    assert!(
        st.is_some_and(|s| !s.success()),
        "second natfw run did not refuse: {st:?}\n{}",
        second.output()
    );
    assert!(
        second.output().contains("another natfw run is active"),
        "{}",
        second.output()
    );
    assert_eq!(ruleset(), before, "the second instance changed nftables");
    assert!(
        curl("fc-after-second", ALLOWED, ALLOWED_ADDR)
            .status
            .success(),
        "the running gateway stopped forwarding"
    );
    let o = lab.exec(&g.ns, &[natfw_bin, "uninstall"], T).unwrap();
    assert!(!o.status.success(), "uninstall while running: {}", text(&o));

    // Foreign sources on the inside (spoofed private ranges, shared space, a public address):
    // dropped and counted, never forwarded.
    let foreign = ["192.168.7.7", "172.16.7.7", "100.64.7.7", "192.0.2.77"];
    for a in foreign {
        let _ = lab.exec(
            &host.ns,
            &["ip", "addr", "add", &format!("{a}/32"), "dev", "eth0"],
            T,
        );
        let _ = lab.exec(
            &host.ns,
            &[
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "1",
                "-I",
                a,
                "203.0.113.10",
            ],
            T,
        );
    }
    let scrape = || {
        text(
            &lab.exec(
                &g.ns,
                &["curl", "-sS", &format!("http://{metrics}/metrics")],
                T,
            )
            .unwrap(),
        )
    };
    let series = "natfw_guard_dropped_packets_total{reason=\"not_snat\"}";
    assert!(
        eventually(Duration::from_secs(15), || metric(&scrape(), series) >= 12),
        "foreign sources not counted:\n{}",
        scrape()
    );

    // A connection that lives through the crash; it must be reset by the next process.
    let marker = lab.dir.join("fc-restarted");
    let req = format!("GET /fc-held HTTP/1.1\\r\\nHost: {ALLOWED}\\r\\n\\r\\n");
    // A write after the reset fails with EPIPE/ECONNRESET: report it instead of dying of
    // SIGPIPE.
    let script = format!(
        "trap '' PIPE
         exec 3<>/dev/tcp/{ALLOWED_ADDR}/80 || exit 9
         printf '{req}' >&3; timeout 2 cat <&3
         for i in $(seq 600); do [ -e {m} ] && break; sleep 0.1; done
         echo '--- after restart'
         printf '{req}' >&3 || echo 'write failed'
         sleep 1; printf '{req}' >&3 || echo 'write failed'
         timeout 8 cat <&3; echo \"rc=$?\"",
        m = marker.display()
    );
    let held = Command::new("ip")
        .args(["netns", "exec", &host.ns, "bash", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("held connection");

    // Traffic all along: the allowed and the denied domain, and pings.
    let stop = lab.dir.join("fc-stop-traffic");
    let traffic = format!(
        "i=0; while [ ! -e {stop} ]; do i=$((i+1))
           curl -s -o /dev/null --max-time 1 --resolve blocked.example.test:80:203.0.113.13 http://blocked.example.test/fc-denied-$i
           curl -s -o /dev/null --max-time 1 --resolve {ALLOWED}:80:{ALLOWED_ADDR} http://{ALLOWED}/fc-allowed-$i
           ping -c 1 -W 1 203.0.113.10 >/dev/null
         done",
        stop = stop.display()
    );
    let mut loop_ = Command::new("ip")
        .args(["netns", "exec", &host.ns, "bash", "-c", &traffic])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("traffic loop");
    std::thread::sleep(Duration::from_secs(3));

    // kill -9: XDP goes with the process; the guard stays.
    let unsteered_before = guard_counter(&lab, &g.ns, "snat_unsteered");
    first.signal("KILL");
    assert!(first.wait_exit(Duration::from_secs(10)).is_some());
    std::thread::sleep(Duration::from_secs(4));
    let unsteered = guard_counter(&lab, &g.ns, "snat_unsteered");
    assert!(
        unsteered > unsteered_before,
        "no SNAT-bound packet reached the guard after the crash ({unsteered})"
    );
    assert!(
        !curl("fc-while-down", ALLOWED, ALLOWED_ADDR)
            .status
            .success(),
        "forwarded while natfw was dead"
    );

    // Restart: forwarding again, and the connection the crash broke is reset, not left hanging.
    let mut third = Natfw::start(&lab, &g.ns, &cfg, "fc-natfw-3.log");
    third.ready();
    std::fs::write(&marker, b"").unwrap();
    let out = held.wait_with_output().expect("held connection");
    let held_text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (before_crash, after) = held_text
        .split_once("--- after restart")
        .unwrap_or((&held_text, ""));
    assert!(before_crash.contains("200 OK"), "{held_text}");
    assert!(
        (after.contains("reset") || after.contains("Broken pipe"))
            && !after.contains("rc=124")
            && !after.contains("200 OK"),
        "the broken connection was not reset by the new process: {held_text}"
    );
    assert!(
        eventually(Duration::from_secs(10), || curl(
            "fc-after-restart",
            ALLOWED,
            ALLOWED_ADDR
        )
        .status
        .success()),
        "no forwarding after the restart:\n{}",
        third.output()
    );

    // SIGTERM: a clean stop that leaves the guard in place.
    std::thread::sleep(Duration::from_secs(2));
    third.signal("TERM");
    let st = third.wait_exit(Duration::from_secs(30));
    assert!(st.is_some_and(|s| s.success()), "{}", third.output());
    assert!(
        third.output().contains("left in place"),
        "{}",
        third.output()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !curl("fc-after-stop", ALLOWED, ALLOWED_ADDR)
            .status
            .success(),
        "forwarded after a clean stop"
    );
    std::fs::write(&stop, b"").unwrap();
    let _ = loop_.wait();
    let lines = cap.finish().expect("capture");

    // The internet side never saw a private, shared or spoofed source ...
    let leaked: Vec<&String> = lines
        .iter()
        .filter(|l| source_of(l).is_some_and(must_not_leave))
        .collect();
    assert!(
        leaked.is_empty(),
        "{} packets with a private source left the gateway, e.g. {:?}",
        leaked.len(),
        &leaked[..leaked.len().min(5)]
    );
    assert!(
        lines.len() > 50,
        "the capture saw too little: {}",
        lines.len()
    );
    // ... nor did the denied domain get a request; the allowed one came from the EIP only.
    let access = lab.access_log();
    assert!(
        !access.contains("fc-denied"),
        "a request to the denied domain got through:\n{}",
        access
            .lines()
            .filter(|l| l.contains("fc-denied"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let eip = g.eips[0].to_string();
    let allowed: Vec<&str> = access.lines().filter(|l| l.contains("/fc-")).collect();
    assert!(allowed.len() > 3, "too few requests arrived: {access}");
    for l in &allowed {
        assert!(l.starts_with(&eip), "not from the EIP: {l}");
    }

    // Only an explicit uninstall removes the tables.
    let o = lab.exec(&g.ns, &[natfw_bin, "uninstall"], T).unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let rs = ruleset();
    assert!(
        !rs.contains("natfw_guard") && !rs.contains("table inet natfw"),
        "{rs}"
    );
}

/// A small tmpfs for the flow log, unmounted on drop (before the lab's state dir goes).
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_flow_log_disk_counted_while_running_rotation_frees_space_link_flap_restores_route_open_mode(
) {
    let Some(lab) = up("f2") else { return };
    let g = lab
        .plan
        .gateways
        .iter()
        .find(|g| g.name == "prod")
        .expect("prod gateway")
        .clone();
    let host = lab.plan.host("prod").expect("host").clone();
    let dir = lab.dir.join("fl");
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "mount tmpfs");
    let _fs = Tmpfs(dir.clone());
    let _ = lab.exec(&g.ns, &["ip", "link", "set", "lo", "up"], T);
    let metrics = "127.0.0.1:9139";
    let base = gateway_config_text(&g).expect("embedded config");
    let with = |logging: &str| {
        let t = base.replace(
            "logging:\n  # Relative: `natfw lab` runs the gateway from its state directory, /run/natfw-lab/<tag>/.\n  flow_log: flow-prod.jsonl\n",
            logging,
        );
        assert_ne!(t, base, "logging section not replaced");
        format!("{t}metrics:\n  listen: \"{metrics}\"\n")
    };
    let log = dir.join("flows.jsonl");
    let cfg = lab.dir.join("fl-prod.yaml");
    std::fs::write(
        &cfg,
        with(&format!(
            "logging:\n  flow_log: {}\n  rotate_bytes: 4096\n  keep: 100\n",
            log.display()
        )),
    )
    .unwrap();
    let scrape = || {
        let o = lab
            .exec(
                &g.ns,
                &["curl", "-sS", &format!("http://{metrics}/metrics")],
                T,
            )
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let flows = |n: u32| {
        let o = lab
            .exec(
                &host.ns,
                &[
                    env!("CARGO_BIN_EXE_natfw"),
                    "lab",
                    "http-rate",
                    "--to",
                    &format!("{ALLOWED_ADDR}:80"),
                    "--host",
                    ALLOWED,
                    "--threads",
                    "4",
                    "--per-thread",
                    &n.to_string(),
                    "--max-secs",
                    "60",
                ],
                Duration::from_secs(90),
            )
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    };

    // 1. Rotation on a disk that fills up: the oldest rotated files make room, nothing lost.
    let mut n = Natfw::start(&lab, &g.ns, &cfg, "fl-natfw-1.log");
    n.ready();
    flows(100); // 400 flows, ~200 KiB of records on a 64 KiB disk
    let freed = "natfw_flowlog_space_freed_total";
    assert!(
        eventually(Duration::from_secs(40), || metric(&scrape(), freed) > 0),
        "rotation never had to free space:\n{}",
        scrape()
    );
    let m = scrape();
    assert_eq!(metric(&m, "natfw_flowlog_write_errors_total"), 0, "{m}");
    // The kernel's statistics of the real AF_XDP sockets are read and exported.
    for side in ["inside", "outside"] {
        let s = format!("natfw_afxdp_kernel_total{{side=\"{side}\",event=\"rx_ring_full\"}}");
        assert!(m.contains(&s), "no {s}:\n{m}");
    }
    n.signal("TERM");
    assert!(n
        .wait_exit(Duration::from_secs(30))
        .is_some_and(|s| s.success()));

    // 2. Nothing left to delete (no rotation, a foreign file takes the space): lost records
    //    are counted and logged while natfw runs, not only at exit.
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    std::fs::write(
        &cfg,
        with(&format!("logging:\n  flow_log: {}\n", log.display())),
    )
    .unwrap();
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=64"])
        .arg(format!("of={}", dir.join("filler").display()))
        .stderr(Stdio::null())
        .status();
    let mut n = Natfw::start(&lab, &g.ns, &cfg, "fl-natfw-2.log");
    n.ready();
    flows(10);
    let errors = "natfw_flowlog_write_errors_total";
    assert!(
        eventually(Duration::from_secs(40), || metric(&scrape(), errors) > 0),
        "write failures not counted while running:\n{}",
        scrape()
    );
    let m = scrape();
    assert!(
        metric(&m, "natfw_flowlog_dropped_total") >= metric(&m, errors),
        "{m}"
    );
    n.wait_for("records lost since the last report");
    assert!(n.output().contains("No space left"), "{}", n.output());

    // 3. The outside link goes down and up: the default route comes back, and traffic with it.
    let route = || {
        text(
            &lab.exec(&g.ns, &["ip", "-4", "route", "show", "default"], T)
                .unwrap(),
        )
    };
    assert!(route().contains("outside0"), "{}", route());
    lab.exec(&g.ns, &["ip", "link", "set", "outside0", "down"], T)
        .unwrap();
    n.wait_for("default route out of outside0 is gone");
    lab.exec(&g.ns, &["ip", "link", "set", "outside0", "up"], T)
        .unwrap();
    n.wait_for("restored the ipv4 default");
    assert!(route().contains("outside0"), "{}", route());
    assert!(
        eventually(Duration::from_secs(20), || {
            lab.exec(
                &host.ns,
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "3",
                    "--resolve",
                    &format!("{ALLOWED}:80:{ALLOWED_ADDR}"),
                    &format!("http://{ALLOWED}/fl-after-flap"),
                ],
                T,
            )
            .is_ok_and(|o| o.status.success())
        }),
        "no forwarding after the link flap:\n{}",
        n.output()
    );
    assert!(
        eventually(Duration::from_secs(5), || metric(
            &scrape(),
            "natfw_default_route_restored_total"
        ) == 1),
        "{}",
        scrape()
    );
    n.signal("TERM");
    assert!(n.wait_exit(Duration::from_secs(30)).is_some());

    // 4. fail_mode: open: once natfw is stopped the kernel forwards and SNATs to the EIP,
    //    uninspected (the denied domain too); that is the documented risk.
    let open = with(&format!(
        "logging:\n  flow_log: {}/open.jsonl\n",
        lab.dir.display()
    ))
    .replace("gateway:\n", "fail_mode: open\ngateway:\n");
    std::fs::write(&cfg, open).unwrap();
    let mut n = Natfw::start(&lab, &g.ns, &cfg, "fl-natfw-3.log");
    n.ready();
    n.signal("TERM");
    assert!(n
        .wait_exit(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    let get = |name: &str, addr: &str, path: &str| {
        lab.exec(
            &host.ns,
            &[
                "curl",
                "-sS",
                "--max-time",
                "3",
                "--resolve",
                &format!("{name}:80:{addr}"),
                &format!("http://{name}/{path}"),
            ],
            T,
        )
        .unwrap()
    };
    let o = get(ALLOWED, ALLOWED_ADDR, "fl-open-allowed");
    assert!(
        o.status.success(),
        "open mode did not forward: {}",
        text(&o)
    );
    let o = get("blocked.example.test", "203.0.113.13", "fl-open-denied");
    assert!(o.status.success(), "open mode is uninspected: {}", text(&o));
    let eip = g.eips[0].to_string();
    let access = lab.access_log();
    for probe in ["fl-open-allowed", "fl-open-denied"] {
        assert!(
            access
                .lines()
                .any(|l| l.contains(probe) && l.starts_with(&eip)),
            "{probe} not seen from the EIP {eip}:\n{access}"
        );
    }
}
