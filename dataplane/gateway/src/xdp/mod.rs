//! The steering programs (`ebpf/natfw.bpf.c`): loading with aya, filling their maps from the
//! configuration, registering AF_XDP sockets, attaching and reading counters.
//!
//! aya is pinned to 0.14.0: later releases need a newer rustc than the stable toolchain here.
//! The object is loaded once per side because an XSKMAP is keyed by RX queue (classic mode) or
//! worker (split mode), and both sides' sockets use the same keys.
//!
//! Two ways to attach (see the program's header comment): classic mode runs `natfw_xdp` on the
//! real interface, whose AF_XDP socket takes what the engine must see; split mode (the fast
//! path) runs `natfw_steer` on the real interface's tc ingress and sends what the engine must
//! see through one veth pair per packet worker ([`SlowPath`], the worker chosen by
//! [`worker_of`]) whose far end carries `natfw_slow` and that worker's socket.

pub mod maps;
pub mod offload;
pub mod worker;

use std::net::IpAddr;
use std::os::fd::RawFd;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLinkId;
use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use ipnet::IpNet;
use std::path::{Path, PathBuf};

pub use maps::{
    AddrKey, Counter, Counters, IfSide, Offload6Key, Offload6Val, OffloadKey, OffloadVal,
    XdpConfig, WORKERS_MAX,
};
pub use offload::OffloadMaps;
pub use worker::{worker_of, WorkerChoice};

/// The compiled XDP object (empty when the build had no clang).
pub static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/natfw.bpf.o"));

/// Classic mode: XDP on the real interface.
const PROGRAM_NAME: &str = "natfw_xdp";
/// Split mode: tc ingress of the real interface (steering + fast path).
const STEER_PROGRAM: &str = "natfw_steer";
/// Split mode: XDP on the AF_XDP end of the slow-path veth pair.
const SLOW_PROGRAM: &str = "natfw_slow";
/// Split mode: tc ingress of the kernel end of the veth pair (engine output to the wire).
const BACK_PROGRAM: &str = "natfw_back";

/// The names of packet worker `worker`'s slow-path veth pairs, `[inside, outside]`, each
/// `(kernel end, XDP end)`: worker 0 `nfw-in-k`/`nfw-in-x` and `nfw-out-k`/`nfw-out-x`, worker
/// `i > 0` `nfw-in{i}-k`/`nfw-in{i}-x` and `nfw-out{i}-k`/`nfw-out{i}-x`. One natfw per network
/// namespace (the instance lock), so fixed names.
pub fn slow_link_names(worker: usize) -> [(String, String); 2] {
    let n = if worker == 0 {
        String::new()
    } else {
        worker.to_string()
    };
    ["in", "out"].map(|side| (format!("nfw-{side}{n}-k"), format!("nfw-{side}{n}-x")))
}

/// One packet worker's slow-path veth pair on one side in split mode (created by the caller,
/// `netlink::create_veth`).
#[derive(Debug, Clone)]
pub struct SlowPath {
    /// The end in the gateway's namespace that `natfw_steer` redirects to and where the
    /// engine's frames come out (`natfw_back`).
    pub kernel_end: String,
    pub kernel_ifindex: u32,
    /// The end that carries `natfw_slow` and the AF_XDP socket.
    pub xdp_end: String,
    /// The XDP end's index (where `natfw_slow` looks up its worker).
    pub xdp_ifindex: u32,
    /// The real interface's index (where `natfw_back` sends frames); the same for every
    /// worker of a side (the first one's is used).
    pub wire_ifindex: u32,
}

/// What the program steers: the Rust classifier's rules (`natfw_engine::steer`), which make
/// the same decision as the program.
pub use natfw_engine::steer::SteeringRules;

/// Errors of loading, filling or attaching the program.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("built without the XDP program: install clang and libbpf-dev and rebuild")]
    NotBuilt,
    #[error("loading the XDP object for {iface}: {source}")]
    Load {
        iface: String,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("XDP program for {iface}: {what}: {source}")]
    Program {
        iface: String,
        what: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("XDP map {map} for {iface}: {source}")]
    Map {
        iface: String,
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("XDP map {map} missing from the object")]
    MissingMap { map: &'static str },
    #[error("{iface}: split mode needs 1 to {WORKERS_MAX} slow paths (one per worker), got {got}")]
    Workers { iface: String, got: usize },
    #[error("removing a stale XDP program from {iface}: {source}")]
    Detach {
        iface: String,
        #[source]
        source: std::io::Error,
    },
}

