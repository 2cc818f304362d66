// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * natfw steering programs and the tc-BPF fast path (one object, loaded once per side).
 *
 * One decision, `classify()`, says per packet whether the natfw engine must see it or whether
 * the kernel keeps it:
 *
 *   inside:  IPv4/IPv6 whose source is in an SNAT entry, not in the bypass list, and whose
 *            destination is neither a gateway address nor multicast/broadcast -> steer.
 *   outside: IPv4/IPv6 whose destination is an EIP -> steer, except TCP/UDP to the kernel's own
 *            port range (the gateway's own sockets and the nftables masquerade of bypassed
 *            sources use it).
 *   everything else (ARP, non-IP, IPv6 neighbour discovery on either side, traffic for the
 *   gateway) -> pass.
 *
 * A steered packet never reaches the kernel's forwarding, so anything the engine would hand to
 * the kernel must be decided here. Two ways to attach it:
 *
 * Classic mode (`gateway.fast_path: false`): `natfw_xdp` on each real interface redirects
 * steered frames into the interface's AF_XDP socket (a failed redirect, no socket bound, drops:
 * passing an SNAT-bound packet to the kernel would forward it untranslated and uninspected).
 *
 * Split mode (`gateway.fast_path: true`): nothing runs XDP on the real interfaces, so veth and
 * NIC senders keep TSO and the kernel keeps GSO super-frames. `natfw_steer` on tc ingress of
 * each real interface classifies; a steered TCP/UDP packet of a flow in `offload` (IPv4) or
 * `offload6` (IPv6) (decided and fully inspected by the engine) that carries no SYN, FIN or
 * RST, no VLAN tag, no IP option (IPv4) or extension header (IPv6: the next header is TCP/UDP
 * itself) and is no fragment and fits the egress MTU is translated here (incremental checksums
 * valid for CHECKSUM_PARTIAL and GSO packets), counted in its entry and sent out of the other
 * interface with bpf_redirect_neigh (the fast path is shared by all packet workers); every
 * other steered packet goes to a slow-path veth pair. The gateway runs `workers` packet
 * workers (1..NATFW_WORKERS_MAX), each with its own engine, AF_XDP socket and veth pair per side
 * (it creates them; `slow_kernel_ifindex[w]` is worker w's kernel end, whose egress segments
 * super-frames). `worker_of()` picks the worker by port residue, so both directions of a flow
 * meet the same engine with nothing shared: the client's port (inside the TCP/UDP source port,
 * outside the destination port; the engine picks SNAT ports congruent to it) or the ICMP echo
 * id, modulo `workers`; other ICMP and other protocols go to worker 0. IPv4 fragments, ICMP
 * errors, IPv6 with extension headers and frames without a readable L4 header are copied to
 * every worker (bpf_clone_redirect), each engine keeping what it owns. On the pair's other
 * end `natfw_slow` (XDP) finds its worker by ingress ifindex (`slow_xdp_ifindex`) and
 * redirects into that worker's socket (`xsks[worker]`), or drops. What an engine transmits on
 * its socket comes out of its kernel end, where `natfw_back` (tc ingress) sends it out of the
 * real interface (`wire_ifindex`). With one worker, nothing is copied.
 *
 * Layouts of keys, values and the config are mirrored by `dataplane/gateway/src/xdp/maps.rs`.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "natfw.h"

/* Counter slots of `counters` (keep in sync with `xdp::maps::Counter`). */
enum natfw_counter {
	C_STEERED_INSIDE = 0,
	C_STEERED_OUTSIDE,
	C_PASS_ARP,
	C_PASS_NON_IP,
	C_PASS_GATEWAY,
	C_PASS_BYPASS,
	C_PASS_NOT_SNAT,
	C_PASS_OTHER,
	C_REDIRECT_FAILED,
	C_FAST_TO_ENGINE, /* an offloaded flow's packet the engine must see (SYN/FIN/RST, too big) */
	C_FAST_FWD,       /* tc: translated and redirected in the kernel */
	C_FAST_ERROR,     /* tc: the rewrite failed: dropped */
	C_STEERED_WORKER0, /* tc: to worker 0's slow path; worker i: C_STEERED_WORKER0 + i */
	C_STEERED_BROADCAST = C_STEERED_WORKER0 + NATFW_WORKERS_MAX, /* tc: to every worker */
	C_MAX,
};

