r"""``struct ctl_table`` definitions in the kernel's C sources, and the paths they register at.

Pure functions over a C file's text. A table's ``/proc/sys`` directory comes from
the calls in the same file that register it: ``register_sysctl("net/core", t)``,
``register_sysctl_init``, ``register_net_sysctl(net, "net/ipv4", t)`` (also
through a ``kmemdup`` copy), ``DECLARE_SYSCTL_BASE(kernel, kern_table)``,
``register_sysctl_table(root)`` with ``.child`` links,
``register_sysctl_paths(path, t)`` and ``__register_sysctl_table(set, path, t)``
(per-namespace tables: ``user``, ``fs/mqueue``, the IPC keys of ``kernel``).

Tables built by macros are expanded with the file's function-like ``#define``\s
(``DEVINET_SYSCTL_RW_ENTRY``, ``NEIGH_SYSCTL_JIFFIES_ENTRY``, ``UCOUNT_ENTRY``), also
when the table is a member of a template struct (``t->devinet_vars``). A path built
with ``snprintf(path, .., "net/ipv4/conf/%s", dev_name)`` is resolved to the string
literals that reach its ``%s`` (``all``, ``default``) and ``*`` for a device name.
:func:`tree_sysctls` follows what one file links to another: a ``.child`` table
defined elsewhere (``kernel/keys``) and a table another file's function copies and
returns (``ipv6_icmp_sysctl_init``). Entries built in loops (``nf_log``) stay unresolved.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

#: ``include/linux/sysctl.h``: the shared bound constants and the values behind them.
SYSCTL_CONSTANTS: dict[str, int] = {
    "SYSCTL_ZERO": 0,
    "SYSCTL_ONE": 1,
    "SYSCTL_TWO": 2,
    "SYSCTL_THREE": 3,
    "SYSCTL_FOUR": 4,
    "SYSCTL_ONE_HUNDRED": 100,
    "SYSCTL_TWO_HUNDRED": 200,
    "SYSCTL_ONE_THOUSAND": 1000,
    "SYSCTL_THREE_THOUSAND": 3000,
    "SYSCTL_INT_MAX": 2**31 - 1,
    "SYSCTL_MAXOLDUID": 65535,
    "SYSCTL_NEG_ONE": -1,
    "SYSCTL_LONG_ZERO": 0,
    "SYSCTL_LONG_ONE": 1,
    "SYSCTL_LONG_MAX": 2**63 - 1,
}

#: Limits from ``include/vdso/limits.h`` and ``include/linux/limits.h`` (LP64).
C_LIMITS: dict[str, int] = {
    "INT_MAX": 2**31 - 1,
    "INT_MIN": -(2**31),
    "UINT_MAX": 2**32 - 1,
    "LONG_MAX": 2**63 - 1,
    "LONG_MIN": -(2**63),
    "ULONG_MAX": 2**64 - 1,
    "U8_MAX": 255,
    "U16_MAX": 65535,
    "U32_MAX": 2**32 - 1,
    "S32_MAX": 2**31 - 1,
    "USHRT_MAX": 65535,
    "PAGE_SIZE": 4096,
}

_TABLE = re.compile(
    r"^[ \t]*(?:static\s+)?(?:const\s+)?struct\s+ctl_table\s+(\w+)\s*\[\s*\w*\s*\]\s*"
    r"(?:__\w+\s*)*=\s*\{",
    re.M,
)
_PATH = re.compile(
    r"^[ \t]*(?:static\s+)?(?:const\s+)?struct\s+ctl_path\s+(\w+)\s*\[\s*\w*\s*\]\s*=\s*\{", re.M
)
_FIELD = re.compile(r"\.(\w+)\s*=\s*")
#: A template struct holding a ctl_table array (``struct ctl_table devinet_vars[N];``).
_MEMBER = re.compile(r"\bstruct\s+ctl_table\s+(\w+)\s*\[[^\]]*\]\s*;")
#: A path: a string literal, or an identifier (a ``#define`` or an ``snprintf`` buffer).
_PATH_ARG = r"(\"[^\"]+\"|\w+)"
#: A table: ``name``, ``t->name`` or ``&t->name`` (the last identifier is the table).
_TABLE_ARG = r"&?(?:\w+\s*(?:->|\.)\s*)*(\w+)"
_REGISTRATIONS: tuple[tuple[re.Pattern[str], int, int], ...] = (
    # (call, group of the path, group of the table)
    (re.compile(rf"\bregister_sysctl(?:_init)?\s*\(\s*{_PATH_ARG}\s*,\s*{_TABLE_ARG}"), 1, 2),
    (re.compile(rf"\bregister_net_sysctl\s*\([^,;]+,\s*{_PATH_ARG}\s*,\s*{_TABLE_ARG}"), 1, 2),
    (re.compile(rf"\b__register_sysctl_table\s*\([^,;]+,\s*{_PATH_ARG}\s*,\s*{_TABLE_ARG}"), 1, 2),
    # The base tables of kernel/sysctl.c: the name is the directory.
    (re.compile(r"\bDECLARE_SYSCTL_BASE\s*\(\s*(\w+)\s*,\s*(\w+)\s*\)"), 1, 2),
)
_ROOT = re.compile(r"\bregister_sysctl_table\s*\(\s*(\w+)\s*\)")
_PATHS = re.compile(r"\bregister_sysctl_paths\s*\(\s*(\w+)\s*,\s*(\w+)\s*\)")
_COPY = re.compile(r"\b(\w+)\s*=\s*(?:kmemdup\s*\(\s*&?)?(\w+)\s*[,;]")
#: ``var = func(...)``: a table a function (perhaps in another file) copies and returns.
_CALL_RESULT = re.compile(r"\b(\w+)\s*=\s*(\w+)\s*\(")
_DEFINE = re.compile(r"^#\s*define\s+(\w+)\s+([^\n\\]+?)\s*(?:/\*.*)?$", re.M)
_FUNCTION_MACRO = re.compile(r"^#\s*define\s+(\w+)\(([^)]*)\)[ \t]*((?:[^\n]*\\\n)*[^\n]*)", re.M)
_FORMAT = re.compile(r"\bs?n?printf\s*\(\s*(\w+)\s*,")
_FUNCTION = re.compile(r"^\w[^;{}()]*?\b(\w+)\s*\(([^;{}()]*)\)\s*\{", re.M)


@dataclass(frozen=True)
class Entry:
    """One entry of a ``struct ctl_table`` array.

    :param fields: its designated initialisers as written (``procname`` → ``"somaxconn"``).
    :param line: the 1-based line of its ``.procname`` (or of its opening brace).
    """

    table: str
    fields: Mapping[str, str]
    line: int

    @property
    def procname(self) -> str:
        """Return the entry's file name under ``/proc/sys`` (``.procname`` unquoted)."""
        value = self.fields.get("procname", "")
        return value[1:-1] if value.startswith('"') and value.endswith('"') else ""


