"""The action catalogue: the kinds of knob the agent may write, behind one interface.

A :class:`Kind` turns a recommendation's ``target`` into a :class:`Knob` (or
refuses the name); a knob reads, parses and writes one file. ``sysctl`` covers
any key under ``/proc/sys``; ``sysfs`` covers only the knobs of an explicit
catalogue (:data:`SYSFS_CATALOGUE`). A new kind registers in :data:`KINDS`.

Reading is kept apart from parsing: :func:`parse_kernel_text` turns what the
kernel prints into the canonical text the agent compares and journals.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path

from actions.errors import Rejected

#: Characters a shell, a sysctl.d file or a terminal would give a meaning to.
HOSTILE_CHARS = frozenset("\x00\n\r\t\x0b\x0c;|&$`<>(){}[]\\'\"*?!#~=")
_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_WORD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
MAX_NAME = 200
_INT = re.compile(r"^-?[0-9]{1,19}$")


@dataclass(frozen=True)
class Roots:
    """Where the kernel's files live; tests point these at a fake tree.

    :param proc_sys: the sysctl tree (``/proc/sys``).
    :param sys: the sysfs tree (``/sys``).
    """

    proc_sys: Path = Path("/proc/sys")
    sys: Path = Path("/sys")


def glob_match(pattern: str, name: str, sep: str) -> bool:
    """Match ``name`` against ``pattern`` one component at a time.

    ``*`` matches within one component, ``**`` (a whole component) any number of
    components: ``net.ipv4.tcp_*`` matches ``net.ipv4.tcp_rmem`` but not
    ``net.ipv4.conf.all.rp_filter``; ``kernel.**`` matches every ``kernel`` key.

    :param sep: the component separator (``.`` for sysctl, ``/`` for sysfs).
    """
    return _match_parts(pattern.split(sep), name.split(sep))


@lru_cache(maxsize=16384)
def first_match(patterns: tuple[str, ...], name: str, sep: str) -> str | None:
    """Return the first of ``patterns`` that matches ``name`` (see :func:`glob_match`).

    Cached: the agent asks the same few questions about the same few keys all day.
    """
    return next((p for p in patterns if glob_match(p, name, sep)), None)


def _match_parts(pat: list[str], parts: list[str]) -> bool:
    if not pat:
        return not parts
    if pat[0] == "**":
        return any(_match_parts(pat[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pat[0]) and _match_parts(pat[1:], parts[1:])


def check_chars(what: str, text: str, target: str) -> None:
    """Refuse NUL, newlines, shell metacharacters and non-ASCII in a name or value.

    :raises Rejected: rule ``name`` (for names) or ``value`` (for values).
    """
    rule = "name" if what == "name" else "value"
    bad = sorted({c for c in text if c in HOSTILE_CHARS or not c.isascii() or not c.isprintable()})
    if bad:
        shown = " ".join(repr(c) for c in bad[:4])
        raise Rejected(rule, target if rule == "value" else "", f"{what} contains {shown}")


@lru_cache(maxsize=4096)
def parse_ints(text: str) -> tuple[int, ...] | None:
    """Parse canonical text as integers, or return ``None`` when it is not all integers."""
    words = text.split()
    if not words or not all(_INT.match(w) for w in words):
        return None
    return tuple(int(w) for w in words)


def parse_kernel_text(raw: str) -> str:
    """Turn what the kernel prints for a knob into canonical text.

    Whitespace runs become one space; a bracketed choice list (``none
    [mq-deadline] kyber``) becomes the chosen word.

    >>> parse_kernel_text("4096\\t131072\\t6291456\\n")
    '4096 131072 6291456'
    >>> parse_kernel_text("always [madvise] never\\n")
    'madvise'
    """
    words = raw.split()
    chosen = [w[1:-1] for w in words if w.startswith("[") and w.endswith("]")]
    if len(chosen) == 1:
        return chosen[0]
    return " ".join(words)


def bracket_options(raw: str) -> tuple[str, ...]:
    """Return the choices a bracketed knob offers (``none [mq-deadline]`` -> both).

    :return: an empty tuple when the text is not a bracketed choice list.
    """
    words = raw.split()
    if sum(1 for w in words if w.startswith("[") and w.endswith("]")) != 1:
        return ()
    return tuple(w.strip("[]") for w in words)


def read_file(path: Path) -> str:
    """Read a kernel file in one ``read(2)`` (sysctl and sysfs files are small).

    :raises OSError: the kernel's error.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        return os.read(fd, 65536).decode("ascii", "replace")
    finally:
        os.close(fd)


