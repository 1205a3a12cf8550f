"""Documentation sections cut into passages, and passages into the sentences an answer quotes.

Pure functions over a section's rst text. A section that is a definition list (the
sysctl files' ``name - TYPE`` entries, cgroup-v2's interface files, /proc/meminfo's
fields) gives one passage per entry, headed by its term; other sections give runs of
paragraphs of at most :data:`PASSAGE_CHARS`. A passage keeps its section's citation
(``Documentation/...#anchor``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

#: A passage's longest text (characters) before paragraphs go to a new passage.
PASSAGE_CHARS = 900
#: A definition-list term's longest line (characters): longer lines are prose.
_TERM_CHARS = 80
#: A term's longest name that heads its entry's first sentence.
TERM_NAME_CHARS = 48
#: A literal block's most lines for it to join the sentence that introduces it.
LITERAL_LINES = 3

_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)]|\(\w\)|#\.)\s")
_TABLE_RULE = re.compile(r"^\s*(?:[=+\-][\s=+\-]*[=+\-]{2}[\s=+\-]*|\|.*\|)\s*$")
_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:._<>!$%&,;?@\\|/])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^\s*\.\.\s")


@dataclass(frozen=True)
class Passage:
    """A piece of one documentation section that retrieval ranks and an answer cites.

    :param path: the section's file (``Documentation/admin-guide/sysctl/vm.rst``).
    :param anchor: the section's anchor (``swappiness``; empty for ABI entries).
    :param section: the section's title.
    :param heading: the definition-list term it describes (``somaxconn - INTEGER``), or
        the section title.
    :param text: its rst text.
    """

    path: str
    anchor: str
    section: str
    heading: str
    text: str

    @property
    def cite(self) -> str:
        """Return the citation ``Documentation/path.rst#anchor``."""
        return f"{self.path}#{self.anchor}" if self.anchor else self.path


def _indent(line: str) -> int:
    return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())


def _is_term(lines: list[str], n: int, base: int) -> bool:
    # A definition-list term: a short line at the list's indentation whose next line is
    # more indented, and which is neither a bullet, a directive nor a sentence.
    line = lines[n]
    if not line.strip() or n + 1 >= len(lines) or not lines[n + 1].strip():
        return False
    stripped = line.strip()
    return (
        _indent(line) <= base + 2
        and _indent(lines[n + 1]) > _indent(line)
        and len(stripped) <= _TERM_CHARS
        and not _BULLET.match(line)
        and not _DIRECTIVE.match(line)
        and not _TABLE_RULE.match(line)
        and not stripped.endswith((".", ",", "::", ";"))
    )


def _entries(text: str) -> list[tuple[str, str]]:
    # (term, body) for each definition-list entry; [] when the text has fewer than two.
    lines = text.splitlines()
    body = [line for line in lines if line.strip()]
    if not body:
        return []
    base = min(_indent(line) for line in body)
    starts = [n for n in range(len(lines)) if _is_term(lines, n, base)]
    if len(starts) < 2:
        return []
    found = []
    intro = "\n".join(lines[: starts[0]]).strip()
    if intro:
        found.append(("", intro))
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(lines)
        found.append((lines[start].strip(), "\n".join(lines[start:end]).strip()))
    return found


def _paragraphs(text: str) -> list[str]:
    # Blank-line separated blocks; an indented block (code, a quoted table) stays with
    # the paragraph before it.
    blocks: list[str] = []
    for block in _blocks(text):
        if not block.strip():
            continue
        if blocks and block[:1] in (" ", "\t"):
            blocks[-1] += "\n\n" + block
        else:
            blocks.append(block)
    return blocks


def _runs(text: str, limit: int = PASSAGE_CHARS) -> Iterator[str]:
    run = ""
    for block in _paragraphs(text):
        if run and len(run) + len(block) > limit:
            yield run
            run = ""
        run = f"{run}\n\n{block}" if run else block
    if run.strip():
        yield run


def passages(path: str, anchor: str, title: str, text: str) -> list[Passage]:
    """Cut one documentation section into passages, in order.

    >>> [p.heading for p in passages("f.rst", "a", "Vars", "x - INT\\n\\tOne.\\ny - INT\\n\\tTwo.")]
    ['x - INT', 'y - INT']
    """
    found = []
    for term, body in _entries(text) or [("", text)]:
        for run in _runs(body):
            found.append(Passage(path, anchor, title, term or title, run.strip("\n")))
    return found or [Passage(path, anchor, title, title, "")]