/// One loaded instance of the program for one interface. Dropping it detaches the program.
#[derive(Debug)]
pub struct Steering {
    iface: String,
    side: IfSide,
    ebpf: Ebpf,
    mode: Option<XdpMode>,
    /// The fast-path tables (`offload`, `offload6`), until [`Steering::take_offload`] hands
    /// them to the data path.
    offload: Option<aya::maps::Map>,
    offload6: Option<aya::maps::Map>,
    /// Split mode's veth pairs, one per packet worker (index = worker); `None`: classic mode.
    slow: Option<Vec<SlowPath>>,
    /// Split mode's pin directory of this side (a bpffs directory): the `offload` and
    /// `offload6` maps are pinned there, and at a graceful stop the steering link
    /// ([`Steering::pin_steer`]).
    pin_dir: Option<PathBuf>,
    /// The attached `natfw_steer` link.
    steer_link: Option<SchedClassifierLinkId>,
    /// `attach` replaced the program of a link an earlier process left pinned.
    adopted_link: bool,
}

/// The pinned `offload` map's file in a side's pin directory.
const OFFLOAD_PIN: &str = "offload";
/// The pinned `offload6` map's file in a side's pin directory.
const OFFLOAD6_PIN: &str = "offload6";
/// The pinned `natfw_steer` link's file in a side's pin directory.
const STEER_LINK_PIN: &str = "steer_link";

/// A pinned `offload` or `offload6` map whose key, value or size is not this build's (an
/// upgrade changed `ebpf/natfw.h`) is unpinned, so the load creates a fresh one: the earlier
/// run's flows of that family are not adopted (their handover data finds no entries and is
/// recorded at start). `key` and `value`: this build's sizes.
fn drop_incompatible_pin(pin: &Path, key: usize, value: usize) {
    if !pin.exists() {
        return;
    }
    let ok = aya::maps::MapInfo::from_pin(pin).map(|i| {
        (i.key_size(), i.value_size(), i.max_entries())
            == (key as u32, value as u32, maps::OFFLOAD_MAX)
    });
    if !matches!(ok, Ok(true)) {
        tracing::warn!(
            "{}: pinned by a build with another layout ({ok:?}); replaced, its flows are not adopted",
            pin.display()
        );
        let _ = std::fs::remove_file(pin);
    }
}