@dataclass(frozen=True)
class Sysctl:
    """A resolved sysctl: its dotted name and its entry."""

    name: str
    directory: str
    entry: Entry


def tables(text: str) -> dict[str, list[Entry]]:
    """Return every ``struct ctl_table`` array of a C file, name → entries in order.

    An array inside a template struct (``struct devinet_sysctl_table { struct ctl_table
    devinet_vars[N]; } devinet_sysctl = { .devinet_vars = { ... } }``) is named after its
    member. Entries written as calls of the file's function-like macros are expanded.
    """
    macros = function_macros(text)
    found: dict[str, list[Entry]] = {}
    for match in _TABLE.finditer(text):
        body_start = match.end()
        body_end = _closing(text, body_start - 1)
        found[match.group(1)] = list(_entries(match.group(1), text, body_start, body_end, macros))
    for member in {m.group(1) for m in _MEMBER.finditer(text)}:
        for match in re.finditer(rf"\.{member}\s*=\s*\{{", text):
            body_end = _closing(text, match.end() - 1)
            found[member] = list(_entries(member, text, match.end(), body_end, macros))
    # A .procname given as a constant string of the file (ipv4_route_flush_procname).
    names = {k: v for k, v in initialisers(text).items() if re.fullmatch(r'"[^"\\]*"', v)}
    return {
        table: [
            Entry(e.table, {**e.fields, "procname": names[e.fields["procname"]]}, e.line)
            if e.fields.get("procname") in names else e
            for e in entries
        ]
        for table, entries in found.items()
    }  # fmt: skip


