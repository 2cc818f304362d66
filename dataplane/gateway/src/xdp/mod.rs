//! The XDP steering program (`ebpf/natfw.bpf.c`): loading with aya, filling its maps from the
//! configuration, registering AF_XDP sockets, attaching and reading counters.
//!
//! aya is pinned to 0.14.0: later releases need a newer rustc than the stable toolchain here.
//! The object is loaded once per interface because an XSKMAP is keyed by RX queue and both
//! interfaces use queue 0.

pub mod maps;
pub mod offload;

use std::net::IpAddr;
use std::os::fd::RawFd;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::Ebpf;
use ipnet::IpNet;

pub use maps::{AddrKey, Counter, Counters, IfSide, OffloadKey, OffloadVal, XdpConfig};

/// The compiled XDP object (empty when the build had no clang).
pub static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/natfw.bpf.o"));

const PROGRAM_NAME: &str = "natfw_xdp";
/// The fast path's tc ingress program in the same object (it shares the maps).
const TC_PROGRAM_NAME: &str = "natfw_tc";

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
    /// The fast-path table, until [`Steering::take_offload`] hands it to the data path.
    offload: Option<aya::maps::Map>,
    /// Attach the tc fast path too.
    fast_path: bool,
}

impl Steering {
    /// Load the object for `iface` and fill its maps; not attached yet (register sockets first,
    /// so no packet is steered before a socket is there to take it).
    pub fn load(iface: &str, side: IfSide, rules: &SteeringRules) -> Result<Steering, XdpError> {
        if PROGRAM.is_empty() {
            return Err(XdpError::NotBuilt);
        }
        let ebpf = Ebpf::load(PROGRAM).map_err(|e| XdpError::Load {
            iface: iface.into(),
            source: Box::new(e),
        })?;
        let mut s = Steering {
            iface: iface.into(),
            side,
            ebpf,
            mode: None,
            offload: None,
            fast_path: false,
        };
        s.fill(rules)?;
        let prog: &mut Xdp = s.program()?;
        prog.load().map_err(|e| XdpError::Program {
            iface: iface.into(),
            what: "verifier rejected it",
            source: Box::new(e),
        })?;
        let tc = s.tc_program()?;
        tc.load().map_err(|e| XdpError::Program {
            iface: iface.into(),
            what: "verifier rejected the tc fast path",
            source: Box::new(e),
        })?;
        // Both programs hold the map now: it can leave the object.
        s.offload = s.ebpf.take_map("offload");
        Ok(s)
    }

    fn tc_program(&mut self) -> Result<&mut SchedClassifier, XdpError> {
        let iface = self.iface.clone();
        let p = self
            .ebpf
            .program_mut(TC_PROGRAM_NAME)
            .ok_or(XdpError::MissingMap {
                map: TC_PROGRAM_NAME,
            })?;
        p.try_into().map_err(|e| XdpError::Program {
            iface,
            what: "not a tc program",
            source: Box::new(e),
        })
    }

    /// The fast-path table of this interface (once): the data path writes the flows the
    /// engine offloads into it. Taking it also has [`Steering::attach`] attach the tc program.
    pub fn take_offload(
        &mut self,
    ) -> Result<aya::maps::HashMap<MapData, OffloadKey, OffloadVal>, XdpError> {
        let map = self
            .offload
            .take()
            .ok_or(XdpError::MissingMap { map: "offload" })?;
        let h = aya::maps::HashMap::try_from(map).map_err(self_map_err(&self.iface, "offload"))?;
        self.fast_path = true;
        Ok(h)
    }

    fn program(&mut self) -> Result<&mut Xdp, XdpError> {
        let iface = self.iface.clone();
        let p = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(XdpError::MissingMap { map: PROGRAM_NAME })?;
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
        let cfg = XdpConfig {
            side: self.side as u32,
            kernel_port_lo: lo,
            kernel_port_hi: hi,
        };
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

    /// Put an AF_XDP socket into the XSKMAP slot of RX queue `queue`.
    pub fn register_socket(&mut self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        let iface = self.iface.clone();
        let map = self
            .ebpf
            .map_mut("xsks")
            .ok_or(XdpError::MissingMap { map: "xsks" })?;
        let mut xsks: XskMap<&mut MapData> =
            XskMap::try_from(map).map_err(self_map_err(&iface, "xsks"))?;
        xsks.set(queue, fd, 0).map_err(self_map_err(&iface, "xsks"))
    }

    /// Attach in driver mode, falling back to generic (skb) mode with a log line. A program
    /// left attached through netlink (a crashed run of another loader, `ip link ... xdp`) is
    /// removed first; bpf_link attachments of a crashed natfw are gone with its process.
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
        if self.fast_path {
            // tc before XDP: a packet XDP passes for the fast path must find tc there. TCX
            // link (kernel >= 6.6): detached when this process ends, however it ends.
            let tc = self.tc_program()?;
            tc.attach(&iface, TcAttachType::Ingress)
                .map_err(|e| XdpError::Program {
                    iface: iface.clone(),
                    what: "attaching the tc fast path (tc ingress, TCX: kernel >= 6.6; or set gateway.fast_path: false)",
                    source: Box::new(e),
                })?;
        }
        let prog = self.program()?;
        let mode = match prog.attach(&iface, XdpMode::Driver) {
            Ok(_) => XdpMode::Driver,
            Err(e) => {
                tracing::warn!(
                    "{iface}: driver-mode XDP unavailable ({e}); using generic (skb) mode"
                );
                prog.attach(&iface, XdpMode::Skb)
                    .map_err(|e| XdpError::Program {
                        iface: iface.clone(),
                        what: "attach",
                        source: Box::new(e),
                    })?;
                XdpMode::Skb
            }
        };
        self.mode = Some(mode);
        Ok(mode)
    }

    /// The mode the program is attached in, if attached.
    pub fn mode(&self) -> Option<XdpMode> {
        self.mode
    }

    /// The interface this instance is for.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Run the loaded program once on `frame` in the kernel (`BPF_PROG_TEST_RUN`, no interface
    /// needed) and return its XDP action (`XDP_DROP` = 1, `XDP_PASS` = 2, `XDP_REDIRECT` = 4).
    /// A steered frame with no socket registered reports `XDP_DROP`. For tests and diagnostics.
    pub fn test_run(&mut self, frame: &[u8]) -> std::io::Result<u32> {
        use std::os::fd::{AsFd, AsRawFd};
        let prog = self
            .program()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let fd = prog
            .fd()
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .as_fd()
            .as_raw_fd();
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
        let mut attr = TestAttr {
            prog_fd: fd as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: 1,
            ..TestAttr::default()
        };
        // SAFETY: bpf(2) with a zero-initialised attr of sufficient size; `data_in` points to
        // `frame`, valid for `data_size_in` bytes during the call; no output buffers are given.
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
        Ok(attr.retval)
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
