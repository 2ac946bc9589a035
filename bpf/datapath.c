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
 *   parse -> service translation (LB) -> identities -> conntrack lookup
 *         -> policy -> NAT rewrite + LB commit -> conntrack commit + aggregation
 *         -> report
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
#include "lb.h"

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
	__u8  orig_addr[4];   /* SG_F_XLATED / SG_F_XLATED_REPLY: the service address */
	__u16 orig_port;
	__u16 pad2;
	__u32 service_id;     /* SG_F_XLATED, or a drop for want of a backend */
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
	struct sg_scratch *scratch;
	struct sg_ct_entry *fresh;
	__u32 zero = 0;

	if (action == SG_CT_USE)
		return e;
	if (action == SG_CT_RESET) {
		if (e)
			sg_ct_reset(e, now);
		return e;
	}
	scratch = sg_scratch.lookup(&zero);
	if (!scratch)
		return NULL;
	fresh = &scratch->ct;
	sg_ct_reset(fresh, now);
	if (action == SG_CT_CREATE_REV) {
		/* We missed the SYN (attached mid-handshake, or the SYN went another
		 * way): the SYN-ACK's sender is the server, so file it as a reply. */
		*is_reply = 1;
		sg_ct.update((void *)rev, fresh);
		return sg_ct.lookup((void *)rev);
	}
	sg_ct.delete((void *)rev);
	sg_ct.update((void *)fwd, fresh);
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
 * struct (spyglass_event.h) and differ in type, subtype and the policy fields.
 * The event is built in a per-CPU scratch slot, not on the stack: 116 bytes
 * per inlined call site would break the 512-byte stack limit (bcc 0.26 cannot
 * load BPF-to-BPF calls, so everything is inlined). Type, subtype and
 * direction travel packed in `what` (SG_EMIT builds it). */
#define SG_EMIT(skb, p, t, type, subtype, dir, r) \
	sg_emit(skb, p, t, (__u32)(type) | ((__u32)(subtype) << 8) | ((__u32)(dir) << 16), r)

static __always_inline void sg_emit(struct __sk_buff *skb, const struct sg_pkt *p,
				    const struct sg_trace *t, __u32 what,
				    const struct sg_policy_result *r)
{
	__u8 type = what, subtype = what >> 8, direction = what >> 16;
	__u32 zero = 0;
	struct sg_scratch *scratch = sg_scratch.lookup(&zero);
	struct sg_event *evp;
	int ret;

	if (!scratch)
		return;
	evp = &scratch->ev;
	__builtin_memset(evp, 0, sizeof(*evp));
	evp->type = type;
	evp->subtype = subtype;
	evp->version = SG_EVENT_VERSION;
	evp->flags = t->flags;
	evp->len = sizeof(*evp);
	evp->src_ep = t->src_ep;
	evp->ifindex = skb->ifindex;
	evp->orig_len = p->len;
	evp->ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(evp->saddr, p->saddr, 16);
	__builtin_memcpy(evp->daddr, p->daddr, 16);
	evp->sport = p->sport;
	evp->dport = p->dport;
	evp->proto = p->proto;
	evp->tcp_flags = p->tcp_flags;
	evp->reason = t->reason;
	evp->direction = direction;
	evp->src_identity = t->src_identity;
	evp->dst_identity = t->dst_identity;
	evp->dst_ep = t->dst_ep;
	evp->agg_packets = t->agg_packets;
	evp->agg_bytes = t->agg_bytes;
	__builtin_memcpy(evp->orig_daddr, t->orig_addr, 4);
	evp->orig_dport = t->orig_port;
	evp->service_id = t->service_id;
	if (r) {
		evp->match_type = r->match_type;
		evp->policy_cookie = r->cookie;
		if (r->audited) {
			evp->verdict = SG_VERDICT_AUDITED;
			evp->flags |= SG_F_AUDITED;
		} else if (r->denied) {
			evp->verdict = SG_VERDICT_DENIED;
		}
	}

	ret = sg_events.perf_submit(skb, evp, sizeof(*evp));
	/* The perf lost callback only learns of a loss at the next successful write;
	 * these counters are exact. With no ring behind a slot (no agent reading) every
	 * submit fails and is counted, so a restart can report the gap to the event. */
	__u64 *count = ret < 0 ? sg_submit_fail.lookup(&zero) : sg_submit_ok.lookup(&zero);
	if (count)
		*count += 1;
}

