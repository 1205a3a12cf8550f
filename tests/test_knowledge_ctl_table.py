"""Per-device and per-namespace sysctl tables: macro-built entries, computed paths and
links between files, on inline C shaped like the kernel's, then on linux-source-6.1.

These are the tables ``docs undocumented`` used to call "not in linux 6.1":
``devinet`` (``net.ipv4.conf.*``), ``addrconf`` (``net.ipv6.conf.*``), ``neigh``
(``net.ipv*.neigh.*``), ``mqueue`` (``fs.mqueue``), ``keys`` (``kernel.keys``) and the
user namespace limits (``user.*``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from assistant.knowledge import ctl_table
from assistant.knowledge.sources import SOURCE_TARBALL, tree_members
from tests.conftest import require

DEVINET_C = """
#define DEVINET_SYSCTL_ENTRY(attr, name, mval, proc) \\
	{ \\
		.procname	= name, \\
		.data		= ipv4_devconf.data + \\
					IPV4_DEVCONF_ ## attr - 1, \\
		.maxlen		= sizeof(int), \\
		.mode		= mval, \\
		.proc_handler	= proc, \\
	}

#define DEVINET_SYSCTL_RW_ENTRY(attr, name) \\
	DEVINET_SYSCTL_ENTRY(attr, name, 0644, devinet_conf_proc)

static struct devinet_sysctl_table {
	struct ctl_table_header *sysctl_header;
	struct ctl_table devinet_vars[__IPV4_DEVCONF_MAX];
} devinet_sysctl = {
	.devinet_vars = {
		DEVINET_SYSCTL_RW_ENTRY(RP_FILTER, "rp_filter"),
		DEVINET_SYSCTL_RW_ENTRY(ACCEPT_REDIRECTS,
					"accept_redirects"),
	},
};

static int __devinet_sysctl_register(struct net *net, char *dev_name,
					int ifindex, struct ipv4_devconf *p)
{
	struct devinet_sysctl_table *t;
	char path[sizeof("net/ipv4/conf/") + IFNAMSIZ];

	t = kmemdup(&devinet_sysctl, sizeof(*t), GFP_KERNEL_ACCOUNT);
	snprintf(path, sizeof(path), "net/ipv4/conf/%s", dev_name);
	t->sysctl_header = register_net_sysctl(net, path, t->devinet_vars);
	return 0;
}

static int devinet_sysctl_register(struct in_device *idev)
{
	return __devinet_sysctl_register(dev_net(idev->dev), idev->dev->name,
						idev->dev->ifindex, &idev->cnf);
}

static __net_init int devinet_init_net(struct net *net)
{
	err = __devinet_sysctl_register(net, "all", NETCONFA_IFINDEX_ALL, all);
	err = __devinet_sysctl_register(net, "default", NETCONFA_IFINDEX_DEFAULT, dflt);
}
"""

NEIGH_C = """
#define NEIGH_SYSCTL_ENTRY(attr, data_attr, name, mval, proc) \\
	[NEIGH_VAR_ ## attr] = { \\
		.procname	= name, \\
		.mode		= mval, \\
		.proc_handler	= proc, \\
	}
#define NEIGH_SYSCTL_JIFFIES_ENTRY(attr, name) \\
	NEIGH_SYSCTL_ENTRY(attr, attr, name, 0644, neigh_proc_dointvec_jiffies)

static struct neigh_sysctl_table {
	struct ctl_table_header *sysctl_header;
	struct ctl_table neigh_vars[NEIGH_VAR_MAX + 1];
} neigh_sysctl_template __read_mostly = {
	.neigh_vars = {
		NEIGH_SYSCTL_JIFFIES_ENTRY(GC_STALETIME, "gc_stale_time"),
		[NEIGH_VAR_GC_THRESH3] = {
			.procname	= "gc_thresh3",
			.proc_handler	= proc_dointvec_minmax,
		},
		{},
	},
};

