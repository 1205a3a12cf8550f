"""``kassist docs``: facts with sources, pages, undocumented sysctls and draft stubs."""

from __future__ import annotations

import calendar
import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from assistant.docs import facts as facts_mod
from assistant.docs import pages
from assistant.docs.facts import canonical
from assistant.docs.host import drifts, note, who_set
from assistant.docs.undocumented import Documentation, Undocumented, draft_stub, undocumented
from assistant.knowledge import KnowledgeBase, SysctlDef
from assistant.knowledge.base import running_release
from assistant.sysctl_d import (
    Setting,
    assignments_of,
    effective,
    read_settings,
    same_value,
    sysctl_d_files,
)
from probes.stats import sysctl_names
from tests.conftest import require, require_knowledge_base, run_kassist


@pytest.fixture(scope="module")
def real_kb() -> KnowledgeBase:
    kb = require_knowledge_base()
    return kb


def test_sysctl_d_precedence(tmp_path: Path) -> None:
    early = tmp_path / "10-a.conf"
    late = tmp_path / "99-b.conf"
    early.write_text("# net.core.somaxconn = 1\nnet.core.somaxconn = 1024\n")
    late.write_text("; comment\n-net/core/somaxconn=2048\nvm.swappiness = 10\n")
    found = assignments_of("net.core.somaxconn", read_settings([early, late]))
    assert [(s.line, s.value) for s in found] == [(2, "1024"), (2, "2048")]
    assert found[-1].cite == f"{late}:2" and found[-1].ignore_failure
    assert assignments_of("kernel.panic", read_settings([early, late])) == []


def test_normalise_and_canonical_names() -> None:
    assert facts_mod.normalise("/proc/sys/net/core/somaxconn") == "net.core.somaxconn"
    assert (
        facts_mod.normalise("net/ipv4/conf/eth0.10/rp_filter") == "net.ipv4.conf.eth0/10.rp_filter"
    )
    assert (
        facts_mod.normalise("net.ipv4.conf.eth0/10.rp_filter") == "net.ipv4.conf.eth0/10.rp_filter"
    )
    assert canonical("net.ipv4.conf.eth0.forwarding") == "net.ipv4.conf.*.forwarding"
    assert canonical("net.ipv6.neigh.lo.retrans_time") == "net.ipv6.neigh.*.retrans_time"
    assert canonical("net.ipv4.tcp_rmem") == "net.ipv4.tcp_rmem"


def test_draft_stub_is_marked_and_cites_its_definition(real_kb: KnowledgeBase) -> None:
    definition = real_kb.sysctl("kernel.watchdog_thresh")
    assert isinstance(definition, SysctlDef)
    stub = draft_stub(Undocumented("kernel.watchdog_thresh", "kernel", definition), real_kb, "x")
    assert stub.startswith("watchdog_thresh\n===============\n")
    assert "DRAFT by kassist" in stub and "not upstream text" in stub
    assert f"{definition.source}:{definition.line}" in stub
    assert "Range: 0 to 60." in stub
    missing = draft_stub(Undocumented("kernel.nope", "kernel", None), real_kb, "6.18")
    assert "No ctl_table entry" in missing and "TODO" not in missing


def test_somaxconn_page_every_part_sourced_and_grounded(real_kb: KnowledgeBase) -> None:
    facts = facts_mod.gather(real_kb, "net.core.somaxconn", running_release())
    parts = pages.paragraphs(facts)
    assert all(source.strip() for _h, _t, source in parts)
    evidence = "\n".join([
        facts.doc.text if facts.doc else "",
        str(facts.definition),
        facts.value or "",
        str(facts.rule),
        facts.running_release,
        facts.kernel_version or "",
        facts.proc_path,
    ])  # fmt: skip
    for _heading, text, _source in parts:
        for number in re.findall(r"\b\d+\b", text):
            assert number in evidence, (number, text)
    page = pages.markdown(facts)
    assert "*Source: Documentation/networking/ip-sysctl.rst#" in page
    assert "*Source: net/core/sysctl_net_core.c:" in page
    value = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    assert f": {value}." in page
    assert "Each network namespace has its own copy." in page
    rst = pages.rst(facts)
    assert (
        rst.startswith("somaxconn\n=========\n") and ".. source: net/core/sysctl_net_core.c:" in rst
    )


