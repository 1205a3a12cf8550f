"""``struct ctl_table`` definitions in the kernel's C sources, and the paths they register at.

Pure functions over a C file's text. A table's ``/proc/sys`` directory comes from
the calls in the same file that register it: ``register_sysctl("net/core", t)``,
``register_sysctl_init``, ``register_net_sysctl(net, "net/ipv4", t)`` (also
through a ``kmemdup`` copy), ``DECLARE_SYSCTL_BASE(kernel, kern_table)``,
``register_sysctl_table(root)`` with ``.child`` links and
``register_sysctl_paths(path, t)``. Tables built by macros or registered at
computed paths (per-device ``conf/eth0`` tables) are not resolved.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

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
    r"^[ \t]*(?:static\s+)?(?:const\s+)?struct\s+ctl_path\s+(\w+)\s*\[\s*\]\s*=\s*\{", re.M
)
_FIELD = re.compile(r"\.(\w+)\s*=\s*")
_REGISTRATIONS: tuple[tuple[re.Pattern[str], int, int], ...] = (
    # (call, group of the path, group of the table)
    (re.compile(r"\bregister_sysctl(?:_init)?\s*\(\s*\"([^\"]+)\"\s*,\s*(\w+)"), 1, 2),
    (re.compile(r"\bregister_net_sysctl\s*\(\s*[^,]+,\s*\"([^\"]+)\"\s*,\s*(\w+)"), 1, 2),
    (re.compile(r"\bDECLARE_SYSCTL_BASE\s*\(\s*(\w+)\s*,\s*(\w+)\s*\)"), 1, 2),
)
_ROOT = re.compile(r"\bregister_sysctl_table\s*\(\s*(\w+)\s*\)")
_PATHS = re.compile(r"\bregister_sysctl_paths\s*\(\s*(\w+)\s*,\s*(\w+)\s*\)")
_COPY = re.compile(r"\b(\w+)\s*=\s*(?:kmemdup\s*\(\s*)?(\w+)\s*[,;]")
_DEFINE = re.compile(r"^#\s*define\s+(\w+)\s+([^\n\\]+?)\s*(?:/\*.*)?$", re.M)


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
    """Return every ``struct ctl_table`` array of a C file, name → entries in order."""
    found: dict[str, list[Entry]] = {}
    for match in _TABLE.finditer(text):
        body_start = match.end()
        body_end = _closing(text, body_start - 1)
        found[match.group(1)] = list(_entries(match.group(1), text, body_start, body_end))
    return found


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


def _entries(table: str, text: str, start: int, end: int) -> Iterator[Entry]:
    i = start
    while i < end:
        c = text[i]
        if c == "{":
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
        else:
            i += 1


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


def directories(text: str, file_tables: Mapping[str, list[Entry]]) -> dict[str, set[str]]:
    """Return the ``/proc/sys`` directories each table of a file is registered at.

    :param file_tables: the file's tables (from :func:`tables`).
    """
    copies = {m.group(1): m.group(2) for m in _COPY.finditer(text) if m.group(2) in file_tables}

    def table_of(name: str) -> str | None:
        return name if name in file_tables else copies.get(name)

    found: dict[str, set[str]] = {}
    for pattern, path_group, table_group in _REGISTRATIONS:
        for match in pattern.finditer(text):
            table = table_of(match.group(table_group))
            if table:
                found.setdefault(table, set()).add(match.group(path_group).strip("/"))
    paths = _ctl_paths(text)
    for match in _PATHS.finditer(text):
        table = table_of(match.group(2))
        if table and match.group(1) in paths:
            found.setdefault(table, set()).add(paths[match.group(1)])
    for match in _ROOT.finditer(text):
        root = table_of(match.group(1))
        if root:
            _walk_children(root, "", file_tables, found, depth=0)
    # A child of a base table registered above is below its directory.
    for table, dirs in list(found.items()):
        for entry in file_tables.get(table, []):
            child = entry.fields.get("child", "").lstrip("&")
            if child in file_tables and entry.procname:
                for directory in list(dirs):
                    _walk_children(child, f"{directory}/{entry.procname}", file_tables, found, 0)
    return found


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


def sysctls(text: str) -> tuple[list[Sysctl], int]:
    """Return the sysctls a C file defines at resolved directories, and how many it left unresolved.

    An entry with a ``.child`` is a directory, not a sysctl.
    """
    file_tables = tables(text)
    dirs = directories(text, file_tables)
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


def _eval_node(node: ast.expr, names: Callable[[str], str | None], depth: int) -> int | None:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in C_LIMITS:
            return C_LIMITS[node.id]
        text = names(node.id)
        return evaluate(text, names, depth + 1) if text is not None else None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        value = _eval_node(node.operand, names, depth)
        return None if value is None else int(_OPS[type(node.op)](value))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left = _eval_node(node.left, names, depth)
        right = _eval_node(node.right, names, depth)
        if (
            left is None
            or right is None
            or (isinstance(node.op, (ast.Div, ast.FloorDiv)) and right == 0)
        ):
            return None
        if isinstance(node.op, ast.LShift) and not 0 <= right < 128:
            return None
        return int(_OPS[type(node.op)](left, right))
    return None


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
