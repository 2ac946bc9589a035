/* SPDX-License-Identifier: Apache-2.0
 *
 * Spyglass TC datapath: one program on each direction of a pod's host veth.
 *
 *   from_container  host veth tc ingress  (packets leaving the pod)   FROM_ENDPOINT, EGRESS
 *   to_container    host veth tc egress   (packets entering the pod)  TO_ENDPOINT,  INGRESS
 *
 * Both only observe and return TC_ACT_OK: forwarding is the kernel's routing
 * (the lab installs /32 routes and static neighbours), so the datapath cannot
 * black-hole traffic while it is being developed. The pipeline is
 *
 *   parse -> identities -> conntrack -> [lb: issue 4] -> [policy: issue 3] -> report
 *
 * with each step a small inline function, so that service translation and a
 * policy verdict slot in without reshaping the programs.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "spyglass_event.h"
#include "maps.h"
#include "parse.h"
#include "ct.h"

/* Everything a report needs, filled step by step. */
struct sg_trace {
	__u32 src_identity;
	__u32 dst_identity;
	__u16 src_ep;
	__u16 dst_ep;
	__u8  flags;      /* SG_F_* */
	__u8  reason;     /* SG_REASON_* */
	__u8  report;     /* 1 if this packet produces an event */
	__u8  pad;
	__u32 agg_packets;
	__u32 agg_bytes;
};

static __always_inline void sg_ipcache_lookup(const __u8 *addr, __u8 ipv6, __u32 *identity,
					      __u16 *ep_id)
{
	struct sg_ipcache_key key = {};
	struct sg_ipcache_value *v;

	key.prefixlen = 32 + (ipv6 ? 128 : 32);
	key.family = ipv6 ? SG_FAMILY_IPV6 : SG_FAMILY_IPV4;
	__builtin_memcpy(key.addr, addr, 16);
	v = sg_ipcache.lookup(&key);
	if (v) {
		*identity = v->identity;
		*ep_id = v->ep_id;
	} else {
		*identity = SG_IDENTITY_WORLD;
		*ep_id = 0;
	}
}

/* The local side is the endpoint behind this veth (by ifindex); the remote
 * side comes from the ipcache, WORLD when unknown. */
static __always_inline void sg_resolve_identities(struct __sk_buff *skb, const struct sg_pkt *p,
						  int point, struct sg_trace *t)
{
	__u32 ifindex = skb->ifindex;
	struct sg_endpoint_info *ep = sg_endpoints.lookup(&ifindex);
	const __u8 *local = point == SG_POINT_FROM ? p->saddr : p->daddr;
	const __u8 *remote = point == SG_POINT_FROM ? p->daddr : p->saddr;
	__u32 local_id, remote_id;
	__u16 local_ep, remote_ep;

	if (ep) {
		local_id = ep->identity;
		local_ep = ep->ep_id;
	} else {
		sg_ipcache_lookup(local, p->ipv6, &local_id, &local_ep);
	}
	sg_ipcache_lookup(remote, p->ipv6, &remote_id, &remote_ep);
	if (point == SG_POINT_FROM) {
		t->src_identity = local_id;
		t->src_ep = local_ep;
		t->dst_identity = remote_id;
		t->dst_ep = remote_ep;
	} else {
		t->src_identity = remote_id;
		t->src_ep = remote_ep;
		t->dst_identity = local_id;
		t->dst_ep = local_ep;
	}
}

/* Finds or creates the packet's connection (rules in ct.h). Sets *is_reply;
 * returns NULL only when the LRU insert failed, in which case the caller
 * reports the packet without CT state. */
static __always_inline struct sg_ct_entry *
sg_ct_lookup(const struct sg_pkt *p, int point, __u64 now, __u8 *is_reply)
{
	struct sg_ct_key fwd = {}, rev = {};
	struct sg_ct_entry fresh = {};
	struct sg_ct_entry *e;
	__u8 synack, syn_only;

	sg_ct_keys(p, &fwd, &rev, &syn_only, &synack);
	*is_reply = 0;
	e = sg_ct.lookup(&fwd);
	if (e) {
		if (sg_ct_expired(e, p->proto, now) ||
		    (syn_only && e->slot[SG_CT_SLOT(SG_CT_FWD, point)].flags_seen))
			sg_ct_reset(e, now);
		return e;
	}
	e = sg_ct.lookup(&rev);
	if (e) {
		/* A bare SYN against the reverse tuple opens a new connection the
		 * other way round; the old entry is stale. */
		if (!syn_only && !sg_ct_expired(e, p->proto, now)) {
			*is_reply = 1;
			return e;
		}
		sg_ct.delete(&rev);
	}
	fresh.created_ns = now;
	if (synack) {
		/* We missed the SYN (attached mid-handshake, or the SYN went another
		 * way): the SYN-ACK's sender is the server, so file it as a reply. */
		*is_reply = 1;
		sg_ct.update(&rev, &fresh);
		return sg_ct.lookup(&rev);
	}
	sg_ct.update(&fwd, &fresh);
	return sg_ct.lookup(&fwd);
}

