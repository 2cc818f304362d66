//! The `natfw lab` subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};

use super::{compose, demo, down_tag, known_tags, namespaces_with_prefix, plan, status, tools};
use super::{GatewayMode, Lab, Options, Scenario};

/// Gateway mode on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Kernel forwarding + nftables SNAT and an equivalent L3/L4 ruleset.
    Kernel,
    /// `natfw run` in each gateway namespace.
    Natfw,
}

impl From<ModeArg> for GatewayMode {
    fn from(m: ModeArg) -> GatewayMode {
        match m {
            ModeArg::Kernel => GatewayMode::Kernel,
            ModeArg::Natfw => GatewayMode::Natfw,
        }
    }
}

/// `natfw lab ...`
#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Build a scenario's namespaces, links, servers and gateway rules (idempotent).
    Up {
        /// 1: prod+test VPCs; 2: shared DMZ gateway; 3: vSwitches with own EIPs + bypass.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
        scenario: u8,
        /// Namespace tag (`natfw-<tag>-*`); default `s<scenario>`.
        #[arg(long)]
        tag: Option<String>,
        /// What the gateways run right after `up` (natfw mode only sets the kernel's part;
        /// start `natfw run` yourself or use `demo`).
        #[arg(long, value_enum, default_value_t = ModeArg::Kernel)]
        gateway: ModeArg,
        /// Turn TX checksum offload off on end-host and internet veths.
        #[arg(long)]
        tx_csum_off: bool,
    },
    /// Remove lab namespaces, processes and state (every known lab, or one tag).
    Down {
        #[arg(long)]
        tag: Option<String>,
        /// Also remove any other `natfw-*` namespace (e.g. left by a crashed test).
        #[arg(long)]
        all: bool,
    },
    /// List lab namespaces, addresses and processes.
    Status,
    /// Bring a scenario up, run natfw on its gateways, drive clients, print what was allowed
    /// and blocked with the matching flow-log lines, tear down.
    Demo {
        /// 1, 2, 3, or `ha`: the gateway pair that fails over (keepalived; kills the active
        /// natfw under traffic, prints the failover time, failed connections and leaks).
        #[arg(long, default_value = "1", value_parser = ["1", "2", "3", "ha"])]
        scenario: String,
        /// `kernel` runs the same checks against the nftables baseline.
        #[arg(long, value_enum, default_value_t = ModeArg::Natfw)]
        gateway: ModeArg,
        /// Leave the lab up afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// The same scenarios in docker-compose containers (image: scripts/build-images.sh).
    Compose {
        #[command(subcommand)]
        cmd: ComposeCmd,
    },
    /// (lab tool) a new HTTP connection every interval; prints one JSON line per attempt.
    #[command(hide = true)]
    ConnLoop {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long, default_value_t = 10_000)]
        duration_ms: u64,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// (lab tool) UDP echo service.
    #[command(hide = true)]
    UdpEcho {
        #[arg(long)]
        bind: SocketAddr,
    },
    /// (lab tool) UDP echo round trips; prints JSON {sent, received, p50_us, p99_us}.
    #[command(hide = true)]
    UdpRtt {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        count: u32,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 500)]
        timeout_ms: u64,
    },
    /// (lab tool) short HTTP requests, one connection each; prints JSON {ok, failed, ...}.
    #[command(hide = true)]
    HttpRate {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 4)]
        threads: u32,
        #[arg(long, default_value_t = 1000)]
        per_thread: u32,
        #[arg(long, default_value_t = 10)]
        max_secs: u64,
    },
}

