"""The knowledge base's parsers on inline kernel text: rst sections, MAINTAINERS, ctl_tables.

Each input is a piece of the kernel's own files (or shaped exactly like one);
the tests against the real, full knowledge base are in test_knowledge_real.py.
"""

from __future__ import annotations

import re

import pytest

from assistant.knowledge import ctl_table, maintainers, rst
from assistant.knowledge.model import DocHit

# ---------------------------------------------------------------- rst

KERNEL_RST = """\
===============================================================
Documentation for /proc/sys/kernel/
===============================================================

.. See scripts/check-sysctl-docs to keep this up to date

This file contains documentation for the sysctl files in
``/proc/sys/kernel/``.

acct
====

::

    highwater lowwater frequency

bootloader_type (x86 only)
==========================

This gives the bootloader type number.

panic_on_oops, panic_on_warn and "hung_task_panic"
==================================================

Controls the kernel's behaviour when an oops or BUG is encountered.

Sub part
--------

Below panic_on_oops.
"""

IP_SYSCTL_RST = """\
=========
IP Sysctl
=========

/proc/sys/net/ipv4/* Variables
==============================

ip_forward - BOOLEAN
	- 0 - disabled (default)
	- not 0 - enabled

	Forward Packets between interfaces.

ip_default_ttl - INTEGER
	Default value of TTL field (Time To Live) for outgoing (but not
	forwarded) IP packets. Should be between 1 and 255 inclusive.
	Default: 64 (as recommended by RFC1700)

/proc/sys/net/ipv6/* Variables
==============================

bindv6only - BOOLEAN
	Default value for IPV6_V6ONLY socket option.
"""


def test_make_id_is_docutils_slug() -> None:
    assert rst.make_id("/proc/sys/net/ipv4/* Variables") == "proc-sys-net-ipv4-variables"
    assert rst.make_id("bootloader_type (x86 only)") == "bootloader-type-x86-only"
    assert rst.make_id("10. OOM Control") == "oom-control"
    assert rst.make_id("Generic KASAN") == "generic-kasan"


def test_sections_levels_text_and_lines() -> None:
    found = rst.sections(KERNEL_RST)
    assert [s.title for s in found] == [
        "Documentation for /proc/sys/kernel/",
        "acct",
        "bootloader_type (x86 only)",
        'panic_on_oops, panic_on_warn and "hung_task_panic"',
        "Sub part",
    ]
    assert [s.level for s in found] == [1, 2, 2, 2, 3]
    acct = found[1]
    assert acct.line == KERNEL_RST.splitlines().index("acct") + 1
    assert "highwater lowwater frequency" in acct.text
    assert "bootloader type number" not in acct.text
    assert "=" * 4 not in found[2].text


def test_title_names_read_like_check_sysctl_docs() -> None:
    # Words in parentheses and "and" are skipped; quotes and commas trimmed.
    assert rst.title_names('panic_on_oops, panic_on_warn and "hung_task_panic"') == [
        "panic_on_oops",
        "panic_on_warn",
        "hung_task_panic",
    ]
    assert rst.title_names("bootloader_type (x86 only)") == ["bootloader_type"]
    assert rst.title_names("file-max & file-nr") == ["file-max", "file-nr"]


def test_sysctl_entries_from_section_titles() -> None:
    path = "Documentation/admin-guide/sysctl/kernel.rst"
    entries = list(rst.sysctl_entries(path, KERNEL_RST))
    names = [e.name for e in entries]
    # As check-sysctl-docs reads titles, every lower-case word of one counts ("part").
    assert names == [
        "acct",
        "bootloader_type",
        "panic_on_oops",
        "panic_on_warn",
        "hung_task_panic",
        "part",
    ]
    assert {e.directory for e in entries} == {"kernel"}
    assert entries[1].section.anchor == "bootloader-type-x86-only"


def test_mixed_case_sysctl_title_counts_but_capitalised_words_do_not() -> None:
    text = (
        "=====\nTitle\n=====\n\nnuma_balancing_promote_rate_limit_MBps\n"
        "======================================\n\ntext\n\nSome Notes\n==========\n\nx\n"
    )
    path = "Documentation/admin-guide/sysctl/kernel.rst"
    names = [e.name for e in rst.sysctl_entries(path, text)]
    assert names == ["numa_balancing_promote_rate_limit_MBps"]


def test_sysctl_entries_from_definition_lists_follow_proc_sys_headings() -> None:
    path = "Documentation/networking/ip-sysctl.rst"
    entries = {e.name: e for e in rst.sysctl_entries(path, IP_SYSCTL_RST)}
    assert set(entries) == {"ip_forward", "ip_default_ttl", "bindv6only"}
    assert entries["ip_forward"].directory == "net/ipv4"
    assert entries["bindv6only"].directory == "net/ipv6"
    ttl = entries["ip_default_ttl"]
    assert ttl.section.anchor == "proc-sys-net-ipv4-variables"
    assert "between 1 and 255" in ttl.text
    assert "Forward Packets" not in ttl.text