#define LPM_MAX NATFW_LPM_MAX
#define ADDR_MAX NATFW_ADDR_MAX

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LPM_MAX);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
} snat_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LPM_MAX);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
} snat_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LPM_MAX);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
} bypass_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LPM_MAX);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
} bypass_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ADDR_MAX);
	__type(key, struct addr_key);
	__type(value, __u8);
} eips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ADDR_MAX);
	__type(key, struct addr_key);
	__type(value, __u8);
} gw_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct natfw_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NATFW_OFFLOAD_MAX);
	__type(key, struct natfw_offload_key);
	__type(value, struct natfw_offload_val);
} offload SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NATFW_OFFLOAD_MAX);
	__type(key, struct natfw_offload6_key);
	__type(value, struct natfw_offload6_val);
} offload6 SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* ICMP and ICMPv6 headers as worker_of() reads them (<linux/icmp.h> pulls in libc headers). */
struct echo_hdr {
	__u8 type;
	__u8 code;
	__be16 csum;
	__be16 id;  /* echo request/reply: identifier */
	__be16 seq;
};

static __always_inline int count(__u32 slot, int action)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &slot);
	if (c)
		*c += 1;
	return action;
}

static __always_inline void v4_mapped(struct addr_key *k, __be32 a)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->addr[10] = 0xff;
	k->addr[11] = 0xff;
	__builtin_memcpy(&k->addr[12], &a, 4);
}

/* Port range kept by the kernel on the outside (TCP/UDP destination port). */
static __always_inline int kernel_port(const struct natfw_config *cfg, __u8 proto, void *l4,
				       void *end)
{
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	/* Both headers start with source port, destination port. */
	__be16 *ports = l4;
	if ((void *)(ports + 2) > end)
		return 0;
	__u16 dport = bpf_ntohs(ports[1]);
	return dport >= cfg->kernel_port_lo && dport <= cfg->kernel_port_hi;
}

/* What classify() found. */
struct verdict {
	__u32 slot;    /* counter slot of the decision (C_STEERED_* = steer) */
	int steer;     /* the engine must see it */
	int fast;      /* IPv4 TCP/UDP, no tag, no option, no fragment, TTL > 1: `key` is set */
	int fast6;     /* IPv6 whose next header is TCP/UDP, no tag, hop limit > 1: `key6` is set */
	int flags_ok;  /* ... and no SYN/FIN/RST */
	__u32 l4_off;  /* offset of the L4 header from the frame's start (when fast or fast6) */
	struct natfw_offload_key key;
	struct natfw_offload6_key key6;
};

/* The ports of a TCP/UDP header at `l4` (SYN/FIN/RST into v->flags_ok); 0: not there. */
static __always_inline int fast_ports(struct verdict *v, __u8 proto, void *l4, void *end,
				      __be16 *sport, __be16 *dport)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *t = l4;
		if ((void *)(t + 1) > end)
			return 0;
		v->flags_ok = !(t->syn || t->fin || t->rst);
		*sport = t->source;
		*dport = t->dest;
		return 1;
	}
	if (proto == IPPROTO_UDP) {
		struct udphdr *u = l4;
		if ((void *)(u + 1) > end)
			return 0;
		v->flags_ok = 1;
		*sport = u->source;
		*dport = u->dest;
		return 1;
	}
	return 0;
}

