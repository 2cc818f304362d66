//! The `natfw policy|firewall|status` subcommands: one admin-API call each.

use std::path::PathBuf;

use super::http::{call, ClientTls};

/// The bearer-token file the client reads by default; the packaged config's `admin.token_file`.
pub const DEFAULT_TOKEN_FILE: &str = "/etc/natfw/admin.token";

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Admin API base URL, e.g. https://10.1.0.1:9443 or http://127.0.0.1:9443.
    #[arg(long, env = "NATFW_ADMIN", default_value = "http://127.0.0.1:9443")]
    pub admin: String,
    /// File holding the bearer token.
    #[arg(long, env = "NATFW_TOKEN_FILE", default_value = DEFAULT_TOKEN_FILE)]
    pub token_file: PathBuf,
    /// Accept any server certificate (testing only).
    #[arg(long, env = "NATFW_INSECURE", conflicts_with = "ca")]
    pub insecure: bool,
    /// CA certificate (PEM) that signed the admin API's certificate.
    #[arg(long, env = "NATFW_CA")]
    pub ca: Option<PathBuf>,
}

/// Performs the call, prints the response body; exit code 0 on 2xx, 1 otherwise.
pub fn main(a: &AdminArgs, method: &str, path: &str, body: Option<&[u8]>) -> i32 {
    let token = match std::fs::read_to_string(&a.token_file) {
        Ok(t) => t.trim().to_string(),
        Err(e) => {
            eprintln!("natfw: {}: {e}", a.token_file.display());
            return 1;
        }
    };
    let tls = match (&a.ca, a.insecure) {
        (Some(ca), _) => Some(ClientTls::Ca(ca.clone())),
        (None, true) => Some(ClientTls::Insecure),
        (None, false) => None,
    };
    match call(&a.admin, method, path, Some(&token), body, tls.as_ref()) {
        Ok((status, body)) => {
            print!("{}", String::from_utf8_lossy(&body));
            if (200..300).contains(&status) {
                0
            } else {
                eprintln!("natfw: {method} {path}: HTTP {status}");
                1
            }
        }
        Err(e) => {
            eprintln!("natfw: {e}");
            1
        }
    }
}
