"""The knowledge base built from the real linux-doc-6.1 and linux-source-6.1 packages.

The full one is the one ``setup.sh`` builds as root (required under
KASSIST_REQUIRE_REAL=1); a small one is built here from a subset of the same
packages to test the builder itself. The answers are checked against the
kernel's own ``scripts/get_maintainer.pl`` and source files, extracted from
the same tarball.
"""

from __future__ import annotations

import gzip
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.knowledge import KnowledgeBase
from assistant.knowledge.base import running_release, same_series
from assistant.knowledge.build import build
from assistant.knowledge.reference import (
    agreement,
    check_sysctl_docs,
    corpus_guilty_files,
    extract_tree,
)
from assistant.knowledge.sources import DOC_ROOT, SOURCE_TARBALL, installed_sources
from tests.conftest import CORPUS_DIR, require, require_knowledge_base, run_kassist

SUBSET = (
    "Documentation/admin-guide/sysctl/",
    "Documentation/networking/ip-sysctl.rst",
    "Documentation/dev-tools/kasan.rst",
    "net/core/",
    "kernel/sysctl.c",
    "kernel/watchdog.c",
    "include/linux/socket.h",
)


def _packages_installed() -> bool:
    return SOURCE_TARBALL.is_file() and (DOC_ROOT / "Documentation").is_dir()


@pytest.fixture(scope="module")
def real_kb() -> Iterator[KnowledgeBase]:
    kb = require_knowledge_base()
    yield kb
    kb.close()


@pytest.fixture(scope="module")
def subset_kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnowledgeBase]:
    require(_packages_installed(), "linux-doc-6.1 and linux-source-6.1 are not installed")
    target = tmp_path_factory.mktemp("kassist-kb-subset") / "kb.sqlite"
    lines: list[str] = []
    build(target, installed_sources(), progress=lines.append, keep=lambda p: p.startswith(SUBSET))
    assert any("streaming" in line for line in lines)
    kb = KnowledgeBase(target)
    yield kb
    kb.close()


@pytest.fixture(scope="module")
def corpus_files() -> list[str]:
    guilty = CORPUS_DIR / "syzkaller-linux-guilty.dev.jsonl"
    require(guilty.is_file(), f"the crash corpus is missing ({guilty})")
    return corpus_guilty_files(guilty, CORPUS_DIR / "syzkaller-linux-reports.dev.jsonl")