static __always_inline void fast_key(struct verdict *v, struct iphdr *ip, void *data, void *end)
{
	if ((void *)ip != data + sizeof(struct ethhdr))
		return;
	if (ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) || ip->ttl <= 1)
		return;
	if (!fast_ports(v, ip->protocol, (void *)(ip + 1), end, &v->key.sport, &v->key.dport))
		return;
	v->key.src = ip->saddr;
	v->key.dst = ip->daddr;
	v->key.proto = ip->protocol;
	v->l4_off = sizeof(struct ethhdr) + sizeof(struct iphdr);
	v->fast = 1;
}

/* IPv6: untagged, the next header TCP/UDP itself (no extension header), hop limit > 1. */
static __always_inline void fast_key6(struct verdict *v, struct ipv6hdr *ip, void *data,
				      void *end)
{
	if ((void *)ip != data + sizeof(struct ethhdr) || (void *)(ip + 1) > end)
		return;
	if (ip->hop_limit <= 1)
		return;
	if (!fast_ports(v, ip->nexthdr, (void *)(ip + 1), end, &v->key6.sport, &v->key6.dport))
		return;
	__builtin_memcpy(v->key6.src, &ip->saddr, 16);
	__builtin_memcpy(v->key6.dst, &ip->daddr, 16);
	v->key6.proto = ip->nexthdr;
	v->l4_off = sizeof(struct ethhdr) + sizeof(struct ipv6hdr);
	v->fast6 = 1;
}

static __always_inline void steer_v(struct verdict *v, const struct natfw_config *cfg)
{
	v->steer = 1;
	v->slot = cfg->side == NATFW_SIDE_INSIDE ? C_STEERED_INSIDE : C_STEERED_OUTSIDE;
}

static __always_inline void classify_v4(struct verdict *v, const struct natfw_config *cfg,
					void *data, void *l3, void *end)
{
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > end) {
		v->slot = C_PASS_OTHER;
		return;
	}
	struct addr_key dst;
	v4_mapped(&dst, ip->daddr);

	if (cfg->side == NATFW_SIDE_OUTSIDE) {
		if (!bpf_map_lookup_elem(&eips, &dst)) {
			v->slot = C_PASS_OTHER;
			return;
		}
		__u32 ihl = ip->ihl * 4;
		/* Only the first fragment carries ports; later ones follow the engine. */
		if (ihl >= sizeof(*ip) && !(ip->frag_off & bpf_htons(0x1fff)) &&
		    kernel_port(cfg, ip->protocol, (void *)ip + ihl, end)) {
			v->slot = C_PASS_GATEWAY;
			return;
		}
		steer_v(v, cfg);
		fast_key(v, ip, data, end);
		return;
	}

	/* Multicast, limited broadcast and the gateway itself belong to the kernel. */
	__u8 d0 = dst.addr[12];
	if ((d0 & 0xf0) == 0xe0 || ip->daddr == 0xffffffff) {
		v->slot = C_PASS_OTHER;
		return;
	}
	if (bpf_map_lookup_elem(&gw_addrs, &dst)) {
		v->slot = C_PASS_GATEWAY;
		return;
	}
	struct lpm_v4_key k = { .prefixlen = 32 };
	__builtin_memcpy(k.addr, &ip->saddr, 4);
	if (!bpf_map_lookup_elem(&snat_v4, &k)) {
		v->slot = C_PASS_NOT_SNAT;
		return;
	}
	if (bpf_map_lookup_elem(&bypass_v4, &k)) {
		v->slot = C_PASS_BYPASS;
		return;
	}
	steer_v(v, cfg);
	fast_key(v, ip, data, end);
}

