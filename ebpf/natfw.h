/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Layouts shared by the natfw eBPF programs and mirrored byte for byte by the gateway
 * (`dataplane/gateway/src/xdp/maps.rs`; a unit test there compiles this header with the system
 * C compiler and compares sizes and offsets). Change both sides together.
 */
#ifndef NATFW_H
#define NATFW_H

#include <linux/types.h>

#define NATFW_SIDE_INSIDE 0
#define NATFW_SIDE_OUTSIDE 1

#define NATFW_LPM_MAX 1024
#define NATFW_ADDR_MAX 256

struct lpm_v4_key {
	__u32 prefixlen;
	__u8 addr[4]; /* network byte order */
};

struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* An address of either family: IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d). */
struct addr_key {
	__u8 addr[16];
};

/* Split mode: packet workers (one engine and one slow-path veth pair per side each). */
#define NATFW_WORKERS_MAX 8

/* Program config (array[1]). */
struct natfw_config {
	__u32 side;            /* NATFW_SIDE_* */
	__u16 kernel_port_lo;  /* host byte order; lo > hi = no kernel range */
	__u16 kernel_port_hi;
	/* Split mode: packet workers, 1..NATFW_WORKERS_MAX (0 is taken as 1). */
	__u32 workers;
	/* Split mode: the real interface, where natfw_back sends what the engine transmits. */
	__u32 wire_ifindex;
	/* Split mode (fast path on), per worker: the kernel end of its slow-path veth pair on
	 * this side, where natfw_steer sends what the engine must see (0: the kernel drops it;
	 * all 0 in classic mode) ... */
	__u32 slow_kernel_ifindex[NATFW_WORKERS_MAX];
	/* ... and the pair's other end, where natfw_slow runs and finds the worker's socket. */
	__u32 slow_xdp_ifindex[NATFW_WORKERS_MAX];
};

/*
 * Fast path (offload) tables, two per interface (`offload` for IPv4, `offload6` for IPv6, each
 * of NATFW_OFFLOAD_MAX entries): the key is a flow's tuple as its packets arrive on that
 * interface (inside: the client's original tuple; outside: the reply tuple, server -> EIP),
 * addresses and ports in network byte order.
 */
#define NATFW_OFFLOAD_MAX 262144

/* natfw_offload_val.rewrite */
#define NATFW_REWRITE_SRC 0 /* inside: source -> EIP:eport (SNAT) */
#define NATFW_REWRITE_DST 1 /* outside: destination -> client:port */

struct natfw_offload_key {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct natfw_offload_val {
	__u32 new_addr;       /* network byte order */
	__u16 new_port;       /* network byte order */
	__u8 rewrite;         /* NATFW_REWRITE_* */
	__u8 pad;
	__u32 egress_ifindex; /* where the rewritten packet leaves */
	__u32 pad2;
	__u64 packets;        /* wire packets (GSO segments counted one by one) */
	__u64 bytes;          /* wire bytes, Ethernet header included */
	__u64 last_ns;        /* bpf_ktime_get_ns() of the last packet */
};

/* The IPv6 key and value: as natfw_offload_key and natfw_offload_val, with 16-byte addresses. */
struct natfw_offload6_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct natfw_offload6_val {
	__u8 new_addr[16];    /* network byte order */
	__u16 new_port;       /* network byte order */
	__u8 rewrite;         /* NATFW_REWRITE_* */
	__u8 pad;
	__u32 egress_ifindex; /* where the rewritten packet leaves */
	__u64 packets;        /* wire packets (GSO segments counted one by one) */
	__u64 bytes;          /* wire bytes, Ethernet header included */
	__u64 last_ns;        /* bpf_ktime_get_ns() of the last packet */
};

#endif
