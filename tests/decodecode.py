"""The kernel's own ``scripts/decodecode`` as the reference for kassist's ``Code:`` decoding.

The script comes from Debian's ``linux-source-6.1`` (the tarball under /usr/src; only
``scripts/decodecode`` is extracted, into ``~/.cache/kassist/fixtures/linux-source/<version>/``,
where ``tests/fixtures/vmcore/build.sh`` also puts LKDTM). It runs GNU ``as`` and
``objdump`` (``aarch64-linux-gnu-`` ones for arm64, Debian's ``binutils-aarch64-linux-gnu``).
A run takes about a second, so its answers are cached per script, binutils version and
``Code:`` line: a new binutils or script runs everything again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require

SOURCE_TAR = Path("/usr/src/linux-source-6.1.tar.xz")
#: arch → the prefix of its binutils (decodecode's CROSS_COMPILE).
CROSS = {"x86_64": "", "arm64": "aarch64-linux-gnu-"}
#: Bumped when how decodecode's output is read changes (the cached answers are then stale).
_PARSE_VERSION = b"2"
_INSN = re.compile(r"^\s*[0-9a-f]+:\s+(?:[0-9a-f]{2,8} )+\s*\t(?P<text>.*)$")


@dataclass(frozen=True)
class Reference:
    """What decodecode printed for the faulting instruction.

    :param text: objdump's line, e.g. ``mov    0x0,%rbx`` (``None``: it printed none;
        ``...``: objdump skipped the zero bytes at the marker, as it does without ``-z``).
    """

    text: str | None


def _cache_root() -> Path:
    base = os.environ.get("KASSIST_FIXTURE_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "kassist" / "fixtures"


def _source_version() -> str:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "linux-source-6.1"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return out or "unknown"


def decodecode_script() -> Path:
    """Return the path of ``scripts/decodecode``, extracting it once from linux-source-6.1."""
    require(SOURCE_TAR.exists(), f"no {SOURCE_TAR} (./setup.sh installs linux-source-6.1)")
    target = _cache_root() / "linux-source" / _source_version()
    script = target / "scripts" / "decodecode"
    if not script.exists():
        tmp = target.with_name(target.name + f".decodecode.{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["tar", "-xJf", str(SOURCE_TAR), "-C", str(tmp), "--strip-components=1",
             "linux-source-6.1/scripts/decodecode"],
            check=True,
        )  # fmt: skip
        script.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "scripts" / "decodecode", script)
        shutil.rmtree(tmp, ignore_errors=True)
    return script


def _binutils_version(arch: str) -> str:
    tool = CROSS[arch] + "objdump"
    require(shutil.which(tool) is not None, f"{tool} is not installed (./setup.sh installs it)")
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.split("\n")[0]


def _run(script: Path, line: str, arch: str) -> Reference:
    env = dict(os.environ, ARCH=arch, CROSS_COMPILE=CROSS[arch])
    out = subprocess.run(
        ["bash", str(script)],
        input=line + "\n",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    ).stdout
    _, sep, section = out.partition("Code starting with the faulting instruction")
    for row in section.splitlines()[2:] if sep else []:
        if row.strip() == "...":  # objdump (without -z) skips a run of zero bytes
            return Reference("...")
        m = _INSN.match(row)
        if m:
            return Reference(m.group("text").strip())
    return Reference(None)


class Decodecode:
    """Run decodecode over ``Code:`` lines, with the answers cached on disk."""

    def __init__(self) -> None:
        self.script = decodecode_script()
        key = hashlib.sha256(self.script.read_bytes() + _PARSE_VERSION)
        for arch in CROSS:
            key.update(_binutils_version(arch).encode())
        self.path = _cache_root() / "decodecode" / f"{key.hexdigest()[:16]}.json"
        self.answers: dict[str, str | None] = (
            json.loads(self.path.read_text()) if self.path.exists() else {}
        )
        self.dirty = False

    def reference(self, line: str, arch: str) -> Reference:
        """Return decodecode's faulting instruction for one ``Code:`` line."""
        key = f"{arch}|{line}"
        if key not in self.answers:
            self.answers[key] = _run(self.script, line, arch).text
            self.dirty = True
        return Reference(self.answers[key])

    def save(self) -> None:
        """Keep the answers for the next run (written whole, then renamed)."""
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.answers, indent=0, sort_keys=True))
        os.replace(tmp, self.path)