# ---------------------------------------------------------------- sentences

_ROLE = re.compile(r":[\w:-]+:`([^`<]*?)\s*(?:<[^`>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?")
_LITERAL = re.compile(r"``([^`]+)``")
_EMPHASIS = re.compile(r"(?<![\w*])\*\*?([^*\n]+?)\*\*?(?![\w*])")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9/`])")
_ABBREVIATION = re.compile(r"\b(?:e\.g|i\.e|etc|vs|cf|approx|no|Fig|resp)\.$", re.IGNORECASE)


def plain(text: str) -> str:
    """Return rst inline markup as plain text (``code``, roles, links and emphasis).

    >>> plain("See :ref:`the docs <psi>` and ``vm.swappiness``.")
    'See the docs and vm.swappiness.'
    """
    text = _ROLE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    return _EMPHASIS.sub(r"\1", text)


def _is_code_or_table(block: str) -> bool:
    lines = [line for line in block.splitlines() if line.strip()]
    if not lines:
        return True
    rules = sum(1 for line in lines if _TABLE_RULE.match(line) or _ADORNMENT.match(line.strip()))
    if rules >= 2:
        return True
    code = sum(1 for line in lines if re.search(r"[{};]\s*$|^\s*#\s*\w+|^\s*\$ ", line))
    return code * 2 > len(lines)


def units(text: str, heading: str = "") -> list[str]:
    """Return the sentences of a passage an answer may quote, as plain text, in order.

    A line that introduces a list (ending with ``:``) is kept with its items, as one
    unit (``Values: 0 - disable; 1 - enable.``); code blocks, tables and directives are
    left out, but a short literal block (a command, a format of up to three lines) joins
    the sentence that introduces it; the passage's term line (``somaxconn - INTEGER``,
    its ``heading``) is not a sentence, but its name heads the first one
    (``somaxconn: Limit of socket listen() backlog...``), which would otherwise not say
    what it is about.

    >>> units("somaxconn - INTEGER\\n\\tLimit of the backlog. Default: 4096", "somaxconn - INTEGER")
    ['somaxconn: Limit of the backlog.', 'Default: 4096']
    """
    name = ""
    if heading and text.startswith(heading):
        # A row of a table read as a term (``c``, then what the key does) keeps its
        # words after the name; a name's type (``- INTEGER``) does not.
        text = row_text(heading) + text[len(heading) :]
        name = plain(term_name(heading))
    elif heading and _IDENTIFIER.fullmatch(term_name(heading)):
        name = term_name(heading)  # a term whose entry does not repeat it (``suid_dumpable:``)
    found: list[str] = []
    literal = False
    for block in _blocks(text):
        # A literal block follows a paragraph ending "::"; a short one (a command, a
        # format) joins the sentence that introduces it, longer ones are left out.
        after_colons, literal = literal, block.rstrip().endswith("::")
        if after_colons and block[:1] in (" ", "\t"):
            code = [line.strip() for line in block.splitlines() if line.strip()]
            short = len(code) <= LITERAL_LINES and not any(map(_is_code, code))
            if short and found and found[-1].endswith(":"):
                found[-1] += " " + "; ".join(code)
            continue
        if _is_simple_table(block):
            found.extend(_table_unit(block, found))
            continue
        if _is_code_or_table(block) or _DIRECTIVE.match(block.strip()):
            continue
        lines = [line for line in block.splitlines() if line.strip()]
        if _BULLET.match(lines[0]):
            found.extend(_list_unit(lines, found))
            continue
        prose = " ".join(line.strip() for line in lines)
        prose = plain(prose[:-1] if prose.endswith("::") else prose)
        found.extend(_sentences(prose))
    kept = [u for u in found if _is_sentence(u)]
    if name and kept and not kept[0].lower().startswith(name.lower()):
        kept[0] = f"{name}: {kept[0]}"
    return kept


#: A name as code writes it: with '_', '.', a digit, or a capital inside (``MemAvailable``).
_IDENTIFIER = re.compile(r"[A-Za-z][\w.-]*(?:[_.\d]|[a-z][A-Z])[\w.-]*")


def _is_code(line: str) -> bool:
    # A program's line (a brace or a statement's end), or one too long to read as a format.
    return len(line) > 80 or line.endswith(("{", "}", ";"))


def term_name(heading: str) -> str:
    """Return the name a definition-list term documents ("" when it is no short name).

    >>> [term_name(h) for h in ("somaxconn - INTEGER", "suid_dumpable:", "MemAvailable")]
    ['somaxconn', 'suid_dumpable', 'MemAvailable']
    """
    name = re.split(r"\s+-\s+|:\s|\s{2,}|\t", heading.strip(), maxsplit=1)[0].strip().rstrip(":")
    return name if 0 < len(name) <= TERM_NAME_CHARS and name[-1:] != "." else ""


def row_text(heading: str) -> str:
    """Return what a term line says after its name when it is a table's row (the name,
    then white space columns, then words), "" when it is a name and its type.

    >>> [row_text(h) for h in ("``c``\tWill crash.", "2   Enable heap.", "x - INTEGER", "x")]
    ['Will crash.', 'Enable heap.', '', '']
    """
    parts = re.split(r"\s{2,}|\t", heading.strip(), maxsplit=1)
    if len(parts) < 2 or re.search(r"\s+-\s+|:\s", parts[0]):
        return ""
    return parts[1].strip() if re.search(r"[a-z]{2,}", parts[1]) else ""


def _is_rule(line: str) -> bool:
    # A simple table's rule: runs of '=' only ("= =====", "===\t====").
    words = line.split()
    return bool(words) and all(set(w) == {"="} for w in words)


def _is_simple_table(block: str) -> bool:
    # An rst simple table: rule lines of '=' framing rows ("= =====" / "0 Disable ...").
    lines = [line for line in block.splitlines() if line.strip()]
    rules = [line for line in lines if _is_rule(line)]
    return len(rules) >= 2 and len(lines) > len(rules) and len(lines) <= 40


def _blocks(text: str) -> list[str]:
    # Blank-line separated blocks, a simple table's rows kept in one block even when
    # blank lines separate them (its rules come in threes: top, under the header, bottom,
    # or twos without a header).
    out: list[str] = []
    open_table = False
    for block in re.split(r"\n\s*\n", text):
        rules = sum(1 for line in block.splitlines() if _is_rule(line))
        if open_table:
            out[-1] += "\n" + block
            open_table = rules == 0
            continue
        out.append(block)
        first = next((line for line in block.splitlines() if line.strip()), "")
        open_table = _is_rule(first) and rules == 1
    return out


def _table_unit(block: str, before: list[str]) -> list[str]:
    # Its rows (a row's continuation lines joined to it), as one unit: "0 Disable; 1 Enable."
    rows: list[str] = []
    for line in block.splitlines():
        if not line.strip() or _is_rule(line):
            continue
        if rows and line[:1] in (" ", "\t"):
            rows[-1] += " " + line.strip()
        else:
            rows.append(" ".join(line.split()))
    return _list_unit([f"- {plain(r)}" for r in rows], before) if rows else []


def _list_unit(lines: list[str], before: list[str]) -> list[str]:
    # Items (with their continuation lines) joined into one unit, after the sentence
    # that introduces them when that one ends with ':'.
    items: list[str] = []
    for line in lines:
        if _BULLET.match(line) or not items:
            items.append(_BULLET.sub("", line.strip() + " ").strip())
        else:
            items[-1] += " " + line.strip()
    if len(items) == 1:
        return [plain(items[0])]
    text = "; ".join(plain(i).rstrip(".;") for i in items if i) + "."
    if before and before[-1].endswith(":"):
        return [before.pop() + " " + text]
    return [text]


def _sentences(prose: str) -> list[str]:
    out: list[str] = []
    for raw in _SENTENCE_BREAK.split(prose):
        piece = " ".join(raw.split())
        if out and _ABBREVIATION.search(out[-1]):
            out[-1] += " " + piece
        elif piece:
            out.append(piece)
    return out


def _is_sentence(unit: str) -> bool:
    # Three words, or a word and a number ("Default: 60 seconds").
    words = re.findall(r"[A-Za-z]{2,}", unit)
    enough = len(words) >= 3 or (bool(words) and bool(re.search(r"\d", unit)))
    return enough and not _TABLE_RULE.match(unit)
