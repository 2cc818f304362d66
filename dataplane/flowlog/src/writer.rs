//! The flow-log writer: a bounded channel from the data path to one thread that serialises
//! records as JSON lines, buffered, with size-based rotation.
//!
//! The data path only ever calls [`crossbeam_channel::Sender::try_send`]: when the writer falls
//! behind, records are counted as dropped instead of slowing down forwarding.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::{render, render_interim, FlowEnd, FlowInterim, FlowRecord, FlowSink};

/// Records the channel holds before the data path starts dropping.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 65_536;

/// With nothing to write for this long the writer flushes (it also flushes whenever the channel
/// runs empty, so this only bounds how long a partially written burst can sit in the buffer).
const IDLE_FLUSH: Duration = Duration::from_millis(200);

/// Where flow-log lines go.
pub enum Target {
    /// Standard output (`-` in the config).
    Stdout,
    /// A file, opened for appending; rotated if [`Rotation::max_bytes`] is set.
    File(PathBuf),
    /// Any writer (tests, in-memory capture). Never rotated.
    Writer(Box<dyn Write + Send>),
}

impl Target {
    /// `-` means stdout, anything else a file path.
    pub fn from_config(path: &str) -> Target {
        if path == "-" {
            Target::Stdout
        } else {
            Target::File(PathBuf::from(path))
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Stdout => f.write_str("Stdout"),
            Target::File(p) => f.debug_tuple("File").field(p).finish(),
            Target::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

/// Size-based rotation: when writing a line would take the file past `max_bytes`, `path` becomes
/// `path.1`, `path.1` becomes `path.2`, ... and `path.keep` is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rotation {
    /// `None` = never rotate.
    pub max_bytes: Option<u64>,
    /// Rotated files kept (0 = the old file is simply truncated).
    pub keep: u32,
    /// Layout of each line (`logging.format`): natfw's record or ECS.
    pub format: crate::RecordFormat,
}

impl Rotation {
    /// From the config's `logging` section.
    pub fn from_config(l: &natfw_policy::Logging) -> Rotation {
        Rotation {
            max_bytes: l.rotate_bytes,
            keep: l.keep,
            format: l.format,
        }
    }
}

/// Gets every record the writer writes, as its line (without the newline, in the configured
/// format), on the writer thread: a second destination such as a remote syslog. Must not
/// block (hand the line to a bounded queue, count what does not fit).
pub trait LineTee: Send {
    fn line(&mut self, rec: &FlowRecord, line: &[u8]);
}

/// Bytes buffered before they are written out.
const BUF_CAP: usize = 64 * 1024;

/// What the writer has done so far, shared with the data path's [`ChannelSink`] and updated as
/// it happens (so metrics and status show write failures while natfw runs, not at exit).
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Lines handed to the OS.
    pub written: AtomicU64,
    /// Lines lost because writing them failed (disk full, I/O error).
    pub write_failed: AtomicU64,
    /// Rotated files deleted to make room after the disk was full (ENOSPC).
    pub space_freed: AtomicU64,
    /// The latest write error.
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl WriterCounters {
    fn note(&self, e: &io::Error) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.to_string());
        }
    }
}

