"""The kernel's documentation (reStructuredText) split into sections and sysctl entries.

Pure functions over text: the builder reads the (gzipped) files of
``linux-doc-6.1`` and hands each one's text over.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

#: Characters docutils accepts as section adornment.
_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:._<>!$%&,;?@\\|/])\1{2,}\s*$")
_PROC_SYS = re.compile(r"/proc/sys/([a-z0-9_/*]+)")
_ABI_WHAT = re.compile(r"^What:\s*(\S.*)$")
_TERM = re.compile(
    r"^([a-z][a-z0-9_]*(?:\s*(?:,|and|/)\s*[a-z][a-z0-9_]*)*)\s*(?:-\s+\S.*|:|\s*\(.*\))?\s*$"
)
_TERM_NAME = re.compile(r"[a-z][a-z0-9_]*")
#: A title word that can be a sysctl: lower case, or mixed case with an underscore
#: (``numa_balancing_promote_rate_limit_MBps``), not an ordinary capitalised word.
_SYSCTL_NAME = re.compile(r"[a-z0-9_\-]+|[A-Za-z0-9\-]*_[A-Za-z0-9_\-]*")


@dataclass(frozen=True)
class Section:
    """One section of one documentation file.

    :param title: its title line (for an ABI file, the ``What:`` path).
    :param anchor: the HTML id Sphinx gives it (empty for ABI entries).
    :param level: 1 for the file's top title, 2 below it, ...
    :param line: the 1-based line of the title in the file.
    :param text: its text up to the next section, adornment left out.
    """

    title: str
    anchor: str
    level: int
    line: int
    text: str


def make_id(title: str) -> str:
    """Return the id docutils gives a section titled ``title`` (its ``make_id``).

    >>> make_id("/proc/sys/net/ipv4/* Variables")
    'proc-sys-net-ipv4-variables'
    """
    text = unicodedata.normalize("NFKD", title.lower()).encode("ascii", "ignore").decode("ascii")
    text = "-".join(re.sub(r"[^a-z0-9]+", " ", text).split())
    return re.sub(r"^[-0-9]+|-+$", "", text)


def sections(text: str) -> list[Section]:
    """Split an rst file into its sections, in order (text before the first title is dropped)."""
    lines = text.splitlines()
    styles: list[tuple[str, bool]] = []
    heads: list[tuple[int, int, str, int]] = []  # (title line, first body line, title, level)
    i = 0
    while i + 1 < len(lines):
        over = _ADORNMENT.match(lines[i])
        if over and i + 2 < len(lines) and _is_title(lines[i + 1]) and _same(lines[i + 2], over):
            style = (over.group(1), True)
            title_at, body_at = i + 1, i + 3
        elif (
            _is_title(lines[i])
            and (u := _ADORNMENT.match(lines[i + 1]))
            and _previous_blank(lines, i)
        ):
            style = (u.group(1), False)
            title_at, body_at = i, i + 2
        else:
            i += 1
            continue
        if style not in styles:
            styles.append(style)
        heads.append((title_at, body_at, lines[title_at].strip(), styles.index(style) + 1))
        i = body_at
    found = []
    for n, (title_at, body_at, title, level) in enumerate(heads):
        end = (
            heads[n + 1][0] - (1 if _overlined(lines, heads[n + 1][0]) else 0)
            if n + 1 < len(heads)
            else len(lines)
        )
        body = "\n".join(lines[body_at:end]).strip("\n")
        found.append(Section(title, make_id(title), level, title_at + 1, body))
    return found


def _is_title(line: str) -> bool:
    return (
        bool(line.strip())
        and not line[0].isspace()
        and not _ADORNMENT.match(line)
        and not line.startswith("..")
    )


def _same(line: str, over: re.Match[str]) -> bool:
    u = _ADORNMENT.match(line)
    return bool(u) and u is not None and u.group(1) == over.group(1)


def _previous_blank(lines: list[str], i: int) -> bool:
    return i == 0 or not lines[i - 1].strip() or bool(_ADORNMENT.match(lines[i - 1]))


def _overlined(lines: list[str], title_at: int) -> bool:
    return title_at > 0 and bool(_ADORNMENT.match(lines[title_at - 1]))


def abi_entries(text: str) -> list[Section]:
    """Split a ``Documentation/ABI`` file into its ``What:`` entries.

    Several ``What:`` lines in a row describe one entry, titled by the first.
    """
    lines = text.splitlines()
    starts = [n for n, line in enumerate(lines) if _ABI_WHAT.match(line)]
    firsts = [n for n in starts if n - 1 not in starts]
    found = []
    for k, start in enumerate(firsts):
        end = firsts[k + 1] if k + 1 < len(firsts) else len(lines)
        title = lines[start].split(":", 1)[1].strip()
        found.append(Section(title, "", 2, start + 1, "\n".join(lines[start:end]).strip()))
    return found


# ---------------------------------------------------------------- sysctl entries

#: Documentation file → the sysctl directory it describes when its headings do not say.
SYSCTL_DOCS: dict[str, str] = {
    "Documentation/admin-guide/sysctl/kernel.rst": "kernel",
    "Documentation/admin-guide/sysctl/vm.rst": "vm",
    "Documentation/admin-guide/sysctl/fs.rst": "fs",
    "Documentation/admin-guide/sysctl/net.rst": "net/core",
    "Documentation/admin-guide/sysctl/user.rst": "user",
    "Documentation/admin-guide/sysctl/abi.rst": "abi",
    "Documentation/admin-guide/sysctl/sunrpc.rst": "sunrpc",
    "Documentation/networking/ip-sysctl.rst": "net/ipv4",
    "Documentation/networking/ipvs-sysctl.rst": "net/ipv4/vs",
    "Documentation/networking/mpls-sysctl.rst": "net/mpls",
    "Documentation/networking/mptcp-sysctl.rst": "net/mptcp",
    "Documentation/networking/netfilter-sysctl.rst": "net/netfilter",
    "Documentation/networking/nf_conntrack-sysctl.rst": "net/netfilter",
    "Documentation/networking/smc-sysctl.rst": "net/smc",
    "Documentation/networking/seg6-sysctl.rst": "net/ipv6/conf/interface",
    "Documentation/networking/ioam6-sysctl.rst": "net/ipv6/ioam6",
    "Documentation/networking/xfrm_sysctl.rst": "net/core",
}


@dataclass(frozen=True)
class SysctlEntry:
    """One sysctl that a documentation file describes.

    :param name: the sysctl's file name (``somaxconn``).
    :param directory: the ``/proc/sys`` directory the text puts it in (``net/core``);
        ``*`` or ``interface`` components are kept as written.
    :param section: the section it is in (its anchor is the citation).
    :param title: the line that names it (section title or definition-list term).
    :param text: the paragraph(s) that describe it.
    """

    name: str
    directory: str
    section: Section
    title: str
    text: str


def title_names(title: str) -> list[str]:
    """Return the sysctl names a section title documents, as ``check-sysctl-docs`` reads them.

    Words in parentheses and ``and`` are skipped; quotes, ``&``, commas and
    brackets are trimmed (``"acct"``, ``panic_on_oops, panic_on_warn``).
    """
    names = []
    in_brackets = False
    for word in title.split():
        if not in_brackets and word.startswith("("):
            in_brackets = True
        if not in_brackets:
            token = _trim_punct(word)
            if token and token != "and":
                names.append(token)
        if in_brackets and word.endswith(")"):
            in_brackets = False
    return names


def _trim_punct(value: str) -> str:
    value = re.sub(r'^["&]+', "", value)
    return re.sub(r'[\]\["&,}]+$', "", value)


def sysctl_entries(path: str, text: str) -> Iterator[SysctlEntry]:
    """Yield the sysctls one of the sysctl documentation files describes.

    Two layouts exist: one section per sysctl (``admin-guide/sysctl/*.rst``) and a
    definition list of ``name - TYPE`` terms (``networking/*sysctl*.rst``).
    """
    directory = SYSCTL_DOCS.get(path, "")
    for section in sections(text):
        proc = _PROC_SYS.search(section.title)
        if proc:
            directory = proc.group(1).rstrip("/*").rstrip("/")
        terms = list(_terms(section.text))
        if terms:
            for title, body in terms:
                for name in _TERM_NAME.findall(title.split(" - ")[0].split("(")[0]):
                    if name != "and":
                        yield SysctlEntry(name, directory, section, title, body)
        elif not proc and section.level > 1:
            for name in (n.rstrip(":") for n in title_names(section.title)):
                if _SYSCTL_NAME.fullmatch(name):
                    yield SysctlEntry(name, directory, section, section.title, section.text)


def _terms(text: str) -> Iterator[tuple[str, str]]:
    # A definition list: a term at column 0 ("name - TYPE" or a bare name), then
    # an indented block.
    lines = text.splitlines()
    n = 0
    while n < len(lines):
        line = lines[n]
        if _is_term(line) and n + 1 < len(lines) and _indented(lines[n + 1]):
            end = n + 1
            while end < len(lines) and (not lines[end].strip() or _indented(lines[end])):
                end += 1
            yield line.strip(), "\n".join(lines[n:end]).strip()
            n = end
        else:
            n += 1


def _is_term(line: str) -> bool:
    return bool(_TERM.match(line)) and (" - " in line or bool(_TERM_NAME.fullmatch(line.strip())))


def _indented(line: str) -> bool:
    return line[:1] in ("\t", " ") and bool(line.strip())
