// SPDX-License-Identifier: GPL-2.0
/*
 * kassist_queues: the RFC's kernel-side agent behind BPF submission and completion
 * queues. The validator of record runs here, on the same policy map as the guard
 * (kassist_sysctl.bpf.c: user space hands this object the guard's `rules` map), with
 * the same checks (kassist_policy.h).
 *
 *   sqs          submission queues (BPF_MAP_TYPE_USER_RINGBUF), one per extension id,
 *                in a hash of maps: user space writes struct kq_entry, the kernel reads;
 *   cq           the completion queue (BPF_MAP_TYPE_RINGBUF): the kernel writes one
 *                struct kq_completion per entry, the agent reads;
 *   extensions   who submits through each queue (uid and cgroup, from SO_PEERCRED),
 *                for queues an extension writes itself; the agent's own queue (id 0)
 *                carries the submitter in each entry;
 *   accounting   per extension (uid, cgroup): submitted, accepted, refused by reason,
 *                applied;
 *   buckets      the rate-limit bucket of each submitting user (the rate is enforced
 *                here, per uid: a user who makes cgroups of its own gets no more);
 *   sequence     the number stamped on each completion (pinned: unique across agents).
 *
 * kassist_validate (BPF_PROG_TYPE_SYSCALL, run by the agent with BPF_PROG_RUN) drains
 * one submission queue with bpf_user_ringbuf_drain(); it never takes more entries than
 * the completion queue has room for, so that no entry is consumed without its answer.
 * kassist_applied adds to an extension's "applied" count once the agent has applied
 * and verified what the kernel accepted. Rules that need several keys at once (the
 * invariants), the step bound, the per-key rate, staleness and the prose checks stay in
 * user space: an accepted completion says so (KQ_F_USER_SPACE_RULES).
 * Keep the structs in step with actions/enforce/queues.py.
 */
#include "kassist_policy.h"

#define KQ_VERSION 1
#define KQ_F_USER_SPACE_RULES 1 /* completion: accepted here; user space checks the rest */
#define MAX_REASONS 16
#define CQ_SIZE (256 * 1024)

struct kq_entry {
	__u32 version;	 /* KQ_VERSION */
	__u32 flags;	 /* reserved: 0 */
	__u64 user_data; /* the submitter's tag, echoed in the completion */
	__u64 cgroup_id; /* the submitter's cgroup (the agent's own queue only) */
	__u32 uid;	 /* the submitter's uid (the agent's own queue only) */
	__u32 _pad;
	char name[NAME_LEN];	  /* the key as the kernel names it: "net/core/somaxconn" */
	char value[VALUE_LEN];	  /* the value to write, canonical text */
	char current[VALUE_LEN];  /* the value the key holds now (baseline checks) */
};

struct kq_completion {
	__u32 version;
	__u32 verdict;	  /* 0: accepted, 1: refused */
	__u32 reason;	  /* enum reason (REASON_OK when accepted) */
	__u32 flags;	  /* KQ_F_* */
	__u64 user_data;
	__u64 seq;	  /* this completion's number */
	__u64 cgroup_id;  /* whom it was accounted to */
	__u32 uid;
	__u32 generation; /* the rules generation that decided */
	__u32 ext_id;
	__u32 _pad;
	char name[NAME_LEN];
};

struct ext_id_key {
	__u32 uid;
	__u32 _pad;
	__u64 cgroup_id;
};

struct account {
	__u64 submitted;
	__u64 accepted;
	__u64 refused;
	__u64 applied;
	__u64 by_reason[MAX_REASONS];
};

struct bucket {
	__u64 tokens_milli; /* the rate-limit bucket, in thousandths of an entry */
	__u64 last_ns;	    /* when the bucket was last filled */
};

struct extension {
	__u32 uid;
	__u32 direct; /* 1: the extension writes this queue itself (identity from here) */
	__u64 cgroup_id;
};

struct limits {
	__u64 per_second; /* entries an extension may submit per second */
	__u64 burst;	  /* ...and at once */
};

