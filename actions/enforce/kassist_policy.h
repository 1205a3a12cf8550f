/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kassist_policy.h: the policy map and the one checker of a value against it, shared by
 * the cgroup/sysctl guard (kassist_sysctl.bpf.c) and the validator of record behind the
 * BPF queues (kassist_queues.bpf.c), so that the two can never disagree.
 *
 * Rules live in an inner hash map (name "net/core/somaxconn" -> struct rule) reached
 * through a one-slot map-in-map: user space builds a new inner map, fills it, then swaps
 * the slot, so one program run sees one generation, whole. Beside the exact names the
 * inner map holds the policy's globs, under keys no sysctl has ("\x01" then the glob's
 * index; "\x02" holds how many there are), each with one wildcard matched here on the
 * name the kernel gives: `*` within one component (prefix and suffix, no '/' between),
 * `**` across components. Deny globs come first, so that deny wins as in the validator.
 *
 * Values are parsed strictly: plain decimal only (the kernel's proc_dointvec reads base
 * 0, so "0x10" and "010" would mean something else: both are refused for a managed key).
 * Keep the structs in step with actions/enforce/maps.py.
 */
#ifndef KASSIST_POLICY_H
#define KASSIST_POLICY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define NAME_LEN 64
#define VALUE_LEN 128
#define WORD_LEN 16
#define MAX_WORDS 8
#define MAX_INTS 4
#define MAX_ORDER 8
#define MAX_RULES 4096
#define MAX_GLOBS 64
#define MAX_TOKEN 64	/* the validator's word: at most 64 characters */
#define KEY_GLOB 1	/* name[0] of a glob entry; name[1] is its index */
#define KEY_GLOB_COUNT 2 /* name[0] of the entry whose `length` is the glob count, and
			 * `nwords` how many of them (the first) are deny globs */

enum rule_type {
	RULE_NONE = 0,	/* no type or range: only the flags apply (a baseline key) */
	RULE_INT = 1,
	RULE_INTS = 2,
	RULE_WORD = 3,
	RULE_DENY = 4,	/* a deny glob: the agent may not write what it matches */
};

enum rule_flag {
	F_BASELINE = 1,	   /* a security baseline: never lowered below the current value */
	F_ORDER = 2,	   /* ...in the order of order[] (least strict first), not numerically */
	F_DENIED = 4,	   /* a deny glob covers this name (the validator refuses it) */
	F_NOT_ALLOWED = 8, /* no allow glob covers it (a baseline key only) */
};

enum glob_kind { GLOB_STAR = 1, GLOB_STARSTAR = 2 };

enum reason {
	REASON_OK = 0,
	REASON_LOCKDOWN = 1,	/* any write, lockdown cgroup */
	REASON_RANGE = 2,	/* an int outside [min, max] */
	REASON_SHAPE = 3,	/* not plain decimal ints, or the wrong count, or not one word */
	REASON_WORD = 4,	/* not one of the allowed words */
	REASON_VALUE = 5,	/* the new value cannot be read (too long) */
	REASON_OFFSET = 6,	/* a write at a file offset other than 0 */
	REASON_NO_RULES = 7,	/* no rules published: fail closed */
	REASON_BASELINE = 8,	/* lowers a security baseline */
	REASON_DENIED = 9,	/* a deny glob covers the key */
	REASON_NOT_ALLOWED = 10, /* no allow glob covers the key */
	REASON_NO_TYPE = 11,	/* allowed, but no type or range is known */
	REASON_NAME = 12,	/* a name too long to check that a glob may cover */
	REASON_RATE = 13,	/* the extension submits faster than its rate */
	REASON_ENTRY = 14,	/* a submission entry of the wrong size or version */
	REASON_ACCOUNT = 15,	/* no room in the accounting map for a new extension */
};