# ---------------------------------------------------------------- function-like macros

#: A function-like macro: its parameters and its body (continuation lines joined).
Macro = tuple[tuple[str, ...], str]


def function_macros(text: str) -> dict[str, Macro]:
    """Return a file's function-like ``#define NAME(a, b) body`` macros.

    >>> function_macros("#define E(n) \\\\\\n\\t{ .procname = n, }\\n")
    {'E': (('n',), '{ .procname = n, }')}
    """
    found: dict[str, Macro] = {}
    for m in _FUNCTION_MACRO.finditer(text):
        params = tuple(p.strip() for p in m.group(2).split(",") if p.strip())
        found[m.group(1)] = (params, " ".join(m.group(3).replace("\\\n", " ").split()))
    return found


def _call_args(text: str, open_at: int) -> tuple[list[str], int]:
    # The comma-separated arguments of a call whose "(" is at open_at (nested parentheses,
    # braces and strings kept whole), and the index just past its ")".
    args, depth, start, i = [], 0, open_at + 1, open_at
    while i < len(text):
        c = text[i]
        if c == '"':
            i = _string_end(text, i)
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
            if depth == 0:
                args.append(text[start:i].strip())
                return [a for a in args if a], i + 1
        elif c == "," and depth == 1:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    return [], len(text)


def _substitute(body: str, values: Mapping[str, str]) -> str:
    # A macro's body with its arguments in: ``#param`` stringified, ``a ## b`` pasted.
    def stringify(g: re.Match[str]) -> str:
        return f'"{values[g.group(1)]}"' if g.group(1) in values else g.group(0)

    body = re.sub(r"(?<!#)#\s*(\w+)", stringify, body)
    body = re.sub(r"\b\w+\b", lambda g: values.get(g.group(0), g.group(0)), body)
    return re.sub(r"\s*##\s*", "", body)


def expand(text: str, macros: dict[str, Macro], depth: int = 0) -> str:
    """Expand calls of function-like macros in ``text`` (``#param`` and ``a ## b`` too).

    >>> expand('E(FOO, "x")', {"E": (("a", "n"), "[V_ ## a] = { .procname = n }")})
    '[V_FOO] = { .procname = "x" }'
    """
    if depth > 8 or not macros:
        return text
    out, i = [], 0
    for m in re.finditer(r"\b(\w+)\s*\(", text):
        if m.start() < i or m.group(1) not in macros:
            continue
        params, body = macros[m.group(1)]
        args, end = _call_args(text, m.end() - 1)
        body = _substitute(body, dict(zip(params, args, strict=False)))
        out += [text[i : m.start()], expand(body, macros, depth + 1)]
        i = end
    return "".join(out) + text[i:]


def _closing(text: str, open_at: int) -> int:
    # The index of the brace that closes the one at open_at (strings and comments skipped).
    depth = 0
    i = open_at
    while i < len(text):
        c = text[i]
        if c == '"':
            i = _string_end(text, i)
        elif text.startswith("/*", i):
            i = text.find("*/", i + 2) + 1 or len(text)
        elif text.startswith("//", i):
            i = text.find("\n", i) if text.find("\n", i) >= 0 else len(text)
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return len(text)


def _string_end(text: str, start: int) -> int:
    i = start + 1
    while i < len(text) and text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    return i