/* ---- service load balancing (lb.h holds the pure half) ---------------------- */

/* Is the backend still in this slot? A connection's SYN and a client's
 * affinity only keep their backend while it is still part of the service. */
static __always_inline int sg_lb_backend_valid(__u32 service_id, __u32 slot, const __u8 *addr,
					       __u16 port)
{
	struct sg_lb_backend_key bk = {};
	struct sg_lb_backend *b;

	bk.service_id = service_id;
	bk.slot = slot;
	b = sg_backends.lookup(&bk);
	return b && sg_addr4(b->addr) == sg_addr4(addr) && b->port == port;
}

static __always_inline int sg_lb_stale(__u64 last_seen, __u8 proto, __u64 now)
{
	__u64 lifetime = proto == IPPROTO_TCP ? SG_CT_LIFETIME_TCP_NS : SG_CT_LIFETIME_NONTCP_NS;

	return now > last_seen && now - last_seen > lifetime;
}

/* The LB step at the client's from_container. A packet to a service address
 * gets its backend: the connection's own (sg_lb_ct FWD) while it lives, else
 * a new pick: the client's affinity backend if it is still there, else a
 * random slot (bpf_get_prandom_u32 % count). The parsed tuple is translated
 * here so that identities, conntrack and policy see the backend; the skb is
 * rewritten only once policy has allowed it. A packet that is not to a
 * service may be a backend's reply leaving it (REV entry): marked, not
 * rewritten (the client's to_container does that). Returns -1 for a service
 * without backends. */
static __always_inline int sg_lb_from(struct sg_pkt *p, struct sg_xlate *xl, __u64 now)
{
	struct sg_lb_svc_key sk = {};
	struct sg_lb_backend_key bk = {};
	struct sg_lb_svc_value *svc;
	struct sg_lb_ct_value *v;
	struct sg_lb_backend *b;
	struct sg_ct_key k;
	__u8 syn_only = p->proto == IPPROTO_TCP &&
			(p->tcp_flags & (SG_TCP_SYN | SG_TCP_ACK)) == SG_TCP_SYN;
	__u32 slot;

	__builtin_memcpy(sk.addr, p->daddr, 4);
	sk.port = p->dport;
	sk.proto = p->proto;
	svc = sg_services.lookup(&sk);
	if (!svc) {
		sg_lb_key(&k, p->saddr, p->sport, p->daddr, p->dport, p->proto);
		v = sg_lb_ct.lookup(&k);
		if (v && v->kind == SG_LB_REV) {
			xl->kind = SG_XL_REPLY;
			__builtin_memcpy(xl->vip, v->addr, 4);
			xl->vport = v->port;
			xl->service_id = v->service_id;
			return 0;
		}
#ifdef SG_SVC_MASK
		{
			/* An address in the service CIDR that is no service has no backend:
			 * drop it here rather than let the host route it away. */
			__u32 d;

			__builtin_memcpy(&d, p->daddr, 4);
			if ((d & SG_SVC_MASK) == SG_SVC_NET)
				return -1;
		}
#endif
		return 0;
	}
	xl->service_id = svc->service_id;
	__builtin_memcpy(xl->vip, p->daddr, 4);
	xl->vport = p->dport;
	if (svc->count == 0)
		return -1;
	sg_lb_key(&k, p->saddr, p->sport, p->daddr, p->dport, p->proto);
	v = sg_lb_ct.lookup(&k);
	if (v && v->kind == SG_LB_FWD && v->service_id == svc->service_id &&
	    !sg_lb_stale(v->last_seen_ns, p->proto, now) &&
	    (!syn_only || sg_lb_backend_valid(svc->service_id, v->slot, v->addr, v->port))) {
		/* An existing connection keeps its backend, even one that has
		 * since left the service; only a new SYN re-checks it. */
		xl->slot = v->slot;
		__builtin_memcpy(xl->backend, v->addr, 4);
		xl->bport = v->port;
		if (now > v->last_seen_ns && now - v->last_seen_ns > SG_LB_TOUCH_NS)
			v->last_seen_ns = now;
	} else {
		xl->new_conn = 1;
		slot = bpf_get_prandom_u32() % svc->count;
		if (svc->flags & SG_SVCF_AFFINITY) {
			struct sg_lb_affinity_key ak = {};
			struct sg_lb_affinity_value *a;

			xl->affinity = 1;
			ak.service_id = svc->service_id;
			__builtin_memcpy(ak.client, p->saddr, 4);
			a = sg_lb_affinity.lookup(&ak);
			if (a && now - a->last_seen_ns <= (__u64)svc->affinity_s * 1000000000ULL &&
			    sg_lb_backend_valid(svc->service_id, a->slot, a->addr, a->port))
				slot = a->slot;
		}
		bk.service_id = svc->service_id;
		bk.slot = slot;
		b = sg_backends.lookup(&bk);
		if (!b)
			return -1;   /* a slot beyond the table: an update in flight */
		xl->slot = slot;
		__builtin_memcpy(xl->backend, b->addr, 4);
		xl->bport = b->port;
	}
	xl->kind = SG_XL_FWD;
	__builtin_memcpy(p->daddr, xl->backend, 4);
	p->dport = xl->bport;
	p->ct_dport = xl->bport;
	return 0;
}