struct rule {
	__u32 type;	  /* enum rule_type */
	__u32 length;	  /* RULE_INT: 1; RULE_INTS: how many ints; the count entry: globs */
	__s64 min;	  /* each int >= min */
	__s64 max;	  /* each int <= max */
	__u32 generation;
	__u32 nwords;	  /* RULE_WORD: how many of words[] are used (0: any one word) */
	__u32 flags;	  /* enum rule_flag */
	__u32 glob;	  /* glob entries: enum glob_kind */
	__u32 prefix_len;
	__u32 suffix_len;
	char words[MAX_WORDS][WORD_LEN];
	char prefix[NAME_LEN]; /* glob entries: the text before the wildcard, NUL padded */
	char suffix[NAME_LEN]; /* ...and after it, right-aligned (ends at the last byte) */
	__u8 prefix_mask[NAME_LEN]; /* 0xff over the prefix's bytes */
	__u8 suffix_mask[NAME_LEN]; /* 0xff over the suffix's bytes (the last suffix_len) */
	__s64 order[MAX_ORDER];	    /* F_ORDER: the levels, least strict first */
	__u32 norder;
	__u32 _pad;
};

struct rule_key {
	char name[NAME_LEN]; /* "net/core/somaxconn", NUL padded */
};

struct rules_inner {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_RULES);
	__uint(key_size, sizeof(struct rule_key));
	__uint(value_size, sizeof(struct rule));
};

/* The policy: one slot, holding the inner map of the current generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct rules_inner);
} rules SEC(".maps");

/* One value read token by token (blank separated): the ints, and the first token as a word. */
struct scan {
	char value[VALUE_LEN];
	__s64 ints[MAX_INTS];
	char word[WORD_LEN];
	__u64 acc;	 /* the current token's magnitude */
	__u32 count;	 /* tokens ended so far */
	__u32 len;	 /* bytes in the current token */
	__u32 neg;
	__u32 first_zero;
	__u32 not_int;	 /* some token is not a plain decimal int */
	__u32 overflow;	 /* some int does not fit in 64 bits */
	__u32 word_len;	 /* the first token's length */
	__u32 bad_word;	 /* the first token is not [A-Za-z0-9_][A-Za-z0-9_.+-]* */
};

/* The name as the kernel gives it, prepared once for the glob compares. */
struct name_info {
	struct rule_key key;	/* left-aligned, NUL padded */
	char right[NAME_LEN];	/* right-aligned: the suffix compares at a fixed place */
	__u64 slashes;		/* bit i: key.name[i] == '/' */
	__u32 len;
	__u32 truncated;	/* longer than NAME_LEN - 1: only a prefix is known */
	__u32 glob_index;	/* out: the glob that matched */
	__u32 guard;		/* 1: skip deny globs (the guard); 0: they match (the validator) */
};

/* Everything one check needs, in a per-CPU scratch map (too big for the stack). */
struct work {
	struct scan new;
	struct scan cur;
	struct name_info name;
};

struct work_ctx {
	struct scan *s; /* bpf_loop() takes a stack pointer: this points on to the map value */
	struct name_info *n;
};

static long scan_byte(__u32 i, struct work_ctx *ctx)
{
	struct scan *s = ctx->s;
	char c = s->value[i & (VALUE_LEN - 1)];
	int blank = c == ' ' || c == '\t' || c == '\n' || c == 0;

	if (blank) {
		if (s->len) {
			if (s->count < MAX_INTS)
				s->ints[s->count & (MAX_INTS - 1)] =
					s->neg ? (__s64)(0 - s->acc) : (__s64)s->acc;
			if (s->neg && s->len == 1)
				s->not_int = 1; /* a lone "-" */
			if (s->count == 0)
				s->word_len = s->len;
			s->count++;
		}
		s->len = 0;
		s->acc = 0;
		s->neg = 0;
		return c == 0; /* 1 stops the loop */
	}
	if (s->count == 0) {
		int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    (c >= '0' && c <= '9') || c == '_';

		if (!alnum && (s->len == 0 || (c != '.' && c != '+' && c != '-')))
			s->bad_word = 1;
		if (s->len < WORD_LEN - 1)
			s->word[s->len & (WORD_LEN - 1)] = c;
	}
	if (c == '-' && s->len == 0) {
		s->neg = 1;
	} else if (c >= '0' && c <= '9') {
		__u32 digits = s->len - s->neg;
		__u64 d = c - '0';
		/* the largest magnitude: 2^63 - 1, or 2^63 for a negative int */
		__u64 limit = 0x7fffffffffffffffULL + (s->neg ? 1 : 0);

		if (digits == 0)
			s->first_zero = c == '0';
		else if (s->first_zero)
			s->not_int = 1; /* a leading zero: the kernel would read octal */
		if (digits >= 19)
			s->not_int = 1; /* the validator's ints have 1 to 19 digits */
		else if (s->acc > (limit - d) / 10)
			s->overflow = 1;
		else
			s->acc = s->acc * 10 + d;
	} else {
		s->not_int = 1;
	}
	s->len++;
	return 0;
}