def test_abi_entries_group_what_lines() -> None:
    text = (
        "What:\t\t/sys/kernel/mm/ksm/run\nWhat:\t\t/sys/kernel/mm/ksm/sleep\nDate:\t\tMay 2022\n"
        "Description:\tcontrols ksm\n\nWhat:\t\t/sys/kernel/mm/ksm/pages\nDescription:\tcount\n"
    )
    found = rst.abi_entries(text)
    assert [s.title for s in found] == ["/sys/kernel/mm/ksm/run", "/sys/kernel/mm/ksm/pages"]
    assert "controls ksm" in found[0].text and "count" not in found[0].text


def test_dochit_cite() -> None:
    hit = DocHit("Documentation/dev-tools/kasan.rst", "Shadow memory", "shadow-memory", "")
    assert hit.cite == "Documentation/dev-tools/kasan.rst#shadow-memory"
    assert DocHit("Documentation/ABI/testing/x", "t", "", "").cite == "Documentation/ABI/testing/x"


# ---------------------------------------------------------------- MAINTAINERS

MAINTAINERS_TEXT = """\
List of maintainers
===================

Descriptions of section entries and preferred order
---------------------------------------------------

	M: *Mail* patches to: FullName <address@domain>
	F: *Files* and directories wildcard patterns.

Maintainers List
----------------

NETWORKING [GENERAL]
M:	"David S. Miller" <davem@davemloft.net>
M:	Eric Dumazet <edumazet@google.com>
L:	netdev@vger.kernel.org
S:	Maintained
F:	net/
F:	include/net/
X:	net/bluetooth/
X:	net/wireless/

NETWORKING [IPv4/IPv6]
M:	"David S. Miller" <davem@davemloft.net>
M:	David Ahern <dsahern@kernel.org>
R:	Old Name <old@example.org>
L:	netdev@vger.kernel.org
S:	Maintained
F:	net/ipv4/
F:	net/ipv6/*.c

BLUETOOTH SUBSYSTEM
M:	Marcel Holtmann <marcel@holtmann.org>
L:	linux-bluetooth@vger.kernel.org
L:	secret@example.org (subscribers-only)
S:	Supported
F:	net/bluetooth/

SOCKMAP
M:	John Fastabend <john.fastabend@gmail.com>
L:	bpf@vger.kernel.org (moderated for non-subscribers)
S:	Maintained
N:	sk_msg
K:	\\bsk_msg_\\w+

THE REST
M:	Linus Torvalds <torvalds@linux-foundation.org>
L:	linux-kernel@vger.kernel.org
S:	Buried alive in reporters
F:	*
F:	*/
"""


def _sections() -> list[maintainers.Section]:
    return maintainers.parse_maintainers(MAINTAINERS_TEXT, lambda p: p in {"net", "net/ipv4"})


def test_parse_maintainers_skips_the_preamble_and_converts_patterns() -> None:
    sections = _sections()
    assert [s.name for s in sections] == [
        "NETWORKING [GENERAL]",
        "NETWORKING [IPv4/IPv6]",
        "BLUETOOTH SUBSYSTEM",
        "SOCKMAP",
        "THE REST",
    ]
    assert sections[1].values("F") == ["net/ipv4/", "net/ipv6/.*\\.c"]
    assert sections[4].values("F") == [".*", ".*/"]


def test_directory_pattern_gains_a_slash_only_when_it_is_a_directory() -> None:
    assert maintainers.convert_file_pattern("net/core", lambda p: p == "net/core") == "net/core/"
    assert maintainers.convert_file_pattern("net/core", lambda p: False) == "net/core"
    # The script tests the converted value, so a glob or a dotted name never gains one.
    dirs = {"lib/*.c", "lib/.*\\.c", "drivers/net/ethernet/8390/ne.c"}
    assert maintainers.convert_file_pattern("lib/*.c", dirs.__contains__) == "lib/.*\\.c/"
    assert maintainers.convert_file_pattern("lib/x.c", dirs.__contains__) == "lib/x\\.c"


def test_file_match_pattern_depth_rules() -> None:
    assert maintainers.file_match_pattern("net/ipv4/tcp.c", "net/")
    assert maintainers.file_match_pattern("net/ipv6/route.c", "net/ipv6/.*\\.c")
    # A pattern without a slash at the end matches only at its own depth.
    assert not maintainers.file_match_pattern("net/ipv6/netfilter/x.c", "net/ipv6/.*\\.c")
    assert not maintainers.file_match_pattern("drivers/net/x.c", "net/")