/// `natfw lab compose ...`
#[derive(Debug, Subcommand)]
pub enum ComposeCmd {
    /// Print the scenario's compose file (generated from the namespace lab's plan).
    Config {
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
        scenario: u8,
    },
    /// Prepare the state directory and start the scenario's containers; returns once natfw
    /// forwards on every gateway.
    Up {
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
        scenario: u8,
    },
    /// Up, the `natfw lab demo` checks from the VPC containers, the same table, down.
    Demo {
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
        scenario: u8,
        /// Leave the containers up afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Remove the scenario's containers, networks, DOCKER-USER rules and state.
    Down {
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
        scenario: u8,
    },
}

fn compose_main(cmd: ComposeCmd) -> i32 {
    let num = match &cmd {
        ComposeCmd::Config { scenario }
        | ComposeCmd::Up { scenario }
        | ComposeCmd::Demo { scenario, .. }
        | ComposeCmd::Down { scenario } => *scenario,
    };
    let Some(s) = Scenario::from_number(num) else {
        return 2;
    };
    match cmd {
        ComposeCmd::Config { .. } => {
            print!("{}", compose::compose_file(s));
            0
        }
        ComposeCmd::Up { .. } => match compose::ComposeLab::up(s) {
            Ok(lab) => {
                print!("{}", super::plan_summary(&lab.plan, &lab.dir));
                0
            }
            Err(e) => {
                eprintln!("natfw lab compose up: {e}");
                1
            }
        },
        ComposeCmd::Demo { keep, .. } => compose::demo(s, keep),
        ComposeCmd::Down { .. } => match compose::down(s) {
            Ok(()) => {
                println!("compose lab {}: down", compose::project(s));
                0
            }
            Err(e) => {
                eprintln!("natfw lab compose down: {e}");
                1
            }
        },
    }
}

fn self_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("natfw"))
}

/// Run a `natfw lab` subcommand; returns the exit code.
pub fn main(cmd: LabCmd) -> i32 {
    match cmd {
        LabCmd::Up {
            scenario,
            tag,
            gateway,
            tx_csum_off,
        } => {
            let Some(s) = Scenario::from_number(scenario) else {
                return 2;
            };
            let tag = tag.unwrap_or_else(|| format!("s{scenario}"));
            if !plan::valid_tag(&tag) {
                eprintln!("natfw lab up: tag must be 1-12 lower-case letters or digits");
                return 2;
            }
            let mut opts = Options::new(self_exe());
            opts.mode = gateway.into();
            opts.tx_csum_off = tx_csum_off;
            match Lab::up(plan::plan(s, &tag), opts) {
                Ok(lab) => {
                    print!("{}", lab.summary());
                    0
                }
                Err(e) => {
                    eprintln!("natfw lab up: {e}");
                    1
                }
            }
        }
        LabCmd::Down { tag, all } => {
            let mut tags = match tag {
                Some(t) => vec![t],
                None => known_tags(),
            };
            if all {
                for n in namespaces_with_prefix(plan::NS_PREFIX) {
                    if let Some(t) = n
                        .strip_prefix(plan::NS_PREFIX)
                        .and_then(|r| r.split('-').next())
                    {
                        tags.push(t.to_owned());
                    }
                }
            }
            tags.sort();
            tags.dedup();
            for t in tags {
                let removed = down_tag(&t);
                println!("lab {t}: removed {} namespaces", removed.len());
            }
            0
        }
        LabCmd::Status => {
            print!("{}", status());
            0
        }
        LabCmd::Demo {
            scenario,
            gateway,
            keep,
        } => {
            if scenario == "ha" {
                return super::ha::demo(&self_exe(), keep);
            }
            let Some(s) = scenario.parse().ok().and_then(Scenario::from_number) else {
                return 2;
            };
            demo::demo(s, gateway.into(), Options::new(self_exe()), keep)
        }
        LabCmd::Compose { cmd } => compose_main(cmd),
        LabCmd::ConnLoop {
            to,
            host,
            interval_ms,
            duration_ms,
            timeout_ms,
        } => {
            for a in tools::conn_loop(
                to,
                &host,
                Duration::from_millis(interval_ms),
                Duration::from_millis(duration_ms.min(300_000)),
                Duration::from_millis(timeout_ms.clamp(1, 30_000)),
            ) {
                println!("{}", serde_json::to_string(&a).unwrap_or_default());
            }
            0
        }
        LabCmd::UdpEcho { bind } => match tools::udp_echo(bind) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("udp-echo {bind}: {e}");
                1
            }
        },
        LabCmd::UdpRtt {
            to,
            count,
            size,
            timeout_ms,
        } => {
            match tools::udp_rtt(
                to,
                count.min(1_000_000),
                size,
                Duration::from_millis(timeout_ms),
            ) {
                Ok(r) => {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                    0
                }
                Err(e) => {
                    eprintln!("udp-rtt {to}: {e}");
                    1
                }
            }
        }
        LabCmd::HttpRate {
            to,
            host,
            threads,
            per_thread,
            max_secs,
        } => {
            let r = tools::http_rate(
                to,
                &host,
                threads.min(64),
                per_thread,
                Duration::from_secs(max_secs.min(120)),
            );
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            0
        }
    }
}