def _entries(
    table: str, text: str, start: int, end: int, macros: dict[str, Macro] | None = None
) -> Iterator[Entry]:
    i = start
    while i < end:
        c = text[i]
        call = re.match(r"\b(\w+)\s*\(", text[i : min(end, i + 200)]) if c.isalpha() else None
        if call and macros and call.group(1) in macros and (i == 0 or not _is_word(text[i - 1])):
            # An entry written as a macro call: its expansion holds the braces.
            _args, close = _call_args(text, i + call.end() - 1)
            for body in _brace_bodies(expand(text[i:close], macros)):
                if fields := _fields(body):
                    # The line of the call's argument that became the procname, if any.
                    at = text.find(fields.get("procname", "\0"), i, close)
                    yield Entry(table, fields, text.count("\n", 0, at if at >= 0 else i) + 1)
            i = close
        elif c == "{":
            close = _closing(text, i)
            body = text[i + 1 : close]
            fields = _fields(body)
            if fields:
                offset = body.find(".procname")
                line_at = i + 1 + (offset if offset >= 0 else 0)
                yield Entry(table, fields, text.count("\n", 0, line_at) + 1)
            i = close + 1
        elif text.startswith("/*", i):
            i = text.find("*/", i + 2) + 2 if text.find("*/", i + 2) >= 0 else end
        elif _is_word(c):
            while i < end and _is_word(text[i]):
                i += 1
        else:
            i += 1


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


def _brace_bodies(text: str) -> Iterator[str]:
    # The insides of the top-level {...} groups of a text.
    i = 0
    while (i := text.find("{", i)) >= 0:
        close = _closing(text, i)
        yield text[i + 1 : close]
        i = close + 1


def _fields(body: str) -> dict[str, str]:
    body = re.sub(r"/\*.*?\*/", " ", body, flags=re.S)
    body = re.sub(r"//[^\n]*", " ", body)
    fields: dict[str, str] = {}
    matches = list(_FIELD.finditer(body))
    for k, match in enumerate(matches):
        value_end = matches[k + 1].start() if k + 1 < len(matches) else len(body)
        value = " ".join(body[match.end() : value_end].split()).rstrip(", ")
        fields[match.group(1)] = value
    return fields


def _ctl_paths(text: str) -> dict[str, str]:
    found = {}
    for match in _PATH.finditer(text):
        body = text[match.end() : _closing(text, match.end() - 1)]
        found[match.group(1)] = "/".join(re.findall(r"\.procname\s*=\s*\"([^\"]+)\"", body))
    return found


# ---------------------------------------------------------------- where tables are registered


@dataclass
class Links:
    """What a file's registrations say about where its tables (and others') appear.

    :param dirs: a table of the file → the ``/proc/sys`` directories it is registered at.
    :param foreign: a name the file registers or links as a ``.child`` without defining it
        → directories: a table of another file, or ``fn:NAME`` for the table function
        ``NAME`` (perhaps in another file) returns.
    :param returns: a function of the file → the table of the file it copies and returns.
    """

    dirs: dict[str, set[str]] = field(default_factory=dict)
    foreign: dict[str, set[str]] = field(default_factory=dict)
    returns: dict[str, str] = field(default_factory=dict)


def links(text: str, file_tables: Mapping[str, list[Entry]]) -> Links:
    """Return where a file registers its tables, and what it links that it does not define.

    :param file_tables: the file's tables (from :func:`tables`).
    """
    assigned = _assignments(text, file_tables)
    out = Links()

    def register(name: str, directories: set[str], at: int) -> None:
        # A variable stands for what was last assigned to it before the registration.
        before = [target for pos, var, target in assigned if var == name and pos < at]
        target = before[-1] if before else name
        if target in file_tables:
            out.dirs.setdefault(target, set()).update(directories)
        else:
            out.foreign.setdefault(target, set()).update(directories)

    paths = _PathResolver(text)
    for pattern, path_group, table_group in _REGISTRATIONS:
        for match in pattern.finditer(text):
            path = match.group(path_group)
            base = match.group(0).startswith("DECLARE_SYSCTL_BASE")
            found = {path} if base else paths.resolve(path, match.start())
            if found:
                register(match.group(table_group), found, match.start())
    ctl_paths = _ctl_paths(text)
    for match in _PATHS.finditer(text):
        if match.group(1) in ctl_paths:
            register(match.group(2), {ctl_paths[match.group(1)]}, match.start())
    for match in _ROOT.finditer(text):
        before = [t for pos, var, t in assigned if var == match.group(1) and pos < match.start()]
        root = before[-1] if before else match.group(1)
        if root in file_tables:
            _walk_children(root, "", file_tables, out.dirs, depth=0)
    walk_children(file_tables, out.dirs, out.foreign)
    for _start, func, _params, body in _functions(text):
        copied = [target for _pos, _var, target in _assignments(body, file_tables)
                  if target in file_tables]  # fmt: skip
        if copied and "return" in body:
            out.returns[func] = copied[0]
    return out