def test_matching_sections_most_specific_first_and_exclusions() -> None:
    sections = _sections()
    names = [s.name for s in maintainers.matching_sections(sections, "net/ipv4/tcp.c")]
    assert names == ["NETWORKING [IPv4/IPv6]", "NETWORKING [GENERAL]", "THE REST"]
    names = [s.name for s in maintainers.matching_sections(sections, "net/bluetooth/hci_core.c")]
    assert names == ["BLUETOOTH SUBSYSTEM", "THE REST"]
    names = [s.name for s in maintainers.matching_sections(sections, "net/core/skmsg.c", [3])]
    assert names == ["NETWORKING [GENERAL]", "THE REST", "SOCKMAP"]
    names = [s.name for s in maintainers.matching_sections(sections, "include/linux/sk_msg.h")]
    assert "SOCKMAP" in names


def test_recipients_dedupe_map_and_leave_linus_out() -> None:
    sections = maintainers.matching_sections(_sections(), "net/ipv4/tcp.c")
    mailmap = maintainers.parse_mailmap("New Name <new@example.org> Old Name <old@example.org>\n")
    to, cc = maintainers.recipients(sections, mailmap)
    assert to == [
        '"David S. Miller" <davem@davemloft.net>',
        "David Ahern <dsahern@kernel.org>",
        "New Name <new@example.org>",
        "Eric Dumazet <edumazet@google.com>",
    ]
    assert cc == ["netdev@vger.kernel.org", "linux-kernel@vger.kernel.org"]
    to, cc = maintainers.recipients(
        maintainers.matching_sections(_sections(), "net/bluetooth/a.c"), maintainers.Mailmap()
    )
    assert "secret@example.org" not in cc and "linux-bluetooth@vger.kernel.org" in cc


def test_parse_email_quotes_like_get_maintainer() -> None:
    assert maintainers.parse_email("David S. Miller <davem@davemloft.net>") == (
        '"David S. Miller"',
        "davem@davemloft.net",
    )
    assert maintainers.parse_email("<a@b.org>") == ("", "a@b.org")
    assert maintainers.format_email("", "a@b.org") == "a@b.org"


def test_mailmap_forms() -> None:
    mailmap = maintainers.parse_mailmap(
        "# comment\nReal One <real@x.org>\n<good@x.org> <bad@x.org>\n"
        "Real Two <two@x.org> <old2@x.org>\n"
    )
    assert mailmap.map("Whoever <real@x.org>") == "Real One <real@x.org>"
    assert mailmap.map("Someone <bad@x.org>") == "Someone <good@x.org>"
    assert mailmap.map("Anyone <old2@x.org>") == "Real Two <two@x.org>"


@pytest.mark.parametrize(
    ("pattern", "text", "hit"),
    [
        (r"(?:\b|_)bpf(?:\b|_)", "int bpf_prog_run(void)", True),
        (r"(?:\b|_)bpf(?:\b|_)", "struct ebpfish", False),
        (r"\b(?i:clang|llvm)\b", "built with LLVM", True),
        (r"(?i)pidfd", "PIDFD_NONBLOCK", True),
        (r"phylink\.h|struct\s+phylink", "struct   phylink *pl;", True),
        (r"[^@]sifive", "user@sifive.com", False),
    ],
)
def test_keyword_prefilter_never_changes_the_answer(pattern: str, text: str, hit: bool) -> None:
    regex = re.compile(pattern, re.VERBOSE | re.ASCII)
    keyword = maintainers.Keyword(0, regex, maintainers._needles(regex))
    assert keyword.occurs_in(text, text.lower()) is hit
    assert (regex.search(text) is not None) is hit


# ---------------------------------------------------------------- ctl_table

SYSCTL_C = """\
static int max_backlog = SOMAXCONN * 2;
static unsigned long long_max __read_mostly = LONG_MAX;
int sysctl_demo_value __read_mostly = 60;
static char demo_name[16] = "core";
#define DEMO_LIMIT (1 << 10)
static int demo_limit = DEMO_LIMIT;

static struct ctl_table net_demo_table[] = {
	{
		.procname	= "somaxconn",
		.data		= &init_net.core.sysctl_somaxconn,
		.maxlen		= sizeof(int),
		.mode		= 0644,
		.extra1		= SYSCTL_ZERO,
		.extra2		= &max_backlog,
		.proc_handler	= proc_dointvec_minmax
	},
	{ }
};

static struct ctl_table demo_table[] = {
	{
		.procname	= "demo_value",   /* the demo */
		.data		= &sysctl_demo_value,
		.maxlen		= sizeof(int),
		.mode		= 0644,
		.proc_handler	= proc_dointvec_minmax,
		.extra1		= SYSCTL_ONE,
		.extra2		= &demo_limit,
	},
	{
		.procname	= "demo_name",
		.data		= demo_name,
		.maxlen		= sizeof(demo_name),
		.mode		= 0644,
		.proc_handler	= proc_dostring,
	},
	{ }
};

static struct ctl_table demo_root[] = {
	{
		.procname	= "debug",
		.mode		= 0555,
		.child		= demo_table,
	},
	{ }
};

static __net_init int demo_net_init(struct net *net)
{
	struct ctl_table *tbl = net_demo_table;

	if (!net_eq(net, &init_net)) {
		tbl = kmemdup(tbl, sizeof(net_demo_table), GFP_KERNEL);
	}
	net->demo_hdr = register_net_sysctl(net, "net/core", tbl);
	return 0;
}

static __init int demo_init(void)
{
	register_sysctl_table(demo_root);
	return 0;
}
"""