/* Monitor aggregation (Cilium's active-CT level): a slot reports when it has
 * never reported, when a TCP flag appears that it has not seen, or when the
 * interval has passed since its last report; in between it only counts. At
 * level 0 every packet reports with counts of 1 packet / skb->len bytes. */
static __always_inline void sg_ct_and_aggregate(const struct sg_pkt *p, int point,
						struct sg_trace *t)
{
	__u32 zero = 0;
	struct sg_config *cfg = sg_config.lookup(&zero);
	__u64 now = bpf_ktime_get_ns();
	struct sg_ct_entry *e;
	struct sg_ct_slot *s;
	__u8 is_reply = 0;
	int report;

	e = sg_ct_lookup(p, point, now, &is_reply);
	if (!e) {
		t->reason = SG_REASON_UNKNOWN;
		t->report = 1;
		t->agg_packets = 1;
		t->agg_bytes = p->len;
		return;
	}
	t->flags |= SG_F_REPLY_KNOWN | (is_reply ? SG_F_IS_REPLY : 0);
	if (is_reply)
		s = &e->slot[SG_CT_SLOT(SG_CT_REV, point)];
	else
		s = &e->slot[SG_CT_SLOT(SG_CT_FWD, point)];

	if (is_reply)
		t->reason = SG_REASON_CT_REPLY;
	else if (!s->reported)
		t->reason = SG_REASON_CT_NEW;
	else
		t->reason = SG_REASON_CT_ESTABLISHED;

	e->last_seen_ns = now;
	if (p->tcp_flags & (SG_TCP_FIN | SG_TCP_RST))
		e->closing = 1;
	s->packets += 1;
	if (s->bytes > 0xffffffffU - p->len)
		s->bytes = 0xffffffffU;
	else
		s->bytes += p->len;

	report = !cfg || cfg->agg_level == 0 || !s->reported ||
		 (p->tcp_flags & ~s->flags_seen) ||
		 now - s->last_report_ns >= cfg->interval_ns;
	s->flags_seen |= p->tcp_flags;
	if (!report)
		return;
	t->report = 1;
	t->agg_packets = s->packets;
	t->agg_bytes = s->bytes;
	s->packets = 0;
	s->bytes = 0;
	s->last_report_ns = now;
	s->reported = 1;
}

static __always_inline void sg_emit_trace(struct __sk_buff *skb, const struct sg_pkt *p,
					  const struct sg_trace *t, __u8 subtype, __u8 direction)
{
	struct sg_event ev;
	int ret;

	__builtin_memset(&ev, 0, sizeof(ev));
	ev.type = SG_EVENT_TRACE;
	ev.subtype = subtype;
	ev.version = SG_EVENT_VERSION;
	ev.flags = t->flags;
	ev.len = sizeof(ev);
	ev.src_ep = t->src_ep;
	ev.ifindex = skb->ifindex;
	ev.orig_len = p->len;
	ev.ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(ev.saddr, p->saddr, 16);
	__builtin_memcpy(ev.daddr, p->daddr, 16);
	ev.sport = p->sport;
	ev.dport = p->dport;
	ev.proto = p->proto;
	ev.tcp_flags = p->tcp_flags;
	ev.reason = t->reason;
	ev.direction = direction;
	ev.src_identity = t->src_identity;
	ev.dst_identity = t->dst_identity;
	ev.dst_ep = t->dst_ep;
	ev.agg_packets = t->agg_packets;
	ev.agg_bytes = t->agg_bytes;

	ret = sg_events.perf_submit(skb, &ev, sizeof(ev));
	if (ret < 0) {
		/* The perf lost callback only learns of a loss at the next
		 * successful write; this counter is exact. */
		__u32 zero = 0;
		__u64 *fails = sg_submit_fail.lookup(&zero);
		if (fails)
			*fails += 1;
	}
}

static __always_inline int sg_handle(struct __sk_buff *skb, int point)
{
	struct sg_pkt pkt;
	struct sg_trace t;

	__builtin_memset(&pkt, 0, sizeof(pkt));
	__builtin_memset(&t, 0, sizeof(t));
	if (sg_parse(skb, &pkt) < 0)
		return TC_ACT_OK;
	if (pkt.ipv6)
		t.flags |= SG_F_IPV6;
	sg_resolve_identities(skb, &pkt, point, &t);
	sg_ct_and_aggregate(&pkt, point, &t);
	/* issue 4: service translation (SG_F_XLATED) goes here, before policy. */
	/* issue 3: the policy verdict for the identities goes here. */
	if (t.report) {
		if (point == SG_POINT_FROM)
			sg_emit_trace(skb, &pkt, &t, SG_TRACE_FROM_LXC, SG_DIR_EGRESS);
		else
			sg_emit_trace(skb, &pkt, &t, SG_TRACE_TO_LXC, SG_DIR_INGRESS);
	}
	return TC_ACT_OK;
}

int from_container(struct __sk_buff *skb)
{
	return sg_handle(skb, SG_POINT_FROM);
}

int to_container(struct __sk_buff *skb)
{
	return sg_handle(skb, SG_POINT_TO);
}
