/* SPDX-License-Identifier: Apache-2.0
 *
 * Spyglass TC datapath: one program on each direction of a pod's host veth.
 *
 *   from_container  host veth tc ingress  (packets leaving the pod)   FROM_ENDPOINT, EGRESS
 *   to_container    host veth tc egress   (packets entering the pod)  TO_ENDPOINT,  INGRESS
 *
 * Forwarding is the kernel's routing (the lab installs /32 routes and static
 * neighbours); the programs either let a packet pass (TC_ACT_OK) or drop it
 * for policy (TC_ACT_SHOT). The pipeline is
 *
 *   parse -> identities -> conntrack lookup -> [lb: issue 4] -> policy
 *         -> conntrack commit + aggregation -> report
 *
 * Conntrack is looked up before policy and written only after it: replies of
 * known connections skip policy, and a denied packet leaves no CT state. Egress
 * policy is enforced at the source (from_container), ingress at the
 * destination (to_container), as in Cilium.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "spyglass_event.h"
#include "maps.h"
#include "parse.h"
#include "ct.h"
#include "policy.h"

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

/* What sg_ct_find wants done once policy has allowed the packet. */
#define SG_CT_USE 0          /* use the entry found as it is */
#define SG_CT_RESET 1        /* the entry found starts over (expired, or a SYN on a used slot) */
#define SG_CT_CREATE 2       /* no live entry: create it forward (dropping a stale reverse one) */
#define SG_CT_CREATE_REV 3   /* SYN-ACK without an entry: create it reversed, as a reply */

/* Finds the packet's connection without changing anything (rules in ct.h),
 * so that a packet which policy then drops leaves no state behind. *is_reply
 * is set only for a live entry seen in the reply direction: only those skip
 * policy. A SYN-ACK whose SYN we never saw has no entry and is checked like
 * any new packet. */
static __always_inline struct sg_ct_entry *
sg_ct_find(const struct sg_ct_key *fwd, const struct sg_ct_key *rev, __u8 syn_only,
	   __u8 synack, int point, __u8 proto, __u64 now, __u8 *is_reply, __u8 *action)
{
	struct sg_ct_entry *e;

	*is_reply = 0;
	*action = SG_CT_USE;
	e = sg_ct.lookup((void *)fwd);
	if (e) {
		if (sg_ct_expired(e, proto, now) ||
		    (syn_only && e->slot[SG_CT_SLOT(SG_CT_FWD, point)].flags_seen))
			*action = SG_CT_RESET;
		return e;
	}
	e = sg_ct.lookup((void *)rev);
	/* A bare SYN against the reverse tuple opens a new connection the other
	 * way round; the old entry is stale. */
	if (e && !syn_only && !sg_ct_expired(e, proto, now)) {
		*is_reply = 1;
		return e;
	}
	*action = synack ? SG_CT_CREATE_REV : SG_CT_CREATE;
	return NULL;
}

/* Carries out sg_ct_find's action for an allowed packet. Returns NULL only
 * when the LRU insert failed; the caller then reports without CT state. */
static __always_inline struct sg_ct_entry *
sg_ct_commit(struct sg_ct_entry *e, const struct sg_ct_key *fwd, const struct sg_ct_key *rev,
	     __u8 action, __u64 now, __u8 *is_reply)
{
	struct sg_ct_entry fresh = {};

	if (action == SG_CT_USE)
		return e;
	if (action == SG_CT_RESET) {
		if (e)
			sg_ct_reset(e, now);
		return e;
	}
	fresh.created_ns = now;
	if (action == SG_CT_CREATE_REV) {
		/* We missed the SYN (attached mid-handshake, or the SYN went another
		 * way): the SYN-ACK's sender is the server, so file it as a reply. */
		*is_reply = 1;
		sg_ct.update((void *)rev, &fresh);
		return sg_ct.lookup((void *)rev);
	}
	sg_ct.delete((void *)rev);
	sg_ct.update((void *)fwd, &fresh);
	return sg_ct.lookup((void *)fwd);
}

/* Monitor aggregation (Cilium's active-CT level): a slot reports when it has
 * never reported, when a TCP flag appears that it has not seen, or when the
 * interval has passed since its last report; in between it only counts. At
 * level 0 every packet reports with counts of 1 packet / skb->len bytes. */
static __always_inline void sg_ct_and_aggregate(const struct sg_pkt *p, int point,
						struct sg_ct_entry *e, __u8 is_reply,
						const struct sg_config *cfg, __u64 now,
						struct sg_trace *t)
{
	struct sg_ct_slot *s;
	int report;

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

/* Deny entries: the exact remote identity first, then any remote (0). */
static __always_inline struct sg_policy_value *
sg_policy_deny_lookup(struct sg_policy_key *k, __u32 remote, __u8 *exact)
{
	struct sg_policy_value *v;

	sg_policy_key_remote(k, remote);
	v = sg_policy_deny.lookup(k);
	*exact = 1;
	if (v)
		return v;
	*exact = 0;
	sg_policy_key_remote(k, 0);
	return sg_policy_deny.lookup(k);
}

/* Allow entries: same order, a separate function because bcc needs the map
 * named at the call site. */
static __always_inline struct sg_policy_value *
sg_policy_allow_lookup(struct sg_policy_key *k, __u32 remote, __u8 *exact)
{
	struct sg_policy_value *v;

	sg_policy_key_remote(k, remote);
	v = sg_policy_allow.lookup(k);
	*exact = 1;
	if (v)
		return v;
	*exact = 0;
	sg_policy_key_remote(k, 0);
	return sg_policy_allow.lookup(k);
}

/* The verdict for (local, direction, remote, proto, dport): policy.h's rule. */
static __always_inline void sg_policy_decide(const struct sg_pkt *p, __u32 local, __u32 remote,
					     __u8 dir, const struct sg_config *cfg,
					     struct sg_policy_result *r)
{
	struct sg_policy_sel_key sk = {};
	struct sg_policy_sel_value *sel;
	struct sg_policy_key k = {};
	struct sg_policy_value *v;
	__u8 exact = 0;