def test_tables_and_their_entries() -> None:
    found = ctl_table.tables(SYSCTL_C)
    assert list(found) == ["net_demo_table", "demo_table", "demo_root"]
    entry = found["net_demo_table"][0]
    assert entry.procname == "somaxconn"
    assert SYSCTL_C.splitlines()[entry.line - 1].strip().startswith('.procname\t= "somaxconn"')
    assert entry.fields["proc_handler"] == "proc_dointvec_minmax"
    assert found["demo_table"][0].fields["procname"] == '"demo_value"'


def test_directories_through_copies_and_child_links() -> None:
    resolved, unresolved = ctl_table.sysctls(SYSCTL_C)
    assert sorted(s.name for s in resolved) == [
        "debug.demo_name",
        "debug.demo_value",
        "net.core.somaxconn",
    ]
    assert unresolved == 0


def test_registration_forms() -> None:
    text = (
        'static struct ctl_table kern_table[] = {\n\t{\n\t\t.procname = "panic",\n\t},\n\t{ }\n};\n'
        'static struct ctl_table fs_t[] = {\n\t{\n\t\t.procname = "file-max",\n\t},\n\t{ }\n};\n'
        'static struct ctl_table lost[] = {\n\t{\n\t\t.procname = "nowhere",\n\t},\n\t{ }\n};\n'
        "DECLARE_SYSCTL_BASE(kernel, kern_table);\n"
        'static int __init f(void) { register_sysctl_init("fs", fs_t); return 0; }\n'
    )
    resolved, unresolved = ctl_table.sysctls(text)
    assert sorted(s.name for s in resolved) == ["fs.file-max", "kernel.panic"]
    assert unresolved == 1


def test_bounds_and_defaults_from_constants() -> None:
    init = ctl_table.initialisers(SYSCTL_C)
    macros = {**ctl_table.defines(SYSCTL_C), "SOMAXCONN": "4096"}

    def names(name: str) -> str | None:
        return init.get(name) or macros.get(name)

    assert ctl_table.bound("SYSCTL_ZERO", names) == 0
    assert ctl_table.bound("SYSCTL_INT_MAX", names) == 2**31 - 1
    assert ctl_table.bound("&max_backlog", names) == 8192
    assert ctl_table.bound("&demo_limit", names) == 1024
    assert ctl_table.bound("&long_max", names) == 2**63 - 1
    assert ctl_table.bound("&unknown_variable", names) is None
    assert ctl_table.default("&sysctl_demo_value", names, {}) == "60"
    assert ctl_table.default("demo_name", names, {}) == "core"
    net = dict(ctl_table.net_assignments("\tnet->core.sysctl_somaxconn = SOMAXCONN;\n"))
    assert ctl_table.default("&init_net.core.sysctl_somaxconn", names, net) == "4096"
    assert ctl_table.default("&init_net.core.other", names, net) is None


def test_ifdef_alternatives_are_no_default() -> None:
    text = (
        "#ifdef CONFIG_SECURITY_PERF_EVENTS_RESTRICT\n"
        "int sysctl_perf_event_paranoid __read_mostly = 3;\n#else\n"
        "int sysctl_perf_event_paranoid __read_mostly = 2;\n#endif\n"
        "#ifdef A\n#define LIMIT 4\n#else\n#define LIMIT 8\n#endif\nint once = 5;\n"
    )
    assert ctl_table.initialisers(text) == {"once": "5"}
    assert "LIMIT" not in ctl_table.defines(text)
    assert ctl_table.plain_handler("proc_dointvec_minmax")
    assert not ctl_table.plain_handler("proc_tcp_fastopen_key")


def test_evaluate_refuses_what_is_not_a_constant() -> None:
    assert ctl_table.evaluate("(1UL << 20) / 4", lambda _: None) == 262144
    assert ctl_table.evaluate("0644", lambda _: None) == 0o644
    assert ctl_table.evaluate("60 * HZ", lambda _: None) is None
    assert ctl_table.evaluate("__import__('os')", lambda _: None) is None
    assert ctl_table.evaluate("1 << 4096", lambda _: None) is None