static __always_inline void scan_value(struct scan *s)
{
	struct work_ctx ctx = { .s = s };

	bpf_loop(VALUE_LEN, scan_byte, &ctx, 0);
}

static long name_byte(__u32 i, struct work_ctx *ctx)
{
	struct name_info *n = ctx->n;
	char c = n->key.name[i & (NAME_LEN - 1)];

	if (i >= n->len)
		return 1;
	if (c == '/')
		n->slashes |= 1ULL << (i & 63);
	n->right[(NAME_LEN - n->len + i) & (NAME_LEN - 1)] = c;
	return 0;
}

static long nul_byte(__u32 i, struct work_ctx *ctx)
{
	if (ctx->n->key.name[i & (NAME_LEN - 1)] == 0)
		return 1;
	ctx->n->len = i + 1;
	return 0;
}

/* Set n->len from n->key (a name that did not come from the kernel: the queues). */
static __always_inline void name_length(struct name_info *n)
{
	struct work_ctx ctx = { .n = n };

	n->len = 0;
	bpf_loop(NAME_LEN - 1, nul_byte, &ctx, 0);
}

/* Fill the right-aligned copy and the slash bitmap of n->key (n->len already set). */
static __always_inline void prepare_name(struct name_info *n)
{
	struct work_ctx ctx = { .n = n };

	bpf_loop(NAME_LEN, name_byte, &ctx, 0);
}

static __always_inline int glob_matches(const struct rule *g, const struct name_info *n)
{
	const __u64 *name = (const __u64 *)n->key.name, *right = (const __u64 *)n->right;
	const __u64 *prefix = (const __u64 *)g->prefix, *suffix = (const __u64 *)g->suffix;
	const __u64 *pmask = (const __u64 *)g->prefix_mask;
	const __u64 *smask = (const __u64 *)g->suffix_mask;
	__u32 plen = g->prefix_len, slen = g->suffix_len, len = n->len, end;
	__u64 diff = 0, middle;

	/* the masks (0xff over the prefix's and the suffix's bytes) are made by user space */
	for (int w = 0; w < NAME_LEN / 8; w++)
		diff |= (name[w] ^ prefix[w]) & pmask[w];
	if (diff)
		return 0;
	if (n->truncated)
		return 1; /* the prefix matches and the rest cannot be seen: assume it is covered */
	if (plen >= NAME_LEN || slen >= NAME_LEN || len < plen + slen ||
	    (g->glob == GLOB_STARSTAR && len == plen + slen))
		return 0;
	for (int w = 0; w < NAME_LEN / 8; w++)
		diff |= (right[w] ^ suffix[w]) & smask[w];
	if (diff)
		return 0;
	if (g->glob != GLOB_STAR)
		return 1;
	end = len - slen; /* `*` stays within one component: no '/' in [plen, end) */
	middle = (end >= 64 ? ~0ULL : (1ULL << end) - 1) & ~((1ULL << (plen & 63)) - 1);
	return !(n->slashes & middle);
}

struct glob_ctx {
	void *inner;
	struct name_info *n;
	__u32 start;
	__u32 count;
	__u32 found; /* 1 + the index of the first glob that matches (0: none) */
};

static long glob_one(__u32 i, struct glob_ctx *ctx)
{
	struct rule_key key = {};
	struct rule *g;

	i += ctx->start;
	if (i >= ctx->count)
		return 1;
	key.name[0] = KEY_GLOB;
	key.name[1] = (char)i;
	g = bpf_map_lookup_elem(ctx->inner, &key);
	if (!g)
		return 1;
	if (glob_matches(g, ctx->n)) {
		ctx->found = i + 1;
		return 1;
	}
	return 0;
}