def write_file(path: Path, text: str) -> None:
    """Write a value in one ``write(2)``, as ``sysctl -w`` does (no partial writes).

    :raises OSError: the kernel's error (``EINVAL`` for a value it refuses).
    """
    data = (text + "\n").encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_TRUNC)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.EIO, "short write")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Knob:
    """One resolved, existing, writable kernel file.

    :param kind: ``sysctl`` or ``sysfs``.
    :param key: its canonical name (``net.core.somaxconn``, ``block/vda/queue/scheduler``).
    :param path: the file.
    :param pattern: the catalogue entry it matched (sysfs) or the key itself (sysctl).
    """

    kind: str
    key: str
    path: Path
    pattern: str

    def read_raw(self) -> str:
        """Return the file's text as the kernel prints it."""
        return read_file(self.path)

    def read(self) -> str:
        """Return the current value as canonical text."""
        return parse_kernel_text(self.read_raw())

    def write(self, value: str) -> None:
        """Write canonical text to the knob."""
        write_file(self.path, value)


def _inside(path: Path, root: Path) -> bool:
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def _existing_writable(
    path: Path, root: Path, key: str, root_name: str, writable: bool = True
) -> None:
    if not _inside(path, root):
        raise Rejected("name", key, f"resolves outside {root_name} (a symlink escape)")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise Rejected("exists", key, "no such key in this kernel") from None
    except OSError as exc:
        raise Rejected("exists", key, f"cannot be inspected ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise Rejected("exists", key, "is a directory, not a key")
    if writable and not st.st_mode & stat.S_IWUSR:
        raise Rejected("writable", key, "is read-only in this kernel")


def _check_name(target: str) -> None:
    check_chars("name", target, target)
    if len(target) > MAX_NAME:
        raise Rejected("name", "", f"name longer than {MAX_NAME} characters")


class Kind(ABC):
    """One kind of knob: how a target is named, found and checked."""

    name: str
    sep: str

    @abstractmethod
    def resolve(self, target: str, roots: Roots, writable: bool = True) -> Knob:
        """Return the knob a target names.

        :param writable: whether the knob must be writable (``False``: only read it).

        :raises Rejected: ``name`` (not canonical, or escapes the tree), ``exists``,
            ``writable`` or ``catalogue``.
        """


class SysctlKind(Kind):
    """Any key under /proc/sys, named with dots (``net.ipv4.tcp_rmem``)."""

    name = "sysctl"
    sep = "."

    def resolve(self, target: str, roots: Roots, writable: bool = True) -> Knob:
        _check_name(target)
        if "/" in target:
            raise Rejected("name", target, "sysctl keys are written with dots, not '/'")
        parts = target.split(".")
        if any(p == "" for p in parts):
            raise Rejected("name", target, "empty component ('..', or a leading/trailing dot)")
        bad = [p for p in parts if not _COMPONENT.match(p)]
        if bad:
            raise Rejected("name", target, f"component {bad[0]!r} is not a plain name")
        path = roots.proc_sys.joinpath(*parts)
        _existing_writable(path, roots.proc_sys, target, "/proc/sys", writable)
        return Knob(self.name, target, path, target)


#: The sysfs knobs the agent may write, by pattern (``*`` matches one component).
SYSFS_CATALOGUE: tuple[str, ...] = (
    "block/*/queue/scheduler",
    "block/*/queue/read_ahead_kb",
    "block/*/queue/nr_requests",
    "kernel/mm/transparent_hugepage/enabled",
    "kernel/mm/transparent_hugepage/defrag",
    "devices/system/cpu/cpu*/cpufreq/scaling_governor",
)


class SysfsKind(Kind):
    """The knobs of :data:`SYSFS_CATALOGUE`, named relative to /sys."""

    name = "sysfs"
    sep = "/"

    def resolve(self, target: str, roots: Roots, writable: bool = True) -> Knob:
        _check_name(target)
        if target.startswith("/"):
            raise Rejected("name", target, "name it relative to /sys (no leading '/')")
        parts = target.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise Rejected("name", target, "'.', '..' or '//' in a sysfs path")
        bad = [p for p in parts if not _WORD.match(p)]
        if bad:
            raise Rejected("name", target, f"component {bad[0]!r} is not a plain name")
        pattern = first_match(SYSFS_CATALOGUE, target, "/")
        if pattern is None:
            raise Rejected(
                "catalogue", target, "not a sysfs knob the agent manages (see its catalogue)"
            )
        path = roots.sys.joinpath(*parts)
        _existing_writable(path, roots.sys, target, "/sys", writable)
        return Knob(self.name, target, path, pattern)


#: Every kind of knob, by the name a recommendation's ``kind`` uses.
KINDS: dict[str, Kind] = {k.name: k for k in (SysctlKind(), SysfsKind())}


@lru_cache(maxsize=4096)
def resolve(kind: str, target: str, roots: Roots, writable: bool = True) -> Knob:
    """Resolve a target of the given kind (see :meth:`Kind.resolve`).

    Successful resolutions are cached (refusals are not): the trees change rarely, and
    a knob that disappears later fails its read or write, which the agent handles.

    :raises Rejected: an unknown kind, or the kind's own refusals.
    """
    handler = KINDS.get(kind)
    if handler is None:
        raise Rejected("schema", target, f"unknown kind {kind!r}")
    return handler.resolve(target, roots, writable)
