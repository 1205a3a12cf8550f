"""MAINTAINERS, read and matched the way ``scripts/get_maintainer.pl`` does.

The answer for a file is the one ``get_maintainer.pl --no-git --no-rolestats -f FILE``
prints from the same tree: the sections whose ``F:`` (less ``X:``) or ``N:``
patterns match its path, most specific first, then the sections whose ``K:``
keywords occur in its text; their ``M:`` and ``R:`` addresses (mapped through
``.mailmap``, duplicates by name or address dropped, Linus left out as the
script's "penguin chief" rule does) and their ``L:`` lists (subscribers-only
lists left out). Parsing is pure: the builder reads the files and hands their
text over.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from assistant.knowledge.model import Subsystem

with warnings.catch_warnings():
    # Deprecated as public modules since 3.11, and still the one regex parser there is.
    warnings.simplefilter("ignore", DeprecationWarning)
    import sre_constants
    import sre_parse

#: The script's ``@penguin_chief``: dropped from To: unless --git-chief-penguins.
PENGUIN_CHIEFS = ("Linus Torvalds <torvalds@linux-foundation.org>",)

_TYPE_VALUE = re.compile(r"^([A-Z]):\s*(.*)")
_LIST_NOTE = re.compile(r"([^\s]+)\s+(.*)$")


@dataclass
class Section:
    """One MAINTAINERS section: its title and its ``X: value`` lines in file order.

    ``F:``/``X:`` values are kept as the script converts them (``.`` → ``\\.``,
    ``*`` → ``.*``, ``?`` → ``.``, ``/`` added to a directory).
    """

    index: int
    name: str
    entries: list[tuple[str, str]] = field(default_factory=list)

    def values(self, kind: str) -> list[str]:
        """Return the values of one kind of line (``M``, ``L``, ...), in order."""
        return [value for k, value in self.entries if k == kind]

    def subsystem(self) -> Subsystem:
        """Return the public view of this section."""
        status = self.values("S")
        return Subsystem(
            name=self.name,
            status=status[-1] if status else "",
            maintainers=tuple(self.values("M")),
            reviewers=tuple(self.values("R")),
            lists=tuple(_list_address(v) for v in self.values("L")),
        )


def convert_file_pattern(value: str, is_dir: Callable[[str], bool]) -> str:
    """Turn an ``F:``/``X:`` glob into the script's regex (a directory gains a ``/``).

    :param is_dir: whether a path (relative to the tree's top) is a directory; the
        script tests the already converted value, so a name with a dot never is.
    """
    value = value.replace(".", "\\.").replace("*", ".*").replace("?", ".")
    if is_dir(value):
        value = re.sub(r"([^/])$", r"\1/", value)
    return value


def parse_maintainers(text: str, is_dir: Callable[[str], bool]) -> list[Section]:
    """Parse the text of MAINTAINERS into its sections, in file order.

    :param is_dir: see :func:`convert_file_pattern`.
    """
    sections: list[Section] = []
    title: str | None = None
    current: Section | None = None
    for line in text.splitlines():
        match = _TYPE_VALUE.match(line)
        if match:
            kind, value = match.group(1), match.group(2)
            if kind in ("F", "X"):
                value = convert_file_pattern(value, is_dir)
            if current is None:
                # The first type-value line of a section; its title is the line before.
                current = Section(index=len(sections), name=title or "")
                sections.append(current)
            current.entries.append((kind, value))
        elif line.strip() and not line.lstrip().startswith("#"):
            title = line
            current = None
    # The script skips the preamble: its first section starts at the first
    # type-value line, and the preamble's indented "M: ..." examples are not one.
    return sections


def _list_address(value: str) -> str:
    match = _LIST_NOTE.match(value)
    return match.group(1) if match else value


def _perl_regex(pattern: str, flags: int = 0) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, flags | re.ASCII)
    except re.error:
        return None


def file_match_pattern(path: str, pattern: str) -> bool:
    """Return whether ``path`` matches a converted ``F:``/``X:`` pattern, as the script does.

    A pattern ending in ``/`` matches everything below it; any other matches only
    at the same directory depth.
    """
    regex = _cached_regex(pattern)
    if regex is None or not regex.match(path):
        return False
    return pattern.endswith("/") or path.count("/") == pattern.count("/")


_REGEX_CACHE: dict[str, re.Pattern[str] | None] = {}


def _cached_regex(pattern: str) -> re.Pattern[str] | None:
    if pattern not in _REGEX_CACHE:
        _REGEX_CACHE[pattern] = _perl_regex(pattern)
    return _REGEX_CACHE[pattern]


def _pattern_depth(pattern: str) -> int:
    depth = pattern.count("/")
    if not pattern.endswith("/"):
        depth += 1
    if pattern.startswith(".*"):
        depth = -1
    return depth


def matching_sections(
    sections: Sequence[Section], path: str, keyword_sections: Iterable[int] = ()
) -> list[Section]:
    """Return the sections that cover ``path``, in the order the script adds them.

    :param path: a path relative to the tree's top, e.g. ``net/ipv4/tcp.c``.
    :param keyword_sections: indexes of the sections whose ``K:`` keywords occur in
        the file's text (the builder computes them once per file of the tree).
    """
    depth: dict[int, int] = {}
    for section in sections:
        if any(k == "X" and file_match_pattern(path, v) for k, v in section.entries):
            continue
        for kind, value in section.entries:
            if kind == "F" and file_match_pattern(path, value):
                depth[section.index] = _pattern_depth(value)
            elif kind == "N":
                regex = _cached_regex_verbose(value)
                if regex is not None and regex.search(path):
                    depth[section.index] = 0
    # Perl sorts by depth only; among equal depths its hash order is random, so
    # file order here is as good an answer as any run of the script gives.
    ordered = sorted(depth, key=lambda i: (-depth[i], i))
    by_pattern = [sections[i] for i in ordered]
    seen = set(ordered)
    by_keyword = [sections[i] for i in sorted(set(keyword_sections), key=str) if i not in seen]
    # The script adds keyword sections even when a pattern already matched them;
    # that only repeats addresses, which it then drops as duplicates.
    return by_pattern + by_keyword


_VERBOSE_CACHE: dict[str, re.Pattern[str] | None] = {}


def _cached_regex_verbose(pattern: str) -> re.Pattern[str] | None:
    if pattern not in _VERBOSE_CACHE:
        _VERBOSE_CACHE[pattern] = _perl_regex(pattern, re.VERBOSE)
    return _VERBOSE_CACHE[pattern]


# ---------------------------------------------------------------- keywords (K:)


@dataclass(frozen=True)
class Keyword:
    """One ``K:`` line: its section, its regex, and literals one of which must occur.

    :param needles: lower-case strings, one of which occurs in any text the regex
        matches (empty: no such guarantee, always run the regex).
    """

    section: int
    regex: re.Pattern[str]
    needles: tuple[str, ...]

    def occurs_in(self, text: str, lowered: str) -> bool:
        """Return whether the keyword matches ``text`` (``lowered`` is ``text.lower()``)."""
        if self.needles and not any(n in lowered for n in self.needles):
            return False
        return self.regex.search(text) is not None


def keywords(sections: Sequence[Section]) -> list[Keyword]:
    """Return the ``K:`` keywords of all sections, compiled as Perl's ``m/.../x``."""
    found = []
    for section in sections:
        for kind, value in section.entries:
            if kind != "K":
                continue
            regex = _perl_regex(value, re.VERBOSE)
            if regex is None:
                continue
            found.append(Keyword(section.index, regex, _needles(regex)))
    return found


def _needles(regex: re.Pattern[str]) -> tuple[str, ...]:
    # Literals one of which any match must contain, lower-cased (so a
    # case-insensitive part is still a safe prefilter). Empty when none is certain.
    try:
        parsed = sre_parse.parse(regex.pattern, regex.flags)
    except (re.error, sre_constants.error):
        return ()
    found = _required(list(parsed.data))
    return tuple(sorted(found)) if found and all(len(n) >= 3 for n in found) else ()


_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT)


