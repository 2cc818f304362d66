//! `natfw replay`: run the engine over capture files, as the gateway would have seen them.
//!
//! Captures are taken on the inside, so each frame is classified by the gateway's own packet
//! classifier ([`SteeringRules::capture`], the steering programs' decision in Rust):
//! - what the gateway takes on the inside (an SNAT source, not bypassed, not to the gateway or
//!   a multicast group): an outbound packet, handed to the engine as [`Side::Inside`];
//! - from a bypassed source: skipped and counted (the kernel masquerades it);
//! - destination in an SNAT entry (a server's reply to a private host): rewritten by
//!   [`Engine::to_outside_view`] into what arrives at the outside interface (addressed to the EIP
//!   and port the engine chose), then handed in as [`Side::Outside`] — so replay exercises the
//!   same SNAT and reverse-NAT paths as the live gateway;
//! - destination an EIP (a capture taken on the outside): [`Side::Outside`] as is;
//! - anything else (ARP, traffic between public hosts): skipped and counted.
//!
//! Several captures are merged by timestamp (each is read as a stream; frames within one file
//! keep their file order). The engine's clock is the capture time, never moving backwards; its
//! timers run every [`POLL_EVERY`] of capture time.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use natfw_policy::Config;

use natfw_engine::engine::{Engine, EngineError, FlowEnd, FlowVerdict, GeoDb, Side, Verdict};
use natfw_engine::steer::{Capture, SteeringRules};
use natfw_engine::time::Timestamp;
use natfw_flowlog::{FlowRecord, FlowSink, Rotation, SharedRecords, Target};
use natfw_pcap::{CaptureError, CaptureReader, Frame};

/// How often (in capture time) the engine's timers run, as on the live path.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// What to replay and where the records go.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// natfw.yaml; `None` = [`natfw_policy::config::embedded_default`].
    pub config: Option<PathBuf>,
    /// Flow-log file (created or truncated); `None` = stdout.
    pub flow_log: Option<PathBuf>,
    /// pcap / pcapng files, merged by time.
    pub captures: Vec<PathBuf>,
}

/// Counters of one replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Frames read from the captures.
    pub packets: u64,
    /// Flow records the engine produced.
    pub flows: u64,
    /// Of those, with action `accept`.
    pub accepted: u64,
    /// Of those, with action `drop`.
    pub dropped: u64,
    /// Records the flow-log writer lost (0 for replay unless writing failed).
    pub log_dropped: u64,
    /// Captures that ended in a format error (truncated, corrupt); frames before it were used.
    pub parse_errors: u64,
    /// Frames that are not IPv4/IPv6 or do not parse.
    pub unparsable: u64,
    /// Frames neither from nor to an SNAT source nor to an EIP.
    pub not_snat: u64,
    /// Frames from a bypassed source (the kernel's, as on the live gateway).
    pub bypassed: u64,
    /// Replies to a private host that match no flow the engine knows (e.g. its flow was
    /// dropped or evicted).
    pub unmatched_replies: u64,
    /// Frames the engine emitted (released held payload, RSTs, ICMP errors).
    pub emitted: u64,
    /// Skipped capture content: frames of other link types, other pcapng blocks.
    pub skipped: u64,
    /// Human-readable problems met on the way (config warnings, capture errors).
    pub warnings: Vec<String>,
}

impl fmt::Display for ReplaySummary {
    /// The one-line summary `natfw replay` prints on stderr.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replay: {} packets, {} flows, {} accepted, {} dropped, {} log records dropped",
            self.packets, self.flows, self.accepted, self.dropped, self.log_dropped
        )?;
        for (n, what) in [
            (self.parse_errors, "parse errors"),
            (self.unparsable, "non-IP or unparsable frames"),
            (self.not_snat, "frames not SNAT-bound"),
            (self.bypassed, "frames from bypassed sources"),
            (self.unmatched_replies, "replies without a flow"),
            (self.skipped, "skipped capture records"),
        ] {
            if n > 0 {
                write!(f, ", {n} {what}")?;
            }
        }
        Ok(())
    }
}

/// Why a replay could not run.
#[derive(Debug)]
pub enum ReplayError {
    /// The config did not load (every diagnostic, one per line).
    Config(String),
    /// A capture could not be opened or is not a capture at all.
    Capture(CaptureError),
    /// The flow log could not be opened.
    FlowLog(io::Error),
    /// The engine refused the config.
    Engine(EngineError),
    /// The configured country database could not be opened.
    Geo(String),
    /// No capture given.
    NoInput,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Config(m) => write!(f, "config: {m}"),
            ReplayError::Capture(e) => write!(f, "{e}"),
            ReplayError::FlowLog(e) => write!(f, "flow log: {e}"),
            ReplayError::Engine(e) => write!(f, "engine: {e}"),
            ReplayError::Geo(m) => write!(f, "geo: {m}"),
            ReplayError::NoInput => f.write_str("no capture file given"),
        }
    }
}