#: Allocators and copiers: ``t = kmemdup(t, ...)`` keeps what ``t`` was.
_ALLOCATORS = frozenset({"kmemdup", "kzalloc", "kmalloc", "kcalloc", "kmalloc_array", "kstrdup"})


def _assignments(text: str, file_tables: Mapping[str, list[Entry]]) -> list[tuple[int, str, str]]:
    # (position, variable, what it holds): a table of the file (``t = table;``,
    # ``t = kmemdup(table, ...)``) or ``fn:NAME``, the result of a call.
    found = [(m.start(), m.group(1), m.group(2)) for m in _COPY.finditer(text)
             if m.group(2) in file_tables]  # fmt: skip
    found += [(m.start(), m.group(1), f"fn:{m.group(2)}") for m in _CALL_RESULT.finditer(text)
              if m.group(2) not in _ALLOCATORS]  # fmt: skip
    return sorted(found)


def directories(text: str, file_tables: Mapping[str, list[Entry]]) -> dict[str, set[str]]:
    """Return the ``/proc/sys`` directories each table of a file is registered at (this
    file's registrations only; :func:`tree_sysctls` follows links between files).

    :param file_tables: the file's tables (from :func:`tables`).
    """
    return links(text, file_tables).dirs


def walk_children(
    file_tables: Mapping[str, list[Entry]],
    dirs: dict[str, set[str]],
    foreign: dict[str, set[str]] | None = None,
) -> None:
    """Put each ``.child`` table below its parent's directories (in place).

    A child the file does not define goes to ``foreign`` (it lives in another file).
    """
    for table, where in list(dirs.items()):
        for entry in file_tables.get(table, []):
            child = entry.fields.get("child", "").lstrip("&")
            if not child or not entry.procname:
                continue
            below = {f"{directory}/{entry.procname}" for directory in where}
            if child in file_tables:
                for directory in below:
                    dirs.setdefault(child, set()).add(directory)
                    _walk_children(child, directory, file_tables, dirs, 0)
            elif foreign is not None:
                foreign.setdefault(child, set()).update(below)


def _walk_children(
    table: str,
    prefix: str,
    file_tables: Mapping[str, list[Entry]],
    found: dict[str, set[str]],
    depth: int,
) -> None:
    if depth > 8:
        return
    for entry in file_tables.get(table, []):
        child = entry.fields.get("child", "").lstrip("&")
        if child in file_tables and entry.procname:
            path = f"{prefix}/{entry.procname}" if prefix else entry.procname
            found.setdefault(child, set()).add(path)
            _walk_children(child, path, file_tables, found, depth + 1)


def _functions(text: str) -> Iterator[tuple[int, str, list[str], str]]:
    # Every function definition: where it starts, its name, its parameter names, its body.
    for match in _FUNCTION.finditer(text):
        params = [p.split()[-1].lstrip("*") for p in match.group(2).split(",") if p.split()]
        body = text[match.end() : _closing(text, match.end() - 1)]
        yield match.start(), match.group(1), params, body


#: The most directories one computed path expands to.
MAX_EXPANSIONS = 16