static __always_inline void classify_v6(struct verdict *v, const struct natfw_config *cfg,
					void *data, void *l3, void *end)
{
	struct ipv6hdr *ip = l3;
	v->slot = C_PASS_OTHER;
	if ((void *)(ip + 1) > end)
		return;
	struct addr_key dst;
	__builtin_memcpy(dst.addr, &ip->daddr, 16);

	/* Neighbour discovery and router messages (ICMPv6 133..137) are the kernel's on both
	 * sides: a neighbour advertisement to an EIP answers the gateway's own solicitation. */
	if (ip->nexthdr == IPPROTO_ICMPV6) {
		__u8 *type = (__u8 *)(ip + 1);
		if ((void *)(type + 1) > end)
			return;
		if (*type >= 133 && *type <= 137)
			return;
	}

	if (cfg->side == NATFW_SIDE_OUTSIDE) {
		if (!bpf_map_lookup_elem(&eips, &dst))
			return;
		/* Extension headers are not walked: only a direct TCP/UDP header is checked. */
		if (kernel_port(cfg, ip->nexthdr, ip + 1, end)) {
			v->slot = C_PASS_GATEWAY;
			return;
		}
		steer_v(v, cfg);
		fast_key6(v, ip, data, end);
		return;
	}

	if (dst.addr[0] == 0xff)
		return;
	if (bpf_map_lookup_elem(&gw_addrs, &dst)) {
		v->slot = C_PASS_GATEWAY;
		return;
	}
	struct lpm_v6_key k = { .prefixlen = 128 };
	__builtin_memcpy(k.addr, &ip->saddr, 16);
	if (!bpf_map_lookup_elem(&snat_v6, &k)) {
		v->slot = C_PASS_NOT_SNAT;
		return;
	}
	if (bpf_map_lookup_elem(&bypass_v6, &k)) {
		v->slot = C_PASS_BYPASS;
		return;
	}
	steer_v(v, cfg);
	fast_key6(v, ip, data, end);
}

/* The one steering decision, on a frame starting with its Ethernet header (one VLAN tag read). */
static __always_inline void classify(struct verdict *v, const struct natfw_config *cfg,
				     void *data, void *end)
{
	struct ethhdr *eth = data;
	v->slot = C_PASS_OTHER;
	if ((void *)(eth + 1) > end)
		return;
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;

	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = l3;
		if ((void *)(vh + 1) > end)
			return;
		proto = vh->proto;
		l3 = vh + 1;
	}

	if (proto == bpf_htons(ETH_P_IP))
		classify_v4(v, cfg, data, l3, end);
	else if (proto == bpf_htons(ETH_P_IPV6))
		classify_v6(v, cfg, data, l3, end);
	else if (proto == bpf_htons(ETH_P_ARP))
		v->slot = C_PASS_ARP;
	else
		v->slot = C_PASS_NON_IP;
}