def _required(items: list[tuple[object, object]]) -> set[str] | None:
    best: set[str] | None = None
    run = ""

    def better(candidate: set[str] | None) -> None:
        nonlocal best
        if candidate and (best is None or min(map(len, candidate)) > min(map(len, best))):
            best = candidate

    for op, arg in items:
        if op is sre_constants.LITERAL and isinstance(arg, int):
            run += chr(arg).lower()
            continue
        better({run} if run else None)
        run = ""
        if op is sre_constants.SUBPATTERN and isinstance(arg, tuple):
            better(_required(list(arg[-1])))
        elif op is sre_constants.BRANCH and isinstance(arg, tuple):
            options = [_required(list(branch)) for branch in arg[1]]
            if all(options):
                better(set().union(*[o for o in options if o]))
        elif op in _REPEATS and isinstance(arg, tuple) and arg[0] >= 1:
            better(_required(list(arg[2])))
    better({run} if run else None)
    return best


def keyword_sections(keywords_: Sequence[Keyword], text: str) -> list[int]:
    """Return the sections whose keywords occur in a file's text (decoded as Latin-1)."""
    lowered = text.lower()
    return sorted({k.section for k in keywords_ if k.occurs_in(text, lowered)})


# ---------------------------------------------------------------- addresses


def parse_email(formatted: str) -> tuple[str, str]:
    """Split ``Name <address>`` as the script's ``parse_email`` does (name quoted if needed)."""
    name, address = "", ""
    if m := re.match(r"^([^<]+)<(.+@.*)>.*$", formatted, re.S):
        name, address = m.group(1), m.group(2)
    elif m := re.match(r"^\s*<(.+@\S*)>.*$|^(.+@\S*).*$", formatted, re.S):
        address = m.group(1) or m.group(2)
    name = _strip_quotes(name.strip())
    address = address.strip()
    return _quote(name), address