/*
 * The rule for n's name: the exact entry, else the first glob that matches (NULL: the
 * policy does not name it).
 */
static __always_inline struct rule *find_rule(void *inner, struct name_info *n)
{
	struct glob_ctx g = { .inner = inner, .n = n };
	struct rule_key key = {};
	struct rule *r, *count;

	if (!n->truncated) {
		r = bpf_map_lookup_elem(inner, &n->key);
		if (r)
			return r;
	}
	key.name[0] = KEY_GLOB_COUNT;
	count = bpf_map_lookup_elem(inner, &key);
	if (!count)
		return NULL;
	/* the guard skips the deny globs (they come first): it checks what is allowed */
	g.start = n->guard ? count->nwords : 0;
	g.count = count->length > MAX_GLOBS ? MAX_GLOBS : count->length;
	if (g.start >= g.count)
		return NULL;
	prepare_name(n);
	bpf_loop(MAX_GLOBS, glob_one, &g, 0);
	if (!g.found)
		return NULL;
	n->glob_index = g.found - 1;
	key.name[0] = KEY_GLOB;
	key.name[1] = (char)(g.found - 1);
	return bpf_map_lookup_elem(inner, &key);
}

static __always_inline int word_eq(const char *a, const char *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	/* both NUL padded to WORD_LEN (8-aligned): two loads compare them */
	return x[0] == y[0] && x[1] == y[1];
}

/* the index of s's word in rule->words (-1: not there, or not one short word) */
static __always_inline int word_index(const struct rule *rule, const struct scan *s)
{
	if (s->count != 1 || s->word_len >= WORD_LEN)
		return -1;
	for (int w = 0; w < MAX_WORDS; w++) {
		if (w >= rule->nwords)
			break;
		if (word_eq(s->word, rule->words[w]))
			return w;
	}
	return -1;
}

/* the place of v in rule->order (-1: not one of its levels) */
static __always_inline int rank(const struct rule *rule, __s64 v)
{
	for (int i = 0; i < MAX_ORDER; i++) {
		if (i >= rule->norder)
			break;
		if (rule->order[i] == v)
			return i;
	}
	return -1;
}

/*
 * Never lower a baseline key: the new value's first int must not be below the current
 * one's, or, with F_ORDER, not before it in order[] (and both must be levels of it: a
 * value that cannot be ranked is refused). Values that are not ints are left to the
 * type check, as in the validator (actions.policy.Policy.lowers_baseline).
 */
static __always_inline __u32 check_baseline(const struct rule *rule, const struct scan *nv,
					    const struct scan *cur)
{
	int was, now;

	if (!(rule->flags & F_BASELINE))
		return REASON_OK;
	if (nv->not_int || cur->not_int || !nv->count || !cur->count || nv->overflow ||
	    cur->overflow)
		return REASON_OK;
	if (!(rule->flags & F_ORDER))
		return nv->ints[0] < cur->ints[0] ? REASON_BASELINE : REASON_OK;
	was = rank(rule, cur->ints[0]);
	now = rank(rule, nv->ints[0]);
	return was < 0 || now < 0 || now < was ? REASON_BASELINE : REASON_OK;
}

/* Type and range (or words) of the new value: what both the guard and the validator check. */
static __always_inline __u32 check_shape(const struct rule *rule, const struct scan *s)
{
	if (rule->type == RULE_WORD) {
		if (s->count != 1 || s->bad_word || s->word_len > MAX_TOKEN)
			return REASON_SHAPE;
		if (rule->nwords == 0)
			return REASON_OK;
		return word_index(rule, s) >= 0 ? REASON_OK : REASON_WORD;
	}
	if (rule->type != RULE_INT && rule->type != RULE_INTS)
		return REASON_OK;
	if (s->not_int || s->count != rule->length || s->count > MAX_INTS)
		return REASON_SHAPE;
	if (s->overflow)
		return REASON_RANGE;
	for (int i = 0; i < MAX_INTS; i++) {
		if (i >= s->count)
			break;
		if (s->ints[i] < rule->min || s->ints[i] > rule->max)
			return REASON_RANGE;
	}
	return REASON_OK;
}

#endif
