//! The handover file: what a gracefully stopping `natfw run` (split mode) leaves for the next
//! one about the flows the kernel keeps forwarding (their entries stay in the pinned
//! `offload` and `offload6` maps, the steering link stays pinned). Text: a header line with the
//! version and a fingerprint of the configuration the flows were decided under, then one line
//! per flow ([`HandoverFlow::encode`]: IPv4 and IPv6 flows; a version-1 file of a build that
//! offloaded only IPv4 reads the same). Written to a temporary file and renamed; read once
//! and removed.

use std::io::Write;
use std::path::Path;

use natfw_engine::engine::HandoverFlow;
use natfw_policy::Config;

/// Where `natfw run` writes the handover file unless told otherwise (`--handover-file`).
pub const DEFAULT_PATH: &str = "/run/natfw/handover";
/// Where split mode pins its maps and, at a graceful stop, its steering links
/// (`--pin-dir`; one subdirectory per side).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/natfw";

const MAGIC: &str = "natfw-handover 1";

/// A fingerprint of what decides and translates flows (the `firewall` and `gateway`
/// sections): flows are adopted only under an equal one. FNV-1a over their debug form.
pub fn fingerprint(cfg: &Config) -> String {
    // The gateway part first: a restart under another firewall section only (same
    // `gateway`) decides the flows again ([`compare`]).
    format!(
        "{}.{}",
        fnv(&format!("{:?}", cfg.gateway)),
        fnv(&format!("{:?}", cfg.firewall))
    )
}

fn fnv(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// How a handed-over fingerprint (`old`) relates to this run's (`new`): the same
/// configuration, the same gateway with another firewall section, or another gateway (an
/// unreadable or older fingerprint counts as another gateway).
pub fn compare(old: &str, new: &str) -> natfw_engine::engine::AdoptPolicy {
    use natfw_engine::engine::AdoptPolicy;
    if old == new {
        return AdoptPolicy::Same;
    }
    match (old.split_once('.'), new.split_once('.')) {
        (Some((og, _)), Some((ng, _))) if og == ng => AdoptPolicy::Reevaluate,
        _ => AdoptPolicy::Other,
    }
}

/// Write `flows` (decided under the configuration of `fingerprint`) to `path`.
pub fn write(path: &Path, fingerprint: &str, flows: &[HandoverFlow]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{MAGIC} config={fingerprint}")?;
        for flow in flows {
            writeln!(f, "{}", flow.encode())?;
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// What a handover file held.
#[derive(Debug, Default)]
pub struct Handover {
    pub fingerprint: String,
    pub flows: Vec<HandoverFlow>,
    /// Lines that did not parse (those flows are not adopted; their entries are removed).
    pub bad_lines: usize,
}

/// Read and remove the handover file; `Ok(None)` when there is none.
pub fn take(path: &Path) -> std::io::Result<Option<Handover>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    std::fs::remove_file(path)?;
    Ok(Some(parse(&text)))
}

/// Parse a handover file's text; an unknown header gives no flows.
pub fn parse(text: &str) -> Handover {
    let mut lines = text.lines();
    let mut h = Handover::default();
    let Some(fp) = lines
        .next()
        .and_then(|l| l.strip_prefix(MAGIC))
        .and_then(|rest| rest.trim().strip_prefix("config="))
    else {
        h.bad_lines = text.lines().count();
        return h;
    };
    h.fingerprint = fp.to_string();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        match HandoverFlow::decode(line) {
            Some(f) => h.flows.push(f),
            None => h.bad_lines += 1,
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_header_or_line_adopts_nothing_of_it() {
        assert!(parse("").flows.is_empty());
        let h = parse("something else\nproto=6\n");
        assert!(h.flows.is_empty());
        assert_eq!(h.bad_lines, 2);
        let h = parse("natfw-handover 1 config=00ff\nproto=6 broken\n");
        assert_eq!(h.fingerprint, "00ff");
        assert_eq!(h.bad_lines, 1);
    }

    /// Two loads of the same file (fresh hash seeds, as in two processes) agree.
    #[test]
    fn the_fingerprint_of_a_config_file_is_stable() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("examples/lab") {
            let path = e.expect("entry").path();
            if path.extension().is_none_or(|x| x != "yaml") {
                continue;
            }
            let a = natfw_policy::config::load_file(&path)
                .expect("loads")
                .config;
            let b = natfw_policy::config::load_file(&path)
                .expect("loads")
                .config;
            assert_eq!(fingerprint(&a), fingerprint(&b), "{}", path.display());
            n += 1;
        }
        assert!(n >= 2);
    }

    #[test]
    fn the_fingerprint_follows_the_policy() {
        let a = natfw_policy::config::embedded_default();
        let mut b = a.clone();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.firewall.enabled = !b.firewall.enabled;
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