int neigh_sysctl_register(struct net_device *dev, struct neigh_parms *p,
				proc_handler *handler)
{
	const char *dev_name_source;
	char neigh_path[ sizeof("net//neigh/") + IFNAMSIZ + IFNAMSIZ ];
	char *p_name;

	t = kmemdup(&neigh_sysctl_template, sizeof(*t), GFP_KERNEL_ACCOUNT);
	if (dev) {
		dev_name_source = dev->name;
	} else {
		dev_name_source = "default";
	}
	switch (neigh_parms_family(p)) {
	case AF_INET:
		p_name = "ipv4";
		break;
	case AF_INET6:
		p_name = "ipv6";
		break;
	}
	snprintf(neigh_path, sizeof(neigh_path), "net/%s/neigh/%s",
		p_name, dev_name_source);
	t->sysctl_header =
		register_net_sysctl(neigh_parms_net(p), neigh_path, t->neigh_vars);
}
"""

UCOUNT_C = """
#define UCOUNT_ENTRY(name)					\\
	{							\\
		.procname	= name,				\\
		.maxlen		= sizeof(long),			\\
		.mode		= 0644,				\\
		.proc_handler	= proc_doulongvec_minmax,	\\
	}
static struct ctl_table user_table[] = {
	UCOUNT_ENTRY("max_user_namespaces"),
#ifdef CONFIG_INOTIFY_USER
	UCOUNT_ENTRY("max_inotify_watches"),
#endif
	{ }
};

bool setup_userns_sysctls(struct user_namespace *ns)
{
	struct ctl_table *tbl;

	tbl = kmemdup(user_table, sizeof(user_table), GFP_KERNEL);
	if (tbl) {
		ns->sysctls = __register_sysctl_table(&ns->set, "user", tbl);
	}
}
"""

KEYS_C = """
struct ctl_table key_sysctls[] = {
	{
		.procname = "maxkeys",
		.proc_handler = proc_dointvec_minmax,
	},
	{ }
};
"""

KERNEL_SYSCTL_C = """
static struct ctl_table kern_table[] = {
	{
		.procname	= "keys",
		.mode		= 0555,
		.child		= key_sysctls,
	},
	{ }
};
DECLARE_SYSCTL_BASE(kernel, kern_table);
"""

ICMP_C = """
static struct ctl_table ipv6_icmp_table_template[] = {
	{
		.procname	= "ratelimit",
		.proc_handler	= proc_dointvec_ms_jiffies,
	},
	{ },
};

struct ctl_table * __net_init ipv6_icmp_sysctl_init(struct net *net)
{
	struct ctl_table *table;

	table = kmemdup(ipv6_icmp_table_template,
			sizeof(ipv6_icmp_table_template),
			GFP_KERNEL);
	return table;
}
"""

IPV6_SYSCTL_C = """
static int __net_init ipv6_sysctl_net_init(struct net *net)
{
	struct ctl_table *ipv6_icmp_table;

	ipv6_icmp_table = ipv6_icmp_sysctl_init(net);
	net->ipv6.sysctl.icmp_hdr =
		register_net_sysctl(net, "net/ipv6/icmp", ipv6_icmp_table);
}
"""

MIXED_C = """
#define MPTCP_SYSCTL_PATH "net/mptcp"
static const char flush_procname[] = "flush";

static struct ctl_table mptcp_sysctl_table[] = {
	{
		.procname = "enabled",
	},
	{}
};

static struct ctl_table dev_table[] = {
	{
		.procname = flush_procname,
	},
	{}
};

static int mptcp_pernet_new_table(struct net *net)
{
	table = kmemdup(mptcp_sysctl_table, sizeof(mptcp_sysctl_table), GFP_KERNEL);
	hdr = register_net_sysctl(net, MPTCP_SYSCTL_PATH, table);
}