impl std::error::Error for ReplayError {}

/// Loads `path`, or the embedded default; warnings go into `warnings`.
pub fn load_config(path: Option<&Path>, warnings: &mut Vec<String>) -> Result<Config, ReplayError> {
    let Some(path) = path else {
        return Ok(natfw_policy::config::embedded_default());
    };
    match natfw_policy::config::load_file(path) {
        Ok(loaded) => {
            warnings.extend(loaded.warnings.iter().map(|w| w.to_string()));
            Ok(loaded.config)
        }
        Err(diags) => Err(ReplayError::Config(
            diags.to_string().trim_end().to_string(),
        )),
    }
}

/// `natfw replay`: loads the config, replays the captures, writes the records.
pub fn run(opts: ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    let mut warnings = Vec::new();
    let cfg = load_config(opts.config.as_deref(), &mut warnings)?;
    let target = match &opts.flow_log {
        None => Target::Stdout,
        Some(p) => {
            // A replay's log is its result: start from an empty file, not after an old run.
            std::fs::File::create(p).map_err(|e| {
                ReplayError::FlowLog(io::Error::new(e.kind(), format!("{}: {e}", p.display())))
            })?;
            Target::File(p.clone())
        }
    };
    let rotation = if opts.flow_log.is_some() {
        Rotation::from_config(&cfg.logging)
    } else {
        Rotation {
            format: cfg.logging.format,
            ..Rotation::default()
        }
    };
    let (sink, writer) = natfw_flowlog::spawn_writer(&cfg.gateway.name, target, rotation)
        .map_err(ReplayError::FlowLog)?;
    let result = replay_into(&cfg, &opts.captures, Box::new(sink.lossless()));
    let stats = writer.finish();
    let mut summary = result?;
    summary.log_dropped = stats.dropped;
    if let Some(e) = stats.error {
        summary.warnings.push(format!("flow log: {e}"));
    }
    warnings.append(&mut summary.warnings);
    summary.warnings = warnings;
    Ok(summary)
}

/// Replays `captures` through an engine built from `cfg`, returning the records in memory
/// (tests, tools). Same classification and timing as [`run`].
pub fn replay_records(
    cfg: &Config,
    captures: &[PathBuf],
) -> Result<(Vec<FlowRecord>, ReplaySummary), ReplayError> {
    let shared = SharedRecords::new(&cfg.gateway.name);
    let summary = replay_into(cfg, captures, Box::new(shared.clone()))?;
    Ok((shared.take(), summary))
}

#[derive(Debug, Default)]
struct Counts {
    flows: AtomicU64,
    accepted: AtomicU64,
    dropped: AtomicU64,
}

/// Counts records by action on their way to the real sink.
struct CountingSink {
    inner: Box<dyn FlowSink>,
    counts: Arc<Counts>,
}

impl FlowSink for CountingSink {
    fn flow_end(&mut self, ev: FlowEnd) {
        self.counts.flows.fetch_add(1, Ordering::Relaxed);
        match ev.verdict {
            FlowVerdict::Drop => self.counts.dropped.fetch_add(1, Ordering::Relaxed),
            _ => self.counts.accepted.fetch_add(1, Ordering::Relaxed),
        };
        self.inner.flow_end(ev);
    }
}

/// Streams several captures merged by timestamp.
struct Merge {
    inputs: Vec<(CaptureReader<io::BufReader<std::fs::File>>, Option<Frame>)>,
}