static __always_inline const struct natfw_config *config_of(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

/* The worker count of a split-mode config: 1..NATFW_WORKERS_MAX. */
static __always_inline __u32 workers_of(const struct natfw_config *cfg)
{
	__u32 n = cfg->workers;
	if (n == 0)
		return 1;
	return n > NATFW_WORKERS_MAX ? NATFW_WORKERS_MAX : n;
}

/* worker_of(): every worker's copy (each engine keeps what it owns, ignores the rest). */
#define WORKER_ALL 0xffffffff

/* The worker of a port or echo id (network byte order) among `n`. */
static __always_inline __u32 port_worker(__be16 port, __u32 n)
{
	return (__u32)bpf_ntohs(port) % n;
}

/*
 * Which packet worker's slow path takes a steered frame (mirrored by `xdp::worker_of`), so
 * that both directions of a flow meet the same engine: the port that stays the client's —
 * inside the TCP/UDP source port, outside the destination port (the engine picks SNAT ports
 * congruent to the client's port modulo the worker count) — or the ICMP echo id, modulo
 * `n`. Other ICMP and other IPv4 protocols: worker 0. Every worker (WORKER_ALL): IPv4
 * fragments, ICMP errors (they quote a flow of any worker), IPv6 with an extension header,
 * and anything whose L4 header is not there to read.
 */
static __always_inline __u32 worker_of(const struct natfw_config *cfg, __u32 n, void *data,
				       void *end)
{
	if (n <= 1)
		return 0;
	int inside = cfg->side == NATFW_SIDE_INSIDE;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return WORKER_ALL;
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vh = l3;
		if ((void *)(vh + 1) > end)
			return WORKER_ALL;
		proto = vh->proto;
		l3 = vh + 1;
	}
	__u8 l4proto;
	void *l4;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return WORKER_ALL;
		if (ip->frag_off & bpf_htons(0x3fff)) /* MF or an offset */
			return WORKER_ALL;
		__u32 ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return WORKER_ALL;
		l4proto = ip->protocol;
		l4 = (void *)ip + ihl;
		if (l4proto == IPPROTO_ICMP) {
			struct echo_hdr *ic = l4;
			if ((void *)(ic + 1) > end)
				return WORKER_ALL;
			switch (ic->type) {
			case 0: /* echo reply */
			case 8: /* echo request */
				return port_worker(ic->id, n);
			case 3:  /* destination unreachable */
			case 4:  /* source quench */
			case 5:  /* redirect */
			case 11: /* time exceeded */
			case 12: /* parameter problem */
				return WORKER_ALL;
			default:
				return 0;
			}
		}
		if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
			return 0;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return WORKER_ALL;
		l4proto = ip6->nexthdr;
		l4 = ip6 + 1;
		if (l4proto == IPPROTO_ICMPV6) {
			struct echo_hdr *ic = l4;
			if ((void *)(ic + 1) > end)
				return WORKER_ALL;
			__u8 t = ic->type;
			if (t == 128 || t == 129) /* echo request, reply */
				return port_worker(ic->id, n);
			if (t >= 1 && t <= 4) /* errors */
				return WORKER_ALL;
			return 0;
		}
		if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
			return WORKER_ALL;
	} else {
		return 0;
	}
	/* The whole fixed header must be there; TCP and UDP both start with source port,
	 * destination port. */
	__u32 hlen = l4proto == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr);
	if (l4 + hlen > end)
		return WORKER_ALL;
	__be16 *ports = l4;
	if ((void *)(ports + 2) > end)
		return WORKER_ALL;
	return port_worker(inside ? ports[0] : ports[1], n);
}

/* Classic mode: on each real interface. */
SEC("xdp")
int natfw_xdp(struct xdp_md *ctx)
{
	const struct natfw_config *cfg = config_of();
	if (!cfg)
		return XDP_PASS;
	struct verdict v = {};
	classify(&v, cfg, (void *)(long)ctx->data, (void *)(long)ctx->data_end);
	if (!v.steer)
		return count(v.slot, XDP_PASS);
	/* Fallback action XDP_DROP (lower bits of flags): no socket -> drop, never leak. */
	if (bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP) != XDP_REDIRECT)
		return count(C_REDIRECT_FAILED, XDP_DROP);
	return count(v.slot, XDP_REDIRECT);
}

/* Split mode: on the AF_XDP end of each worker's slow-path veth pair. Everything arriving
 * there was steered by natfw_steer to that worker, whose socket is `xsks[worker]`; an end the
 * config does not list, or no socket -> drop. */
SEC("xdp")
int natfw_slow(struct xdp_md *ctx)
{
	const struct natfw_config *cfg = config_of();
	if (!cfg)
		return count(C_REDIRECT_FAILED, XDP_DROP);
	__u32 n = workers_of(cfg);
	__u32 ifindex = ctx->ingress_ifindex;
	for (__u32 w = 0; w < NATFW_WORKERS_MAX; w++) {
		if (w >= n)
			break;
		if (ifindex == 0 || cfg->slow_xdp_ifindex[w] != ifindex)
			continue;
		if (bpf_redirect_map(&xsks, w, XDP_DROP) != XDP_REDIRECT)
			return count(C_REDIRECT_FAILED, XDP_DROP);
		return XDP_REDIRECT;
	}
	return count(C_REDIRECT_FAILED, XDP_DROP);
}

#define IP_OFF ETH_HLEN
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define L4_OFF (IP_OFF + sizeof(struct iphdr))

