"""Compile ``kassist_sysctl.bpf.c`` with clang into a cache keyed by the source's hash.

Compiled at agent start, not at setup: the source ships beside this module, so the
object loaded always matches the source installed (an upgrade or an edit recompiles
once; a start with an unchanged source reuses the cached object, ~0 ms). ``setup.sh``
installs clang, llvm and libbpf-dev. The cache directory is root's own (0700, owned
by the effective user, not writable by anyone else), because the object it holds is
loaded into the kernel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from actions.errors import ActionError

SOURCE = Path(__file__).with_name("kassist_sysctl.bpf.c")
DEFAULT_CACHE = Path("/var/cache/kassist/bpf")


def clang_command(source: Path, output: Path) -> list[str]:
    """Return the clang command line that builds the BPF object.

    Debian keeps ``asm/types.h`` under the multiarch include directory.
    """
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    return [
        "clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{multiarch}",
        "-Wall", "-Werror", "-c", str(source), "-o", str(output),
    ]  # fmt: skip


def _safe_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ActionError(
            f"BPF cache {path} is writable by someone else (or not ours)",
            f"chown root {path} && chmod 700 {path}",
        )


def object_path(cache: Path = DEFAULT_CACHE, source: Path = SOURCE) -> Path:
    """Return the compiled object for ``source``, compiling it on a cache miss.

    :raises ActionError: clang is missing or refuses the source (its first error line).
    """
    # the source, the headers beside it (kassist_policy.h) and the flags name the object
    text = b"\0".join(f.read_bytes() for f in [source, *sorted(source.parent.glob("*.h"))])
    flags = " ".join(clang_command(Path("SRC"), Path("OUT"))).encode()
    digest = hashlib.sha256(text + b"\0" + flags).hexdigest()[:16]
    _safe_dir(cache)
    out = cache / f"{source.name.removesuffix('.bpf.c')}-{digest}.o"
    try:
        st = out.lstat()
    except FileNotFoundError:
        pass
    else:
        if st.st_uid == os.geteuid() and not st.st_mode & 0o022 and out.is_file():
            return out
        out.unlink()  # not ours alone: build it again rather than load it
    if shutil.which("clang") is None:
        raise ActionError("clang is not installed", "run ./setup.sh (apt-get install clang)")
    tmp = cache / f".{out.name}.{os.getpid()}.tmp"
    proc = subprocess.run(clang_command(source, tmp), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip())
        raise ActionError(f"clang cannot build {source.name}: {first[:200]}", "see setup.sh")
    os.replace(tmp, out)
    return out