def test_undocumented_agrees_with_the_documentation(real_kb: KnowledgeBase) -> None:
    names = sysctl_names()
    items = undocumented(real_kb, names)
    docs = Documentation(real_kb)
    assert items and all(not docs.describes(u.name) for u in items)
    listed = {u.name for u in items}
    assert "kernel.panic" not in listed  # kernel.rst has a "panic" section
    assert "net.core.somaxconn" not in listed
    groups = [u.group for u in items]
    assert groups == sorted(groups)


def test_cli_docs_sysctl_json_and_notice(real_kb: KnowledgeBase) -> None:
    env = {"KASSIST_KB": str(real_kb.path)}
    proc = run_kassist(["docs", "sysctl", "vm.swappiness", "--format", "json"], env=env)
    assert proc.returncode == 0, proc.stderr
    [doc] = json.loads(proc.stdout)
    assert doc["doc_cite"] == "Documentation/admin-guide/sysctl/vm.rst#swappiness"
    assert doc["definition"]["maximum"] == 200
    assert all(p["source"] for p in doc["paragraphs"])
    # Notices only, one line each (a withheld model paragraph, the agent's journal when no
    # agent runs); the bundled model's paragraph is shown only when the checker passed it.
    assert all(line.startswith("kassist: ") for line in proc.stderr.splitlines())
    model = doc["model_paragraph"]
    assert model is not None and model["source"] == doc["doc_cite"]
    shown = [p for p in doc["paragraphs"] if p["heading"].startswith("In short")]
    if model["shown"]:
        assert shown and shown[0]["text"] == model["text"]
    else:
        assert not shown and "vm.swappiness: the model's paragraph was withheld" in proc.stderr


#: The pages of vm.swappiness on machines whose facts hold other numbers, "30" among them:
#: the checker's verdict must not depend on the machine.
MACHINES: dict[str, Callable[[KnowledgeBase], facts_mod.SysctlFacts]] = {
    "this machine": lambda kb: facts_mod.gather(kb, "vm.swappiness", running_release()),
    "a kernel release holding 30": lambda kb: facts_mod.gather(
        kb, "vm.swappiness", "6.18.30-fc-v1230"
    ),
    "an admin's vm.swappiness = 30": lambda kb: dataclasses.replace(
        facts_mod.gather(kb, "vm.swappiness", running_release()),
        value="30",
        settings=[Setting("vm.swappiness", "30", "/etc/sysctl.d/99-swap.conf", 1)],
    ),
    "an agent's change at 12:30": lambda kb: dataclasses.replace(
        facts_mod.gather(kb, "vm.swappiness", running_release()),
        changes=[
            facts_mod.Change(3, "verified", calendar.timegm((2026, 11, 30, 12, 30, 0)), "60", "61")
        ],
    ),
}


@pytest.mark.parametrize("machine", sorted(MACHINES))
@pytest.mark.parametrize(
    ("draft", "caught"),
    [
        # a wrong default (the documentation says 60)
        ("vm.swappiness sets the relative IO cost of swapping. The default value is 30.", "30"),
        # an invented key
        ("vm.swappiness and vm.swap_boost set the relative IO cost of swapping.", "swap_boost"),
        # a wrong unit
        ("vm.swappiness sets the relative IO cost of swapping in milliseconds.", "milliseconds"),
        # a sentence of the model's own, in the documentation's words
        (
            "vm.swappiness sets the relative IO cost of swapping. Swap IO is cheaper at 100.",
            "does not say",
        ),
    ],
)
def test_the_docs_checker_catches_planted_false_facts(
    real_kb: KnowledgeBase, draft: str, caught: str, machine: str
) -> None:
    from assistant.docs.explain import paragraph_problems

    problems = paragraph_problems(draft, MACHINES[machine](real_kb), [])
    assert problems and caught in "; ".join(problems)


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_the_true_default_passes_on_any_machine(real_kb: KnowledgeBase, machine: str) -> None:
    from assistant.docs.explain import paragraph_problems

    true = "vm.swappiness sets the rough relative IO cost of swapping. The default value is 60."
    assert paragraph_problems(true, MACHINES[machine](real_kb), []) == []


