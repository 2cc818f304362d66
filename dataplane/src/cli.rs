//! Command-line parsing and dispatch. Each subcommand lives in its own module and returns the
//! process exit code.

use clap::{Parser, Subcommand};

/// natfw: an egress firewall for cloud NAT gateways.
#[derive(Debug, Parser)]
#[command(name = "natfw", version, about)]
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
        cmd: crate::lab::cli::LabCmd,
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
        #[arg(long)]
        config: std::path::PathBuf,
    },
}

/// Run the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            crate::check::run(&config, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Lab { cmd } => crate::lab::cli::main(cmd),
        Command::Replay {
            config,
            flow_log,
            captures,
        } => replay(crate::replay::ReplayOptions {
            config,
            flow_log,
            captures,
        }),
        Command::Run { config } => match crate::run::run(&crate::run::RunOptions { config }) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("natfw run: {e}");
                1
            }
        },
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