/// Serialises records as JSON lines into a [`Target`], rotating files by size. Synchronous; the
/// thread behind [`spawn_writer`] owns one.
///
/// Lines are buffered and written out whole: when a write fails part way (disk full), the file
/// is cut back to its last whole line, so a failure never leaves half a record behind. On
/// ENOSPC the oldest rotated file (`path.keep`, ...) is deleted and the write retried, until
/// it fits or no rotated file is left; lines that still cannot be written are counted in
/// [`WriterCounters::write_failed`].
pub struct Writer {
    out: Box<dyn Write + Send>,
    /// The same file as `out` (file targets), to cut a partial write back.
    file: Option<File>,
    path: Option<PathBuf>,
    rotation: Rotation,
    /// Bytes committed to the current file.
    size: u64,
    buf: Vec<u8>,
    /// Lines in `buf`.
    pending: u64,
    line: Vec<u8>,
    counters: Arc<WriterCounters>,
    tee: Option<Box<dyn LineTee>>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.path)
            .field("rotation", &self.rotation)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let size = f.metadata()?.len();
    Ok((f, size))
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Disk full or quota exhausted.
fn is_no_space(e: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

impl Writer {
    /// Opens the target (files are created or appended to).
    pub fn open(target: Target, rotation: Rotation) -> io::Result<Writer> {
        Writer::open_with(target, rotation, Arc::default())
    }

    fn open_with(
        target: Target,
        rotation: Rotation,
        counters: Arc<WriterCounters>,
    ) -> io::Result<Writer> {
        let (out, file, path, size): (Box<dyn Write + Send>, _, _, _) = match target {
            Target::Stdout => (Box::new(io::stdout()), None, None, 0),
            Target::Writer(w) => (w, None, None, 0),
            Target::File(p) => {
                let (f, size) = open_append(&p).map_err(|e| with_path(e, &p))?;
                let keep = f.try_clone().map_err(|e| with_path(e, &p))?;
                (Box::new(f), Some(keep), Some(p), size)
            }
        };
        Ok(Writer {
            out,
            file,
            path,
            rotation,
            size,
            buf: Vec::with_capacity(BUF_CAP),
            pending: 0,
            line: Vec::with_capacity(1024),
            counters,
            tee: None,
        })
    }

    /// The writer's counters.
    pub fn counters(&self) -> &Arc<WriterCounters> {
        &self.counters
    }

    /// Writes one record as one line (buffered). An error means this line, or lines buffered
    /// before it, could not be written (counted in [`WriterCounters::write_failed`]).
    pub fn write(&mut self, rec: &FlowRecord) -> io::Result<()> {
        self.line.clear();
        match self.rotation.format {
            crate::RecordFormat::Json => serde_json::to_writer(&mut self.line, rec),
            crate::RecordFormat::Ecs => serde_json::to_writer(&mut self.line, &crate::to_ecs(rec)),
        }
        .map_err(io::Error::other)?;
        if let Some(t) = &mut self.tee {
            t.line(rec, &self.line);
        }
        self.line.push(b'\n');
        if let (Some(max), Some(_)) = (self.rotation.max_bytes, &self.path) {
            let used = self.size + self.buf.len() as u64;
            // A file always takes at least one line, however long, so rotation terminates.
            if used > 0 && used + self.line.len() as u64 > max {
                let r = self.flush().and_then(|()| self.rotate());
                if let Err(e) = r {
                    self.fail_line(&e);
                    return Err(e);
                }
            }
        }
        self.buf.extend_from_slice(&self.line);
        self.pending += 1;
        if self.buf.len() >= BUF_CAP {
            self.flush()?;
        }
        Ok(())
    }

    fn fail_line(&mut self, e: &io::Error) {
        self.counters.write_failed.fetch_add(1, Ordering::Relaxed);
        self.counters.note(e);
    }

    /// Pushes buffered lines to the OS.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return self.out.flush();
        }
        loop {
            match self
                .out
                .write_all(&self.buf)
                .and_then(|()| self.out.flush())
            {
                Ok(()) => {
                    self.size += self.buf.len() as u64;
                    self.counters
                        .written
                        .fetch_add(self.pending, Ordering::Relaxed);
                    self.buf.clear();
                    self.pending = 0;
                    return Ok(());
                }
                Err(e) => {
                    // Never leave half a line: cut the file back to its last whole line.
                    if let Some(f) = &self.file {
                        let _ = f.set_len(self.size);
                    }
                    if is_no_space(&e) && self.free_space() {
                        continue;
                    }
                    self.counters
                        .write_failed
                        .fetch_add(self.pending, Ordering::Relaxed);
                    self.counters.note(&e);
                    self.buf.clear();
                    self.pending = 0;
                    return Err(e);
                }
            }
        }
    }

    /// Disk full: delete the oldest rotated file still there. `false` when there is none.
    fn free_space(&mut self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        for n in (1..=self.rotation.keep).rev() {
            let f = numbered(path, n);
            if std::fs::remove_file(&f).is_ok() {
                self.counters.space_freed.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    fn rotate(&mut self) -> io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        // Close the current file before renaming it (matters on some filesystems).
        self.out = Box::new(io::sink());
        self.file = None;
        let keep = self.rotation.keep;
        if keep == 0 {
            File::create(&path).map_err(|e| with_path(e, &path))?;
        } else {
            let oldest = numbered(&path, keep);
            match std::fs::remove_file(&oldest) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(with_path(e, &oldest)),
                _ => {}
            }
            for n in (1..keep).rev() {
                let from = numbered(&path, n);
                match std::fs::rename(&from, numbered(&path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(with_path(e, &from))
                    }
                    _ => {}
                }
            }
            std::fs::rename(&path, numbered(&path, 1)).map_err(|e| with_path(e, &path))?;
        }
        let (f, size) = open_append(&path).map_err(|e| with_path(e, &path))?;
        self.file = Some(f.try_clone().map_err(|e| with_path(e, &path))?);
        self.out = Box::new(f);
        self.size = size;
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Buffered lines are written (or counted as failed), never silently forgotten.
        let _ = self.flush();
    }
}