/*
 * Translate an offloaded flow's packet in place and count it in its entry. GSO super-frames are
 * handled whole: the checksum helpers keep CHECKSUM_PARTIAL right (pseudo-header fields only),
 * the egress device segments. Returns 0, or -1 when a helper failed (the packet may be
 * half-rewritten: drop it).
 */
static __always_inline int fast_rewrite(struct __sk_buff *skb, struct natfw_offload_val *val,
					const struct natfw_offload_key *k)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + IP_OFF;
	if ((void *)(ip + 1) > end)
		return -1;
	__u32 csum_off, hdr_len;
	__u64 mangled = 0;
	if (k->proto == IPPROTO_TCP) {
		struct tcphdr *t = (void *)(ip + 1);
		if ((void *)(t + 1) > end)
			return -1;
		csum_off = L4_OFF + offsetof(struct tcphdr, check);
		hdr_len = L4_OFF + t->doff * 4;
	} else {
		csum_off = L4_OFF + offsetof(struct udphdr, check);
		hdr_len = L4_OFF + sizeof(struct udphdr);
		mangled = BPF_F_MARK_MANGLED_0;
	}
	__u32 old_addr, addr_off, port_off;
	__u16 old_port;
	if (val->rewrite == NATFW_REWRITE_SRC) {
		old_addr = k->src;
		old_port = k->sport;
		addr_off = IP_OFF + offsetof(struct iphdr, saddr);
		port_off = L4_OFF; /* source port */
	} else {
		old_addr = k->dst;
		old_port = k->dport;
		addr_off = IP_OFF + offsetof(struct iphdr, daddr);
		port_off = L4_OFF + 2; /* destination port */
	}
	__u32 new_addr = val->new_addr;
	__u16 new_port = val->new_port;
	__u16 old_ttl_word = *(__u16 *)&ip->ttl; /* ttl, protocol */
	__u8 new_ttl = ip->ttl - 1;
	__u16 new_ttl_word = old_ttl_word;
	*(__u8 *)&new_ttl_word = new_ttl;

	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
				BPF_F_PSEUDO_HDR | mangled | sizeof(new_addr)) ||
	    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | sizeof(new_port)) ||
	    bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)) ||
	    bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ttl_word, new_ttl_word, 2) ||
	    bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0) ||
	    bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) ||
	    bpf_skb_store_bytes(skb, IP_OFF + offsetof(struct iphdr, ttl), &new_ttl, 1, 0))
		return -1;

	/* Wire packets and bytes: a GSO super-frame is gso_segs packets, each with headers. */
	__u32 segs = skb->gso_segs > 1 ? skb->gso_segs : 1;
	__sync_fetch_and_add(&val->packets, segs);
	__sync_fetch_and_add(&val->bytes, (__u64)skb->len + (__u64)(segs - 1) * hdr_len);
	val->last_ns = bpf_ktime_get_ns();
	return 0;
}

#define IP6_OFF ETH_HLEN
#define L4_OFF6 (IP6_OFF + sizeof(struct ipv6hdr))

/*
 * fast_rewrite() for IPv6: no header checksum; the addresses' change goes into the L4 checksum
 * as one difference (bpf_csum_diff over the 16 bytes, pseudo-header flag so CHECKSUM_PARTIAL
 * and GSO packets stay right), then the port, then the hop limit. Returns 0, or -1 when a
 * helper failed (drop).
 */
