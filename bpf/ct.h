/* SPDX-License-Identifier: Apache-2.0
 *
 * Connection tracking, just enough to say "new, established or reply" and to
 * aggregate monitor events per connection.
 *
 * One entry per connection, keyed by its original-direction 5-tuple and shared
 * by both observation points (a pod-to-pod packet passes from_container on the
 * client's veth and to_container on the server's). The entry keeps one slot per
 * (direction x observation point) so that each point reports a connection on
 * its own, as Cilium's per-direction CT entries do.
 *
 * Expiry without a userspace GC:
 *  - the map is an LRU hash, so memory is bounded and the oldest entries go
 *    first when it is full;
 *  - an entry idle longer than its lifetime (TCP: SG_CT_LIFETIME_TCP_NS, after a
 *    FIN or RST SG_CT_LIFETIME_CLOSE_NS; others SG_CT_LIFETIME_NONTCP_NS) is
 *    treated as absent: the next packet starts a new connection in place;
 *  - a TCP SYN without ACK on an entry whose slot has already seen packets
 *    (port reuse, or a retransmitted SYN) restarts the connection.
 * Entries are never deleted on FIN/RST, so the last ACKs of a close still find
 * them and are classified as what they are.
 *
 * Counters are updated without atomics: two CPUs hitting the same slot at the
 * same time can lose a count. The numbers are monitoring aggregates, not
 * accounting, and the alternative (a lock per entry) costs more than it buys.
 */
#ifndef SPYGLASS_CT_H
#define SPYGLASS_CT_H

#include "parse.h"

#ifndef SG_CT_LIFETIME_TCP_NS
#define SG_CT_LIFETIME_TCP_NS (21600ULL * 1000000000ULL)   /* 6 h, Cilium's default */
#endif
#ifndef SG_CT_LIFETIME_CLOSE_NS
#define SG_CT_LIFETIME_CLOSE_NS (10ULL * 1000000000ULL)    /* 10 s after FIN/RST */
#endif
#ifndef SG_CT_LIFETIME_NONTCP_NS
#define SG_CT_LIFETIME_NONTCP_NS (60ULL * 1000000000ULL)   /* 60 s UDP, ICMP, other */
#endif

#define SG_CT_FWD 0
#define SG_CT_REV 1
#define SG_POINT_FROM 0   /* from_container: host veth ingress */
#define SG_POINT_TO 1     /* to_container: host veth egress */
#define SG_CT_SLOT(dir, point) ((dir) * 2 + (point))

struct sg_ct_key {
	__u8  saddr[16];
	__u8  daddr[16];
	__u16 sport;
	__u16 dport;
	__u8  proto;
	__u8  pad[3];
};

/* One direction at one observation point. */
struct sg_ct_slot {
	__u64 last_report_ns;
	__u32 packets;        /* since the last report */
	__u32 bytes;          /* since the last report, saturating */
	__u8  flags_seen;     /* TCP flags ever seen here */
	__u8  reported;       /* has reported at least once */
	__u8  pad[6];
};

struct sg_ct_entry {
	__u64 created_ns;
	__u64 last_seen_ns;
	struct sg_ct_slot slot[4];   /* SG_CT_SLOT(dir, point) */
	__u8  closing;               /* a FIN or RST was seen */
	__u8  pad[7];
};

SG_MAP("lru_hash", struct sg_ct_key, struct sg_ct_entry, sg_ct, SG_CT_SIZE);

static __always_inline int sg_ct_expired(const struct sg_ct_entry *e, __u8 proto, __u64 now)
{
	__u64 lifetime = SG_CT_LIFETIME_NONTCP_NS;

	if (proto == IPPROTO_TCP)
		lifetime = e->closing ? SG_CT_LIFETIME_CLOSE_NS : SG_CT_LIFETIME_TCP_NS;
	return now > e->last_seen_ns && now - e->last_seen_ns > lifetime;
}

static __always_inline void sg_ct_reset(struct sg_ct_entry *e, __u64 now)
{
	__builtin_memset(e, 0, sizeof(*e));
	e->created_ns = now;
}

/* Both orientations of the packet's tuple, and what its TCP flags say about
 * the handshake. Pure, so that it can live in a header (bcc rewrites map calls
 * such as sg_ct.lookup() only in the main source file; they are in datapath.c). */
static __always_inline void sg_ct_keys(const struct sg_pkt *p, struct sg_ct_key *fwd,
				       struct sg_ct_key *rev, __u8 *syn_only, __u8 *synack)
{
	__builtin_memcpy(fwd->saddr, p->saddr, 16);
	__builtin_memcpy(fwd->daddr, p->daddr, 16);
	fwd->sport = p->ct_sport;
	fwd->dport = p->ct_dport;
	fwd->proto = p->proto;
	__builtin_memcpy(rev->saddr, p->daddr, 16);
	__builtin_memcpy(rev->daddr, p->saddr, 16);
	rev->sport = p->ct_dport;
	rev->dport = p->ct_sport;
	rev->proto = p->proto;
	*syn_only = 0;
	*synack = 0;
	if (p->proto == IPPROTO_TCP) {
		__u8 sa = p->tcp_flags & (SG_TCP_SYN | SG_TCP_ACK);
		*syn_only = sa == SG_TCP_SYN;
		*synack = sa == (SG_TCP_SYN | SG_TCP_ACK);
	}
}

#endif /* SPYGLASS_CT_H */