static int dev_register(struct net_device *dev)
{
	table = kmemdup(&dev_table, sizeof(dev_table), GFP_KERNEL);
	snprintf(path, sizeof(path), "net/mptcp/conf/%s", dev->name);
	register_net_sysctl(net, path, table);
}
"""


def _names(text: str) -> dict[str, int]:
    resolved, unresolved = ctl_table.sysctls(text)
    assert unresolved == 0
    return {s.name: s.entry.line for s in resolved}


def test_a_macro_built_table_at_a_computed_per_device_path() -> None:
    names = _names(DEVINET_C)
    assert set(names) == {
        f"net.ipv4.conf.{dev}.{leaf}"
        for dev in ("all", "default", "*")
        for leaf in ("rp_filter", "accept_redirects")
    }
    lines = DEVINET_C.splitlines()
    # Each entry's line holds its procname (the macro's argument).
    assert '"accept_redirects"' in lines[names["net.ipv4.conf.all.accept_redirects"] - 1]
    entry = next(s for s in ctl_table.sysctls(DEVINET_C)[0] if s.name.endswith("rp_filter"))
    assert entry.entry.fields["mode"] == "0644"
    assert entry.entry.fields["proc_handler"] == "devinet_conf_proc"
    assert entry.entry.fields["data"] == "ipv4_devconf.data + IPV4_DEVCONF_RP_FILTER - 1"


def test_a_path_built_from_assigned_strings() -> None:
    assert set(_names(NEIGH_C)) == {
        f"net.{family}.neigh.{dev}.{leaf}"
        for family in ("ipv4", "ipv6")
        for dev in ("default", "*")
        for leaf in ("gc_stale_time", "gc_thresh3")
    }


def test_a_per_namespace_table_registered_through_a_copy() -> None:
    assert set(_names(UCOUNT_C)) == {"user.max_user_namespaces", "user.max_inotify_watches"}


def test_a_define_path_a_constant_procname_and_copies_per_function() -> None:
    assert set(_names(MIXED_C)) == {"net.mptcp.enabled", "net.mptcp.conf.*.flush"}


def test_links_between_files_are_followed_in_a_tree() -> None:
    files = [
        ("security/keys/sysctl.c", KEYS_C),
        ("kernel/sysctl.c", KERNEL_SYSCTL_C),
        ("net/ipv6/icmp.c", ICMP_C),
        ("net/ipv6/sysctl_net_ipv6.c", IPV6_SYSCTL_C),
    ]
    alone = {path: ctl_table.sysctls(text) for path, text in files}
    assert alone["security/keys/sysctl.c"] == ([], 1)  # one file cannot know its directory
    tree = {
        path: (found, unresolved) for path, _, found, unresolved in ctl_table.tree_sysctls(files)
    }
    assert [s.name for s in tree["security/keys/sysctl.c"][0]] == ["kernel.keys.maxkeys"]
    assert [s.name for s in tree["net/ipv6/icmp.c"][0]] == ["net.ipv6.icmp.ratelimit"]
    assert all(unresolved == 0 for _found, unresolved in tree.values())


def test_macro_expansion_stringifies_and_pastes() -> None:
    macros = ctl_table.function_macros("#define S(x, y) { .procname = #x, .data = &v_ ## y }\n")
    assert (
        ctl_table.expand("S(rp_filter, RP)", macros) == '{ .procname = "rp_filter", .data = &v_RP }'
    )


# --- against linux-source-6.1 ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tree() -> Iterator[list[tuple[str, str, list[ctl_table.Sysctl], int]]]:
    require(SOURCE_TARBALL.is_file(), f"linux-source-6.1 is not installed ({SOURCE_TARBALL})")
    files = [
        (path, data.decode("latin-1"))
        for path, data in tree_members(SOURCE_TARBALL, lambda _done, _total: None)
        if data is not None and path.endswith(".c") and b"ctl_table" in data
    ]
    yield ctl_table.tree_sysctls(files)


def test_every_literal_entry_of_linux_6_1_has_a_directory(
    tree: list[tuple[str, str, list[ctl_table.Sysctl], int]],
) -> None:
    left = {path: unresolved for path, _text, _found, unresolved in tree if unresolved}
    assert left == {}


@pytest.mark.parametrize(
    "name",
    [
        "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.forwarding",
        "net.ipv4.conf.*.rp_filter", "net.ipv4.neigh.default.gc_thresh3",
        "net.ipv6.neigh.*.retrans_time_ms", "net.ipv6.conf.all.forwarding",
        "net.ipv6.conf.*.accept_ra", "fs.mqueue.msg_max", "kernel.keys.maxkeys",
        "kernel.keys.persistent_keyring_expiry", "user.max_inotify_watches",
        "user.max_user_namespaces", "kernel.usermodehelper.bset", "kernel.shmmax",
        "net.ipv6.icmp.ratelimit", "net.ipv6.route.gc_thresh", "net.mptcp.enabled",
        "net.ipv4.route.flush",
    ],
)  # fmt: skip
def test_the_per_device_and_per_namespace_keys_resolve(
    tree: list[tuple[str, str, list[ctl_table.Sysctl], int]], name: str
) -> None:
    assert name in {s.name for _path, _text, found, _u in tree for s in found}