/// Remove what a split-mode run left pinned in `dir` (a side's pin directory): the steering
/// link (its program detaches from the interface) and the `offload` and `offload6` maps.
/// Returns whether a link was there. A missing directory is not an error.
pub fn remove_pins(dir: &Path) -> std::io::Result<bool> {
    let link = dir.join(STEER_LINK_PIN);
    let had_link = link.exists();
    if had_link {
        match PinnedLink::from_pin(&link) {
            // Unpinned and dropped: the last reference goes, the link detaches.
            Ok(l) => drop(l.unpin()),
            Err(e) => {
                tracing::warn!("{}: {e}", link.display());
                let _ = std::fs::remove_file(&link);
            }
        }
    }
    for pin in [OFFLOAD_PIN, OFFLOAD6_PIN] {
        match std::fs::remove_file(dir.join(pin)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(had_link)
}

impl Steering {
    /// Load the object for `iface` and fill its maps; not attached yet (register sockets first,
    /// so no packet is steered before a socket is there to take it).
    pub fn load(iface: &str, side: IfSide, rules: &SteeringRules) -> Result<Steering, XdpError> {
        Self::load_with(iface, side, rules, None)
    }

    /// [`Steering::load`] for split mode (`slow: Some`, one [`SlowPath`] per packet worker,
    /// index = worker, 1 to [`WORKERS_MAX`]) or classic mode (`None`).
    pub fn load_with(
        iface: &str,
        side: IfSide,
        rules: &SteeringRules,
        slow: Option<Vec<SlowPath>>,
    ) -> Result<Steering, XdpError> {
        Self::load_pinned(iface, side, rules, slow, None)
    }

    /// [`Steering::load_with`] whose `offload` and `offload6` maps live pinned in `pin_dir`
    /// (created if missing; must be on a bpffs): existing pinned maps, with the entries an
    /// earlier process handed over, are reused.
    pub fn load_pinned(
        iface: &str,
        side: IfSide,
        rules: &SteeringRules,
        slow: Option<Vec<SlowPath>>,
        pin_dir: Option<&Path>,
    ) -> Result<Steering, XdpError> {
        if PROGRAM.is_empty() {
            return Err(XdpError::NotBuilt);
        }
        if let Some(got) = slow.as_ref().map(Vec::len) {
            if !(1..=WORKERS_MAX).contains(&got) {
                return Err(XdpError::Workers {
                    iface: iface.into(),
                    got,
                });
            }
        }
        let load_err = |e| XdpError::Load {
            iface: iface.into(),
            source: Box::new(e),
        };
        let ebpf = match pin_dir {
            None => Ebpf::load(PROGRAM).map_err(load_err)?,
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| XdpError::Load {
                    iface: iface.into(),
                    source: Box::new(aya::EbpfError::FileError {
                        path: dir.to_path_buf(),
                        error: e,
                    }),
                })?;
                use std::mem::size_of;
                drop_incompatible_pin(
                    &dir.join(OFFLOAD_PIN),
                    size_of::<OffloadKey>(),
                    size_of::<OffloadVal>(),
                );
                drop_incompatible_pin(
                    &dir.join(OFFLOAD6_PIN),
                    size_of::<Offload6Key>(),
                    size_of::<Offload6Val>(),
                );
                EbpfLoader::new()
                    .map_pin_path("offload", dir.join(OFFLOAD_PIN))
                    .map_pin_path("offload6", dir.join(OFFLOAD6_PIN))
                    .load(PROGRAM)
                    .map_err(load_err)?
            }
        };
        let mut s = Steering {
            iface: iface.into(),
            side,
            ebpf,
            mode: None,
            offload: None,
            offload6: None,
            slow,
            pin_dir: pin_dir.map(Path::to_path_buf),
            steer_link: None,
            adopted_link: false,
        };
        s.fill(rules)?;
        for name in [PROGRAM_NAME, SLOW_PROGRAM] {
            s.xdp_program(name)?.load().map_err(|e| XdpError::Program {
                iface: iface.into(),
                what: "verifier rejected an XDP program",
                source: Box::new(e),
            })?;
        }
        for name in [STEER_PROGRAM, BACK_PROGRAM] {
            s.tc_program(name)?.load().map_err(|e| XdpError::Program {
                iface: iface.into(),
                what: "verifier rejected a tc program",
                source: Box::new(e),
            })?;
        }
        // The programs hold the maps now: they can leave the object.
        s.offload = s.ebpf.take_map("offload");
        s.offload6 = s.ebpf.take_map("offload6");
        Ok(s)
    }

    fn tc_program(&mut self, name: &'static str) -> Result<&mut SchedClassifier, XdpError> {
        let iface = self.iface.clone();
        let p = self
            .ebpf
            .program_mut(name)
            .ok_or(XdpError::MissingMap { map: name })?;
        p.try_into().map_err(|e| XdpError::Program {
            iface,
            what: "not a tc program",
            source: Box::new(e),
        })
    }

    /// The fast-path tables of this side, IPv4 (`offload`) and IPv6 (`offload6`), once: the
    /// data path writes the flows the engine offloads into them. Only `natfw_steer` (split
    /// mode) reads them.
    pub fn take_offload(&mut self) -> Result<OffloadMaps, XdpError> {
        if self.offload.is_none() || self.offload6.is_none() {
            let map = if self.offload.is_none() {
                "offload"
            } else {
                "offload6"
            };
            return Err(XdpError::MissingMap { map });
        }
        let (m4, m6) = (self.offload.take(), self.offload6.take());
        let v4 = m4.ok_or(XdpError::MissingMap { map: "offload" })?;
        let v6 = m6.ok_or(XdpError::MissingMap { map: "offload6" })?;
        Ok(OffloadMaps {
            v4: aya::maps::HashMap::try_from(v4).map_err(self_map_err(&self.iface, "offload"))?,
            v6: aya::maps::HashMap::try_from(v6).map_err(self_map_err(&self.iface, "offload6"))?,
        })
    }

    fn xdp_program(&mut self, name: &'static str) -> Result<&mut Xdp, XdpError> {
        let iface = self.iface.clone();
        let p = self
            .ebpf
            .program_mut(name)
            .ok_or(XdpError::MissingMap { map: name })?;
        p.try_into().map_err(|e| XdpError::Program {
            iface,
            what: "not an XDP program",
            source: Box::new(e),
        })
    }

    fn map_err(&self, map: &'static str) -> impl Fn(aya::maps::MapError) -> XdpError + '_ {
        move |e| XdpError::Map {
            iface: self.iface.clone(),
            map,
            source: Box::new(e),
        }
    }

    fn fill(&mut self, rules: &SteeringRules) -> Result<(), XdpError> {
        let (lo, hi) = rules
            .kernel_ports
            .as_ref()
            .map_or((1, 0), |r| (*r.start(), *r.end()));
        let slow = self.slow.as_deref().unwrap_or_default();
        let mut cfg = XdpConfig {
            side: self.side as u32,
            kernel_port_lo: lo,
            kernel_port_hi: hi,
            workers: slow.len().max(1) as u32,
            wire_ifindex: slow.first().map_or(0, |s| s.wire_ifindex),
            slow_kernel_ifindex: [0; WORKERS_MAX],
            slow_xdp_ifindex: [0; WORKERS_MAX],
        };
        for (w, p) in slow.iter().take(WORKERS_MAX).enumerate() {
            cfg.slow_kernel_ifindex[w] = p.kernel_ifindex;
            cfg.slow_xdp_ifindex[w] = p.xdp_ifindex;
        }
        {
            let map = self
                .ebpf
                .map_mut("config")
                .ok_or(XdpError::MissingMap { map: "config" })?;
            let mut arr: Array<&mut MapData, XdpConfig> =
                Array::try_from(map).map_err(self_map_err(&self.iface, "config"))?;
            arr.set(0, cfg, 0)
                .map_err(self_map_err(&self.iface, "config"))?;
        }
        self.fill_lpm("snat_v4", "snat_v6", &rules.snat)?;
        self.fill_lpm("bypass_v4", "bypass_v6", &rules.bypass)?;
        self.fill_addrs("eips", &rules.eips)?;
        self.fill_addrs("gw_addrs", &rules.gateway_addrs)?;
        Ok(())
    }

    fn fill_lpm(
        &mut self,
        v4: &'static str,
        v6: &'static str,
        nets: &[IpNet],
    ) -> Result<(), XdpError> {
        let iface = self.iface.clone();
        let [m4, m6] = self.ebpf.maps_disjoint_mut([v4, v6]);
        let m4 = m4.ok_or(XdpError::MissingMap { map: v4 })?;
        let m6 = m6.ok_or(XdpError::MissingMap { map: v6 })?;
        let mut t4: LpmTrie<&mut MapData, [u8; 4], u8> =
            LpmTrie::try_from(m4).map_err(self_map_err(&iface, v4))?;
        let mut t6: LpmTrie<&mut MapData, [u8; 16], u8> =
            LpmTrie::try_from(m6).map_err(self_map_err(&iface, v6))?;
        for net in nets {
            match net.trunc() {
                IpNet::V4(n) => t4
                    .insert(&Key::new(n.prefix_len().into(), n.addr().octets()), 1, 0)
                    .map_err(self_map_err(&iface, v4))?,
                IpNet::V6(n) => t6
                    .insert(&Key::new(n.prefix_len().into(), n.addr().octets()), 1, 0)
                    .map_err(self_map_err(&iface, v6))?,
            }
        }
        Ok(())
    }

    fn fill_addrs(&mut self, name: &'static str, addrs: &[IpAddr]) -> Result<(), XdpError> {
        let iface = self.iface.clone();
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(XdpError::MissingMap { map: name })?;
        let mut h: HashMap<&mut MapData, AddrKey, u8> =
            HashMap::try_from(map).map_err(self_map_err(&iface, name))?;
        for a in addrs {
            h.insert(AddrKey::from(*a), 1, 0)
                .map_err(self_map_err(&iface, name))?;
        }
        Ok(())
    }

    /// Add (`on`) or remove a bypassed source prefix while the program runs (admin API):
    /// its new packets go to the kernel instead of the engine.
    pub fn set_bypass(&mut self, net: IpNet, on: bool) -> Result<(), XdpError> {
        if on {
            return self.fill_lpm("bypass_v4", "bypass_v6", &[net]);
        }
        let iface = self.iface.clone();
        let (v4, v6) = ("bypass_v4", "bypass_v6");
        let [m4, m6] = self.ebpf.maps_disjoint_mut([v4, v6]);
        let m4 = m4.ok_or(XdpError::MissingMap { map: v4 })?;
        let m6 = m6.ok_or(XdpError::MissingMap { map: v6 })?;
        // A missing key is not an error: removing twice is idempotent.
        match net.trunc() {
            IpNet::V4(n) => {
                let mut t: LpmTrie<&mut MapData, [u8; 4], u8> =
                    LpmTrie::try_from(m4).map_err(self_map_err(&iface, v4))?;
                let _ = t.remove(&Key::new(n.prefix_len().into(), n.addr().octets()));
            }
            IpNet::V6(n) => {
                let mut t: LpmTrie<&mut MapData, [u8; 16], u8> =
                    LpmTrie::try_from(m6).map_err(self_map_err(&iface, v6))?;
                let _ = t.remove(&Key::new(n.prefix_len().into(), n.addr().octets()));
            }
        }
        Ok(())
    }

    /// Put an AF_XDP socket into XSKMAP slot `index`: split mode, the packet worker's index
    /// (its socket is bound to queue 0 of its own XDP end); classic mode, the RX queue of the
    /// interface the socket is bound to.
    pub fn register_socket(&mut self, index: u32, fd: RawFd) -> Result<(), XdpError> {
        let iface = self.iface.clone();
        let map = self
            .ebpf
            .map_mut("xsks")
            .ok_or(XdpError::MissingMap { map: "xsks" })?;
        let mut xsks: XskMap<&mut MapData> =
            XskMap::try_from(map).map_err(self_map_err(&iface, "xsks"))?;
        xsks.set(index, fd, 0).map_err(self_map_err(&iface, "xsks"))
    }

    /// Attach. Classic mode: `natfw_xdp` on the interface, in driver mode, falling back to
    /// generic (skb) mode with a log line. Split mode: for every worker `natfw_back` on its veth
    /// pair's kernel end and `natfw_slow` on its XDP end (driver mode, else generic), then
    /// `natfw_steer` on the interface's tc ingress, last, so nothing is steered before the way
    /// to the sockets is there. The mode returned is generic if any XDP end fell back to it. A program left attached to the interface through netlink (a crashed run of
    /// another loader, `ip link ... xdp`) is removed first; natfw's own bpf_link and TCX
    /// attachments go with its process, however it ends.
    pub fn attach(&mut self) -> Result<XdpMode, XdpError> {
        let ifindex = crate::netlink::if_index(&self.iface).map_err(|source| XdpError::Detach {
            iface: self.iface.clone(),
            source,
        })?;
        crate::netlink::detach_xdp(ifindex).map_err(|source| XdpError::Detach {
            iface: self.iface.clone(),
            source,
        })?;
        let iface = self.iface.clone();
        let mode = match self.slow.clone() {
            None => self.attach_xdp(PROGRAM_NAME, &iface)?,
            Some(slow) => {
                let mut mode = XdpMode::Driver;
                for p in &slow {
                    self.attach_tc(BACK_PROGRAM, &p.kernel_end)?;
                    if self.attach_xdp(SLOW_PROGRAM, &p.xdp_end)? == XdpMode::Skb {
                        mode = XdpMode::Skb;
                    }
                }
                self.attach_steer(&iface)?;
                mode
            }
        };
        self.mode = Some(mode);
        Ok(mode)
    }

    fn attach_tc(
        &mut self,
        name: &'static str,
        dev: &str,
    ) -> Result<SchedClassifierLinkId, XdpError> {
        let tc = self.tc_program(name)?;
        // TCX link (kernel >= 6.6): detached when this process ends, however it ends (unless
        // pinned, see `pin_steer`).
        tc.attach(dev, TcAttachType::Ingress)
            .map_err(|e| XdpError::Program {
                iface: dev.into(),
                what: "attaching a tc ingress program (TCX: kernel >= 6.6; or set gateway.fast_path: false)",
                source: Box::new(e),
            })
    }

    /// `natfw_steer` on the interface: into the link an earlier process left pinned (the
    /// kernel swaps the program atomically, no packet meets neither), else a new link. The
    /// pin is removed at once: from here on the link goes with this process again.
    fn attach_steer(&mut self, dev: &str) -> Result<(), XdpError> {
        let pin = self.pin_dir.as_ref().map(|d| d.join(STEER_LINK_PIN));
        if let Some(pin) = pin.filter(|p| p.exists()) {
            match PinnedLink::from_pin(&pin) {
                Ok(old) => {
                    let fd = FdLink::from(old);
                    let replaced = aya::programs::tc::SchedClassifierLink::try_from(fd)
                        .map_err(|e| e.to_string())
                        .and_then(|link| {
                            self.tc_program(STEER_PROGRAM)
                                .map_err(|e| e.to_string())?
                                .attach_to_link(link)
                                .map_err(|e| e.to_string())
                        });
                    let _ = std::fs::remove_file(&pin);
                    match replaced {
                        Ok(id) => {
                            self.steer_link = Some(id);
                            self.adopted_link = true;
                            return Ok(());
                        }
                        Err(e) => tracing::warn!(
                            "{dev}: cannot take over the pinned steering link ({e}); attaching a new one"
                        ),
                    }
                }
                Err(e) => {
                    tracing::warn!("{}: {e}; attaching a new steering link", pin.display());
                    let _ = std::fs::remove_file(&pin);
                }
            }
        }
        self.steer_link = Some(self.attach_tc(STEER_PROGRAM, dev)?);
        Ok(())
    }

    /// `attach` took over a steering link an earlier process had pinned.
    pub fn adopted_link(&self) -> bool {
        self.adopted_link
    }

    /// Graceful stop with a handover: pin the `natfw_steer` link in the pin directory, so it
    /// stays attached after this process (and its `Steering`) is gone and keeps forwarding the
    /// offloaded flows; everything else it steers goes to the slow-path veth, which the caller
    /// deletes: dropped. Returns the pin's path.
    pub fn pin_steer(&mut self) -> Result<PathBuf, String> {
        let dir = self
            .pin_dir
            .clone()
            .ok_or_else(|| format!("{}: no pin directory", self.iface))?;
        let id = self
            .steer_link
            .take()
            .ok_or_else(|| format!("{}: no steering link", self.iface))?;
        let prog = self.tc_program(STEER_PROGRAM).map_err(|e| e.to_string())?;
        let link = prog.take_link(id).map_err(|e| e.to_string())?;
        let fd: FdLink = link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| e.to_string())?;
        let path = dir.join(STEER_LINK_PIN);
        let _ = std::fs::remove_file(&path);
        fd.pin(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    fn attach_xdp(&mut self, name: &'static str, dev: &str) -> Result<XdpMode, XdpError> {
        let prog = self.xdp_program(name)?;
        match prog.attach(dev, XdpMode::Driver) {
            Ok(_) => Ok(XdpMode::Driver),
            Err(e) => {
                tracing::warn!(
                    "{dev}: driver-mode XDP unavailable ({e}); using generic (skb) mode"
                );
                prog.attach(dev, XdpMode::Skb)
                    .map_err(|e| XdpError::Program {
                        iface: dev.into(),
                        what: "attach",
                        source: Box::new(e),
                    })?;
                Ok(XdpMode::Skb)
            }
        }
    }

    /// Split mode's veth pairs of this side, one per packet worker (index = worker); empty in
    /// classic mode.
    pub fn slow_paths(&self) -> &[SlowPath] {
        self.slow.as_deref().unwrap_or_default()
    }

    /// The mode the program is attached in, if attached.
    pub fn mode(&self) -> Option<XdpMode> {
        self.mode
    }

    /// The interface this instance is for.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Run the classic-mode XDP program once on `frame` in the kernel (`BPF_PROG_TEST_RUN`, no
    /// interface needed) and return its XDP action (`XDP_DROP` = 1, `XDP_PASS` = 2,
    /// `XDP_REDIRECT` = 4). A steered frame with no socket registered reports `XDP_DROP`. For
    /// tests and diagnostics.
    pub fn test_run(&mut self, frame: &[u8]) -> std::io::Result<u32> {
        use std::os::fd::{AsFd, AsRawFd};
        let other = |e: XdpError| std::io::Error::other(e.to_string());
        let prog = self.xdp_program(PROGRAM_NAME).map_err(other)?;
        let fd = prog
            .fd()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let fd = fd.as_fd().as_raw_fd();
        test_run_fd(fd, frame, None)
    }

    /// Run split mode's `natfw_steer` once on `frame` in the kernel and return its tc action
    /// (`TC_ACT_OK` = 0: the kernel's; `TC_ACT_SHOT` = 2; `TC_ACT_REDIRECT` = 7: to the slow
    /// path or, with the `fastpath_forwarded` counter, translated by the fast path).
    pub fn test_run_steer(&mut self, frame: &[u8]) -> std::io::Result<u32> {
        self.test_run_steer_out(frame).map(|(action, _)| action)
    }

    /// [`Steering::test_run_steer`], also returning the frame as the program left it (a
    /// translated packet: rewritten, checksums included).
    pub fn test_run_steer_out(&mut self, frame: &[u8]) -> std::io::Result<(u32, Vec<u8>)> {
        use std::os::fd::{AsFd, AsRawFd};
        let other = |e: XdpError| std::io::Error::other(e.to_string());
        let prog = self.tc_program(STEER_PROGRAM).map_err(other)?;
        let fd = prog
            .fd()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let fd = fd.as_fd().as_raw_fd();
        let mut out = vec![0u8; frame.len() + 256];
        let action = test_run_fd(fd, frame, Some(&mut out))?;
        Ok((action, out))
    }

    /// Current counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, XdpError> {
        let map = self
            .ebpf
            .map("counters")
            .ok_or(XdpError::MissingMap { map: "counters" })?;
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(self.map_err("counters"))?;
        let mut out = Counters::default();
        for c in Counter::ALL {
            let v = arr.get(&(c as u32), 0).map_err(self.map_err("counters"))?;
            out.0[c as usize] = v.iter().sum();
        }
        Ok(out)
    }
}

fn self_map_err(iface: &str, map: &'static str) -> impl Fn(aya::maps::MapError) -> XdpError {
    let iface = iface.to_string();
    move |e| XdpError::Map {
        iface: iface.clone(),
        map,
        source: Box::new(e),
    }
}

/// `BPF_PROG_TEST_RUN` of the program `fd` on `frame`: its return value; with `out`, the
/// frame as the program left it (`out` is truncated to its length).
fn test_run_fd(
    fd: std::os::fd::RawFd,
    frame: &[u8],
    out: Option<&mut Vec<u8>>,
) -> std::io::Result<u32> {
    // `union bpf_attr`, the `test` member (linux/bpf.h), zero-padded.
    #[repr(C)]
    #[derive(Default)]
    struct TestAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: [u32; 9],
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let (data_out, data_size_out) = match &out {
        Some(o) => (o.as_ptr() as u64, o.len() as u32),
        None => (0, 0),
    };
    let mut attr = TestAttr {
        prog_fd: fd as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out,
        data_size_out,
        repeat: 1,
        ..TestAttr::default()
    };
    // SAFETY: bpf(2) with a zero-initialised attr of sufficient size; `data_in` points to
    // `frame`, valid for `data_size_in` bytes during the call; `data_out` (when set) points to
    // `out`'s buffer, valid and exclusively borrowed for `data_size_out` bytes (the kernel
    // writes at most that many); no other output buffers are given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestAttr,
            std::mem::size_of::<TestAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if let Some(o) = out {
        o.truncate(attr.data_size_out as usize);
    }
    Ok(attr.retval)
}
