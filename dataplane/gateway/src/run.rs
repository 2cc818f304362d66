//! `natfw run --config CONFIG`: put the gateway in the path of real traffic.
//!
//! Order of events: load and validate the config; take the instance lock (one `natfw run` per
//! network namespace, before anything is touched); check the live system (interfaces up, EIPs
//! on the outside interface, a default route out of it, no DNAT); install the nftables guard
//! and NAT tables ([`crate::guard`], left in place at exit); start the flow-log writer and
//! one engine per packet worker (`gateway.workers`); in split mode (the fast path, default)
//! make the slow-path veth pairs (one per worker and side); load the eBPF object per side with
//! its maps filled; open each worker's AF_XDP sockets on its thread (worker i pinned to CPU i),
//! register them and attach the programs (split mode: tc on the interfaces,
//! XDP on the veths; classic mode: XDP on the interfaces). The main thread then logs, reloads
//! the policy on SIGHUP (see [`crate::admin`]), applies admin-API bypass changes, publishes
//! counters to the admin/metrics listeners and waits for SIGINT/SIGTERM, after which the
//! programs are detached, the workers stop, each
//! engine shuts down (every flow ends with `shutdown`; with the fast path and pinned tables the
//! offloaded flows are handed over instead, see [`crate::handover`]), the last emits go out
//! and the flow log is flushed. The nftables tables stay: until the next `natfw run` the guard keeps SNAT-bound
//! traffic from being forwarded untranslated (see docs/OPERATIONS.md "Failure modes").

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use natfw_policy::Config;

use crate::afxdp::{AfXdp, Disposition, FrameHandler, IoStats, PortInfo};
use crate::xdp::{IfSide, Steering, SteeringRules};
use natfw_engine::engine::worker::SharedAnswer;
use natfw_engine::engine::{Emit, Engine, EngineOptions, GeoDb, Side, Verdict, WorkerSlot};
use natfw_engine::time::Timestamp;
use natfw_flowlog::{Rotation, Target};

