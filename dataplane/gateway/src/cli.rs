//! Command-line parsing and dispatch. Each subcommand lives in its own module and returns the
//! process exit code.

use clap::{CommandFactory, Parser, Subcommand};

/// Config file `natfw run` reads unless told otherwise (the package installs a commented one).
pub const DEFAULT_CONFIG: &str = "/etc/natfw/natfw.yaml";

/// natfw: an egress firewall for cloud NAT gateways.
#[derive(Debug, Parser)]
#[command(name = "natfw", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file; print every problem as file:line:col: message.
    Check {
        /// Path to natfw.yaml.
        config: std::path::PathBuf,
    },
    /// The network-namespace lab: VPC hosts, NAT gateways, internet servers.
    Lab {
        #[command(subcommand)]
        cmd: natfw_lab::cli::LabCmd,
    },
    /// Run the engine over pcap/pcapng captures taken on the inside; write flow records.
    Replay {
        /// natfw.yaml (default: every private source SNAT-bound, no rules, accept).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Write records to this file instead of stdout.
        #[arg(long)]
        flow_log: Option<std::path::PathBuf>,
        /// Capture files, merged by time.
        #[arg(required = true)]
        captures: Vec<std::path::PathBuf>,
    },
    /// Attach XDP, open AF_XDP sockets, forward and enforce until SIGINT/SIGTERM, then flush
    /// the flow log.
    Run {
        /// Path to natfw.yaml.
        #[arg(long, env = "NATFW_CONFIG", default_value = DEFAULT_CONFIG)]
        config: std::path::PathBuf,
        /// Log line format on stderr (the filter is NATFW_LOG, else RUST_LOG, else `info`).
        #[arg(long, env = "NATFW_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: crate::logging::LogFormat,
        /// Fast path: bpffs directory for the pinned flow tables and, at a stop, the steering
        /// links that keep offloaded flows forwarding until the next start adopts them.
        #[arg(long, env = "NATFW_PIN_DIR", default_value = crate::handover::DEFAULT_PIN_DIR)]
        pin_dir: std::path::PathBuf,
        /// Fast path: file for the offloaded flows handed over from one run to the next.
        #[arg(long, env = "NATFW_HANDOVER_FILE", default_value = crate::handover::DEFAULT_PATH)]
        handover_file: std::path::PathBuf,
    },
    /// Install the nftables guard (and the bypass NAT) without starting natfw: nothing
    /// SNAT-bound is forwarded until `natfw run` forwards it (for boot, before natfw starts).
    Guard {
        /// Path to natfw.yaml.
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Remove the nftables tables `natfw run` leaves in place (inet natfw_guard, inet natfw):
    /// afterwards the kernel forwards VPC traffic unfiltered. Refused while natfw runs here.
    Uninstall {
        /// The pin directory `natfw run` used (`--pin-dir`).
        #[arg(long, env = "NATFW_PIN_DIR", default_value = crate::handover::DEFAULT_PIN_DIR)]
        pin_dir: std::path::PathBuf,
        /// The handover file `natfw run` used (`--handover-file`).
        #[arg(long, env = "NATFW_HANDOVER_FILE", default_value = crate::handover::DEFAULT_PATH)]
        handover_file: std::path::PathBuf,
    },
    /// Print the man page (roff) generated from this command line.
    #[command(hide = true)]
    Manpage,
    /// Search flow logs.
    Logs {
        /// Flow-log files (JSON lines; `-` = stdin).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Source IP or CIDR.
        #[arg(long)]
        src: Option<String>,
        /// Destination IP or CIDR.
        #[arg(long)]
        dst: Option<String>,
        /// Domain: exact name, or *.suffix for any name under it.
        #[arg(long)]
        domain: Option<String>,
        /// accept or drop.
        #[arg(long)]
        action: Option<String>,
        /// Flows active at or after this time (RFC 3339, UTC if no zone).
        #[arg(long)]
        since: Option<String>,
        /// Flows started at or before this time.
        #[arg(long)]
        until: Option<String>,
        /// Print matching records as JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Outbound ranking per private source IP (top talkers).
    Top {
        /// Flow-log files (JSON lines; `-` = stdin).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Rank by total bytes or by number of flows.
        #[arg(long, value_enum, default_value = "bytes")]
        by: TopByArg,
        /// Sources to show.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Traffic per interval against the protected bandwidth.
    Overview {
        /// Flow-log files (JSON lines; `-` = stdin).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Interval length: 30s, 1m, 5m, 1h, 1d. Default: chosen from the time span (1m up
        /// to 7d, at most 1,440 intervals).
        #[arg(long)]
        interval: Option<String>,
        /// Protected bandwidth in Mbit/s (default: the config's gateway.protected_bandwidth_mbps).
        #[arg(long, conflicts_with = "config")]
        bandwidth_mbps: Option<f64>,
        /// natfw.yaml to read the protected bandwidth from.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Also write an SVG line chart here.
        #[arg(long)]
        chart: Option<std::path::PathBuf>,
    },
    /// Show the running policy with per-rule hits, or apply a new config (admin API).
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Turn inspection on or off for new flows (off = SNAT only) (admin API).
    Firewall {
        #[arg(value_enum)]
        state: OnOff,
        /// Needed for `off` (it lets everything through).
        #[arg(long)]
        allow_open: bool,
        #[command(flatten)]
        admin: crate::admin::client::AdminArgs,
    },
    /// Add or remove a bypassed source: SNATed by the kernel, never inspected (admin API).
    Bypass {
        #[arg(value_enum)]
        op: AddRemove,
        /// Source IP or CIDR.
        source: String,
        /// Needed for a source that covers every SNAT entry (0.0.0.0/0, ::/0): the firewall
        /// would inspect nothing.
        #[arg(long)]
        allow_open: bool,
        #[command(flatten)]
        admin: crate::admin::client::AdminArgs,
    },
    /// Is this gateway forwarding? Asks the running natfw's `GET /healthz` (metrics listener,
    /// else a plain-HTTP admin listener); exit 0 when healthy. For keepalived's track_script.
    Health {
        /// Path to natfw.yaml.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: std::path::PathBuf,
        /// Also pass on a standby: no natfw running, no EIP on the outside interface, the
        /// fail-closed guard installed (and while natfw is starting).
        #[arg(long)]
        standby_ok: bool,
    },
    /// Counters and state of the running gateway (admin API).
    Status {
        #[command(flatten)]
        admin: crate::admin::client::AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Print the running rules with hits, bytes and last hit.
    Show {
        #[command(flatten)]
        admin: crate::admin::client::AdminArgs,
    },
    /// Validate FILE (a full natfw.yaml) on the gateway and swap its policy in.
    Apply {
        file: std::path::PathBuf,
        /// Needed for a policy that lets everything through (firewall off, or default accept
        /// without any drop rule) while the running one does not.
        #[arg(long)]
        allow_open: bool,
        #[command(flatten)]
        admin: crate::admin::client::AdminArgs,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AddRemove {
    Add,
    Remove,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TopByArg {
    Bytes,
    Flows,
}

/// Run the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            crate::check::run(&config, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Lab { cmd } => natfw_lab::cli::main(cmd),
        Command::Replay {
            config,
            flow_log,
            captures,
        } => replay(crate::replay::ReplayOptions {
            config,
            flow_log,
            captures,
        }),
        Command::Run {
            config,
            log_format,
            pin_dir,
            handover_file,
        } => {
            if let Err(e) = crate::logging::init(log_format) {
                eprintln!("natfw run: {e}");
                return 2;
            }
            match crate::run::run(&crate::run::RunOptions {
                config,
                pin_dir,
                handover: handover_file,
            }) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("natfw run: {e}");
                    1
                }
            }
        }
        Command::Manpage => {
            let man = clap_mangen::Man::new(Cli::command());
            match man.render(&mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
                Err(e) => {
                    eprintln!("natfw: {e}");
                    1
                }
            }
        }
        Command::Guard { config } => match crate::run::guard_only(&config) {
            Ok(msg) => {
                eprintln!("natfw guard: {msg}");
                0
            }
            Err(e) => {
                eprintln!("natfw guard: {e}");
                1
            }
        },
        Command::Uninstall {
            pin_dir,
            handover_file,
        } => match crate::run::uninstall(&pin_dir, &handover_file) {
            Ok(()) => {
                eprintln!(
                    "natfw uninstall: nftables tables inet {} and inet {} removed",
                    crate::guard::GUARD_TABLE,
                    crate::guard::NAT_TABLE
                );
                0
            }
            Err(e) => {
                eprintln!("natfw uninstall: {e}");
                1
            }
        },
        Command::Logs {
            files,
            src,
            dst,
            domain,
            action,
            since,
            until,
            json,
        } => view_exit(logs(files, src, dst, domain, action, since, until, json)),
        Command::Top { files, by, limit } => view_exit(top(files, by, limit)),
        Command::Overview {
            files,
            interval,
            bandwidth_mbps,
            config,
            chart,
        } => view_exit(overview(files, interval, bandwidth_mbps, config, chart)),
        Command::Policy {
            cmd: PolicyCmd::Show { admin },
        } => crate::admin::client::main(&admin, "GET", "/v1/policy", None),
        Command::Policy {
            cmd:
                PolicyCmd::Apply {
                    file,
                    allow_open,
                    admin,
                },
        } => match std::fs::read(&file) {
            Ok(body) => {
                let path = if allow_open {
                    "/v1/policy?allow_open=true"
                } else {
                    "/v1/policy"
                };
                crate::admin::client::main(&admin, "PUT", path, Some(&body))
            }
            Err(e) => {
                eprintln!("natfw: {}: {e}", file.display());
                1
            }
        },
        Command::Firewall {
            state,
            allow_open,
            admin,
        } => {
            let body = serde_json::json!({
                "enabled": matches!(state, OnOff::On),
                "allow_open": allow_open,
            })
            .to_string();
            crate::admin::client::main(&admin, "POST", "/v1/firewall", Some(body.as_bytes()))
        }
        Command::Bypass {
            op,
            source,
            allow_open,
            admin,
        } => {
            let body =
                serde_json::json!({ "source": source, "allow_open": allow_open }).to_string();
            let method = match op {
                AddRemove::Add => "POST",
                AddRemove::Remove => "DELETE",
            };
            crate::admin::client::main(&admin, method, "/v1/bypass", Some(body.as_bytes()))
        }
        Command::Health { config, standby_ok } => crate::health::main(&config, standby_ok),
        Command::Status { admin } => crate::admin::client::main(&admin, "GET", "/v1/status", None),
    }
}

fn replay(opts: crate::replay::ReplayOptions) -> i32 {
    match crate::replay::run(opts) {
        Ok(summary) => {
            for w in &summary.warnings {
                eprintln!("natfw replay: warning: {w}");
            }
            eprintln!("{summary}");
            0
        }
        Err(e) => {
            eprintln!("natfw replay: {e}");
            1
        }
    }
}

use natfw_flowlog::views::{self, ViewError};

fn view_exit(r: Result<views::InputStats, ViewError>) -> i32 {
    match r {
        Ok(stats) => {
            if let Some(w) = stats.warning() {
                eprintln!("natfw: warning: {w}");
            }
            0
        }
        // A closed pipe (`natfw logs ... | head`) is not an error.
        Err(ViewError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("natfw: {e}");
            1
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn logs(
    files: Vec<std::path::PathBuf>,
    src: Option<String>,
    dst: Option<String>,
    domain: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
    json: bool,
) -> Result<views::InputStats, ViewError> {
    use views::logs::{parse_net, DomainQuery, LogFilter, LogFormat};
    let action = match action.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some(a @ ("accept" | "drop")) => Some(a.to_string()),
        Some(other) => {
            return Err(ViewError::Usage(format!(
                "bad action `{other}`: accept or drop"
            )))
        }
    };
    let filter = LogFilter {
        src: src.as_deref().map(parse_net).transpose()?,
        dst: dst.as_deref().map(parse_net).transpose()?,
        domain: domain.as_deref().map(DomainQuery::parse).transpose()?,
        action,
        since: since.as_deref().map(views::parse_time).transpose()?,
        until: until.as_deref().map(views::parse_time).transpose()?,
    };
    let format = if json {
        LogFormat::Json
    } else {
        LogFormat::Table
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (stats, _) = views::logs::logs(&files, &filter, format, &mut out)?;
    std::io::Write::flush(&mut out)?;
    Ok(stats)
}

fn top(
    files: Vec<std::path::PathBuf>,
    by: TopByArg,
    limit: usize,
) -> Result<views::InputStats, ViewError> {
    let by = match by {
        TopByArg::Bytes => views::top::TopBy::Bytes,
        TopByArg::Flows => views::top::TopBy::Flows,
    };
    let (talkers, stats) = views::top::top(&files, by)?;
    let mut out = std::io::stdout().lock();
    views::top::print_top(&talkers, limit, &mut out)?;
    Ok(stats)
}

fn overview(
    files: Vec<std::path::PathBuf>,
    interval: Option<String>,
    bandwidth_mbps: Option<f64>,
    config: Option<std::path::PathBuf>,
    chart: Option<std::path::PathBuf>,
) -> Result<views::InputStats, ViewError> {
    let interval = interval.map(|i| views::parse_interval(&i)).transpose()?;
    let bandwidth = match (bandwidth_mbps, config) {
        (Some(b), _) if !(b.is_finite() && b > 0.0) => {
            return Err(ViewError::Usage(format!("bad --bandwidth-mbps {b}")))
        }
        (Some(b), _) => Some(b),
        (None, Some(path)) => {
            let mut warnings = Vec::new();
            let cfg = crate::replay::load_config(Some(&path), &mut warnings)
                .map_err(|e| ViewError::Usage(e.to_string()))?;
            cfg.gateway.protected_bandwidth_mbps.map(|b| b as f64)
        }
        (None, None) => None,
    };
    let (o, stats) = match interval {
        Some(iv) => views::overview::overview(&files, iv, bandwidth)?,
        None => views::overview::overview_auto(&files, bandwidth)?,
    };
    let mut out = std::io::stdout().lock();
    views::overview::print_overview(&o, &mut out)?;
    if let Some(path) = chart {
        let title = format!("natfw traffic ({}s intervals)", o.interval.as_secs());
        std::fs::write(&path, views::svg::overview_chart(&o, &title))
            .map_err(|e| ViewError::Usage(format!("{}: {e}", path.display())))?;
    }
    Ok(stats)
}