@pytest.fixture(scope="module")
def reference_tree(
    real_kb: KnowledgeBase, corpus_files: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    require(shutil.which("perl") is not None, "perl is not installed")
    require(_packages_installed(), "linux-source-6.1 is not installed")
    tree = tmp_path_factory.mktemp("kassist-kb-tree")
    wanted = {real_kb.tree_path(p) for p in corpus_files}
    wanted |= {s.source for s in real_kb.sysctls()}
    wanted |= {"include/linux/socket.h"}
    # ... and, for scripts/check-sysctl-docs, every C file that registers a sysctl table.
    extract_tree(
        SOURCE_TARBALL,
        tree,
        wanted.__contains__,
        lambda p, data: p.endswith(".c") and b"register_sysctl_" in data,
    )
    return tree


# ---------------------------------------------------------------- the builder, on a subset


def test_subset_build_holds_what_was_kept(subset_kb: KnowledgeBase) -> None:
    counts = subset_kb.counts()
    assert counts["documentation files"] == len(
        {p for p in subset_kb._conn.execute("SELECT DISTINCT path FROM docs")}
    )
    paths = {r[0] for r in subset_kb._conn.execute("SELECT DISTINCT path FROM docs")}
    assert all(p.startswith(SUBSET) for p in paths)
    assert "Documentation/admin-guide/sysctl/kernel.rst" in paths
    assert counts["MAINTAINERS sections"] > 1000  # MAINTAINERS is always read whole
    assert subset_kb.kernel_version.startswith("6.1.")
    assert subset_kb.meta["source_package_version"].startswith(subset_kb.kernel_version)
    sources = {s.source for s in subset_kb.sysctls()}
    assert sources and all(s.startswith(SUBSET) for s in sources)


def test_subset_search_cites_sections_that_exist(subset_kb: KnowledgeBase) -> None:
    hits = subset_kb.search("KASAN shadow memory use-after-free", limit=3)
    assert hits and hits[0].path == "Documentation/dev-tools/kasan.rst"
    for hit in hits:
        assert subset_kb.section(hit.path, hit.anchor) is not None
        assert hit.cite == f"{hit.path}#{hit.anchor}"
    scoped = subset_kb.search("panic", limit=5, prefix="Documentation/admin-guide/sysctl/")
    assert scoped and all(h.path.startswith("Documentation/admin-guide/sysctl/") for h in scoped)
    # Query syntax is data, never FTS5 operators (a leak would raise a syntax error).
    assert isinstance(subset_kb.search('NEAR( "x* OR -', limit=2), list)
    assert subset_kb.search("!!!") == []


def test_subset_and_full_builds_agree(subset_kb: KnowledgeBase, real_kb: KnowledgeBase) -> None:
    # A bound or default defined in a file the subset left out is unknown there,
    # never different.
    for mine in subset_kb.sysctls():
        full = real_kb.sysctl(mine.name)
        assert full is not None, mine.name
        assert (full.source, full.line, full.handler) == (mine.source, mine.line, mine.handler)
        for field in ("minimum", "maximum", "default"):
            if getattr(mine, field) is not None:
                assert getattr(full, field) == getattr(mine, field), (mine, field)


# ---------------------------------------------------------------- the full knowledge base


def test_maintainers_agree_with_get_maintainer_pl(
    real_kb: KnowledgeBase, corpus_files: list[str], reference_tree: Path
) -> None:
    paths = sorted({real_kb.tree_path(p) for p in corpus_files})
    assert len(paths) >= 50
    same, total, differ = agreement(
        reference_tree, paths, lambda p: [*real_kb.recipients(p)[0], *real_kb.recipients(p)[1]]
    )
    assert same / total >= 0.95, differ[:5]


def test_recipients_split_people_from_lists(real_kb: KnowledgeBase) -> None:
    to, cc = real_kb.recipients("net/ipv6/ip6_output.c")
    assert to and all(re.search(r"<[^>]+@[^>]+>$", p) for p in to)
    assert "netdev@vger.kernel.org" in cc
    assert not any("torvalds" in p for p in to)  # get_maintainer.pl leaves Linus out
    names = [s.name for s in real_kb.maintainers("net/ipv6/ip6_output.c")]
    assert names[0] == "NETWORKING [IPv4/IPv6]" and "THE REST" in names
    # A path as a crash report gives it maps onto the tree.
    assert real_kb.tree_path("/home/u/src/linux/net/ipv6/ip6_output.c") == "net/ipv6/ip6_output.c"
    assert real_kb.tree_path("./net/ipv6/ip6_output.c") == "net/ipv6/ip6_output.c"


def test_sysctl_lines_are_their_procname(real_kb: KnowledgeBase, reference_tree: Path) -> None:
    sysctls = real_kb.sysctls()
    assert len(sysctls) > 500
    for sysctl in sysctls:
        text = (reference_tree / sysctl.source).read_text(errors="replace")
        line = text.splitlines()[sysctl.line - 1]
        procname = sysctl.name.rsplit(".", 1)[1]
        # `.procname = "x"`, a macro's argument `E(X, "x")`, or `.procname = x_procname`
        # with `x_procname[] = "x"` in the file.
        named = re.search(r"\.procname\s*=\s*(\w+)", line)
        constant = named and re.search(
            rf'\b{named.group(1)}\[\]\s*=\s*"{re.escape(procname)}"', text
        )
        assert f'"{procname}"' in line or constant, (sysctl, line)


def test_somaxconn_from_the_sources(real_kb: KnowledgeBase, reference_tree: Path) -> None:
    somaxconn = real_kb.sysctl("net.core.somaxconn")
    assert somaxconn is not None
    assert somaxconn.source == "net/core/sysctl_net_core.c"
    assert somaxconn.handler == "proc_dointvec_minmax"
    assert somaxconn.minimum == 0
    header = (reference_tree / "include/linux/socket.h").read_text()
    defined = re.search(r"#define SOMAXCONN\s+(\d+)", header)
    assert defined and somaxconn.default == defined.group(1)
    assert somaxconn.doc is not None and "somaxconn" in somaxconn.doc.text
    assert real_kb.sysctl("net/core/somaxconn") == somaxconn
    assert real_kb.sysctl("net.core.no_such_sysctl") is None


def test_documented_share_is_most(real_kb: KnowledgeBase) -> None:
    counts = real_kb.counts()
    assert counts["sysctls documented"] / counts["sysctls (ctl_table)"] > 0.5
    kernel_docs = [s for s in real_kb.sysctls() if s.name.startswith("kernel.") and s.doc]
    assert all(s.doc and s.doc.path.endswith("sysctl/kernel.rst") for s in kernel_docs)


# ---------------------------------------------------------------- the CLI


def test_cli_status_says_whether_the_running_kernel_differs(real_kb: KnowledgeBase) -> None:
    proc = run_kassist(["kb", "status"], env={"KASSIST_KB": str(real_kb.path)})
    assert proc.returncode == 0, proc.stderr
    assert real_kb.kernel_version in proc.stdout
    if same_series(real_kb.kernel_version, running_release()):
        assert "the same series" in proc.stdout
    else:
        assert f"{running_release()}: differs from {real_kb.kernel_version}" in proc.stdout


def test_cli_search_prints_citations(real_kb: KnowledgeBase) -> None:
    proc = run_kassist(
        ["kb", "search", "hung", "task", "timeout", "-n", "2"],
        env={"KASSIST_KB": str(real_kb.path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^Documentation/\S+\.rst#[a-z0-9-]+ ", proc.stdout, re.M)


def test_missing_knowledge_base_is_one_line(tmp_path: Path) -> None:
    env = {"KASSIST_KB": str(tmp_path / "none.sqlite")}
    for args in (["kb", "status"], ["kb", "search", "x"], ["kb", "maintainers", "net/core/sock.c"]):
        proc = run_kassist(args, env=env)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "kassist kb build" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_documented_verdicts_agree_with_check_sysctl_docs(
    real_kb: KnowledgeBase, reference_tree: Path
) -> None:
    require(shutil.which("gawk") is not None, "gawk is not installed (scripts/check-sysctl-docs)")
    sources = sorted(
        str(p.relative_to(reference_tree))
        for p in reference_tree.rglob("*.c")
        if b"register_sysctl_" in p.read_bytes()
    )
    same = listed = 0
    for table in ("kernel", "vm", "fs"):
        doc_path = f"Documentation/admin-guide/sysctl/{table}.rst"
        doc = reference_tree / f"{table}.rst"
        doc.write_bytes(gzip.decompress((DOC_ROOT / f"{doc_path}.gz").read_bytes()))
        entries, missing = check_sysctl_docs(reference_tree, table, doc, sources)
        ours = real_kb.documented_in(doc_path)
        # Every name the script counts as documented, the knowledge base does too (vm.rst
        # writes some titles "max_map_count:", which the script keeps with the colon).
        # fs.rst underlines its entries with "-", which the script does not read: what
        # it counts there are the words of the chapter titles ("/proc/sys/fs", "1.").
        if table != "fs":
            assert {name.rstrip(":") for name in missing} <= ours
        same += sum(1 for name, documented in entries.items() if (name in ours) == documented)
        listed += len(entries)
    assert listed >= 10
    assert same / listed >= 0.95
