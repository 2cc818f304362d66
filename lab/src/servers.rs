//! Configuration text of the real servers in the internet namespace (nginx, dnsmasq, sshd) and
//! the openssl steps that make the lab CA and server certificate at `lab up`. Private keys live
//! only in the lab's state directory under /run; nothing secret is in the repository.

use std::fmt::Write as _;
use std::path::Path;

use super::plan::{DNS_ADDR, WEB_NAMES};

/// nginx access-log line format: `remote_addr host server_addr scheme "request" status`.
/// Tests parse it: the first field is the source the server saw (the EIP).
pub const ACCESS_LOG_FORMAT: &str =
    "$remote_addr $host $server_addr $scheme \"$request\" $status $request_length";

/// Folder of the state directory whose files every web name serves under `/download/` (the
/// lab harness puts its large download there; empty otherwise).
pub const DOWNLOAD_DIR: &str = "download";

/// nginx.conf for the internet namespace: every web name on its own address, HTTP on 80 and
/// HTTPS on 443 with the lab certificate; each answers `<name> ok`, and serves the files of
/// [`DOWNLOAD_DIR`] under `/download/`.
pub fn nginx_conf(dir: &Path) -> String {
    let d = dir.display();
    let mut s = String::new();
    let _ = write!(
        s,
        "worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\n\
         user root;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20 log_format lab '{ACCESS_LOG_FORMAT}';\n\
         \x20 access_log {d}/access.log lab;\n\
         \x20 client_body_temp_path {d}/nginx-body;\n\
         \x20 proxy_temp_path {d}/nginx-proxy;\n\
         \x20 fastcgi_temp_path {d}/nginx-fastcgi;\n\
         \x20 uwsgi_temp_path {d}/nginx-uwsgi;\n\
         \x20 scgi_temp_path {d}/nginx-scgi;\n\
         \x20 keepalive_requests 100000;\n\
         \x20 default_type text/plain;\n\
         \x20 ssl_protocols TLSv1.2 TLSv1.3;\n\
         \x20 ssl_certificate {d}/server.crt;\n\
         \x20 ssl_certificate_key {d}/server.key;\n"
    );
    for w in WEB_NAMES {
        let _ = write!(
            s,
            "  server {{\n\
             \x20   listen {a}:80;\n\
             \x20   listen {a}:443 ssl;\n\
             \x20   server_name {n};\n\
             \x20   location / {{ return 200 \"{n} ok\\n\"; }}\n\
             \x20   location /download/ {{ alias {d}/{DOWNLOAD_DIR}/; }}\n\
             \x20 }}\n",
            a = w.addr,
            n = w.name
        );
    }
    s.push_str("}\n");
    s
}

/// dnsmasq arguments: authoritative-style answers for the lab names only, nothing forwarded
/// anywhere (no upstream servers, no /etc/hosts, no resolv.conf).
pub fn dnsmasq_args(dir: &Path) -> Vec<String> {
    dnsmasq_args_at(dir, DNS_ADDR, "dnsmasq.pid")
}

/// dnsmasq authoritative for [`WEB_NAMES`] on `addr` (the internet-side server, or the
/// in-VPC resolver of [`crate::plan::Plan::with_vpc_resolver`]).
pub fn dnsmasq_args_at(dir: &Path, addr: std::net::Ipv4Addr, pid_file: &str) -> Vec<String> {
    let mut a = vec![
        "--keep-in-foreground".to_string(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--no-poll".into(),
        "--bind-interfaces".into(),
        format!("--listen-address={addr}"),
        "--except-interface=none".into(),
        format!("--pid-file={}/{pid_file}", dir.display()),
        "--user=root".into(),
        "--log-facility=-".into(),
        "--log-queries".into(),
        "--cache-size=0".into(),
    ];
    for w in WEB_NAMES {
        a.push(format!("--host-record={},{}", w.name, w.addr));
    }
    a
}

/// sshd_config for the lab sshd: its own port and address, the generated host key, nobody can
/// log in (it exists to be reached: banner + key exchange).
pub fn sshd_config(dir: &Path, addr: std::net::Ipv4Addr, port: u16) -> String {
    let d = dir.display();
    format!(
        "Port {port}\nListenAddress {addr}\nHostKey {d}/ssh_host_ed25519_key\n\
         PidFile {d}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PubkeyAuthentication no\nPermitRootLogin no\nUsePAM no\nAuthorizedKeysFile none\n"
    )
}

/// openssl config for the server certificate: every web name as a subjectAltName.
pub fn server_cert_ext() -> String {
    let mut s = String::from(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=",
    );
    let names: Vec<String> = WEB_NAMES
        .iter()
        .map(|w| format!("DNS:{}", w.name))
        .collect();
    s.push_str(&names.join(","));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_conf_has_every_name_on_both_ports() {
        let c = nginx_conf(Path::new("/run/x"));
        for w in WEB_NAMES {
            assert!(c.contains(&format!("server_name {};", w.name)));
            assert!(c.contains(&format!("listen {}:443 ssl;", w.addr)));
        }
        assert_eq!(c.matches('{').count(), c.matches('}').count());
    }

    #[test]
    fn cert_covers_every_name() {
        let e = server_cert_ext();
        for w in WEB_NAMES {
            assert!(e.contains(&format!("DNS:{}", w.name)));
        }
    }
}