	r->allowed = 1;
	sk.identity = local;
	sk.direction = dir;
	sel = sg_policy_selected.lookup(&sk);
	if (!sel)
		return;
	r->enforced = 1;
	sg_policy_key_init(&k, local, dir, p->proto, p->dport);
	v = sg_policy_deny_lookup(&k, remote, &exact);
	if (v) {
		r->denied = 1;
		r->drop_reason = SG_DROP_POLICY_DENY;
		r->cookie = v->cookie;
		r->match_type = sg_policy_match_type(exact, v->prefixlen);
	} else {
		v = sg_policy_allow_lookup(&k, remote, &exact);
		if (v) {
			r->cookie = v->cookie;
			r->match_type = sg_policy_match_type(exact, v->prefixlen);
			return;
		}
		r->denied = 1;
		r->drop_reason = SG_DROP_POLICY_DENIED;
		r->cookie = sel->cookie;
		r->match_type = SG_MATCH_NONE;
	}
	if ((sel->flags & SG_POLF_AUDIT) || (cfg && (cfg->flags & SG_CFG_POLICY_AUDIT))) {
		r->audited = 1;
		return;
	}
	r->allowed = 0;
}

/* One event of any kind: the trace, drop and policy-verdict records share the
 * struct (spyglass_event.h) and differ in type, subtype and the policy fields. */
static __always_inline void sg_emit(struct __sk_buff *skb, const struct sg_pkt *p,
				    const struct sg_trace *t, __u8 type, __u8 subtype,
				    __u8 direction, const struct sg_policy_result *r)
{
	struct sg_event ev;
	int ret;

	__builtin_memset(&ev, 0, sizeof(ev));
	ev.type = type;
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
	if (r) {
		ev.match_type = r->match_type;
		ev.policy_cookie = r->cookie;
		if (r->audited) {
			ev.verdict = SG_VERDICT_AUDITED;
			ev.flags |= SG_F_AUDITED;
		} else if (r->denied) {
			ev.verdict = SG_VERDICT_DENIED;
		}
	}

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
	__u8 dir = point == SG_POINT_FROM ? SG_DIR_EGRESS : SG_DIR_INGRESS;
	struct sg_policy_result pol;
	struct sg_ct_key fwd = {}, rev = {};
	struct sg_ct_entry *e;
	struct sg_config *cfg;
	struct sg_pkt pkt;
	struct sg_trace t;
	__u8 syn_only, synack, is_reply = 0, action = SG_CT_USE;
	__u32 zero = 0;
	__u64 now;

	__builtin_memset(&pkt, 0, sizeof(pkt));
	__builtin_memset(&t, 0, sizeof(t));
	__builtin_memset(&pol, 0, sizeof(pol));
	if (sg_parse(skb, &pkt) < 0)
		return TC_ACT_OK;
	if (pkt.ipv6)
		t.flags |= SG_F_IPV6;
	cfg = sg_config.lookup(&zero);
	now = bpf_ktime_get_ns();
	sg_resolve_identities(skb, &pkt, point, &t);
	sg_ct_keys(&pkt, &fwd, &rev, &syn_only, &synack);
	e = sg_ct_find(&fwd, &rev, syn_only, synack, point, pkt.proto, now, &is_reply, &action);
	/* issue 4: service translation (SG_F_XLATED) goes here, before policy. */
	if (!is_reply) {
		__u32 local = point == SG_POINT_FROM ? t.src_identity : t.dst_identity;
		__u32 remote = point == SG_POINT_FROM ? t.dst_identity : t.src_identity;
		/* "New here": nothing of this connection has passed this point yet,
		 * which is when an allowed verdict is worth an event. */
		__u8 fresh = action != SG_CT_USE || !e ||
			     !e->slot[SG_CT_SLOT(SG_CT_FWD, point)].reported;

		sg_policy_decide(&pkt, local, remote, dir, cfg, &pol);
		if (pol.enforced && (fresh || (pol.denied && !pol.audited))) {
			t.agg_packets = 1;
			t.agg_bytes = pkt.len;
			sg_emit(skb, &pkt, &t, SG_EVENT_POLICY_VERDICT, 0, dir, &pol);
		}
		if (!pol.allowed) {
			/* Not aggregated: every dropped packet is reported, as in Cilium. */
			sg_emit(skb, &pkt, &t, SG_EVENT_DROP, pol.drop_reason, dir, &pol);
			return TC_ACT_SHOT;
		}
	}
	e = sg_ct_commit(e, &fwd, &rev, action, now, &is_reply);
	sg_ct_and_aggregate(&pkt, point, e, is_reply, cfg, now, &t);
	if (t.report)
		sg_emit(skb, &pkt, &t, SG_EVENT_TRACE,
			point == SG_POINT_FROM ? SG_TRACE_FROM_LXC : SG_TRACE_TO_LXC, dir, NULL);
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