fn with_path(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

enum Msg {
    Flow(Box<FlowEnd>),
    Interim(Box<FlowInterim>),
    Finish,
}

impl Msg {
    fn record(&self, gateway: &str) -> Option<FlowRecord> {
        match self {
            Msg::Flow(ev) => Some(render(ev, gateway)),
            Msg::Interim(ev) => Some(render_interim(ev, gateway)),
            Msg::Finish => None,
        }
    }
}

/// The data path's end of the flow log: [`FlowSink::flow_end`] never blocks; when the channel is
/// full (or the writer has stopped) the record is counted in [`ChannelSink::dropped`].
#[derive(Debug, Clone)]
pub struct ChannelSink {
    tx: Sender<Msg>,
    /// Flows handed over (queued or dropped).
    offered: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    lossless: bool,
    counters: Arc<WriterCounters>,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Flow(_) => f.write_str("Flow(..)"),
            Msg::Interim(_) => f.write_str("Interim(..)"),
            Msg::Finish => f.write_str("Finish"),
        }
    }
}

impl ChannelSink {
    /// Finished flows offered to the flow log so far (written, queued or dropped).
    pub fn offered(&self) -> u64 {
        self.offered.load(Ordering::Relaxed)
    }

    /// Records dropped so far because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records lost so far because writing them failed (disk full, I/O error).
    pub fn write_failed(&self) -> u64 {
        self.counters.write_failed.load(Ordering::Relaxed)
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Rotated files deleted so far to make room on a full disk.
    pub fn space_freed(&self) -> u64 {
        self.counters.space_freed.load(Ordering::Relaxed)
    }

    /// The latest write error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.counters.last_error.lock().ok().and_then(|g| g.clone())
    }

    /// Waits for room instead of dropping: for offline producers (replay) whose pace is not
    /// the wire's. Never use this on the data path.
    pub fn lossless(mut self) -> ChannelSink {
        self.lossless = true;
        self
    }
}