/* what BPF_PROG_RUN passes in and reads back */
struct run_ctx {
	__u32 ext_id;	 /* in: the queue to drain */
	__u32 budget;	 /* out: completions room there was */
	__u32 done;	 /* out: entries answered */
	__s32 drained;	 /* out: bpf_user_ringbuf_drain()'s return */
};

struct applied_ctx {
	__u32 uid;
	__u32 count;
	__u64 cgroup_id;
};

struct sq_inner {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 256 * 1024);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__array(values, struct sq_inner);
} sqs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, CQ_SIZE);
} cq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct extension);
} extensions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ext_id_key);
	__type(value, struct account);
} accounting SEC(".maps");

/* one bucket per uid, whatever its cgroups: the rate cannot be escaped by moving */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct bucket);
} buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct limits);
} rate SEC(".maps");

/* [0]: the last completion's number; [1]: half-written entries discarded (user space) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} sequence SEC(".maps");

struct scratch {
	struct work w;
	struct kq_entry e;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

struct drain_ctx {
	struct extension *ext; /* NULL: the agent's own queue */
	__u32 ext_id;
	__u32 budget;
	__u32 done;
};

/* the policy's verdict on one entry, in the validator's order of rules */
static __always_inline __u32 judge(struct work *w, struct kq_entry *e, __u32 *generation)
{
	__u32 slot = 0, reason;
	struct rule *rule;
	void *inner;

	inner = bpf_map_lookup_elem(&rules, &slot);
	if (!inner)
		return REASON_NO_RULES;
	__builtin_memset(w, 0, sizeof(*w));
	e->name[NAME_LEN - 1] = 0;
	e->value[VALUE_LEN - 1] = 0;
	e->current[VALUE_LEN - 1] = 0;
	__builtin_memcpy(w->name.key.name, e->name, NAME_LEN);
	name_length(&w->name);
	__builtin_memcpy(w->new.value, e->value, VALUE_LEN);
	__builtin_memcpy(w->cur.value, e->current, VALUE_LEN);
	rule = find_rule(inner, &w->name);
	if (!rule)
		return REASON_NOT_ALLOWED;
	*generation = rule->generation;
	scan_value(&w->new);
	scan_value(&w->cur);
	reason = check_baseline(rule, &w->new, &w->cur);
	if (reason)
		return reason;
	if (rule->type == RULE_DENY || (rule->flags & F_DENIED))
		return REASON_DENIED;
	if (rule->flags & F_NOT_ALLOWED)
		return REASON_NOT_ALLOWED;
	if (rule->type == RULE_NONE)
		return REASON_NO_TYPE;
	return check_shape(rule, &w->new);
}

/* take one token from the user's bucket (0: over its rate, or no room for a bucket) */
static __always_inline int take_token(__u32 uid)
{
	__u32 slot = 0;
	struct limits *lim = bpf_map_lookup_elem(&rate, &slot);
	__u64 now = bpf_ktime_get_ns(), cap, add;
	struct bucket *a, fresh = {};

	if (!lim || !lim->per_second)
		return 1; /* no rate set: unlimited */
	cap = lim->burst * 1000;
	a = bpf_map_lookup_elem(&buckets, &uid);
	if (!a) {
		fresh.last_ns = now;
		fresh.tokens_milli = cap; /* a new user: a full bucket */
		bpf_map_update_elem(&buckets, &uid, &fresh, BPF_NOEXIST);
		a = bpf_map_lookup_elem(&buckets, &uid);
		if (!a)
			return 0; /* the map is full: refused, never unlimited */
	}
	add = (now - a->last_ns) / 1000 * lim->per_second / 1000; /* thousandths */
	a->last_ns = now;
	a->tokens_milli = a->tokens_milli + add > cap ? cap : a->tokens_milli + add;
	if (a->tokens_milli < 1000)
		return 0;
	a->tokens_milli -= 1000;
	return 1;
}