/// Name of the nftables NAT table `run` owns (see [`crate::guard`]).
pub const NFT_TABLE: &str = crate::guard::NAT_TABLE;
/// How often the engine is polled for timeouts.
const POLL: Duration = Duration::from_millis(100);
/// How often counters are published to the control plane (metrics, status).
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How often counters are logged.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Options of `natfw run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    /// Split mode: bpffs directory of the pinned maps and links (one subdirectory per side).
    pub pin_dir: PathBuf,
    /// Split mode: the handover file (offloaded flows from one run to the next).
    pub handover: PathBuf,
}

impl RunOptions {
    /// The pin directories of the (inside, outside) programs.
    fn pin_dirs(&self) -> [PathBuf; 2] {
        pin_dirs(&self.pin_dir)
    }
}

fn pin_dirs(dir: &Path) -> [PathBuf; 2] {
    [dir.join("inside"), dir.join("outside")]
}

/// Why `run` could not start or ended badly. Display is the message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error("prerequisite: {0}")]
    Prerequisite(String),
    #[error("{0}")]
    Xdp(#[from] crate::xdp::XdpError),
    #[error("AF_XDP: {0}")]
    AfXdp(#[from] crate::afxdp::AfXdpError),
    #[error("{0}")]
    Other(String),
}

/// Run until SIGINT/SIGTERM. Returns after a clean shutdown.
pub fn run(opts: &RunOptions) -> Result<(), RunError> {
    if crate::xdp::PROGRAM.is_empty() {
        return Err(crate::xdp::XdpError::NotBuilt.into());
    }
    let cfg = load_config(&opts.config)?;
    let config_path = opts.config.clone(); // `opts` is shadowed by the engine's below
    let run_opts = opts.clone();
    // Before anything on the system is touched: one natfw run per network namespace.
    let _lock = crate::guard::InstanceLock::acquire(Path::new(crate::guard::LOCK_DIR))
        .map_err(RunError::Prerequisite)?;
    let sys = check_system(&cfg)?;
    // The guard first (and for good: it stays when this process ends, however it ends).
    let mut guard = crate::guard::Spec::from_config(&cfg, &sys.kernel_addrs);
    crate::guard::install(&guard).map_err(RunError::Prerequisite)?;
    log(&format!(
        "nftables tables inet {} and inet {} installed (fail_mode: {}); they stay after natfw exits (natfw uninstall removes them)",
        crate::guard::GUARD_TABLE,
        crate::guard::NAT_TABLE,
        cfg.fail_mode.as_str()
    ));

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first signal asks for a clean stop; a second one while stopping exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&stop)))
            .map_err(|e| RunError::Other(format!("installing signal handler: {e}")))?;
    }

    // The remote syslog sink (`logging.syslog`): fed by the flow-log writer thread.
    let (tee, syslog) = match &cfg.logging.syslog {
        Some(sc) => {
            let (tee, h) = crate::syslog::start(sc, &cfg.gateway.name).map_err(RunError::Config)?;
            log(&format!("flow log also to syslog at {}", sc.address));
            (
                Some(Box::new(tee) as Box<dyn natfw_flowlog::LineTee>),
                Some(h),
            )
        }
        None => (None, None),
    };
    let (sink, writer) = natfw_flowlog::spawn_writer_tee(
        &cfg.gateway.name,
        Target::from_config(&cfg.logging.flow_log),
        Rotation::from_config(&cfg.logging),
        natfw_flowlog::DEFAULT_CHANNEL_CAPACITY,
        tee,
    )
    .map_err(|e| RunError::Other(format!("flow log {}: {e}", cfg.logging.flow_log)))?;
    let opts = EngineOptions {
        // The engine recomputes the L4 checksum in full when it rewrites a frame, once per
        // packet: veth (and NICs with offloads on) hand AF_XDP frames whose checksum is only
        // partial (the pseudo-header sum the device was to complete), and the copy into the
        // socket drops that marker, so a forwarded frame must carry a complete checksum.
        full_checksums: true,
        on_demand_resolution: cfg.dns.verify,
        resolve_timeout_ms: cfg.dns.verify_timeout_ms,
        max_resolving: cfg.dns.verify_concurrency,
        gateway_dns_names: cfg.dns.max_names.saturating_add(16_384),
        interim_interval_ms: cfg.logging.interim_interval.as_millis() as u64,
        ..EngineOptions::default()
    };
    let geo = match &cfg.geo.database {
        Some(p) => Arc::new(
            GeoDb::open(Path::new(p))
                .map_err(|e| RunError::Config(format!("geo.database {p}: {e}")))?,
        ),
        None => GeoDb::embedded(),
    };
    let sink_probe = sink.clone();
    // One engine per packet worker (`gateway.workers`), all deciding under one compiled policy.
    let n_workers = cfg.gateway.workers.max(1);
    let mut engines: Vec<Engine> = Vec::with_capacity(usize::from(n_workers));
    for i in 0..n_workers {
        let opts = EngineOptions {
            worker: WorkerSlot::new(i, n_workers).unwrap_or_default(),
            ..opts.clone()
        };
        let mut e = Engine::with_options(&cfg, Arc::clone(&geo), Box::new(sink.clone()), opts)
            .map_err(|e| RunError::Config(e.to_string()))?;
        if let Some(first) = engines.first() {
            e.share_policy(first.policy_handle());
        }
        engines.push(e);
    }
    drop(sink);
    let policy = engines[0].policy_handle();
    // The gateway's own DNS (rule names, on-demand verification, forwarder) on its thread.
    let (dns, dns_links) =
        match crate::dns::DnsService::start_for(&cfg.dns, Arc::clone(&policy), engines.len()) {
            Ok((s, l)) => {
                if let Some(a) = s.forwarder_addr {
                    log(&format!("DNS forwarder listening on {a}"));
                }
                (Some(s), l.into_iter().map(Some).collect())
            }
            Err(e) if cfg.dns.forwarder.is_some() => return Err(RunError::Config(e)),
            Err(e) => {
                log(&format!(
                "{e}: the gateway resolves no names itself (dns rules see only answers crossing it)"
            ));
                for e in &mut engines {
                    e.set_on_demand_resolution(false);
                }
                (None, engines.iter().map(|_| None).collect::<Vec<_>>())
            }
        };
    let control = Arc::new(crate::admin::Control::new(
        cfg.clone(),
        config_path,
        Arc::clone(&policy),
    ));
    let servers = crate::admin::start_listeners(&cfg, &control).map_err(RunError::Config)?;
    for s in &servers {
        log(&format!("listening on {}", s.addr));
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .map_err(|e| RunError::Other(format!("installing the SIGHUP handler: {e}")))?;

    let rules = SteeringRules {
        snat: cfg.gateway.snat.iter().map(|e| e.source).collect(),
        bypass: cfg.gateway.bypass.clone(),
        eips: cfg.gateway.eips.clone(),
        gateway_addrs: sys.gateway_addrs.clone(),
        // Everything to an EIP is the engine's: it keeps clients' source ports, so any port
        // range left to the kernel would catch SNAT replies. The kernel's own traffic (and the
        // bypass masquerade) uses the outside interface's non-EIP addresses instead.
        kernel_ports: None,
    };
    // Split mode (the fast path): each side gets a slow-path veth pair that carries the XDP
    // program and the AF_XDP socket, so nothing runs XDP on the real interfaces and their
    // super-frames survive; removed again when this function returns (and replaced at the
    // next start after a crash).
    let slow = if cfg.gateway.fast_path {
        Some(SlowLinks::create(&sys, usize::from(n_workers))?)
    } else {
        None
    };
    // Each worker's sockets: on the XDP ends of its own veth pairs (split mode) or on the
    // interfaces themselves (classic mode, one worker).
    let ports: Vec<(PortInfo, PortInfo)> = (0..engines.len())
        .map(|w| {
            let (mut i, mut o) = (sys.inside.clone(), sys.outside.clone());
            if let Some(l) = &slow {
                i.xsk_dev = l.inside[w].xdp_end.clone();
                o.xsk_dev = l.outside[w].xdp_end.clone();
            }
            (i, o)
        })
        .collect();
    let fingerprint = crate::handover::fingerprint(&cfg);
    let [pin_in, pin_out] = run_opts.pin_dirs();
    if slow.is_none() {
        // Classic mode: nothing of a split-mode run may stay attached or be adopted.
        for d in [&pin_in, &pin_out] {
            match crate::xdp::remove_pins(d) {
                Ok(true) => log(&format!(
                    "{}: removed the steering link a fast-path run left pinned",
                    d.display()
                )),
                Ok(false) => {}
                Err(e) => tracing::warn!("{}: removing pins: {e}", d.display()),
            }
        }
        let _ = std::fs::remove_file(&run_opts.handover);
    }
    let (mut steer_in, mut steer_out, pinned) = load_steering(
        &cfg,
        &rules,
        slow.as_ref(),
        slow.as_ref().map(|_| [pin_in.as_path(), pin_out.as_path()]),
    )?;
    if slow.is_some() {
        // What the previous run handed over: adopted if this run has the same configuration
        // and the pinned tables still hold their entries; every other entry is removed.
        let handed = if pinned {
            match crate::handover::take(&run_opts.handover) {
                Ok(h) => h.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!("{}: {e} (no flow adopted)", run_opts.handover.display());
                    crate::handover::Handover::default()
                }
            }
        } else {
            let _ = std::fs::remove_file(&run_opts.handover);
            crate::handover::Handover::default()
        };
        if handed.bad_lines > 0 {
            tracing::warn!(
                "{}: {} unreadable lines (those flows are not adopted)",
                run_opts.handover.display(),
                handed.bad_lines
            );
        }
        let keep: Vec<_> = handed.flows.iter().map(|f| f.flow).collect();
        // Each engine writes the flows it offloads into both sides' tables from its data-path
        // thread (its own handles on the same maps); natfw_steer reads them.
        let k = crate::xdp::offload::KernelOffload::keeping(
            steer_in.take_offload()?,
            steer_out.take_offload()?,
            sys.inside.ifindex,
            sys.outside.ifindex,
            &keep,
        );
        for e in engines.iter_mut().skip(1) {
            let c = k
                .try_clone()
                .map_err(|e| RunError::Other(format!("fast-path tables: {e}")))?;
            e.set_offload(Box::new(c));
        }
        engines[0].set_offload(Box::new(k));
        if !handed.flows.is_empty() {
            let how = crate::handover::compare(&handed.fingerprint, &fingerprint);
            let n = handed.flows.len();
            // Each flow to the worker that owns its port (the same configuration has the same
            // worker count; another one ends them all at once anyway).
            let mut per: Vec<Vec<_>> = engines.iter().map(|_| Vec::new()).collect();
            for f in handed.flows {
                per[usize::from(f.flow.client.port() % n_workers)].push(f);
            }
            let mut st = natfw_engine::engine::AdoptStats::default();
            for (e, flows) in engines.iter_mut().zip(per) {
                let s = e.adopt(Timestamp::now(), flows, how);
                st.adopted += s.adopted;
                st.ended += s.ended;
                st.reevaluated += s.reevaluated;
                st.denied += s.denied;
            }
            use natfw_engine::engine::AdoptPolicy;
            log(&format!(
                "adopted {} of {n} flows the previous run handed over ({} ended{})",
                st.adopted,
                st.ended,
                match how {
                    AdoptPolicy::Same => String::new(),
                    AdoptPolicy::Reevaluate => format!(
                        ": the firewall changed, every flow decided again, {} denied",
                        st.denied
                    ),
                    AdoptPolicy::Other => ": the gateway configuration changed".into(),
                }
            ));
        }
        log("fast path on: decided flows are forwarded by tc-BPF in the kernel; the engine's packets go through veth pairs");
    }

    let bypass_rx = control.bypass_channel();

    // Each worker owns its sockets (xdpilone's UMEM is not Send) and its engine. DNS facts one
    // engine learns from answers crossing it reach the others through `answers`.
    let (fd_tx, fd_rx) = mpsc::channel();
    let (answer_tx, answer_rx): (Vec<_>, Vec<_>) = engines
        .iter()
        .map(|_| crossbeam_channel::bounded(natfw_engine::engine::worker::SHARED_ANSWERS_MAX))
        .unzip();
    // The workers' own stop (not the signals' flag): the main thread decides, after the
    // signal, whether the offloaded flows are handed over (`hand_over`, set before it).
    let worker_stop = Arc::new(AtomicBool::new(false));
    let hand_over = Arc::new(AtomicBool::new(false));
    let mut workers: Vec<WorkerHandle> = Vec::with_capacity(engines.len());
    let parts = engines.into_iter().zip(dns_links).zip(ports).zip(answer_rx);
    for (w, (((engine, dns_link), (inside, outside)), inbox)) in parts.enumerate() {
        let handle = WorkerHandle::default_for(w);
        let (bypass_tx, bypass_rx) = mpsc::channel::<EngineBypass>();
        let peers: Vec<_> = answer_tx
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != w)
            .map(|(_, t)| t.clone())
            .collect();
        let shared = WorkerShared {
            stop: Arc::clone(&worker_stop),
            hand_over: Arc::clone(&hand_over),
            heartbeat: Arc::clone(&handle.heartbeat),
            io_stats: Arc::clone(&handle.io),
            engine_stats: Arc::clone(&handle.engine),
            answers_lost: Arc::clone(&handle.answers_lost),
        };
        let fd_tx = fd_tx.clone();
        let thread = std::thread::Builder::new()
            .name(if w == 0 {
                "natfw-packets".into()
            } else {
                format!("natfw-packets{w}")
            })
            .spawn(move || {
                worker(
                    w,
                    (inside, outside),
                    WorkerLinks {
                        engine,
                        dns: dns_link,
                        bypass: bypass_rx,
                        inbox,
                        peers,
                    },
                    &shared,
                    &fd_tx,
                )
            })
            .map_err(|e| RunError::Other(format!("spawning the data-path thread: {e}")))?;
        workers.push(WorkerHandle {
            thread: Some(thread),
            bypass: Some(bypass_tx),
            ..handle
        });
    }
    drop(answer_tx);
    drop(fd_tx);
    let mut fds: Vec<(usize, [(IfSide, i32); 2])> = Vec::new();
    let mut setup_err = None;
    for _ in 0..workers.len() {
        match fd_rx.recv() {
            Ok((w, Ok(f))) => fds.push((w, f)),
            Ok((_, Err(e))) => {
                setup_err.get_or_insert(RunError::from(e));
            }
            Err(_) => {
                setup_err
                    .get_or_insert(RunError::Other("data-path thread died during setup".into()));
                break;
            }
        }
    }
    if let Some(e) = setup_err {
        stop_workers(&worker_stop, &mut workers);
        return Err(e);
    }
    // The first flows must find the rule names' addresses: give the first lookups a moment.
    if let Some(d) = &dns {
        if !d.wait_initial(Duration::from_millis(
            cfg.dns.verify_timeout_ms.max(1000) * 2,
        )) {
            log("dns: the rule names are not all resolved yet (continuing; see natfw_dns_resolutions_total)");
        }
    }
    let all_fds: Vec<(IfSide, i32)> = fds.iter().flat_map(|(_, f)| *f).collect();
    let mut watch = Watch::new(&cfg, &sys, &all_fds);
    watch.syslog = syslog.as_ref().map(|h| Arc::clone(&h.counters));
    let attach = (|| -> Result<(), RunError> {
        for (w, pair) in &fds {
            // Split mode: the socket map's key is the worker; classic mode: the queue (0).
            let key = *w as u32;
            for (side, fd) in pair {
                match side {
                    IfSide::Inside => steer_in.register_socket(key, *fd)?,
                    IfSide::Outside => steer_out.register_socket(key, *fd)?,
                }
            }
        }
        for s in [&mut steer_in, &mut steer_out] {
            let mode = s.attach()?;
            let paths = s.slow_paths();
            if paths.is_empty() {
                log(&format!("{}: XDP attached ({mode:?} mode)", s.iface()));
            } else {
                let list: Vec<String> = paths
                    .iter()
                    .map(|p| format!("{} -> {}", p.kernel_end, p.xdp_end))
                    .collect();
                log(&format!(
                    "{}: tc steering attached{}; slow path{} {} (XDP {mode:?} mode)",
                    s.iface(),
                    if s.adopted_link() {
                        " (took over the link the previous run pinned)"
                    } else {
                        ""
                    },
                    if list.len() > 1 { "s" } else { "" },
                    list.join(", ")
                ));
            }
        }
        Ok(())
    })();
    if let Err(e) = attach {
        stop_workers(&worker_stop, &mut workers);
        return Err(e);
    }
    // Have the routers' MACs ready before the first packet needs them.
    for r in &sys.routers {
        crate::neigh::probe(*r, sys.outside.ifindex);
    }
    log(&format!(
        "forwarding {} <-> {} (EIPs {:?}, {} packet worker{}); SIGHUP reloads the policy; SIGINT/SIGTERM to stop",
        cfg.gateway.inside,
        cfg.gateway.outside,
        cfg.gateway.eips,
        workers.len(),
        if workers.len() > 1 { "s" } else { "" }
    ));
    // systemd: ready only now (XDP attached, sockets registered, the worker running).
    let mut notify = crate::notify::Notifier::from_env();
    let notify_err = |e: std::io::Error| tracing::warn!("sd_notify: {e}");
    let _ = notify
        .ready(&status_line(&engine_total(&workers)))
        .map_err(notify_err);

    let mut last_log = Instant::now();
    let mut last_publish = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if workers.iter().any(WorkerHandle::finished) {
            break;
        }
        let _ = notify
            .feed_watchdog(Instant::now(), heartbeat_min(&workers))
            .map_err(notify_err);
        if hup.swap(false, Ordering::Relaxed) {
            let _ = notify.reloading().map_err(notify_err);
            reload(&control);
            let _ = notify
                .ready(&status_line(&engine_total(&workers)))
                .map_err(notify_err);
        }
        while let Ok(cmd) = bypass_rx.try_recv() {
            let txs: Vec<_> = workers.iter().filter_map(|w| w.bypass.as_ref()).collect();
            let r = set_bypass(&cmd, &mut guard, &txs, [&mut steer_in, &mut steer_out]);
            let _ = cmd.reply.send(r.map(|()| guard.bypass.clone()));
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            last_publish = Instant::now();
            let total = engine_total(&workers);
            publish(
                &control,
                (&steer_in, &steer_out),
                &workers,
                &sink_probe,
                &mut watch,
                dns.as_ref().map(|d| &*d.stats),
            );
            let _ = notify.status(&status_line(&total)).map_err(notify_err);
        }
        if last_log.elapsed() >= LOG_EVERY {
            last_log = Instant::now();
            log_counters(&steer_in, &steer_out, &io_total(&workers));
        }
    }
    log("stopping");
    let _ = notify.stopping().map_err(notify_err);
    for s in servers {
        s.stop();
    }
    log_counters(&steer_in, &steer_out, &io_total(&workers));
    // Split mode with pinned tables: the steering links stay (pinned), so the kernel keeps
    // forwarding the offloaded flows, which the engine hands over instead of ending them.
    let handing_over = pinned
        && !workers.iter().any(WorkerHandle::finished)
        && pin_steering([&mut steer_in, &mut steer_out]);
    hand_over.store(handing_over, Ordering::Relaxed);
    // Detach first: from here on the kernel has the interfaces again (split mode with a
    // handover: the pinned steering links forward offloaded flows, and drop what they would
    // steer to the engine once the veth pairs are gone).
    drop(steer_in);
    drop(steer_out);
    worker_stop.store(true, Ordering::Relaxed);
    // Every worker's flows, or an error if any worker panicked (then nothing is handed over).
    let mut joined: Result<(Vec<String>, Vec<_>), ()> = Ok((Vec::new(), Vec::new()));
    for w in &mut workers {
        let r = w.thread.take().map(|t| t.join());
        match (r, &mut joined) {
            (Some(Ok((st, handed))), Ok((all_st, all))) => {
                all_st.push(st);
                all.extend(handed);
            }
            _ => joined = Err(()),
        }
    }
    if joined.is_err() && handing_over {
        // No engine handed anything over: nothing may stay forwarding.
        for d in [&pin_in, &pin_out] {
            let _ = crate::xdp::remove_pins(d);
        }
    }
    let (stats, handed) =
        joined.map_err(|_| RunError::Other("data-path thread panicked".into()))?;
    let stats = stats.join(" | ");
    if handing_over {
        let kept = !handed.is_empty()
            && match crate::handover::write(&run_opts.handover, &fingerprint, &handed) {
                Ok(()) => {
                    log(&format!(
                        "handed {} offloaded flows over ({}); the kernel forwards them until the next natfw run adopts them",
                        handed.len(),
                        run_opts.handover.display()
                    ));
                    true
                }
                Err(e) => {
                    tracing::error!(
                        "writing {}: {e}: the offloaded flows are cut off",
                        run_opts.handover.display()
                    );
                    false
                }
            };
        if !kept {
            for d in [&pin_in, &pin_out] {
                if let Err(e) = crate::xdp::remove_pins(d) {
                    tracing::warn!("{}: removing pins: {e}", d.display());
                }
            }
        }
    }
    drop(dns);
    let w = writer.finish();
    if let Some(h) = syslog {
        let c = Arc::clone(&h.counters);
        h.finish();
        log(&format!(
            "syslog: {} sent, {} dropped",
            c.sent.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed)
        ));
    }
    log(&format!(
        "nftables tables inet {} and inet {} left in place (fail_mode: {})",
        crate::guard::GUARD_TABLE,
        crate::guard::NAT_TABLE,
        cfg.fail_mode.as_str()
    ));
    log(&format!(
        "engine: {stats}; flow log: {} written, {} dropped{}",
        w.written,
        w.dropped,
        w.error
            .map(|e| format!(" (error: {e})"))
            .unwrap_or_default()
    ));
    Ok(())
}

/// `natfw guard --config`: install the guard and NAT tables from the config without starting.
/// When the bypass NAT cannot be set up (no kernel address yet), the guard goes in without the
/// bypass list: those sources are dropped too until `natfw run` installs the full tables.
pub fn guard_only(config: &Path) -> Result<String, RunError> {
    let cfg = load_config(config)?;
    if crate::guard::InstanceLock::held(Path::new(crate::guard::LOCK_DIR)) {
        return Err(RunError::Prerequisite(
            "natfw run is active in this network namespace; it manages the tables".into(),
        ));
    }
    let addrs = crate::netlink::addresses().unwrap_or_default();
    let outside = crate::netlink::if_index(&cfg.gateway.outside).ok();
    let kernel_addrs: Vec<IpAddr> = addrs
        .iter()
        .filter(|(i, a)| Some(*i) == outside && !cfg.gateway.eips.contains(a))
        .filter(|(_, a)| !matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .map(|(_, a)| *a)
        .collect();
    let mut spec = crate::guard::Spec::from_config(&cfg, &kernel_addrs);
    match crate::guard::install(&spec) {
        Ok(()) => Ok(format!(
            "nftables guard installed (fail_mode: {})",
            cfg.fail_mode.as_str()
        )),
        Err(e) if !spec.bypass.is_empty() => {
            spec.bypass.clear();
            crate::guard::install(&spec).map_err(RunError::Prerequisite)?;
            Ok(format!(
                "nftables guard installed without the bypass list ({e}): bypassed sources are dropped until natfw run starts"
            ))
        }
        Err(e) => Err(RunError::Prerequisite(e)),
    }
}

/// `natfw uninstall`: remove the tables, unless a `natfw run` is active here.
pub fn uninstall(pin_dir: &Path, handover: &Path) -> Result<(), RunError> {
    if crate::guard::InstanceLock::held(Path::new(crate::guard::LOCK_DIR)) {
        return Err(RunError::Prerequisite(
            "natfw run is active in this network namespace: stop it first".into(),
        ));
    }
    // A stopped split-mode run's pinned steering links and tables, and its handover.
    for d in pin_dirs(pin_dir) {
        crate::xdp::remove_pins(&d)
            .map_err(|e| RunError::Other(format!("removing the pins in {}: {e}", d.display())))?;
    }
    let _ = std::fs::remove_dir(pin_dir);
    match std::fs::remove_file(handover) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(RunError::Other(format!(
                "removing {}: {e}",
                handover.display()
            )))
        }
        _ => {}
    }
    // A crashed split-mode run's veth pairs (inert without natfw: no address, no program).
    for w in 0..crate::xdp::WORKERS_MAX {
        for (k, _) in crate::xdp::slow_link_names(w) {
            crate::netlink::delete_link(&k)
                .map_err(|e| RunError::Other(format!("removing {k}: {e}")))?;
        }
    }
    crate::guard::uninstall().map_err(RunError::Other)
}

/// Load both sides' programs; split mode with `pins`: their `offload` and `offload6` maps
/// pinned there (an earlier run's reused). A pin directory that cannot be used (no bpffs) is
/// logged and the maps stay unpinned: a restart then ends the offloaded flows. Returns whether
/// pinned.
fn load_steering(
    cfg: &Config,
    rules: &SteeringRules,
    slow: Option<&SlowLinks>,
    pins: Option<[&Path; 2]>,
) -> Result<(Steering, Steering, bool), RunError> {
    let load = |pins: Option<[&Path; 2]>| -> Result<(Steering, Steering), crate::xdp::XdpError> {
        Ok((
            Steering::load_pinned(
                &cfg.gateway.inside,
                IfSide::Inside,
                rules,
                slow.map(|l| l.inside.clone()),
                pins.map(|p| p[0]),
            )?,
            Steering::load_pinned(
                &cfg.gateway.outside,
                IfSide::Outside,
                rules,
                slow.map(|l| l.outside.clone()),
                pins.map(|p| p[1]),
            )?,
        ))
    };
    if let Some(p) = pins {
        match load(Some(p)) {
            Ok((a, b)) => return Ok((a, b, true)),
            Err(e) => tracing::warn!(
                "pinning the fast-path tables in {}: {e}; unpinned (a restart ends offloaded flows)",
                p[0].parent().unwrap_or(p[0]).display()
            ),
        }
    }
    let (a, b) = load(None)?;
    Ok((a, b, false))
}

/// Pin both sides' steering links for a handover; `false` (and nothing left pinned) when
/// either fails.
fn pin_steering(steer: [&mut Steering; 2]) -> bool {
    let mut pinned = Vec::new();
    for s in steer {
        match s.pin_steer() {
            Ok(p) => pinned.push(p),
            Err(e) => {
                tracing::warn!("pinning the steering link: {e}; offloaded flows end now");
                for p in pinned {
                    if let Ok(l) = aya::programs::links::PinnedLink::from_pin(&p) {
                        drop(l.unpin());
                    }
                }
                return false;
            }
        }
    }
    true
}

fn log(msg: &str) {
    tracing::info!("{msg}");
}

/// SIGHUP: reload the config file's policy; on error keep the running one.
fn reload(control: &crate::admin::Control) {
    match control.reload_file() {
        Ok(r) => {
            for w in &r.warnings {
                tracing::warn!("{w}");
            }
            for i in &r.ignored {
                tracing::warn!("{i}");
            }
            log(&format!(
                "reloaded: {} rules now apply to new flows",
                r.rules
            ));
        }
        Err(errors) => {
            for e in &errors {
                tracing::error!("{e}");
            }
            tracing::error!("reload failed: the running policy stays");
        }
    }
}

/// A bypass change for the engine on the data-path thread, acknowledged once applied.
type EngineBypass = (ipnet::IpNet, bool, mpsc::Sender<()>);

/// How long the control thread waits for the data path to apply a bypass change (it does so
/// on its next tick, every [`POLL`]).
const ENGINE_ACK: Duration = Duration::from_secs(2);

/// Tell the engine of every data-path thread and wait until each has applied the change.
fn engine_bypass(
    txs: &[&mpsc::Sender<EngineBypass>],
    net: ipnet::IpNet,
    on: bool,
) -> Result<(), String> {
    let (ack_tx, ack_rx) = mpsc::channel();
    for tx in txs {
        tx.send((net, on, ack_tx.clone()))
            .map_err(|_| "a data-path thread is gone".to_string())?;
    }
    let deadline = Instant::now() + ENGINE_ACK;
    for _ in txs {
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| "the data path did not apply the bypass change".to_string())?;
    }
    Ok(())
}

/// Admin API: add or remove a bypassed source in the engine, the steering maps of both sides
/// and the nftables guard and masquerade. All three must agree: a source the kernel program steers but the
/// engine still thinks bypassed would be answered "to the kernel" and dropped. So a source
/// leaves the bypass in the engine first (then XDP steers it to an engine that SNATs it), and
/// joins it in the engine last (after XDP stopped steering it; replies of its existing flows,
/// to the EIPs, still reach the engine).
fn set_bypass(
    cmd: &crate::admin::BypassCmd,
    guard: &mut crate::guard::Spec,
    engine: &[&mpsc::Sender<EngineBypass>],
    steer: [&mut Steering; 2],
) -> Result<(), String> {
    let net = cmd.net.trunc();
    let mut new = guard.clone();
    new.bypass.retain(|n| *n != net);
    if cmd.add {
        new.bypass.push(net);
    }
    // nftables first: if the kernel cannot masquerade the source, XDP must not hand it over.
    crate::guard::update(&new)?;
    if !cmd.add {
        engine_bypass(engine, net, false)?;
    }
    for s in steer {
        s.set_bypass(net, cmd.add).map_err(|e| e.to_string())?;
    }
    if cmd.add {
        engine_bypass(engine, net, true)?;
    }
    log(&format!(
        "bypass {net} {}",
        if cmd.add { "added" } else { "removed" }
    ));
    *guard = new;
    Ok(())
}

/// Gather the counters the control plane publishes (metrics, status), and watch what the
/// data path cannot see (flow-log losses, the guard, AF_XDP ring drops, the default route).
fn publish(
    control: &crate::admin::Control,
    (a, b): (&Steering, &Steering),
    workers: &[WorkerHandle],
    sink: &natfw_flowlog::ChannelSink,
    watch: &mut Watch,
    dns: Option<&crate::dns::DnsStats>,
) {
    let mut s = crate::metrics::Snapshot {
        heartbeats: heartbeat_min(workers),
        ..Default::default()
    };
    if let Some(d) = dns {
        s.dns = d.rows();
    }
    for w in workers {
        let e = w.engine.lock().map(|e| e.clone()).unwrap_or_default();
        s.engine.accumulate(&e);
        s.workers.push(crate::metrics::WorkerStat {
            frames: e.rx_inside.packets + e.rx_outside.packets,
            flows: e.flows_active,
            heartbeats: w.heartbeat.load(Ordering::Relaxed),
            answers_lost: w.answers_lost.load(Ordering::Relaxed),
        });
    }
    s.io = io_total(workers);
    for st in [a, b] {
        if let Ok(c) = st.counters() {
            s.xdp.push((st.iface().to_string(), c));
        }
    }
    s.flowlog_records = sink.offered();
    s.flowlog_write_failed = sink.write_failed();
    s.flowlog_dropped = sink.dropped() + s.flowlog_write_failed;
    s.flowlog_space_freed = sink.space_freed();
    s.flowlog_last_error = sink.last_error();
    s.syslog = watch.syslog.as_deref().map(crate::metrics::SyslogStat::of);
    watch.flowlog(&s);
    s.guard = watch.guard();
    s.xsk = watch.xsk();
    watch.routes();
    s.default_route = watch.route_ok.clone();
    s.default_route_restored = watch.restored;
    control.publish(s);
}

/// How often a continuing flow-log loss is logged.
const LOSS_LOG_EVERY: Duration = Duration::from_secs(10);
/// How often a default route that cannot be restored is reported again.
const ROUTE_LOG_EVERY: Duration = Duration::from_secs(30);

/// State of what `publish` watches.
struct Watch {
    xsk_fds: Vec<(&'static str, i32)>,
    /// Records lost as of the last loss message.
    lost_logged: u64,
    last_loss_log: Option<Instant>,
    guard_failed: bool,
    guard_last: crate::guard::GuardCounters,
    last_guard_read: Option<Instant>,
    outside: (String, u32),
    /// Families with EIPs: (IPv6?, label, routers of the family at start).
    families: Vec<(bool, &'static str, Vec<IpAddr>)>,
    route_ok: Vec<(&'static str, bool)>,
    last_route_log: Vec<Option<Instant>>,
    restored: u64,
    /// The remote syslog sink's counters, if one is configured.
    syslog: Option<Arc<crate::syslog::SyslogCounters>>,
}

impl Watch {
    fn new(cfg: &Config, sys: &System, fds: &[(IfSide, i32)]) -> Watch {
        let families: Vec<_> = [(false, "ipv4"), (true, "ipv6")]
            .into_iter()
            .filter(|(v6, _)| cfg.gateway.eips.iter().any(|e| e.is_ipv6() == *v6))
            .map(|(v6, l)| {
                let r = sys.routers.iter().copied().filter(|r| r.is_ipv6() == v6);
                (v6, l, r.collect())
            })
            .collect();
        Watch {
            xsk_fds: fds
                .iter()
                .map(|(side, fd)| {
                    let s = match side {
                        IfSide::Inside => "inside",
                        IfSide::Outside => "outside",
                    };
                    (s, *fd)
                })
                .collect(),
            lost_logged: 0,
            last_loss_log: None,
            guard_failed: false,
            guard_last: Default::default(),
            last_guard_read: None,
            outside: (sys.outside.name.clone(), sys.outside.ifindex),
            route_ok: families.iter().map(|(_, l, _)| (*l, true)).collect(),
            last_route_log: vec![None; families.len()],
            families,
            restored: 0,
            syslog: None,
        }
    }

    /// Log lost flow records as they happen (at most every [`LOSS_LOG_EVERY`]).
    fn flowlog(&mut self, s: &crate::metrics::Snapshot) {
        let lost = s.flowlog_dropped;
        if lost <= self.lost_logged {
            return;
        }
        if self
            .last_loss_log
            .is_some_and(|t| t.elapsed() < LOSS_LOG_EVERY)
        {
            return;
        }
        log(&format!(
            "flow log: {} records lost since the last report ({} in all: {} failed writes, {} dropped with the writer behind){}",
            lost - self.lost_logged,
            lost,
            s.flowlog_write_failed,
            lost - s.flowlog_write_failed,
            s.flowlog_last_error
                .as_ref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ));
        self.lost_logged = lost;
        self.last_loss_log = Some(Instant::now());
    }

    /// The guard's counters (read with `nft` at most every 2 s).
    fn guard(&mut self) -> crate::guard::GuardCounters {
        if self
            .last_guard_read
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return self.guard_last;
        }
        self.last_guard_read = Some(Instant::now());
        match crate::guard::GuardCounters::read() {
            Ok(c) => {
                self.guard_failed = false;
                self.guard_last = c;
            }
            Err(e) if !self.guard_failed => {
                self.guard_failed = true;
                log(&format!(
                    "reading the nftables guard counters: {e} (was table inet {} removed?)",
                    crate::guard::GUARD_TABLE
                ));
            }
            Err(_) => {}
        }
        self.guard_last
    }

    /// The AF_XDP sockets' kernel counters, added up per side (one socket per worker).
    fn xsk(&self) -> Vec<(&'static str, crate::xsk_stats::XskStats)> {
        let mut out: Vec<(&'static str, crate::xsk_stats::XskStats)> = Vec::new();
        for (side, fd) in &self.xsk_fds {
            let Ok(x) = crate::xsk_stats::XskStats::read(*fd) else {
                continue;
            };
            match out.iter_mut().find(|(s, _)| s == side) {
                Some((_, t)) => t.accumulate(&x),
                None => out.push((side, x)),
            }
        }
        out
    }

    /// A link flap removes the default route: put it back once the link is up again, and say
    /// so loudly either way.
    fn routes(&mut self) {
        let (name, ifindex) = (self.outside.0.clone(), self.outside.1);
        for (i, (v6, label, routers)) in self.families.iter().enumerate() {
            let present = crate::netlink::default_routes(*v6)
                .map(|rs| rs.iter().any(|r| r.oif == ifindex))
                .unwrap_or(true);
            let was = self.route_ok[i].1;
            if present {
                if !was {
                    log(&format!("{label} default route out of {name} is back"));
                }
                self.route_ok[i].1 = true;
                continue;
            }
            if was {
                log(&format!(
                    "ALERT: the {label} default route out of {name} is gone (link down?): nothing SNATed leaves until it is back"
                ));
                self.last_route_log[i] = Some(Instant::now());
            }
            self.route_ok[i].1 = false;
            let up = crate::netlink::link(ifindex).is_ok_and(|l| l.up);
            if !up {
                continue;
            }
            let fam = if *v6 { "-6" } else { "-4" };
            let mut restored = Vec::new();
            let mut errors = Vec::new();
            let hops: Vec<Option<IpAddr>> = if routers.is_empty() {
                vec![None]
            } else {
                routers.iter().copied().map(Some).collect()
            };
            for hop in hops {
                let mut args = vec![fam.to_string(), "route".into(), "replace".into()];
                args.push("default".into());
                if let Some(h) = hop {
                    args.extend(["via".into(), h.to_string()]);
                }
                args.extend(["dev".into(), name.clone()]);
                match Command::new("ip").args(&args).output() {
                    Ok(o) if o.status.success() => {
                        restored.push(args[3..].join(" "));
                        if let Some(h) = hop {
                            crate::neigh::probe(h, ifindex);
                        }
                    }
                    Ok(o) => errors.push(String::from_utf8_lossy(&o.stderr).trim().to_string()),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            if !restored.is_empty() {
                self.restored += 1;
                self.route_ok[i].1 = true;
                log(&format!(
                    "{name} is up again: restored the {label} {}",
                    restored.join(", ")
                ));
            } else if self.last_route_log[i].is_none_or(|t| t.elapsed() >= ROUTE_LOG_EVERY) {
                self.last_route_log[i] = Some(Instant::now());
                log(&format!(
                    "ALERT: {name} is up but the {label} default route could not be restored: {}",
                    errors.join("; ")
                ));
            }
        }
    }
}

/// The `STATUS=` line systemd shows: flows now and in total, packets dropped.
fn status_line(e: &natfw_engine::stats::EngineStats) -> String {
    let drops: u64 = [
        e.drop_parse,
        e.drop_fragment,
        e.drop_policy,
        e.drop_no_flow,
        e.drop_no_port,
        e.drop_table_full,
        e.drop_hold_full,
        e.drop_invalid_state,
        e.drop_unsupported,
        e.drop_evasion,
    ]
    .iter()
    .map(|c| c.packets)
    .sum();
    format!(
        "forwarding: {} flows active, {} created, {drops} packets dropped",
        e.flows_active, e.flows_created
    )
}

fn log_counters(a: &Steering, b: &Steering, io: &IoStats) {
    for s in [a, b] {
        match s.counters() {
            Ok(c) => log(&format!("xdp {}: {c}", s.iface())),
            Err(e) => tracing::warn!("xdp {}: counters: {e}", s.iface()),
        }
    }
    log(&format!("io: {io:?}"));
}

fn load_config(path: &Path) -> Result<Config, RunError> {
    let loaded = natfw_policy::config::load_file(path)
        .map_err(|d| RunError::Config(d.to_string().trim_end().to_string()))?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let cfg = loaded.config;
    if !cfg.gateway.dnat.is_empty() {
        return Err(RunError::Config(
            "DNAT entries are not supported by `natfw run`: remove gateway.dnat".into(),
        ));
    }
    Ok(cfg)
}

/// What `run` learned about the live system.
#[derive(Debug, Clone)]
struct System {
    inside: PortInfo,
    outside: PortInfo,
    gateway_addrs: Vec<IpAddr>,
    /// Addresses of the outside interface that are not EIPs (bypassed sources are SNATed to
    /// them by the kernel).
    kernel_addrs: Vec<IpAddr>,
    /// Next hops of the default routes out of the outside interface.
    routers: Vec<IpAddr>,
}

fn check_system(cfg: &Config) -> Result<System, RunError> {
    let pre = RunError::Prerequisite;
    let port = |name: &str, side| -> Result<PortInfo, RunError> {
        let p = PortInfo::lookup(name, side).map_err(|e| pre(e.to_string()))?;
        let l = crate::netlink::link(p.ifindex).map_err(|e| pre(format!("{name}: {e}")))?;
        // Classic mode: one AF_XDP socket per interface, on queue 0: frames the NIC spreads
        // onto other queues would find no socket (the program drops them, fail-closed). Split
        // mode takes every queue's packets at tc and binds its sockets to its own veth pairs.
        if !cfg.gateway.fast_path {
            let queues = crate::netlink::active_rx_queues(name)
                .map_err(|e| pre(format!("{name}: reading RX queues: {e}")))?;
            if let Some(q @ 2..) = queues {
                return Err(pre(format!(
                    "{name} has {q} RX queues; classic mode (gateway.fast_path: false) uses one (ethtool -L {name} rx 1 or combined 1)"
                )));
            }
        }
        if !l.up {
            return Err(pre(format!(
                "interface {name} is down (ip link set {name} up)"
            )));
        }
        Ok(p)
    };
    let inside = port(&cfg.gateway.inside, IfSide::Inside)?;
    let outside = port(&cfg.gateway.outside, IfSide::Outside)?;
    if inside.ifindex == outside.ifindex {
        return Err(pre("inside and outside must be different interfaces".into()));
    }
    let addrs = crate::netlink::addresses().map_err(|e| pre(format!("listing addresses: {e}")))?;
    for eip in &cfg.gateway.eips {
        if !addrs.iter().any(|(i, a)| *i == outside.ifindex && a == eip) {
            return Err(pre(format!(
                "EIP {eip} is not configured on {} (ip addr add {eip}/32 dev {})",
                outside.name, outside.name
            )));
        }
    }
    let mut routers = Vec::new();
    for v6 in [false, true] {
        if !cfg.gateway.eips.iter().any(|e| e.is_ipv6() == v6) {
            continue;
        }
        let routes =
            crate::netlink::default_routes(v6).map_err(|e| pre(format!("reading routes: {e}")))?;
        routers.extend(
            routes
                .iter()
                .filter(|r| r.oif == outside.ifindex)
                .filter_map(|r| r.gateway),
        );
        if !routes.iter().any(|r| r.oif == outside.ifindex) {
            return Err(pre(format!(
                "no IPv{} default route leads out of {} (ip route add default via ROUTER dev {})",
                if v6 { 6 } else { 4 },
                outside.name,
                outside.name
            )));
        }
    }
    let kernel_addrs = addrs
        .iter()
        .filter(|(i, a)| *i == outside.ifindex && !cfg.gateway.eips.contains(a))
        .filter(|(_, a)| !matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .map(|(_, a)| *a)
        .collect();
    Ok(System {
        inside,
        outside,
        gateway_addrs: addrs.into_iter().map(|(_, a)| a).collect(),
        kernel_addrs,
        routers,
    })
}

/// Split mode's veth pairs: one per packet worker and side, deleted on drop.
struct SlowLinks {
    /// Index = worker.
    inside: Vec<crate::xdp::SlowPath>,
    outside: Vec<crate::xdp::SlowPath>,
}

impl SlowLinks {
    /// One pair per worker and side (names: `xdp::slow_link_names`); a crashed run's are
    /// replaced.
    fn create(sys: &System, workers: usize) -> Result<SlowLinks, RunError> {
        let make = |(k, x): (String, String),
                    wire: &PortInfo|
         -> Result<crate::xdp::SlowPath, RunError> {
            let err = |what: &str, e: std::io::Error| {
                RunError::Prerequisite(format!("slow-path veth {k}/{x}: {what}: {e}"))
            };
            if crate::netlink::delete_link(&k).map_err(|e| err("removing a leftover", e))? {
                log(&format!("removed a leftover slow-path veth {k} (an earlier run ended without cleaning up)"));
            }
            crate::netlink::create_veth(&k, &x, wire.mtu).map_err(|e| err("creating", e))?;
            if let Err(e) = crate::netlink::disable_segmentation_offload(&k) {
                tracing::warn!("{k}: cannot turn segmentation offload off ({e})");
            }
            Ok(crate::xdp::SlowPath {
                kernel_ifindex: crate::netlink::if_index(&k).map_err(|e| err("index", e))?,
                xdp_ifindex: crate::netlink::if_index(&x).map_err(|e| err("index", e))?,
                kernel_end: k,
                xdp_end: x,
                wire_ifindex: wire.ifindex,
            })
        };
        // Owned as they are made: a failure half-way still removes the pairs made so far.
        let mut links = SlowLinks {
            inside: Vec::new(),
            outside: Vec::new(),
        };
        for w in 0..workers {
            let [i, o] = crate::xdp::slow_link_names(w);
            links.inside.push(make(i, &sys.inside)?);
            links.outside.push(make(o, &sys.outside)?);
        }
        // A run with fewer workers than the last one: its extra pairs would stay behind.
        for w in workers..crate::xdp::WORKERS_MAX {
            for (k, _) in crate::xdp::slow_link_names(w) {
                let _ = crate::netlink::delete_link(&k);
            }
        }
        Ok(links)
    }
}

impl Drop for SlowLinks {
    fn drop(&mut self) {
        for p in self.inside.iter().chain(&self.outside) {
            if let Err(e) = crate::netlink::delete_link(&p.kernel_end) {
                tracing::warn!("removing the slow-path veth {}: {e}", p.kernel_end);
            }
        }
    }
}

/// Pin the calling thread to one CPU (the data path does not migrate).
fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it; sched_setaffinity
    // reads `size_of::<cpu_set_t>()` bytes of it for the calling thread (pid 0).
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

type FdReply = (usize, Result<[(IfSide, i32); 2], crate::afxdp::AfXdpError>);

/// What the control thread keeps of one packet worker.
struct WorkerHandle {
    thread: Option<std::thread::JoinHandle<(String, Vec<natfw_engine::engine::HandoverFlow>)>>,
    /// Bypass changes for its engine.
    bypass: Option<mpsc::Sender<EngineBypass>>,
    io: Arc<Mutex<IoStats>>,
    /// Its engine's counters as of its last tick.
    engine: Arc<Mutex<natfw_engine::stats::EngineStats>>,
    /// Turns of its loop: the systemd watchdog is fed only while every worker's moves.
    heartbeat: Arc<AtomicU64>,
    /// DNS facts it could not pass to another worker (that worker's queue full).
    answers_lost: Arc<AtomicU64>,
}

impl WorkerHandle {
    fn default_for(_w: usize) -> WorkerHandle {
        WorkerHandle {
            thread: None,
            bypass: None,
            io: Arc::default(),
            engine: Arc::default(),
            heartbeat: Arc::default(),
            answers_lost: Arc::default(),
        }
    }

    fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

/// Stop every worker thread and wait for it (a start that failed half-way).
fn stop_workers(stop: &AtomicBool, workers: &mut [WorkerHandle]) {
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        if let Some(t) = w.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every worker's engine counters added up.
fn engine_total(ws: &[WorkerHandle]) -> natfw_engine::stats::EngineStats {
    let mut t = natfw_engine::stats::EngineStats::default();
    for w in ws {
        if let Ok(e) = w.engine.lock() {
            t.accumulate(&e);
        }
    }
    t
}

/// Every worker's I/O counters added up.
fn io_total(ws: &[WorkerHandle]) -> IoStats {
    let mut t = IoStats::default();
    for w in ws {
        if let Ok(io) = w.io.lock() {
            t.accumulate(&io);
        }
    }
    t
}

/// The slowest worker's loop turns: it stops growing when any worker is stuck.
fn heartbeat_min(ws: &[WorkerHandle]) -> u64 {
    ws.iter()
        .map(|w| w.heartbeat.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0)
}

/// The shared state a worker thread reports into.
struct WorkerShared {
    stop: Arc<AtomicBool>,
    hand_over: Arc<AtomicBool>,
    heartbeat: Arc<AtomicU64>,
    io_stats: Arc<Mutex<IoStats>>,
    engine_stats: Arc<Mutex<natfw_engine::stats::EngineStats>>,
    answers_lost: Arc<AtomicU64>,
}

/// What a worker thread owns besides its sockets.
struct WorkerLinks {
    engine: Engine,
    /// Facts from the DNS thread, requests to it.
    dns: Option<crate::dns::DnsLink>,
    bypass: mpsc::Receiver<EngineBypass>,
    /// DNS facts the other workers' engines learned.
    inbox: crossbeam_channel::Receiver<SharedAnswer>,
    /// The other workers' inboxes.
    peers: Vec<crossbeam_channel::Sender<SharedAnswer>>,
}

/// A data-path thread: pin to its CPU, open its sockets, report their fds, forward until
/// stopped, shut its engine down (or hand its offloaded flows over). Returns the engine's
/// final statistics as text and the flows handed over.
fn worker(
    w: usize,
    (inside, outside): (PortInfo, PortInfo),
    links: WorkerLinks,
    shared: &WorkerShared,
    fds: &mpsc::Sender<FdReply>,
) -> (String, Vec<natfw_engine::engine::HandoverFlow>) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = w % cpus;
    if let Err(e) = pin_to_cpu(cpu) {
        tracing::warn!("pinning packet worker {w} to CPU {cpu}: {e} (continuing unpinned)");
    }
    let mut x = match AfXdp::open(inside, outside) {
        Ok(x) => x,
        Err(e) => {
            let _ = fds.send((w, Err(e)));
            return (String::new(), Vec::new());
        }
    };
    let _ = fds.send((w, Ok(x.socket_fds())));
    let mut h = EngineHandler {
        engine: links.engine,
        dns: links.dns,
        emits: Vec::new(),
        shared,
        last: IoStats::default(),
        bypass: links.bypass,
        inbox: links.inbox,
        peers: links.peers,
        answers: Vec::new(),
    };
    x.run(&mut h, &shared.stop, POLL);
    let handed = if shared.hand_over.load(Ordering::Relaxed) {
        h.engine.handover()
    } else {
        Vec::new()
    };
    h.engine.shutdown(Timestamp::now());
    x.flush_emits(&mut h);
    if let Ok(mut s) = shared.io_stats.lock() {
        *s = x.stats();
    }
    if let Ok(mut s) = shared.engine_stats.lock() {
        s.clone_from(h.engine.stats());
    }
    (format!("worker {w}: {:?}", h.engine.stats()), handed)
}

/// Adapts the engine to the I/O loop.
struct EngineHandler<'a> {
    engine: Engine,
    /// Facts from the DNS thread, requests to it.
    dns: Option<crate::dns::DnsLink>,
    emits: Vec<Emit>,
    shared: &'a WorkerShared,
    /// Last I/O counters published to the control thread.
    last: IoStats,
    /// Bypass changes from the admin API, applied between batches.
    bypass: mpsc::Receiver<EngineBypass>,
    inbox: crossbeam_channel::Receiver<SharedAnswer>,
    peers: Vec<crossbeam_channel::Sender<SharedAnswer>>,
    answers: Vec<SharedAnswer>,
}

fn side(s: IfSide) -> Side {
    match s {
        IfSide::Inside => Side::Inside,
        IfSide::Outside => Side::Outside,
    }
}

impl EngineHandler<'_> {
    /// Apply the other workers' DNS facts (cheap when there is none: one atomic load).
    fn take_answers(&mut self, now: Timestamp) {
        if self.inbox.is_empty() {
            return;
        }
        while let Ok(a) = self.inbox.try_recv() {
            self.engine.learn_shared_answer(now, &a);
        }
    }

    /// Pass the facts this engine just learned to the other workers, before the answer that
    /// carried them is sent on: the client's next flow, on whichever worker, finds them.
    fn give_answers(&mut self) {
        self.engine.drain_shared_answers(&mut self.answers);
        for a in self.answers.drain(..) {
            for p in &self.peers {
                if p.try_send(a.clone()).is_err() {
                    self.shared.answers_lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

impl FrameHandler for EngineHandler<'_> {
    fn handle(&mut self, now: Timestamp, s: IfSide, frame: &mut [u8]) -> Disposition {
        // A fact handed over before this frame arrived (a forwarded answer the client acted
        // on) is applied before the frame is decided.
        if let Some(d) = &self.dns {
            d.apply(&mut self.engine, now);
        }
        self.take_answers(now);
        let v = self.engine.process(now, side(s), frame);
        if !self.peers.is_empty() {
            self.give_answers();
        }
        match v {
            Verdict::Forward => Disposition::Forward,
            Verdict::Drop(_) | Verdict::Held => Disposition::Consumed,
            Verdict::ToKernel => Disposition::ToKernel,
        }
    }

    fn take_emits(&mut self, out: &mut Vec<(IfSide, Vec<u8>)>) {
        if let Some(d) = &mut self.dns {
            d.pump(&mut self.engine, Timestamp::now());
        }
        self.engine.drain_emits(&mut self.emits);
        out.extend(self.emits.drain(..).map(|e| {
            let s = match e.side {
                Side::Inside => IfSide::Inside,
                Side::Outside => IfSide::Outside,
            };
            (s, e.frame)
        }));
    }

    fn tick(&mut self, now: Timestamp, io: &IoStats) {
        self.shared.heartbeat.fetch_add(1, Ordering::Relaxed);
        while let Ok((net, on, ack)) = self.bypass.try_recv() {
            self.engine.set_bypass(net, on);
            let _ = ack.send(());
        }
        self.take_answers(now);
        self.engine.poll(now);
        // try_lock: the data path never waits for the control thread.
        if let Ok(mut s) = self.shared.engine_stats.try_lock() {
            s.clone_from(self.engine.stats());
        }
        if *io != self.last {
            self.last = *io;
            if let Ok(mut s) = self.shared.io_stats.lock() {
                *s = *io;
            }
        }
    }
}