static __always_inline int fast_rewrite6(struct __sk_buff *skb, struct natfw_offload6_val *val,
					 const struct natfw_offload6_key *k)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip = data + IP6_OFF;
	if ((void *)(ip + 1) > end)
		return -1;
	__u32 csum_off, hdr_len;
	__u64 mangled = 0;
	if (k->proto == IPPROTO_TCP) {
		struct tcphdr *t = (void *)(ip + 1);
		if ((void *)(t + 1) > end)
			return -1;
		csum_off = L4_OFF6 + offsetof(struct tcphdr, check);
		hdr_len = L4_OFF6 + t->doff * 4;
	} else {
		csum_off = L4_OFF6 + offsetof(struct udphdr, check);
		hdr_len = L4_OFF6 + sizeof(struct udphdr);
		mangled = BPF_F_MARK_MANGLED_0;
	}
	__u32 old_addr[4], new_addr[4], addr_off, port_off;
	__u16 old_port;
	__builtin_memcpy(new_addr, val->new_addr, 16);
	if (val->rewrite == NATFW_REWRITE_SRC) {
		__builtin_memcpy(old_addr, k->src, 16);
		old_port = k->sport;
		addr_off = IP6_OFF + offsetof(struct ipv6hdr, saddr);
		port_off = L4_OFF6; /* source port */
	} else {
		__builtin_memcpy(old_addr, k->dst, 16);
		old_port = k->dport;
		addr_off = IP6_OFF + offsetof(struct ipv6hdr, daddr);
		port_off = L4_OFF6 + 2; /* destination port */
	}
	__u16 new_port = val->new_port;
	/* Payload length, next header, hop limit: the 32-bit word the hop limit is in. */
	__u32 old_word, new_word;
	__builtin_memcpy(&old_word, (void *)ip + 4, 4);
	new_word = old_word;
	__u8 new_hl = ip->hop_limit - 1;
	((__u8 *)&new_word)[3] = new_hl;

	__s64 d_addr = bpf_csum_diff(old_addr, 16, new_addr, 16, 0);
	if (d_addr < 0)
		return -1;
	__s64 d_all = bpf_csum_diff(&old_word, 4, &new_word, 4, (__wsum)d_addr);
	if (d_all < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, csum_off, 0, (__u32)d_addr, BPF_F_PSEUDO_HDR | mangled) ||
	    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | sizeof(new_port)) ||
	    bpf_skb_store_bytes(skb, addr_off, new_addr, 16, 0) ||
	    bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) ||
	    bpf_skb_store_bytes(skb, IP6_OFF + offsetof(struct ipv6hdr, hop_limit), &new_hl, 1, 0))
		return -1;
	/*
	 * CHECKSUM_COMPLETE (skb->csum covers the IPv6 header and payload): the packet's sum moved
	 * by the hop limit's change only (the addresses' change is cancelled by the L4 checksum's),
	 * but the pseudo-header replace above took the addresses' difference off skb->csum as for
	 * IPv4, where the header checksum cancels it (BPF_F_IPV6, which skips that, is not known
	 * to kernels before 6.16). Put both right; any other ip_summed: a no-op (-ENOTSUPP).
	 */
	bpf_csum_update(skb, (__wsum)d_all);

	__u32 segs = skb->gso_segs > 1 ? skb->gso_segs : 1;
	__sync_fetch_and_add(&val->packets, segs);
	__sync_fetch_and_add(&val->bytes, (__u64)skb->len + (__u64)(segs - 1) * hdr_len);
	val->last_ns = bpf_ktime_get_ns();
	return 0;
}

/* An offloaded flow's packet the engine must see: SYN/FIN/RST, or a packet (GSO: a segment)
 * above the egress MTU, which the engine answers (ICMP fragmentation needed / packet too big)
 * as for any flow. */
static __always_inline int fast_to_engine(struct __sk_buff *skb, const struct verdict *v,
					  __u32 egress)
{
	__u32 mtu = 0;
	return !v->flags_ok || bpf_check_mtu(skb, egress, &mtu, 0, BPF_MTU_CHK_SEGS);
}

/* Headers classify(), worker_of() and the rewrite read: Ethernet, one tag, IPv4 with options
 * (60) or IPv6 (40), + TCP (20). */
#define PULL_LEN (ETH_HLEN + 4 + 60 + 20)

