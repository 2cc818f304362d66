//! The kernel's own counters of an AF_XDP socket (`XDP_STATISTICS`): frames XDP redirected
//! that never reached natfw because the RX ring was full or the fill ring empty. Read from the
//! control thread by descriptor; the data path is not involved.

use std::io;

const SOL_XDP: libc::c_int = 283;
const XDP_STATISTICS: libc::c_int = 7;

/// `struct xdp_statistics` (linux/if_xdp.h).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct XskStats {
    /// Dropped for reasons other than an invalid descriptor (kernel: RX ring full included).
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when the kernel needed a frame.
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

impl XskStats {
    /// Add another socket's counters.
    pub fn accumulate(&mut self, o: &XskStats) {
        self.rx_dropped += o.rx_dropped;
        self.rx_invalid_descs += o.rx_invalid_descs;
        self.tx_invalid_descs += o.tx_invalid_descs;
        self.rx_ring_full += o.rx_ring_full;
        self.rx_fill_ring_empty_descs += o.rx_fill_ring_empty_descs;
        self.tx_ring_empty_descs += o.tx_ring_empty_descs;
    }

    /// Read the statistics of the AF_XDP socket `fd`.
    pub fn read(fd: i32) -> io::Result<XskStats> {
        let mut s = XskStats::default();
        let mut len = std::mem::size_of::<XskStats>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `s`, a plain repr(C) struct of
        // six u64 of exactly that size; `len` is updated with what the kernel wrote. A stale
        // descriptor only makes the call fail.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                SOL_XDP,
                XDP_STATISTICS,
                (&mut s as *mut XskStats).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Older kernels fill only the first three fields.
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_kernel_struct_and_a_non_xsk_fd_is_an_error() {
        assert_eq!(std::mem::size_of::<XskStats>(), 48);
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        assert!(XskStats::read(sock.as_raw_fd()).is_err());
    }
}
