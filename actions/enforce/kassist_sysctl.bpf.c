// SPDX-License-Identifier: GPL-2.0
/*
 * kassist_sysctl: the kernel side of kassist's agent (BPF_PROG_TYPE_CGROUP_SYSCTL).
 *
 * Two programs share one object:
 *   kassist_lockdown  refuses every sysctl write by a task of its cgroup (reads pass);
 *   kassist_guard     refuses a write to a key the policy manages unless the new value
 *                     has the rule's shape (int, vector of ints, or one allowed word)
 *                     and range; keys the policy does not manage pass untouched, and
 *                     so do the writes of the agent's own cgroup (agent_cgroup).
 * Every refusal is reported through the ring buffer `refusals` (the RFC's completion
 * queue). Rules live in an inner hash map (name "net/core/somaxconn" -> struct rule)
 * reached through the one-slot map-in-map `rules`: user space builds a new inner map,
 * fills it, then swaps the slot, so one program run sees one generation, whole.
 *
 * Values are parsed here, strictly: plain decimal only (the kernel's proc_dointvec
 * reads base 0, so "0x10" and "010" would mean something else: both are refused for
 * a managed key), and writes at a file offset other than 0 are refused.
 * Keep the structs in step with actions/enforce/maps.py.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define NAME_LEN 64
#define VALUE_LEN 128
#define WORD_LEN 16
#define MAX_WORDS 8
#define MAX_INTS 4
#define MAX_RULES 4096

enum rule_type { RULE_INT = 1, RULE_INTS = 2, RULE_WORD = 3 };
enum mode { MODE_LOCKDOWN = 1, MODE_GUARD = 2 };
enum reason {
	REASON_LOCKDOWN = 1, /* any write, lockdown cgroup */
	REASON_RANGE = 2,    /* an int outside [min, max] */
	REASON_SHAPE = 3,    /* not plain decimal ints, or the wrong count */
	REASON_WORD = 4,     /* not one of the allowed words */
	REASON_VALUE = 5,    /* the new value cannot be read (too long) */
	REASON_OFFSET = 6,   /* a write at a file offset other than 0 */
	REASON_NO_RULES = 7, /* no rules published: fail closed */
};

struct rule {
	__u32 type;      /* enum rule_type */
	__u32 length;    /* RULE_INT: 1; RULE_INTS: how many ints */
	__s64 min;       /* each int >= min */
	__s64 max;       /* each int <= max */
	__u32 generation;
	__u32 nwords;    /* RULE_WORD: how many of words[] are used */
	char words[MAX_WORDS][WORD_LEN];
};

struct rule_key {
	char name[NAME_LEN]; /* "net/core/somaxconn", NUL padded */
};

struct refusal {
	__u64 boot_ns;   /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id; /* the writer's cgroup v2 id (its directory's inode) */
	__u32 pid;       /* tgid */
	__u32 tid;
	__u32 uid;
	__u32 mode;      /* enum mode */
	__u32 reason;    /* enum reason */
	__u32 generation;
	char comm[16];
	char name[NAME_LEN];
	char value[VALUE_LEN];
};

struct rules_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_RULES);
	__uint(key_size, sizeof(struct rule_key));
	__uint(value_size, sizeof(struct rule));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct rules_inner);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} refusals SEC(".maps");

/*
 * The agent's own cgroup (its id; 0: none), whose writes the guard lets through: the
 * agent validates them itself, and must be able to roll a key back to a value from
 * before it managed it, even one outside the policy. Set only when the agent runs in
 * a cgroup of its own (never the guarded cgroup itself).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} agent_cgroup SEC(".maps");

/* refusals the ring buffer had no room for (user space lagging): counted, never silent */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

static __always_inline void report(struct bpf_sysctl *ctx, __u32 mode, __u32 reason,
				   __u32 generation)
{
	struct refusal *r = bpf_ringbuf_reserve(&refusals, sizeof(*r), 0);
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!r) {
		/* the ring is full: the write is still refused, and counted */
		__u32 slot = 0;
		__u64 *n = bpf_map_lookup_elem(&lost, &slot);

		if (n)
			*n += 1;
		return;
	}
	r->boot_ns = bpf_ktime_get_boot_ns();
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->pid = pid_tgid >> 32;
	r->tid = (__u32)pid_tgid;
	r->uid = (__u32)bpf_get_current_uid_gid();
	r->mode = mode;
	r->reason = reason;
	r->generation = generation;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	__builtin_memset(r->name, 0, sizeof(r->name));
	__builtin_memset(r->value, 0, sizeof(r->value));
	bpf_sysctl_get_name(ctx, r->name, sizeof(r->name), 0);
	bpf_sysctl_get_new_value(ctx, r->value, sizeof(r->value));
	bpf_ringbuf_submit(r, 0);
}

SEC("cgroup/sysctl")
int kassist_lockdown(struct bpf_sysctl *ctx)
{
	if (!ctx->write)
		return 1;
	report(ctx, MODE_LOCKDOWN, REASON_LOCKDOWN, 0);
	return 0;
}