class _PathResolver:
    """Resolve a registration's path argument: a string, a ``#define`` or an ``snprintf``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.defines = defines(text)
        self.functions = [(start, name, params) for start, name, params, _ in _functions(text)]

    def resolve(self, arg: str, at: int) -> set[str]:
        """Return the directories a path argument names (empty: not resolved)."""
        if arg.startswith('"'):
            return {arg.strip('"').strip("/")}
        if re.fullmatch(r'"[^"]*"', self.defines.get(arg, "")):
            return {self.defines[arg].strip('"').strip("/")}
        found: set[str] = set()
        for match in _FORMAT.finditer(self.text, 0, at):
            if match.group(1) == arg:
                found |= self._format(match)
        return found

    def _format(self, match: re.Match[str]) -> set[str]:
        args, _end = _call_args(self.text, match.start() + match.group(0).index("("))
        literal = next((i for i, a in enumerate(args) if a.startswith('"')), None)
        if literal is None:
            return set()
        fmt, values = args[literal].strip('"'), args[literal + 1 :]
        pieces = re.split(r"%[-+ #0-9.]*[a-z]+", fmt)
        conversions = re.findall(r"%[-+ #0-9.]*([a-z]+)", fmt)
        choices = [
            sorted(self._candidates(values[k], match.start())) if conv == "s" and k < len(values)
            else ["*"]
            for k, conv in enumerate(conversions)
        ]  # fmt: skip
        paths = [pieces[0]]
        for choice, piece in zip(choices, pieces[1:], strict=True):
            paths = [p + c + piece for p in paths for c in choice][:MAX_EXPANSIONS]
        return {p.strip("/") for p in paths}

    def _candidates(self, expr: str, at: int) -> set[str]:
        # The strings an argument of a format may be: literals assigned to it, or passed
        # for it by the callers of the function it is a parameter of; "*" for anything else.
        if expr.startswith('"'):
            return {expr.strip('"')}
        if not re.fullmatch(r"\w+", expr):
            return {"*"}
        found = set(re.findall(rf'\b{expr}\s*=\s*"([^"]*)"', self.text))
        if re.search(rf'\b{expr}\s*=(?!=)\s*[^"\s]', self.text):
            found.add("*")
        inside = [(start, name, params) for start, name, params in self.functions if start < at]
        if inside and expr in inside[-1][2]:
            name, index = inside[-1][1], inside[-1][2].index(expr)
            for call in re.finditer(rf"\b{name}\s*\(", self.text):
                args, _end = _call_args(self.text, call.end() - 1)
                if call.start() in (s for s, _n, _p in self.functions) or index >= len(args):
                    continue
                found.add(args[index].strip('"') if args[index].startswith('"') else "*")
        return found or {"*"}


def _resolved(
    file_tables: Mapping[str, list[Entry]], dirs: Mapping[str, set[str]]
) -> tuple[list[Sysctl], int]:
    # The sysctls of the tables with directories, and how many entries have none.
    resolved: list[Sysctl] = []
    unresolved = 0
    for table, entries in file_tables.items():
        for entry in entries:
            if not entry.procname or "child" in entry.fields:
                continue
            if table not in dirs:
                unresolved += 1
                continue
            for directory in sorted(dirs[table]):
                resolved.append(
                    Sysctl(f"{directory}/{entry.procname}".replace("/", "."), directory, entry)
                )
    return resolved, unresolved


def sysctls(text: str) -> tuple[list[Sysctl], int]:
    """Return the sysctls a C file defines at resolved directories, and how many it left unresolved.

    An entry with a ``.child`` is a directory, not a sysctl. Only this file's
    registrations count (see :func:`tree_sysctls` for a whole tree).
    """
    file_tables = tables(text)
    return _resolved(file_tables, links(text, file_tables).dirs)


def tree_sysctls(files: Sequence[tuple[str, str]]) -> list[tuple[str, str, list[Sysctl], int]]:
    """Return, per C file of a tree, its sysctls and how many entries it left unresolved.

    Registrations in one file of tables defined in another are followed: a ``.child``
    link (``kern_table``'s ``keys`` → ``key_sysctls``), a non-static table named
    elsewhere, and a table another file's function copies and returns.

    :param files: (path, text) of each C file (those that mention ``ctl_table`` suffice).
    """
    parsed = [(path, text, tables(text)) for path, text in files]
    found = [links(text, file_tables) for _path, text, file_tables in parsed]
    exported: dict[str, int] = {}
    for i, (_path, text, file_tables) in enumerate(parsed):
        for match in _TABLE.finditer(text):
            if not match.group(0).lstrip().startswith("static") and match.group(1) in file_tables:
                exported.setdefault(match.group(1), i)
    returned = {func: (i, table) for i, f in enumerate(found) for func, table in f.returns.items()}
    for f in found:
        for name, where in f.foreign.items():
            if name.startswith("fn:") and name[3:] in returned:
                i, table = returned[name[3:]]
            elif name in exported:
                i, table = exported[name], name
            else:
                continue
            found[i].dirs.setdefault(table, set()).update(where)
    out = []
    for (path, text, file_tables), f in zip(parsed, found, strict=True):
        walk_children(file_tables, f.dirs)
        out.append((path, text, *_resolved(file_tables, f.dirs)))
    return out


# ---------------------------------------------------------------- constant values


def defines(text: str) -> dict[str, str]:
    """Return the object-like ``#define NAME value`` lines of a file (one-line values only).

    A name defined twice with different values (``#ifdef`` alternatives) is left out.
    """
    return _unambiguous((m.group(1), m.group(2).strip()) for m in _DEFINE.finditer(text))


def _unambiguous(pairs: Iterator[tuple[str, str]]) -> dict[str, str]:
    found: dict[str, str | None] = {}
    for name, value in pairs:
        found[name] = value if found.get(name, value) == value else None
    return {name: value for name, value in found.items() if value is not None}


def initialisers(text: str) -> dict[str, str]:
    """Return file-scope ``TYPE name = value;`` initialisers of a C file, name → value.

    A name initialised twice with different values (``#ifdef`` alternatives) is left out.
    """
    pattern = re.compile(
        r"^(?:static\s+|const\s+|unsigned\s+|signed\s+)*(?:[a-z_]\w*\s+){1,3}"
        r"(?:__\w+\s+)*\*?(?!__)(\w+)\s*(?:\[[^\]]*\])?\s*(?:__\w+(?:\([^)]*\))?\s*)*=\s*([^;{]+);",
        re.M,
    )
    return _unambiguous((m.group(1), " ".join(m.group(2).split())) for m in pattern.finditer(text))


_OPS: dict[type, Callable[..., int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Div: operator.floordiv,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
    ast.BitOr: operator.or_,
    ast.BitAnd: operator.and_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
}


def evaluate(expr: str, names: Callable[[str], str | None], depth: int = 0) -> int | None:
    """Evaluate a C integer constant expression, or return None.

    :param names: looks a macro or constant up (its C text, or None).

    >>> evaluate("(1 << 10) * 4UL", lambda _: None)
    4096
    """
    if depth > 6:
        return None
    text = re.sub(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", expr.strip())
    text = re.sub(r"\(\s*(?:unsigned\s+)?(?:int|long|u32|u64|s32|size_t)\s*\)", "", text)
    text = re.sub(r"\b0([0-7]+)\b", r"0o\1", text)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    return _eval_node(tree.body, names, depth)


#: Looks a macro or constant up: its C text, or None (see :func:`evaluate`).
Names = Callable[[str], str | None]


def _eval_constant(node: ast.expr, names: Names, depth: int) -> int | None:
    assert isinstance(node, ast.Constant)
    value = node.value
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _eval_name(node: ast.expr, names: Names, depth: int) -> int | None:
    assert isinstance(node, ast.Name)
    if node.id in C_LIMITS:
        return C_LIMITS[node.id]
    text = names(node.id)
    return evaluate(text, names, depth + 1) if text is not None else None


def _eval_unary(node: ast.expr, names: Names, depth: int) -> int | None:
    assert isinstance(node, ast.UnaryOp)
    op = _OPS.get(type(node.op))
    value = _eval_node(node.operand, names, depth) if op is not None else None
    return None if op is None or value is None else int(op(value))


def _eval_binary(node: ast.expr, names: Names, depth: int) -> int | None:
    # None where C would be undefined or the value absurd: a division by zero, a shift
    # by a negative count or by 128 bits or more.
    assert isinstance(node, ast.BinOp)
    op = _OPS.get(type(node.op))
    if op is None:
        return None
    left = _eval_node(node.left, names, depth)
    right = _eval_node(node.right, names, depth)
    if left is None or right is None:
        return None
    if isinstance(node.op, (ast.Div, ast.FloorDiv)) and right == 0:
        return None
    if isinstance(node.op, ast.LShift) and not 0 <= right < 128:
        return None
    return int(op(left, right))


#: How each kind of expression node is evaluated; any other kind is not a constant.
_EVAL: dict[type[ast.expr], Callable[[ast.expr, Names, int], int | None]] = {
    ast.Constant: _eval_constant,
    ast.Name: _eval_name,
    ast.UnaryOp: _eval_unary,
    ast.BinOp: _eval_binary,
}


def _eval_node(node: ast.expr, names: Names, depth: int) -> int | None:
    evaluate_node = _EVAL.get(type(node))
    return evaluate_node(node, names, depth) if evaluate_node is not None else None


def bound(value: str, names: Callable[[str], str | None]) -> int | None:
    """Return the constant an ``extra1``/``extra2`` points at, or None.

    :param value: the C text, e.g. ``SYSCTL_ZERO`` or ``&max_sched_granularity_ns``.
    """
    value = value.strip()
    value = re.sub(r"^\(\s*void\s*\*\s*\)\s*", "", value)
    if value in SYSCTL_CONSTANTS:
        return SYSCTL_CONSTANTS[value]
    if value.startswith("&") and re.fullmatch(r"&\w+", value):
        init = names(value[1:])
        return evaluate(init, names) if init is not None else None
    return None


#: Handlers that read and write ``.data`` as it is, so its initialiser is the default;
#: another handler (``proc_tcp_fastopen_key``) may show something else entirely.
_PLAIN_HANDLER = re.compile(r"proc_(?:dointvec|douintvec|dou8vec|doulongvec|dobool|dostring)\w*")


def plain_handler(handler: str) -> bool:
    """Return whether a handler shows its ``.data`` as it is (``proc_dointvec_minmax``)."""
    return _PLAIN_HANDLER.fullmatch(handler.strip()) is not None


def default(
    data: str, names: Callable[[str], str | None], net_defaults: Mapping[str, str]
) -> str | None:
    """Return the constant a sysctl's ``.data`` variable starts with, as text, or None.

    :param data: the C text of ``.data``, e.g. ``&sysctl_somaxconn`` or
        ``&init_net.core.sysctl_somaxconn``.
    :param net_defaults: ``net->core.sysctl_somaxconn = SOMAXCONN;`` assignments of the tree,
        member path → C text, for per-namespace data.
    """
    data = data.strip()
    if m := re.fullmatch(r"&init_net\.([\w.]+)", data):
        text = net_defaults.get(m.group(1))
    elif m := re.fullmatch(r"&?(\w+)", data):
        text = names(m.group(1))
    else:
        return None
    if text is None:
        return None
    if re.fullmatch(r'"[^"\\]*"', text):
        return text[1:-1]
    value = evaluate(text, names)
    return None if value is None else str(value)


_NET_ASSIGN = re.compile(r"\bnet->([\w.]+)\s*=\s*([^;=]+);")


def net_assignments(text: str) -> Iterator[tuple[str, str]]:
    """Yield ``net->member = value;`` assignments (the per-namespace sysctl defaults)."""
    for match in _NET_ASSIGN.finditer(text):
        yield match.group(1), " ".join(match.group(2).split())