impl ChannelSink {
    fn offer(&mut self, msg: Msg) {
        self.offered.fetch_add(1, Ordering::Relaxed);
        if self.lossless {
            if self.tx.send(msg).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl FlowSink for ChannelSink {
    fn flow_end(&mut self, ev: FlowEnd) {
        self.offer(Msg::Flow(Box::new(ev)));
    }

    fn flow_interim(&mut self, ev: FlowInterim) {
        self.offer(Msg::Interim(Box::new(ev)));
    }
}

/// What the writer did, reported by [`WriterHandle::finish`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Lines written.
    pub written: u64,
    /// Records lost: the channel was full, or writing them failed.
    pub dropped: u64,
    /// The first I/O error, if any (the writer keeps trying after one; those records count as
    /// dropped).
    pub error: Option<String>,
}

/// The control end of the writer thread.
#[derive(Debug)]
pub struct WriterHandle {
    tx: Sender<Msg>,
    dropped: Arc<AtomicU64>,
    counters: Arc<WriterCounters>,
    thread: Option<JoinHandle<Option<String>>>,
}

impl WriterHandle {
    /// Writes everything queued so far, flushes and stops the thread. Records offered to a
    /// [`ChannelSink`] afterwards are counted as dropped but no longer reported here, so call it
    /// once the engine is done (after `Engine::shutdown`).
    pub fn finish(mut self) -> WriterStats {
        self.stop()
    }

    fn stop(&mut self) -> WriterStats {
        let Some(thread) = self.thread.take() else {
            return WriterStats::default();
        };
        // Blocking send: this is the control path, the writer is draining the channel.
        let _ = self.tx.send(Msg::Finish);
        let error = thread
            .join()
            .unwrap_or_else(|_| Some("flow-log writer thread panicked".to_string()));
        WriterStats {
            written: self.counters.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed)
                + self.counters.write_failed.load(Ordering::Relaxed),
            error,
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        // Never lose queued records because a caller forgot `finish`.
        self.stop();
    }
}

/// Starts a writer thread with the default channel capacity.
pub fn spawn_writer(
    gateway: &str,
    target: Target,
    rotate: Rotation,
) -> io::Result<(ChannelSink, WriterHandle)> {
    spawn_writer_with_capacity(gateway, target, rotate, DEFAULT_CHANNEL_CAPACITY)
}

/// Starts a writer thread whose channel holds `capacity` records (at least 1).
pub fn spawn_writer_with_capacity(
    gateway: &str,
    target: Target,
    rotate: Rotation,
    capacity: usize,
) -> io::Result<(ChannelSink, WriterHandle)> {
    spawn_writer_tee(gateway, target, rotate, capacity, None)
}

/// Starts a writer thread that also hands every line to `tee` (a remote sink); the tee is
/// dropped when the thread stops.
pub fn spawn_writer_tee(
    gateway: &str,
    target: Target,
    rotate: Rotation,
    capacity: usize,
    tee: Option<Box<dyn LineTee>>,
) -> io::Result<(ChannelSink, WriterHandle)> {
    let counters = Arc::new(WriterCounters::default());
    let mut writer = Writer::open_with(target, rotate, Arc::clone(&counters))?;
    writer.tee = tee;
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let thread = std::thread::Builder::new()
        .name("natfw-flowlog".into())
        .spawn({
            let gateway = gateway.to_string();
            move || run_writer(writer, &gateway, rx)
        })?;
    Ok((
        ChannelSink {
            tx: tx.clone(),
            offered: Arc::default(),
            dropped: dropped.clone(),
            lossless: false,
            counters: Arc::clone(&counters),
        },
        WriterHandle {
            tx,
            dropped,
            counters,
            thread: Some(thread),
        },
    ))
}

/// The writer thread. Returns the first I/O error (every failure is also counted and kept as
/// the latest error in the shared [`WriterCounters`] as it happens).
fn run_writer(mut w: Writer, gateway: &str, rx: Receiver<Msg>) -> Option<String> {
    let mut error = None::<String>;
    let mut note = |e: io::Error| {
        if error.is_none() {
            error = Some(e.to_string());
        }
    };
    let mut dirty = false;
    loop {
        // Flush as soon as the queue runs dry: batches under load, prompt lines when quiet.
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(_) => {
                if dirty {
                    if let Err(e) = w.flush() {
                        note(e);
                    }
                    dirty = false;
                }
                match rx.recv_timeout(IDLE_FLUSH) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        match msg.record(gateway) {
            Some(rec) => match w.write(&rec) {
                Ok(()) => dirty = true,
                Err(e) => note(e),
            },
            None => {
                // Take what was queued before the finish request, then stop.
                while let Some(rec) = rx.try_recv().ok().and_then(|m| m.record(gateway)) {
                    if let Err(e) = w.write(&rec) {
                        note(e);
                    }
                }
                break;
            }
        }
    }
    if let Err(e) = w.flush() {
        note(e);
    }
    error
}
