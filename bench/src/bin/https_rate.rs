//! HTTPS connection-rate client for the lab harness: `threads` clients each open new TLS
//! connections (SNI `--name`, certificate checked against `--ca`), send one `GET /` with
//! `Connection: close`, read to EOF and expect `200`, until `--secs` have passed. Prints one
//! JSON object (`ok`, `failed`, `seconds`, `per_second`). Run it inside a lab host namespace.
//!
//! ```text
//! https_rate --to 203.0.113.10:443 --name updates.vendor.test --ca lab-ca.crt [--threads 8] [--secs 3]
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

fn one(cfg: &Arc<rustls::ClientConfig>, to: SocketAddr, name: &ServerName<'static>) -> bool {
    let Ok(conn) = rustls::ClientConnection::new(Arc::clone(cfg), name.clone()) else {
        return false;
    };
    let Ok(sock) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = sock.set_nodelay(true);
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let host = match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        _ => String::new(),
    };
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if tls.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut out = Vec::new();
    // A peer closing without close_notify still delivered the response.
    let _ = tls.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200")
}

fn main() {
    let mut to: Option<SocketAddr> = None;
    let (mut name, mut ca) = (String::new(), String::new());
    let (mut threads, mut secs) = (8u32, 3u64);
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--to" => to = v.parse().ok(),
            "--name" => name = v,
            "--ca" => ca = v,
            "--threads" => threads = v.parse().unwrap_or(8).clamp(1, 64),
            "--secs" => secs = v.parse().unwrap_or(3).clamp(1, 60),
            _ => {
                eprintln!("usage: https_rate --to ADDR:PORT --name SNI --ca CA.pem [--threads N] [--secs S]");
                std::process::exit(2);
            }
        }
    }
    let Some(to) = to else {
        eprintln!("https_rate: --to ADDR:PORT is required");
        std::process::exit(2);
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = match CertificateDer::pem_file_iter(&ca) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("https_rate: --ca {ca}: {e}");
            std::process::exit(2);
        }
    };
    for c in certs.flatten() {
        let _ = roots.add(c);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => Arc::new(b.with_root_certificates(roots).with_no_client_auth()),
        Err(e) => {
            eprintln!("https_rate: TLS config: {e}");
            std::process::exit(2);
        }
    };
    let Ok(server) = ServerName::try_from(name.clone()) else {
        eprintln!("https_rate: --name {name}: not a DNS name");
        std::process::exit(2);
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (cfg, server) = (Arc::clone(&cfg), server.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < deadline {
                    if one(&cfg, to, &server) {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0u64, 0u64);
    for h in handles {
        if let Ok((o, f)) = h.join() {
            ok += o;
            failed += f;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{{\"ok\":{ok},\"failed\":{failed},\"seconds\":{seconds:.3},\"per_second\":{:.1}}}",
        ok as f64 / seconds.max(1e-9)
    );
}
