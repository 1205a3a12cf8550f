// SPDX-License-Identifier: GPL-2.0
/*
 * kassist_sysctl: the kernel side of kassist's agent (BPF_PROG_TYPE_CGROUP_SYSCTL).
 *
 * Two programs attach to cgroups:
 *   kassist_lockdown  refuses every sysctl write by a task of its cgroup (reads pass);
 *   kassist_guard     refuses a write to a key the policy manages unless the new value
 *                     has the rule's shape (int, vector of ints, or one allowed word) and
 *                     range, and does not lower a security baseline below its current
 *                     value; keys the policy does not manage pass untouched, and so do
 *                     the writes of the agent's own process (see `agent` below).
 * and one the agent runs itself (BPF_PROG_RUN):
 *   kassist_enroll    records the calling process as the agent (see `agent`).
 * Every refusal is reported through the ring buffer `refusals`. The rules and their
 * checks are in kassist_policy.h, shared with the validator behind the BPF queues.
 * Writes at a file offset other than 0 are refused for a managed key.
 */
#include "kassist_policy.h"

/* The head of the kernel's task_struct, relocated against its BTF when loaded (CO-RE). */
struct task_struct {
	int tgid;
	struct task_struct *group_leader;
	unsigned long long start_time;
} __attribute__((preserve_access_index));

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

enum mode { MODE_LOCKDOWN = 1, MODE_GUARD = 2 };

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} refusals SEC(".maps");

/*
 * The agent's own process, whose writes the guard lets through: the agent validates them
 * itself, and must be able to roll a key back to a value from before it managed it, even
 * one outside the policy. It is named by what the kernel gives and nobody can take on:
 * the thread-group id *and* the start time of the group leader (a pid reused after the
 * agent died has another start time), and the cgroup it was in when it enrolled (re-read
 * on every reload). Joining the agent's cgroup gives nothing; a dead agent's entry
 * matches no process ever again, though the pinned programs outlive it.
 */
struct agent_id {
	__u64 start_time; /* group_leader->start_time, ns (CLOCK_MONOTONIC at fork) */
	__u64 cgroup_id;
	__u32 tgid;       /* 0: no agent enrolled */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct agent_id);
} agent SEC(".maps");

/* refusals the ring buffer had no room for (user space lagging): counted, never silent */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* one scratch area per CPU: struct work does not fit beside the rest on the stack */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct work);
} scratch SEC(".maps");

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


#define E2BIG 7

/* Whether the writer is the enrolled agent (see struct agent_id). */
static __always_inline int is_agent(void)
{
	__u32 slot = 0;
	struct agent_id *a = bpf_map_lookup_elem(&agent, &slot);
	struct task_struct *task;

	if (!a || !a->tgid || a->tgid != bpf_get_current_pid_tgid() >> 32)
		return 0;
	if (a->cgroup_id != bpf_get_current_cgroup_id())
		return 0;
	task = (struct task_struct *)bpf_get_current_task_btf();
	return task->group_leader->start_time == a->start_time;
}

SEC("cgroup/sysctl")
int kassist_guard(struct bpf_sysctl *ctx)
{
	__u32 slot = 0, reason = REASON_OK;
	struct rule *rule;
	struct work *w;
	void *inner;
	long len;

	if (!ctx->write || is_agent())
		return 1;
	inner = bpf_map_lookup_elem(&rules, &slot);
	if (!inner) {
		report(ctx, MODE_GUARD, REASON_NO_RULES, 0);
		return 0;
	}
	w = bpf_map_lookup_elem(&scratch, &slot);
	if (!w)
		return 0;
	/* zeroed as far as needed: most writes are to keys the policy does not name */
	__builtin_memset(&w->name, 0, sizeof(w->name));
	len = bpf_sysctl_get_name(ctx, w->name.key.name, NAME_LEN, 0);
	if (len == -E2BIG) {
		/* longer than any exact rule: refused below if a glob's prefix covers it */
		w->name.truncated = 1;
		len = NAME_LEN - 1;
	} else if (len < 0) {
		return 1;
	}
	w->name.len = len;
	w->name.guard = 1;
	rule = find_rule(inner, &w->name);
	if (!rule)
		return 1;
	if (w->name.truncated) {
		report(ctx, MODE_GUARD, REASON_NAME, rule->generation);
		return 0;
	}
	if (ctx->file_pos != 0) {
		report(ctx, MODE_GUARD, REASON_OFFSET, rule->generation);
		return 0;
	}
	__builtin_memset(&w->new, 0, sizeof(w->new));
	len = bpf_sysctl_get_new_value(ctx, w->new.value, sizeof(w->new.value));
	if (len < 0 || len >= VALUE_LEN) {
		report(ctx, MODE_GUARD, REASON_VALUE, rule->generation);
		return 0;
	}
	scan_value(&w->new);
	if ((rule->flags & F_BASELINE) && rule->type != RULE_WORD &&
	    (w->new.not_int || w->new.overflow || !w->new.count)) {
		/* the kernel reads base 0: "0x0" or "00" is a 0 the baseline must see */
		reason = REASON_SHAPE;
	} else if (rule->flags & F_BASELINE) {
		/* a current value too long for the buffer is read as far as it goes */
		__builtin_memset(&w->cur, 0, sizeof(w->cur));
		bpf_sysctl_get_current_value(ctx, w->cur.value, sizeof(w->cur.value) - 1);
		scan_value(&w->cur);
		reason = check_baseline(rule, &w->new, &w->cur);
	}
	if (!reason)
		reason = check_shape(rule, &w->new);
	if (reason) {
		report(ctx, MODE_GUARD, reason, rule->generation);
		return 0;
	}
	return 1;
}

/* Run by the agent with BPF_PROG_RUN at start and on every reload: "this process is me". */
SEC("syscall")
int kassist_enroll(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	struct agent_id id = {};
	__u32 slot = 0;

	id.tgid = bpf_get_current_pid_tgid() >> 32;
	id.start_time = task->group_leader->start_time;
	id.cgroup_id = bpf_get_current_cgroup_id();
	return bpf_map_update_elem(&agent, &slot, &id, BPF_ANY);
}

char LICENSE[] SEC("license") = "GPL";