static long one_entry(struct bpf_dynptr *d, struct drain_ctx *ctx)
{
	struct kq_completion *c;
	struct ext_id_key who = {};
	struct account *a, fresh = {};
	struct scratch *s;
	__u32 slot = 0, reason = REASON_OK, generation = 0;
	__u64 *seq;
	char extra;

	c = bpf_ringbuf_reserve(&cq, sizeof(*c), 0);
	if (!c)
		return 1; /* cannot happen within the budget; stop rather than lose an answer */
	__builtin_memset(c, 0, sizeof(*c));
	s = bpf_map_lookup_elem(&scratch, &slot);
	if (!s) {
		bpf_ringbuf_discard(c, 0);
		return 1;
	}
	__builtin_memset(&s->e, 0, sizeof(s->e));
	/* exactly one struct kq_entry: it reads whole, and not a byte more is there */
	if (bpf_dynptr_read(&s->e, sizeof(s->e), d, 0, 0) ||
	    !bpf_dynptr_read(&extra, 1, d, sizeof(s->e), 0) || s->e.version != KQ_VERSION)
		reason = REASON_ENTRY;
	if (ctx->ext) {
		who.uid = ctx->ext->uid;
		who.cgroup_id = ctx->ext->cgroup_id;
	} else {
		who.uid = s->e.uid;
		who.cgroup_id = s->e.cgroup_id;
	}
	a = bpf_map_lookup_elem(&accounting, &who);
	if (!a) {
		bpf_map_update_elem(&accounting, &who, &fresh, BPF_NOEXIST);
		a = bpf_map_lookup_elem(&accounting, &who);
	}
	if (a)
		a->submitted++;
	else if (!reason)
		reason = REASON_ACCOUNT; /* no room to count it: refused, never judged unaccounted */
	if (!reason && !take_token(who.uid))
		reason = REASON_RATE;
	if (!reason)
		reason = judge(&s->w, &s->e, &generation);
	if (a) {
		if (reason) {
			a->refused++;
			a->by_reason[reason & (MAX_REASONS - 1)]++;
		} else {
			a->accepted++;
		}
	}
	seq = bpf_map_lookup_elem(&sequence, &slot);
	c->version = KQ_VERSION;
	c->verdict = reason ? 1 : 0;
	c->reason = reason;
	c->flags = reason ? 0 : KQ_F_USER_SPACE_RULES;
	c->user_data = s->e.user_data;
	c->seq = seq ? ++*seq : 0;
	c->cgroup_id = who.cgroup_id;
	c->uid = who.uid;
	c->generation = generation;
	c->ext_id = ctx->ext_id;
	__builtin_memcpy(c->name, s->e.name, NAME_LEN);
	bpf_ringbuf_submit(c, 0);
	ctx->done++;
	return ctx->done >= ctx->budget; /* 1 stops the drain: no room for another answer */
}

SEC("syscall")
int kassist_validate(struct run_ctx *run)
{
	struct drain_ctx ctx = {};
	__u64 used = bpf_ringbuf_query(&cq, BPF_RB_AVAIL_DATA);
	__u32 id = run->ext_id;
	void *sq;

	/* each answer takes its size and an 8-byte header in the ring */
	ctx.budget = used >= CQ_SIZE ? 0 : (CQ_SIZE - used) / (sizeof(struct kq_completion) + 8);
	run->budget = ctx.budget;
	run->done = 0;
	if (!ctx.budget)
		return 0;
	sq = bpf_map_lookup_elem(&sqs, &id);
	if (!sq)
		return -2; /* -ENOENT: no such queue */
	ctx.ext_id = id;
	ctx.ext = id ? bpf_map_lookup_elem(&extensions, &id) : NULL;
	if (id && !ctx.ext)
		return -2;
	run->drained = bpf_user_ringbuf_drain(sq, one_entry, &ctx, 0);
	run->done = ctx.done;
	return 0;
}

SEC("syscall")
int kassist_applied(struct applied_ctx *in)
{
	struct ext_id_key who = { .uid = in->uid, .cgroup_id = in->cgroup_id };
	struct account *a = bpf_map_lookup_elem(&accounting, &who);

	if (!a)
		return -2;
	a->applied += in->count;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
