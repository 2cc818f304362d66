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
            eprintln!("natfw check {}: not built yet", config.display());
            2
        }
        Command::Lab { cmd } => crate::lab::cli::main(cmd),
        Command::Run { config } => match crate::run::run(&crate::run::RunOptions { config }) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("natfw run: {e}");
                1
            }
        },
    }
}