def _strip_quotes(name: str) -> str:
    return re.sub(r'^"|"$', "", name)


def _quote(name: str) -> str:
    if re.search(r"[^\w \-]", name, re.ASCII):
        name = '"' + re.sub(r'(?<!\\)"', '\\"', name) + '"'
    return name


def format_email(name: str, address: str) -> str:
    """Join a name and an address as the script's ``format_email`` does."""
    name = _quote(_strip_quotes(name.strip()))
    address = address.strip()
    return f"{name} <{address}>" if name else address


@dataclass
class Mailmap:
    """The tree's ``.mailmap``: wrong names and addresses → real ones."""

    names: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)

    def map(self, email: str) -> str:
        """Return ``email`` with its real name and address (the script's ``mailmap_email``)."""
        name, address = parse_email(email)
        key = format_email(name, address)
        real_name, real_address = name, address
        if key in self.names or key in self.addresses:
            real_name = self.names.get(key, real_name)
            real_address = self.addresses.get(key, real_address)
        else:
            real_name = self.names.get(address, real_name)
            real_address = self.addresses.get(address, real_address)
        return format_email(real_name, real_address)


def parse_mailmap(text: str) -> Mailmap:
    """Parse ``.mailmap`` (the four forms of git-shortlog(1)) as the script does."""
    mailmap = Mailmap()
    for raw in text.splitlines():
        line = re.sub(r"#.*$", "", raw).strip()
        if not line:
            continue
        if m := re.match(r"^([^<]+)<([^>]+)>$", line):
            real_name, address = parse_email(f"{m.group(1).rstrip()} <{m.group(2)}>")
            mailmap.names[address] = real_name
        elif m := re.match(r"^<([^>]+)>\s*<([^>]+)>$", line):
            mailmap.addresses[m.group(2)] = m.group(1)
        elif m := re.match(r"^(.+)<([^>]+)>\s*<([^>]+)>$", line):
            real_name, real_address = parse_email(f"{m.group(1).rstrip()} <{m.group(2)}>")
            mailmap.names[m.group(3)] = real_name
            mailmap.addresses[m.group(3)] = real_address
        elif m := re.match(r"^(.+)<([^>]+)>\s*(.+)\s*<([^>]+)>$", line):
            real_name, real_address = parse_email(f"{m.group(1).rstrip()} <{m.group(2)}>")
            wrong_name, wrong_address = parse_email(f"{m.group(3).rstrip()} <{m.group(4)}>")
            wrong = format_email(wrong_name, wrong_address)
            mailmap.names[wrong] = real_name
            mailmap.addresses[wrong] = real_address
    return mailmap