/* The LB step at to_container: a reply of a translated connection arriving
 * at its client (to be translated back to the VIP), or a translated packet
 * arriving at its backend (marked, so its events name the service). */
static __always_inline void sg_lb_to(const struct sg_pkt *p, struct sg_xlate *xl)
{
	struct sg_lb_ct_value *v;
	struct sg_ct_key k;

	sg_lb_key(&k, p->saddr, p->sport, p->daddr, p->dport, p->proto);
	v = sg_lb_ct.lookup(&k);
	if (v && v->kind == SG_LB_REV) {
		xl->kind = SG_XL_REPLY;
	} else {
		sg_lb_key(&k, p->daddr, p->dport, p->saddr, p->sport, p->proto);
		v = sg_lb_ct.lookup(&k);
		if (!v || v->kind != SG_LB_REV)
			return;
		xl->kind = SG_XL_TO_BACKEND;
	}
	__builtin_memcpy(xl->vip, v->addr, 4);
	xl->vport = v->port;
	xl->service_id = v->service_id;
}

/* A new translated connection that policy allowed: pin its backend (FWD),
 * teach the replies their way back (REV), and remember the client's backend
 * for affinity. p holds the translated tuple. */
static __always_inline void sg_lb_commit(const struct sg_pkt *p, const struct sg_xlate *xl,
					 __u64 now)
{
	struct sg_lb_ct_value v = {};
	struct sg_ct_key k;

	v.last_seen_ns = now;
	v.service_id = xl->service_id;
	v.slot = xl->slot;
	v.kind = SG_LB_FWD;
	__builtin_memcpy(v.addr, xl->backend, 4);
	v.port = xl->bport;
	sg_lb_key(&k, p->saddr, p->sport, xl->vip, xl->vport, p->proto);
	sg_lb_ct.update(&k, &v);
	v.kind = SG_LB_REV;
	__builtin_memcpy(v.addr, xl->vip, 4);
	v.port = xl->vport;
	sg_lb_key(&k, xl->backend, xl->bport, p->saddr, p->sport, p->proto);
	sg_lb_ct.update(&k, &v);
	if (xl->affinity) {
		struct sg_lb_affinity_key ak = {};
		struct sg_lb_affinity_value a = {};

		ak.service_id = xl->service_id;
		__builtin_memcpy(ak.client, p->saddr, 4);
		a.last_seen_ns = now;
		a.slot = xl->slot;
		__builtin_memcpy(a.addr, xl->backend, 4);
		a.port = xl->bport;
		sg_lb_affinity.update(&ak, &a);
	}
}

/* Events of translated traffic carry the service address (orig_*). */
static __always_inline void sg_xlate_trace(const struct sg_xlate *xl, struct sg_trace *t)
{
	if (xl->kind == SG_XL_NONE)
		return;
	__builtin_memcpy(t->orig_addr, xl->vip, 4);
	t->orig_port = xl->vport;
	if (xl->kind == SG_XL_REPLY) {
		t->flags |= SG_F_XLATED_REPLY;
	} else {
		t->flags |= SG_F_XLATED;
		t->service_id = xl->service_id;
	}
}