/* Split mode: tc ingress of each real interface. */
SEC("classifier")
int natfw_steer(struct __sk_buff *skb)
{
	const struct natfw_config *cfg = config_of();
	if (!cfg)
		return TC_ACT_SHOT;
	/* Non-linear skbs (GRO, veth) may hold headers in fragments: make them readable. */
	__u32 want = skb->len < PULL_LEN ? skb->len : PULL_LEN;
	if ((void *)(long)skb->data + want > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, want);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct verdict v = {};
	classify(&v, cfg, data, end);
	if (!v.steer)
		return count(v.slot, TC_ACT_OK);
	/* A tag the device took off (skb->vlan_present) is not in `data`: such packets go to the
	 * engine, as a tag in the frame does. */
	if (v.fast && !skb->vlan_present) {
		struct natfw_offload_val *val = bpf_map_lookup_elem(&offload, &v.key);
		if (val) {
			if (fast_to_engine(skb, &v, val->egress_ifindex))
				count(C_FAST_TO_ENGINE, 0);
			else if (fast_rewrite(skb, val, &v.key))
				return count(C_FAST_ERROR, TC_ACT_SHOT);
			else
				return count(C_FAST_FWD,
					     bpf_redirect_neigh(val->egress_ifindex, NULL, 0, 0));
		}
	} else if (v.fast6 && !skb->vlan_present) {
		struct natfw_offload6_val *val = bpf_map_lookup_elem(&offload6, &v.key6);
		if (val) {
			if (fast_to_engine(skb, &v, val->egress_ifindex))
				count(C_FAST_TO_ENGINE, 0);
			else if (fast_rewrite6(skb, val, &v.key6))
				return count(C_FAST_ERROR, TC_ACT_SHOT);
			else
				return count(C_FAST_FWD,
					     bpf_redirect_neigh(val->egress_ifindex, NULL, 0, 0));
		}
	}
	count(v.slot, 0);
	/* To the slow path of the flow's worker, or a copy to every worker; ifindex 0 (not set
	 * up) makes the kernel drop it. */
	__u32 n = workers_of(cfg);
	__u32 w = worker_of(cfg, n, (void *)(long)skb->data, (void *)(long)skb->data_end);
	if (w == WORKER_ALL) {
		count(C_STEERED_BROADCAST, 0);
		/* Clones first, the original last. A clone invalidates the packet pointers: nothing
		 * of the packet is read after the first one. A failed clone (no such device) is that
		 * worker's copy lost: never forwarded untranslated. */
		for (__u32 i = 1; i < NATFW_WORKERS_MAX; i++) {
			if (i >= n)
				break;
			bpf_clone_redirect(skb, cfg->slow_kernel_ifindex[i], 0);
		}
		return bpf_redirect(cfg->slow_kernel_ifindex[0], 0);
	}
	/* The compiler knows w < n <= NATFW_WORKERS_MAX (a power of two) and would drop any
	 * check; the verifier does not follow the modulo: a mask it can see, kept by the
	 * barrier (a no-op on the value). */
	barrier_var(w);
	w &= NATFW_WORKERS_MAX - 1;
	count(C_STEERED_WORKER0 + w, 0);
	return bpf_redirect(cfg->slow_kernel_ifindex[w], 0);
}

/* Split mode: tc ingress of the kernel end of a slow-path veth pair: what the engine sent (or
 * let through) leaves by the real interface. Frames carry their final MACs. */
SEC("classifier")
int natfw_back(struct __sk_buff *skb)
{
	const struct natfw_config *cfg = config_of();
	if (!cfg || !cfg->wire_ifindex)
		return TC_ACT_SHOT;
	/* The engine sends unicast IPv4/IPv6 frames only; anything else on this veth is not its
	 * (the pair has no addresses) and stays off the wire. */
	void *data = (void *)(long)skb->data;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end || (eth->h_dest[0] & 1) ||
	    (eth->h_proto != bpf_htons(ETH_P_IP) && eth->h_proto != bpf_htons(ETH_P_IPV6)))
		return TC_ACT_SHOT;
	return bpf_redirect(cfg->wire_ifindex, 0);
}

/* The kernel knows no string for the Apache-2.0 alternative: it is told the GPL-2.0 one. */
char LICENSE[] SEC("license") = "GPL v2";