def recipients(
    sections: Sequence[Section], mailmap: Mailmap, file_emails: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """Return (To: maintainers and reviewers, Cc: lists) for matched sections, in order.

    The same lines, in the same order up to Perl's random order among equally
    specific sections, as ``get_maintainer.pl --no-git --no-rolestats``.

    :param file_emails: the addresses the file itself names (a devicetree binding's
        ``maintainers:``; see :func:`file_emails`), added after the sections'.
    """
    people: list[str] = []
    names: set[str] = set()
    addresses: set[str] = set()
    lists: list[str] = []
    list_seen: set[str] = set()
    for section in sections:
        for kind, value in section.entries:
            if kind in ("M", "R"):
                name, address = parse_email(value)
                if not address:
                    continue
                if (name and name.lower() in names) or address.lower() in addresses:
                    continue
                people.append(format_email(name, address))
                if name:
                    names.add(name.lower())
                addresses.add(address.lower())
            elif kind == "L":
                address = _list_address(value)
                note = value[len(address) :].strip()
                if "subscribers-only" in note or address.lower() in list_seen:
                    continue
                list_seen.add(address.lower())
                lists.append(address)
    dedup = _Deduplicator(mailmap)
    people = [dedup(e) for e in people]
    lists = [dedup(e) for e in lists]
    # The script drops To: lines matching a chief's address used as a regex.
    chiefs = [re.compile(c) for c in PENGUIN_CHIEFS]
    people = [p for p in people if not any(c.search(p) for c in chiefs)]
    for email in file_emails:
        name, address = parse_email(mailmap.map(email))
        if not address or (name and name.lower() in names) or address.lower() in addresses:
            continue
        people.append(format_email(name, address))
        if name:
            names.add(name.lower())
        addresses.add(address.lower())
    return _unique(people), _unique(e for e in lists if e not in people)


# The script's pattern for addresses in a file. Its "À-ÿ" is UTF-8 in a byte
# string: the bytes 0xC3, 0x80-0xC3 and 0xBF, here Latin-1 characters.
_HIGH = "\x80-\xc3\xbf"
_FILE_EMAIL = re.compile(
    rf"[A-Za-z{_HIGH}\"' ,.+-]*\s*[,]*\s*[(<{{]?"
    r"[A-Za-z0-9_.+-]+@[A-Za-z0-9.-]+\.[A-Za-z0-9]+[)>}]?"
)
_BARE_ADDRESS = re.compile(r"[(<{]?([A-Za-z0-9_.+-]+@[A-Za-z0-9.-]+)[)>}]?")


def file_emails(text: str) -> list[str]:
    """Return the addresses a file names, cleaned as the script's ``clean_file_emails`` does.

    The script reads them from ``.yaml`` files only (devicetree bindings).

    :param text: the file's bytes decoded as Latin-1.
    """
    return _unique(_clean_file_email(m.group(0)) for m in _FILE_EMAIL.finditer(text))


def _clean_file_email(found: str) -> str:
    name, address = parse_email(_BARE_ADDRESS.sub(r"<\1>", found))
    if name == '"[,\\.]"':
        name = ""
    words = re.split(rf"[^A-Za-z{_HIGH}',.+-]", name)
    while words and not words[-1]:
        words.pop()  # Perl's split drops trailing empty fields
    if len(words) > 2:
        first, middle, last = words[-3:]
        initial = (len(first) == 1 and first.isascii() and first.isalpha()) or (
            len(first) == 2 and first.endswith(".")
        )
        if initial or len(middle) == 1 or (len(middle) == 2 and middle.endswith(".")):
            name = f"{first} {middle} {last}"
        else:
            name = f"{middle} {last}"
    if name[-1:] in (",", "."):
        name = name[:-1]
    elif re.fullmatch(r'[,.]"', name[-2:]):
        name = name[:-2] + '"'
    if name[:1] in (",", "."):
        name = name[1:]
    elif re.fullmatch(r'"[,.]', name[:2]):
        name = '"' + name[2:]
    return format_email(name, address)


class _Deduplicator:
    # The script's deduplicate_email: after .mailmap, the first address seen for a
    # name (or the first name seen for an address) wins.
    def __init__(self, mailmap: Mailmap) -> None:
        self.mailmap = mailmap
        self.by_name: dict[str, tuple[str, str]] = {}
        self.by_address: dict[str, tuple[str, str]] = {}

    def __call__(self, email: str) -> str:
        name, address = parse_email(email)
        name, address = parse_email(self.mailmap.map(format_email(name, address)))
        if name and name.lower() in self.by_name:
            name, address = self.by_name[name.lower()]
        elif address.lower() in self.by_address:
            name, address = self.by_address[address.lower()]
        else:
            self.by_name[name.lower()] = (name, address)
            self.by_address[address.lower()] = (name, address)
        return self.mailmap.map(format_email(name, address))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def sections_from_rows(rows: Iterable[tuple[int, str, str, str]]) -> list[Section]:
    """Rebuild sections from stored ``(section, name, kind, value)`` rows, in order."""
    sections: dict[int, Section] = {}
    for index, name, kind, value in rows:
        section = sections.setdefault(index, Section(index=index, name=name))
        section.entries.append((kind, value))
    return [sections[i] for i in sorted(sections)]


def mailmap_from_rows(rows: Iterable[tuple[str, str, str]]) -> Mailmap:
    """Rebuild a :class:`Mailmap` from stored ``(kind, key, value)`` rows."""
    mailmap = Mailmap()
    tables: Mapping[str, dict[str, str]] = {"name": mailmap.names, "address": mailmap.addresses}
    for kind, key, value in rows:
        tables[kind][key] = value
    return mailmap