/* Rewrites the skb as the LB step decided, once policy has allowed it:
 * DNAT at the client's from_container, the reverse SNAT at its to_container. */
static __always_inline int sg_lb_rewrite(struct __sk_buff *skb, const struct sg_pkt *p,
					 const struct sg_xlate *xl, int point)
{
	if (xl->kind == SG_XL_FWD)
		return sg_nat4(skb, p, 1, sg_addr4(xl->vip), sg_addr4(xl->backend),
			       bpf_htons(xl->vport), bpf_htons(xl->bport));
	if (xl->kind == SG_XL_REPLY && point == SG_POINT_TO)
		return sg_nat4(skb, p, 0, sg_addr4(p->saddr), sg_addr4(xl->vip),
			       bpf_htons(p->sport), bpf_htons(xl->vport));
	return 0;
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
	struct sg_xlate xl;
	__u8 syn_only, synack, is_reply = 0, action = SG_CT_USE;
	__u32 zero = 0;
	__u64 now;

	__builtin_memset(&pkt, 0, sizeof(pkt));
	__builtin_memset(&t, 0, sizeof(t));
	__builtin_memset(&pol, 0, sizeof(pol));
	__builtin_memset(&xl, 0, sizeof(xl));
	if (sg_parse(skb, &pkt) < 0)
		return TC_ACT_OK;
	if (pkt.ipv6)
		t.flags |= SG_F_IPV6;
	cfg = sg_config.lookup(&zero);
	now = bpf_ktime_get_ns();
	if (!pkt.ipv6 && pkt.l4_off && (pkt.proto == IPPROTO_TCP || pkt.proto == IPPROTO_UDP)) {
		if (point == SG_POINT_FROM) {
			if (sg_lb_from(&pkt, &xl, now) < 0) {
				/* Not aggregated, like every drop. */
				t.service_id = xl.service_id;
				sg_resolve_identities(skb, &pkt, point, &t);
				t.agg_packets = 1;
				t.agg_bytes = pkt.len;
				SG_EMIT(skb, &pkt, &t, SG_EVENT_DROP,
					SG_DROP_SERVICE_BACKEND_NOT_FOUND, dir, NULL);
				return TC_ACT_SHOT;
			}
		} else {
			sg_lb_to(&pkt, &xl);
		}
		sg_xlate_trace(&xl, &t);
	}
	sg_resolve_identities(skb, &pkt, point, &t);
	sg_ct_keys(&pkt, &fwd, &rev, &syn_only, &synack);
	e = sg_ct_find(&fwd, &rev, syn_only, synack, point, pkt.proto, now, &is_reply, &action);
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
			/* a denied (or audited) verdict carries its drop reason in the subtype */
			SG_EMIT(skb, &pkt, &t, SG_EVENT_POLICY_VERDICT,
				pol.denied ? pol.drop_reason : 0, dir, &pol);
		}
		if (!pol.allowed) {
			/* Not aggregated: every dropped packet is reported, as in Cilium. */
			SG_EMIT(skb, &pkt, &t, SG_EVENT_DROP, pol.drop_reason, dir, &pol);
			return TC_ACT_SHOT;
		}
	}
	if (xl.kind != SG_XL_NONE) {
		if (sg_lb_rewrite(skb, &pkt, &xl, point) < 0) {
			t.agg_packets = 1;
			t.agg_bytes = pkt.len;
			SG_EMIT(skb, &pkt, &t, SG_EVENT_DROP, SG_DROP_INVALID_PACKET, dir, NULL);
			return TC_ACT_SHOT;
		}
		if (xl.kind == SG_XL_FWD && xl.new_conn)
			sg_lb_commit(&pkt, &xl, now);
	}
	e = sg_ct_commit(e, &fwd, &rev, action, now, &is_reply);
	sg_ct_and_aggregate(&pkt, point, e, is_reply, cfg, now, &t);
	if (t.report)
		SG_EMIT(skb, &pkt, &t, SG_EVENT_TRACE,
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