def test_a_faithful_condensation_passes(real_kb: KnowledgeBase) -> None:
    from assistant.docs.explain import paragraph_problems

    facts = facts_mod.gather(real_kb, "vm.swappiness", running_release())
    good = "vm.swappiness defines the rough relative IO cost of swapping and filesystem paging."
    assert paragraph_problems(good, facts, []) == []


def test_docs_without_a_knowledge_base_degrade_to_one_notice(tmp_path: Path) -> None:
    env = {"KASSIST_KB": str(tmp_path / "none.sqlite")}
    proc = run_kassist(["docs", "sysctl", "net.core.somaxconn"], env=env)
    assert proc.returncode == 0, proc.stderr
    assert "kernel knowledge base not built" in proc.stderr
    assert "## On this machine" in proc.stdout and "Traceback" not in proc.stderr
    proc = run_kassist(["docs", "undocumented"], env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


def test_cli_docs_crash_note(real_kb: KnowledgeBase, tmp_path: Path) -> None:
    env = {"KASSIST_KB": str(real_kb.path), "XDG_STATE_HOME": str(tmp_path)}
    log = Path(__file__).parent / "data" / "kasan-uaf-ip6_send_skb.log"
    stored = run_kassist(["triage", "--store", str(log)], env=env)
    assert stored.returncode == 0, stored.stderr
    listed = run_kassist(["crashes", "list", "--format", "json"], env=env)
    signature = json.loads(listed.stdout)[0]["signature"]
    proc = run_kassist(["docs", "crash", signature[:8]], env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("# Incident: KASAN: use-after-free Read in ip6_send_skb\n")
    assert "kernels 4.12.0-rc3+" in out and f"signature {signature}" in out
    to, cc = real_kb.recipients("net/ipv6/ip6_output.c")
    assert f"To: {', '.join(to)}" in out and f"Cc: {', '.join(cc)}" in out
    assert re.search(r"^- .+: Documentation/\S+#\S+$", out, re.M)
    assert out.count("*Source: ") >= 3


def test_per_device_keys_find_their_documentation(real_kb: KnowledgeBase) -> None:
    assert facts_mod.device_free("net/ipv4/conf/eth0") == "net/ipv4/conf/*"
    assert facts_mod.device_free("net/ipv4/conf/interface/") == "net/ipv4/conf/*"
    facts = facts_mod.gather(real_kb, "net.ipv4.conf.lo.rp_filter", running_release())
    assert facts.doc is not None and facts.doc.path == "Documentation/networking/ip-sysctl.rst"
    assert "rp_filter" in facts.doc.text
    facts = facts_mod.gather(real_kb, "net.ipv6.conf.lo.forwarding", running_release())
    assert facts.doc is not None and "ipv6" in facts.doc.anchor


# --- boot configuration, as systemd-sysctl reads it, against the live values ----------------


def test_boot_configuration_is_read_as_systemd_sysctl_reads_it(tmp_path: Path) -> None:
    etc, run, lib = (tmp_path / d for d in ("etc", "run", "lib"))
    for d in (etc, run, lib):
        d.mkdir()
    (lib / "10-a.conf").write_text("fs.protected_fifos = 1\nnet.ipv4.conf.*.rp_filter = 2\n")
    (lib / "50-pid.conf").write_text("kernel.pid_max = 4194304\n")
    (etc / "50-pid.conf").write_text("# masks the file of the same name in lib\n")
    (run / "60-b.conf").write_text("fs.protected_fifos = 2\nnet/ipv4/conf/lo/rp_filter = 0\n")
    conf = tmp_path / "sysctl.conf"
    conf.write_text("vm.swappiness = 10\n")
    (etc / "99-sysctl.conf").symlink_to(conf)  # Debian's link: the file is read once
    files = sysctl_d_files([str(etc), str(run), str(lib)], str(conf))
    assert [(p.parent.name, p.name) for p in files] == [
        ("lib", "10-a.conf"), ("etc", "50-pid.conf"), ("run", "60-b.conf"),
        ("etc", "99-sysctl.conf"),
    ]  # fmt: skip
    names = ["net.ipv4.conf.lo.rp_filter", "net.ipv4.conf.eth0/10.rp_filter", "net.ipv4.tcp_rmem"]
    boot = effective(read_settings(files), names)
    assert {k: s.value for k, s in boot.items()} == {
        "fs.protected_fifos": "2",  # the last assignment wins
        "vm.swappiness": "10",
        "net.ipv4.conf.lo.rp_filter": "0",  # an explicit assignment beats a glob
        "net.ipv4.conf.eth0/10.rp_filter": "2",  # '*' matches one whole component
    }
    assert boot["fs.protected_fifos"].cite == f"{run / '60-b.conf'}:1"


def _protect_links(key: str, value: str, line: int) -> Setting:
    return Setting(key, value, "/usr/lib/sysctl.d/99-protect-links.conf", line)


def test_the_host_note_credits_a_file_only_with_the_value_it_sets() -> None:
    boot = {
        "fs.protected_symlinks": _protect_links("fs.protected_symlinks", "1", 10),
        "fs.protected_hardlinks": _protect_links("fs.protected_hardlinks", "1", 9),
        "kernel.pid_max": Setting(
            "kernel.pid_max", "4194304", "/usr/lib/sysctl.d/50-pid-max.conf", 12
        ),
        "net.ipv4.tcp_rmem": Setting("net.ipv4.tcp_rmem", "4096 87380  6291456", "/etc/x.conf", 1),
    }
    live = {"fs.protected_symlinks": "0", "fs.protected_hardlinks": "1", "kernel.pid_max": "32768",
            "net.ipv4.tcp_rmem": "4096 87380 6291456"}.get  # fmt: skip

    def security(key: str) -> bool:
        return key.startswith("fs.protected_")

    found, held = drifts(boot, live, security)
    assert held == 2
    assert [(d.key, d.security) for d in found] == [
        ("fs.protected_symlinks", True),
        ("kernel.pid_max", False),
    ]
    assert who_set("fs.protected_hardlinks", "1", boot, {}) == (
        "set by /usr/lib/sysctl.d/99-protect-links.conf:9"
    )
    assert who_set("fs.protected_symlinks", "0", boot, {}) == (
        "not what boot configuration sets (1, /usr/lib/sysctl.d/99-protect-links.conf:10):"
        " changed after boot"
    )
    symlinks = SysctlDef("fs.protected_symlinks", "fs_namei_sysctls", "fs/namei.c", 1040,
                         "proc_dointvec_minmax", 0, 1, "1")  # fmt: skip
    text = note("6.18.0", "6.1.192", boot, [symlinks], live, security, {})
    assert (
        "- **security-relevant** `fs.protected_symlinks`: boot configuration sets 1"
        " (/usr/lib/sysctl.d/99-protect-links.conf:10); the value here is 0"
    ) in text
    assert "- `kernel.pid_max`: boot configuration sets 4194304" in text
    assert "2 hold their value, 2 do not" in text
    assert "set by /usr/lib/sysctl.d/99-protect-links.conf:10" not in text
    assert "Value 0, default 1; not what boot configuration sets (1," in text


def test_cli_host_credits_files_only_with_the_live_value(real_kb: KnowledgeBase) -> None:
    # Whatever this machine's files and values: every file the note credits sets the live
    # value there, and every drift it reports is one.
    proc = run_kassist(["docs", "host"], env={"KASSIST_KB": str(real_kb.path)})
    assert proc.returncode == 0, proc.stderr
    credited = re.findall(r"^Value (.+?), default .+?; set by (/\S+):(\d+)\.$", proc.stdout, re.M)
    drifted = re.findall(
        r"^- (?:\*\*security-relevant\*\* )?`(\S+)`: boot configuration sets (.+?)"
        r" \((/\S+):(\d+)\); (?:the value here is (.+)|no such sysctl here)$", proc.stdout, re.M,
    )  # fmt: skip
    settings = {(s.path, s.line): s for s in read_settings()}
    for value, path, line in credited:
        assert same_value(settings[(path, int(line))].value, value), (path, line, value)
    for key, value, path, line, live in drifted:
        assert settings[(path, int(line))].value == value
        here = facts_mod.proc_value(key)
        assert (here or "") == live and (here is None or not same_value(value, here)), key
    boot = effective(read_settings(), sysctl_names())
    assert f"{len(boot)} sysctls set by sysctl.d files" in proc.stdout


def test_an_unknown_key_is_one_line_with_the_nearest_name() -> None:
    proc = run_kassist(["docs", "sysctl", "vm.swapiness", "--no-llm"])
    assert proc.returncode != 0 and proc.stdout == ""
    lines = [ln for ln in proc.stderr.splitlines() if "knowledge base not built" not in ln]
    assert len(lines) == 1 and lines[0].endswith("did you mean vm.swappiness?"), proc.stderr
    bad = run_kassist(["docs", "sysctl", "net..core", "--no-llm"])
    assert bad.returncode != 0 and "is not a sysctl name" in bad.stderr


def test_a_sibling_keys_meaning_or_default_is_caught(real_kb: KnowledgeBase) -> None:
    # kernel.rst documents msgmax, msgmnb and msgmni in one section, a paragraph each: a
    # paragraph on msgmnb may use its own (a queue, 16384), not msgmax's (a message, 8192).
    from assistant.docs.explain import paragraph_problems

    facts = facts_mod.gather(real_kb, "kernel.msgmnb", running_release())
    require(facts.doc is not None, "kernel.msgmnb has no documentation in this knowledge base")
    wrong = "kernel.msgmnb is the maximum size of an IPC message, in bytes. 8192 by default."
    assert "8192" in "; ".join(paragraph_problems(wrong, facts, []))
    true = "kernel.msgmnb is the maximum size of an IPC queue, in bytes. 16384 by default."
    assert paragraph_problems(true, facts, []) == []


def test_whether_a_boolean_is_on_is_plain_words(real_kb: KnowledgeBase) -> None:
    from assistant.docs.explain import paragraph_problems

    facts = facts_mod.gather(real_kb, "net.ipv4.conf.all.proxy_arp", running_release())
    require(facts.doc is not None, "proxy_arp has no documentation in this knowledge base")
    good = "net.ipv4.conf.all.proxy_arp controls whether proxy arp for the interface is enabled."
    assert paragraph_problems(good, facts, []) == []


def test_the_interface_a_per_interface_key_is_set_for_may_be_said(real_kb: KnowledgeBase) -> None:
    # net.ipv6.conf.lo.mtu is lo's own: a paragraph may say so; another interface, or an
    # interface named for the "all" entry, is still refused.
    from assistant.docs.explain import interface_of, paragraph_problems

    facts = facts_mod.gather(real_kb, "net.ipv6.conf.lo.mtu", running_release())
    require(facts.doc is not None, "net.ipv6.conf.*.mtu has no documentation here")
    assert interface_of(facts.name) == "lo" and interface_of("net.ipv4.conf.all.mtu") is None
    good = "net.ipv6.conf.lo.mtu sets the default maximum transfer unit for the interface lo."
    assert paragraph_problems(good, facts, []) == []
    wrong = "net.ipv6.conf.lo.mtu sets the default maximum transfer unit for the interface eth7."
    assert paragraph_problems(wrong, facts, [])