impl Merge {
    fn open(paths: &[PathBuf]) -> Result<Merge, ReplayError> {
        let inputs = paths
            .iter()
            .map(|p| natfw_pcap::open(p).map(|r| (r, None)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ReplayError::Capture)?;
        Ok(Merge { inputs })
    }

    /// The next frame of the earliest input; format errors are reported and end that input.
    fn next(&mut self, summary: &mut ReplaySummary) -> Option<Frame> {
        for (reader, head) in &mut self.inputs {
            if head.is_none() {
                match reader.next() {
                    Some(Ok(f)) => *head = Some(f),
                    Some(Err(e)) => {
                        summary.parse_errors += 1;
                        summary.warnings.push(e.to_string());
                    }
                    None => {}
                }
            }
        }
        let (_, head) = self
            .inputs
            .iter_mut()
            .filter(|(_, h)| h.is_some())
            .min_by_key(|(_, h)| h.as_ref().map(|f| f.ts))?;
        head.take()
    }

    fn skipped(&self) -> u64 {
        self.inputs
            .iter()
            .map(|(r, _)| {
                let s = r.stats();
                s.skipped_linktype + s.skipped_blocks + s.skipped_short
            })
            .sum()
    }
}

/// The replay loop, into any sink.
pub fn replay_into(
    cfg: &Config,
    captures: &[PathBuf],
    sink: Box<dyn FlowSink>,
) -> Result<ReplaySummary, ReplayError> {
    if captures.is_empty() {
        return Err(ReplayError::NoInput);
    }
    let mut inputs = Merge::open(captures)?;
    let counts = Arc::new(Counts::default());
    let sink = CountingSink {
        inner: sink,
        counts: counts.clone(),
    };
    let geo = match &cfg.geo.database {
        None => GeoDb::embedded(),
        Some(path) => Arc::new(
            GeoDb::open(Path::new(path)).map_err(|e| ReplayError::Geo(format!("{path}: {e}")))?,
        ),
    };
    let mut engine = Engine::new(cfg, geo, Box::new(sink)).map_err(ReplayError::Engine)?;
    let classifier = SteeringRules::from_gateway(&cfg.gateway);
    let mut summary = ReplaySummary::default();
    let mut emits = Vec::new();
    let mut now: Option<Timestamp> = None;
    let mut last_poll = Timestamp(0);

    while let Some(mut frame) = inputs.next(&mut summary) {
        summary.packets += 1;
        // The engine's clock never goes backwards, whatever the capture says.
        let ts = now.map_or(frame.ts, |n| n.max(frame.ts));
        if now.is_none() {
            last_poll = ts;
        }
        now = Some(ts);
        if ts.since(last_poll) >= POLL_EVERY {
            engine.poll(ts);
            last_poll = ts;
        }
        let side = match classifier.capture(&frame.data) {
            Capture::Outbound => Side::Inside,
            Capture::ToEip => Side::Outside,
            Capture::InsideReply => {
                if !engine.to_outside_view(&mut frame.data) {
                    summary.unmatched_replies += 1;
                    continue;
                }
                Side::Outside
            }
            Capture::Bypassed => {
                summary.bypassed += 1;
                continue;
            }
            Capture::NotOurs => {
                summary.not_snat += 1;
                continue;
            }
            Capture::Unparsable => {
                summary.unparsable += 1;
                continue;
            }
        };
        let _: Verdict = engine.process(ts, side, &mut frame.data);
        engine.drain_emits(&mut emits);
        summary.emitted += emits.len() as u64;
        emits.clear();
    }
    if let Some(ts) = now {
        engine.shutdown(ts);
        engine.drain_emits(&mut emits);
        summary.emitted += emits.len() as u64;
    }
    drop(engine); // releases the sink
    summary.skipped = inputs.skipped();
    summary.flows = counts.flows.load(Ordering::Relaxed);
    summary.accepted = counts.accepted.load(Ordering::Relaxed);
    summary.dropped = counts.dropped.load(Ordering::Relaxed);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/corpus")
            .join(name)
    }

