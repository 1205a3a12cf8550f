"""What boot configuration sets: the sysctl.d files, read as systemd-sysctl reads them.

systemd-sysctl (sysctl.d(5), ``src/sysctl/sysctl.c``) reads ``*.conf`` of
:data:`SYSCTL_D_DIRS`, sorted by file name across the directories; a name in an
earlier directory masks the same name in a later one (a link to /dev/null masks
it away). Within and across files the last assignment of a key wins; a glob key
(``net.ipv4.conf.*.rp_filter``) sets every matching sysctl that no explicit
assignment sets. ``/etc/sysctl.conf`` comes last (procps' ``sysctl --system``;
Debian links it as ``/etc/sysctl.d/99-sysctl.conf``, and a file is read once).

Parsing is pure (:func:`parse_conf`, :func:`effective`); :func:`sysctl_d_files` and
:func:`read_settings` read the files (configuration, not the kernel).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from probes.stats import sysctl_name, typed_value
from probes.stats.sysctl import sysctl_relative

#: Where sysctl.d files are read from, in systemd-sysctl's order of precedence
#: (``/lib/sysctl.d`` where /lib is not /usr/lib).
SYSCTL_D_DIRS = (
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
)
SYSCTL_CONF = "/etc/sysctl.conf"

_ASSIGNMENT = re.compile(r"^\s*(-?)\s*([A-Za-z0-9_.*?/\[\]-]+)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class Setting:
    """One line of a sysctl.d file that assigns a key.

    :param key: the dotted name (or glob) it assigns, normalised as systemd-sysctl does.
    :param value: the value as written (surrounding blanks removed).
    :param path: the file; :param line: its 1-based line.
    :param ignore_failure: the line starts with ``-`` (a failure to write it is not an error).
    """

    key: str
    value: str
    path: str
    line: int
    ignore_failure: bool = False

    @property
    def glob(self) -> bool:
        """Tell whether the key is a glob (``*``, ``?`` or ``[...]``)."""
        return any(c in self.key for c in "*?[")

    @property
    def cite(self) -> str:
        """Return ``path:line``."""
        return f"{self.path}:{self.line}"


def normalise_key(key: str) -> str | None:
    """Return a key in dotted form (``net/ipv4/conf/eth0.10/rp_filter`` as the dotted name).

    >>> normalise_key("net/ipv4/conf/eth0.10/rp_filter"), normalise_key("net.core.somaxconn")
    ('net.ipv4.conf.eth0/10.rp_filter', 'net.core.somaxconn')

    :return: ``None`` for what is not a sysctl name (``..``, an empty component).
    """
    try:
        return sysctl_name(sysctl_relative(key))
    except ValueError:
        return None


def parse_conf(text: str, path: str) -> list[Setting]:
    """Parse one sysctl.d file: its assignments in order (comments, ``#`` and ``;``, skipped).

    >>> [(s.key, s.value, s.line) for s in parse_conf("# x\\n-kernel/panic = 5\\n", "f")]
    [('kernel.panic', '5', 2)]
    """
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(("#", ";")):
            continue
        match = _ASSIGNMENT.match(line)
        key = normalise_key(match.group(2)) if match else None
        if match and key is not None:
            out.append(Setting(key, match.group(3), path, number, match.group(1) == "-"))
    return out


def sysctl_d_files(dirs: Iterable[str] = SYSCTL_D_DIRS, conf: str = SYSCTL_CONF) -> list[Path]:
    """Return the files boot configuration reads, in the order they apply (last wins)."""
    chosen: dict[str, Path] = {}
    for directory in dirs:
        base = Path(directory)
        try:
            entries = list(base.glob("*.conf")) if base.is_dir() else []
        except OSError:
            continue
        for path in entries:
            chosen.setdefault(path.name, path)
    ordered = [chosen[name] for name in sorted(chosen)]
    seen = {p.resolve() for p in ordered}
    if Path(conf).is_file() and Path(conf).resolve() not in seen:
        ordered.append(Path(conf))
    return ordered


def read_settings(files: Iterable[Path] | None = None) -> list[Setting]:
    """Read the assignments of sysctl.d files (default: :func:`sysctl_d_files`), in order."""
    out: list[Setting] = []
    for path in sysctl_d_files() if files is None else files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        out += parse_conf(text, str(path))
    return out


def _matches(pattern: str, name: str) -> bool:
    # A glob matches component by component, as glob(3) over /proc/sys paths: '*' never
    # crosses a separator.
    want, have = sysctl_relative(pattern).split("/"), sysctl_relative(name).split("/")
    return len(want) == len(have) and all(
        fnmatch.fnmatchcase(h, w) for w, h in zip(want, have, strict=True)
    )


def effective(settings: Iterable[Setting], names: Iterable[str]) -> dict[str, Setting]:
    """Return what boot configuration sets: key → the assignment that wins.

    :param settings: in the order they apply (:func:`read_settings`).
    :param names: the sysctls that exist (globs are expanded over them); an explicit key
        is kept whether or not it exists.
    """
    explicit: dict[str, Setting] = {}
    globs: list[Setting] = []
    for s in settings:
        if s.glob:
            globs.append(s)
        else:
            explicit[s.key] = s
    out = dict(explicit)
    for name in names:
        if name in explicit:
            continue  # an explicit assignment beats every glob
        for s in globs:
            if _matches(s.key, name):
                out[name] = s
    return out


def assignments_of(name: str, settings: Iterable[Setting]) -> list[Setting]:
    """Return the assignments of ``name`` that apply, in order: the last one wins.

    Globs that match it count only when no assignment names it explicitly.
    """
    settings = list(settings)
    explicit = [s for s in settings if s.key == name]
    return explicit or [s for s in settings if s.glob and _matches(s.key, name)]


def same_value(written: str, live: str) -> bool:
    """Tell whether a value as a file writes it is the value the kernel shows.

    >>> same_value("4096 87380  6291456", "4096\\t87380\\t6291456\\n"), same_value("1", "0")
    (True, False)
    """
    return typed_value(written) == typed_value(live)