/*
 * The value is scanned once, by bpf_loop() (one callback the verifier checks once,
 * instead of a state machine unrolled per byte): blank-separated tokens, each read
 * as a plain decimal int and, for the first, kept as a word.
 */
struct scan {
	char value[VALUE_LEN];
	__s64 ints[MAX_INTS];
	char word[WORD_LEN];
	__s64 acc;
	__u32 count;  /* tokens ended so far */
	__u32 len;    /* bytes in the current token */
	__u32 neg;
	__u32 first_zero;
	__u32 not_int; /* some token is not a plain decimal int */
	__u32 long_word;
};

struct scan_ctx {
	struct scan *s; /* bpf_loop() takes a stack pointer: this points on to the map value */
};

static long scan_byte(__u32 i, struct scan_ctx *ctx)
{
	struct scan *s = ctx->s;
	char c = s->value[i & (VALUE_LEN - 1)];
	int blank = c == ' ' || c == '\t' || c == '\n' || c == 0;

	if (blank) {
		if (s->len) {
			if (s->count < MAX_INTS)
				s->ints[s->count & (MAX_INTS - 1)] = s->neg ? -s->acc : s->acc;
			if (s->neg && s->len == 1)
				s->not_int = 1; /* a lone "-" */
			s->count++;
		}
		s->len = 0;
		s->acc = 0;
		s->neg = 0;
		return c == 0; /* 1 stops the loop */
	}
	if (s->count == 0) {
		if (s->len < WORD_LEN - 1)
			s->word[s->len & (WORD_LEN - 1)] = c;
		else
			s->long_word = 1;
	}
	if (c == '-' && s->len == 0) {
		s->neg = 1;
	} else if (c >= '0' && c <= '9') {
		__u32 digits = s->len - s->neg;

		if (digits == 0)
			s->first_zero = c == '0';
		else if (s->first_zero)
			s->not_int = 1; /* a leading zero: the kernel would read octal */
		if (digits >= 18)
			s->not_int = 1;
		else
			s->acc = s->acc * 10 + (c - '0');
	} else {
		s->not_int = 1;
	}
	s->len++;
	return 0;
}

static __always_inline __u32 check(struct scan *s, const struct rule *rule)
{
	struct scan_ctx ctx = { .s = s };

	bpf_loop(VALUE_LEN, scan_byte, &ctx, 0);
	if (rule->type == RULE_WORD) {
		if (s->count != 1 || s->long_word)
			return REASON_WORD;
		const __u64 *got = (const __u64 *)s->word;

		for (int w = 0; w < MAX_WORDS; w++) {
			const __u64 *want = (const __u64 *)rule->words[w];

			if (w >= rule->nwords)
				break;
			/* both NUL padded to WORD_LEN (8-aligned): two loads compare them */
			if (got[0] == want[0] && got[1] == want[1])
				return 0;
		}
		return REASON_WORD;
	}
	if (s->not_int || s->count != rule->length || s->count > MAX_INTS)
		return REASON_SHAPE;
	for (int i = 0; i < MAX_INTS; i++) {
		if (i >= s->count)
			break;
		if (s->ints[i] < rule->min || s->ints[i] > rule->max)
			return REASON_RANGE;
	}
	return 0;
}

/* one scratch area per CPU: struct scan does not fit beside the rest on the stack */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scan);
} scratch SEC(".maps");

SEC("cgroup/sysctl")
int kassist_guard(struct bpf_sysctl *ctx)
{
	struct rule_key key = {};
	struct rule *rule;
	struct scan *s;
	__u32 slot = 0, reason;
	__u64 *agent;
	void *inner;
	long len;

	if (!ctx->write)
		return 1;
	agent = bpf_map_lookup_elem(&agent_cgroup, &slot);
	if (agent && *agent && *agent == bpf_get_current_cgroup_id())
		return 1;
	inner = bpf_map_lookup_elem(&rules, &slot);
	if (!inner) {
		report(ctx, MODE_GUARD, REASON_NO_RULES, 0);
		return 0;
	}
	/* -E2BIG: the name is longer than any managed key (all are < NAME_LEN): not ours */
	if (bpf_sysctl_get_name(ctx, key.name, sizeof(key.name), 0) < 0)
		return 1;
	rule = bpf_map_lookup_elem(inner, &key);
	if (!rule)
		return 1;
	if (ctx->file_pos != 0) {
		report(ctx, MODE_GUARD, REASON_OFFSET, rule->generation);
		return 0;
	}
	s = bpf_map_lookup_elem(&scratch, &slot);
	if (!s)
		return 0;
	__builtin_memset(s, 0, sizeof(*s));
	len = bpf_sysctl_get_new_value(ctx, s->value, sizeof(s->value));
	if (len < 0 || len >= VALUE_LEN) {
		report(ctx, MODE_GUARD, REASON_VALUE, rule->generation);
		return 0;
	}
	reason = check(s, rule);
	if (reason) {
		report(ctx, MODE_GUARD, reason, rule->generation);
		return 0;
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
