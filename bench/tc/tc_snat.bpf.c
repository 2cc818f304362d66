// SPDX-License-Identifier: GPL-2.0
// lab_harness gateway mode `tc-bpf`: the machine's forwarding limit with no policy.
// tc-BPF (clsact ingress) forwarding: bpf_fib_lookup + TTL decrement + MAC rewrite +
// bpf_redirect to the egress ifindex; skbs (GSO super-frames included) are redirected as-is.
// With -DSNAT a fixed 1:1 source NAT for one client, PRIV_IP -> PUB_IP (packets whose source
// is the client) and back (TCP/UDP packets for the public address), with
// bpf_l4_csum_replace (pseudo-header) + bpf_l3_csum_replace. The harness builds it with
// -DPRIV_IP=0x... -DPUB_IP=0x... (host byte order) for the lab's test host and its EIP.
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2

enum { ST_REDIRECT = 0, ST_PASS, ST_SNAT, ST_DNAT, ST_NAT_ERR, ST_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tc_stats SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&tc_stats, &i);
	if (v)
		*v += 1;
}

static __always_inline void ip_decrease_ttl(struct iphdr *iph)
{
	__u32 check = (__u32)iph->check;

	check += (__u32)bpf_htons(0x0100);
	iph->check = (__sum16)(check + (check >= 0xFFFF));
	iph->ttl--;
}

#ifdef SNAT
#ifndef PRIV_IP
#define PRIV_IP 0x0a00010a /* 10.0.1.10 */
#endif
#ifndef PUB_IP
#define PUB_IP 0xcb00710a /* 203.0.113.10 */
#endif
#define IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define IP_SRC_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))

/* rewrite one IPv4 address (at ip_off) from old to new, fixing L4 and L3 sums */
static __always_inline int nat_rewrite(struct __sk_buff *skb, __u8 proto, __u32 l4off,
				       __u32 ip_off, __be32 old, __be32 new)
{
	__u64 flags = BPF_F_PSEUDO_HDR | sizeof(new);
	__u32 csum_off;

	if (proto == IPPROTO_TCP) {
		csum_off = l4off + offsetof(struct tcphdr, check);
	} else if (proto == IPPROTO_UDP) {
		csum_off = l4off + offsetof(struct udphdr, check);
		flags |= BPF_F_MARK_MANGLED_0;
	} else {
		return 0;
	}
	if (bpf_l4_csum_replace(skb, csum_off, old, new, flags))
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old, new, sizeof(new)))
		return -1;
	if (bpf_skb_store_bytes(skb, ip_off, &new, sizeof(new), 0))
		return -1;
	return 1;
}
#endif

SEC("classifier")
int tc_fwd(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth;
	struct iphdr *iph;
	int rc;

	if (data + sizeof(*eth) + sizeof(*iph) > data_end) {
		if (bpf_skb_pull_data(skb, sizeof(*eth) + sizeof(*iph)))
			goto pass;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	eth = data;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		goto pass;
	if (iph->ttl <= 1)
		goto pass;

#ifdef SNAT
	{
		__u8 proto = iph->protocol;
		__u32 l4off = ETH_HLEN + iph->ihl * 4;
		int nat = 0;

		/* only unfragmented / first fragments; TCP and UDP only */
		if ((iph->frag_off & bpf_htons(0x1fff)) == 0) {
			if (iph->saddr == bpf_htonl(PRIV_IP)) {
				nat = nat_rewrite(skb, proto, l4off, IP_SRC_OFF, bpf_htonl(PRIV_IP),
						  bpf_htonl(PUB_IP));
				if (nat > 0)
					count(ST_SNAT);
			} else if (iph->daddr == bpf_htonl(PUB_IP)) {
				nat = nat_rewrite(skb, proto, l4off, IP_DST_OFF, bpf_htonl(PUB_IP),
						  bpf_htonl(PRIV_IP));
				if (nat > 0)
					count(ST_DNAT);
			}
		}
		if (nat < 0) {
			count(ST_NAT_ERR);
			return TC_ACT_SHOT;
		}
		if (nat) { /* helpers invalidated packet pointers */
			data = (void *)(long)skb->data;
			data_end = (void *)(long)skb->data_end;
			eth = data;
			iph = (void *)(eth + 1);
			if ((void *)(iph + 1) > data_end)
				return TC_ACT_SHOT;
		}
	}
#endif

	fib.family = AF_INET;
	fib.tos = iph->tos;
	fib.l4_protocol = iph->protocol;
	fib.tot_len = 0; /* 0: kernel checks the skb (GSO-aware) against the egress MTU */
	fib.ipv4_src = iph->saddr;
	fib.ipv4_dst = iph->daddr;
	fib.ifindex = skb->ingress_ifindex;

	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		goto pass;

	ip_decrease_ttl(iph);
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	count(ST_REDIRECT);
	return bpf_redirect(fib.ifindex, 0);
pass:
	count(ST_PASS);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