    /// A little-endian µs pcap of Ethernet frames at the given times (ms).
    fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
        let mut v = Vec::new();
        for x in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for (ms, f) in frames {
            for x in [
                (ms / 1000) as u32,
                ((ms % 1000) * 1000) as u32,
                f.len() as u32,
                f.len() as u32,
            ] {
                v.extend_from_slice(&x.to_le_bytes());
            }
            v.extend_from_slice(f);
        }
        std::fs::write(path, v).unwrap();
    }

    fn udp(src: [u8; 4], dst: [u8; 4], tag: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let mut ip = vec![0x45, 0, 0, 29, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let sum = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 9, 0, 0, tag]);
        f
    }

    #[test]
    fn classifies_by_snat_source_reply_and_eip() {
        let c = SteeringRules::from_gateway(&natfw_policy::config::embedded_default().gateway);
        let out = udp([10, 0, 1, 10], [198, 51, 100, 53], 0);
        let reply = udp([198, 51, 100, 53], [10, 0, 1, 10], 0);
        let to_eip = udp([198, 51, 100, 53], [192, 0, 2, 1], 0);
        let public = udp([198, 51, 100, 53], [203, 0, 113, 9], 0);
        assert_eq!(c.capture(&out), Capture::Outbound);
        assert_eq!(c.capture(&reply), Capture::InsideReply);
        assert_eq!(c.capture(&to_eip), Capture::ToEip);
        assert_eq!(c.capture(&public), Capture::NotOurs);
        assert_eq!(c.capture(&out[..20]), Capture::Unparsable);

        // Every frame of a real capture is either the client's or a reply to it.
        for f in natfw_pcap::open(&corpus("https_curl.pcap")).unwrap() {
            let f = f.unwrap();
            assert!(matches!(
                c.capture(&f.data),
                Capture::Outbound | Capture::InsideReply
            ));
        }
    }

    #[test]
    fn merges_captures_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.pcap"), dir.path().join("b.pcap"));
        let f = |tag| udp([10, 0, 1, 10], [198, 51, 100, 53], tag);
        write_pcap(&a, &[(1_000, f(1)), (3_000, f(3)), (3_000, f(4))]);
        write_pcap(&b, &[(2_000, f(2)), (5_000, f(5))]);
        let mut m = Merge::open(&[a, b]).unwrap();
        let mut s = ReplaySummary::default();
        let mut tags = vec![];
        while let Some(fr) = m.next(&mut s) {
            tags.push(*fr.data.last().unwrap());
        }
        assert_eq!(tags, [1, 2, 3, 4, 5]);
        assert_eq!(s.parse_errors, 0);
    }

    #[test]
    fn summary_counts_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pcap");
        let out = udp([10, 0, 1, 10], [198, 51, 100, 53], 0);
        let public = udp([198, 51, 100, 53], [203, 0, 113, 9], 0);
        write_pcap(&p, &[(1_000, out), (1_500, public), (2_000, vec![0; 20])]);
        let (_, s) = replay_records(&natfw_policy::config::embedded_default(), &[p]).unwrap();
        assert_eq!((s.packets, s.not_snat, s.unparsable), (3, 1, 1));
        let line = s.to_string();
        assert!(line.starts_with("replay: 3 packets, "), "{line}");
        assert!(line.contains("1 frames not SNAT-bound"), "{line}");
        assert!(matches!(
            replay_records(&natfw_policy::config::embedded_default(), &[]),
            Err(ReplayError::NoInput)
        ));
    }

    /// The same capture as pcapng (ns resolution, two interfaces, frames interleaved with a
    /// statistics block) gives the same flow records as the pcap.
    #[test]
    fn pcapng_replays_like_pcap() {
        let cfg = natfw_policy::config::embedded_default();
        let src = corpus("https_curl.pcap");
        let (want, _) = replay_records(&cfg, std::slice::from_ref(&src)).unwrap();
        assert!(!want.is_empty());

        let block = |out: &mut Vec<u8>, btype: u32, mut body: Vec<u8>| {
            while !body.len().is_multiple_of(4) {
                body.push(0);
            }
            let len = (body.len() + 12) as u32;
            out.extend_from_slice(&btype.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&body);
            out.extend_from_slice(&len.to_le_bytes());
        };
        let idb = |tsresol: u8| {
            let mut b = vec![1, 0, 0, 0, 0, 0, 0, 0]; // Ethernet, snaplen 0
            b.extend_from_slice(&[9, 0, 1, 0, tsresol, 0, 0, 0, 0, 0, 0, 0]);
            b
        };
        let mut ng = Vec::new();
        let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        block(&mut ng, 0x0a0d_0d0a, shb);
        block(&mut ng, 1, idb(6)); // µs
        block(&mut ng, 1, idb(9)); // ns
        for (i, f) in natfw_pcap::open(&src).unwrap().enumerate() {
            let f = f.unwrap();
            let iface = (i % 2) as u32;
            let ticks = if iface == 0 {
                f.ts.as_nanos() / 1000
            } else {
                f.ts.as_nanos()
            };
            let mut b = Vec::new();
            for x in [
                iface,
                (ticks >> 32) as u32,
                ticks as u32,
                f.data.len() as u32,
                f.orig_len,
            ] {
                b.extend_from_slice(&x.to_le_bytes());
            }
            b.extend_from_slice(&f.data);
            block(&mut ng, 6, b);
            block(&mut ng, 5, vec![0; 12]); // interface statistics: skipped
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("https_curl.pcapng");
        std::fs::write(&path, ng).unwrap();
        let (got, summary) = replay_records(&cfg, &[path]).unwrap();
        assert_eq!(got, want);
        assert_eq!(summary.skipped, summary.packets);
    }

    /// Corrupted captures end in errors or odd frames, never a panic, and what was read before
    /// the damage is still replayed.
    #[test]
    fn corrupted_captures_never_panic() {
        let cfg = natfw_policy::config::embedded_default();
        let whole = std::fs::read(corpus("http_curl.pcap")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pcap");
        for i in (24..whole.len()).step_by(11) {
            for v in [0x00, 0xff] {
                let mut b = whole.clone();
                b[i] = v;
                std::fs::write(&path, &b).unwrap();
                let (_, s) = replay_records(&cfg, std::slice::from_ref(&path)).unwrap();
                assert!(s.packets <= 12);
            }
            std::fs::write(&path, &whole[..i]).unwrap();
            let _ = replay_records(&cfg, std::slice::from_ref(&path)).unwrap();
        }
    }
}
