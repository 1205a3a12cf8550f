"""Open a vmcore, the live kernel or a QEMU guest as a drgn ``Program``, with debug info.

Every way this can go wrong that a user can meet (a missing file, a file that
is not a vmcore, a truncated dump, a ``vmlinux`` of another kernel, no debug
info at all) raises :class:`probes.errors.ProbeError` with one line and a hint.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from enum import Enum

import drgn

from probes.drgn.debugcache import uncompressed
from probes.drgn.elf import ET_CORE, PT_LOAD, build_id, read_elf_header
from probes.drgn.kdump import flattened_shortfall, kdump_shortfall
from probes.errors import ProbeError, ProbeUnavailable

#: drgn's own guess of the platform fails for QEMU's kdump files
#: (libkdumpfile cannot name the architecture), so the platform is explicit.
X86_64 = drgn.Platform(
    drgn.Architecture.X86_64,
    drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN,
)

Progress = Callable[[str], None]

_DEBUG_HINT = "give --vmlinux FILE or --debug-dir DIR (a /usr/lib/debug tree from the -dbg package)"


class DumpFormat(Enum):
    """The container formats drgn reads (by their first bytes)."""

    ELF = "elf"
    KDUMP = "kdump-compressed"
    FLATTENED = "makedumpfile-flattened"


#: file signature → format. kdump-compressed starts with "KDUMP   " (diskdump
#: header); makedumpfile's flattened stream starts with "makedumpfile".
_SIGNATURES: tuple[tuple[bytes, DumpFormat], ...] = (
    (b"\x7fELF", DumpFormat.ELF),
    (b"KDUMP   ", DumpFormat.KDUMP),
    (b"makedumpfile", DumpFormat.FLATTENED),
)


@dataclass
class Target:
    """An opened program and what opening it found out.

    :param prog: the drgn program, debug info loaded.
    :param source: what was opened: a vmcore path, ``/proc/kcore`` or ``qmp:SOCKET``.
    :param live: the kernel is running (no crashed thread).
    :param format: the dump format, or ``None`` for a live kernel.
    :param warnings: what drgn warned about while opening (e.g. a flattened file).
    :param missing_debug_info: modules whose debug info was not found.
    """

    prog: drgn.Program
    source: str
    live: bool
    format: DumpFormat | None = None
    warnings: list[str] = field(default_factory=list)
    missing_debug_info: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DebugSources:
    """Where a kernel's debug info is looked for (see :func:`load_debug_info`).

    :param vmlinux: the kernel's ELF file with DWARF (from its ``-dbg`` package), checked
        against the dump's build ID.
    :param debug_dir: a ``/usr/lib/debug``-style tree (searched by path and build ID).
    :param extra: module ``.ko`` files with debug info (always loaded).
    :param modules: the loaded modules whose debug info is searched for (names, as
        ``lsmod`` prints them); ``None``: all of them (more later with :func:`load_modules`).
    """

    vmlinux: str | None = None
    debug_dir: str | None = None
    extra: Sequence[str] = ()
    modules: Collection[str] | None = None


#: No debug files named: the kernel's own from drgn's standard places, every module's.
STANDARD_PLACES = DebugSources()


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _drgn_warnings() -> Iterator[list[str]]:
    # drgn logs through the "drgn" logger; without this its warnings go to
    # stderr unasked. They become Target.warnings instead.
    logger = logging.getLogger("drgn")
    collector = _WarningCollector()
    old_propagate = logger.propagate
    logger.addHandler(collector)
    logger.propagate = False
    try:
        yield collector.messages
    finally:
        logger.removeHandler(collector)
        logger.propagate = old_propagate


def dump_format(path: str) -> DumpFormat:
    """Tell which vmcore format a file is in, from its first bytes.

    :param path: the file.
    :raises ProbeError: the file is missing, unreadable or not a vmcore.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except FileNotFoundError:
        raise ProbeError(f"{path}: no such file", "give the path of a vmcore") from None
    except IsADirectoryError:
        raise ProbeError(
            f"{path} is a directory", "give the vmcore file inside it (e.g. DIR/vmcore)"
        ) from None
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror}", "check its permissions") from None
    for signature, fmt in _SIGNATURES:
        if head.startswith(signature):
            return fmt
    raise ProbeError(
        f"{path} is not a vmcore (neither ELF core, kdump-compressed nor flattened kdump)",
        "give a dump written by kdump/makedumpfile or QEMU dump-guest-memory",
    )


def check_elf_core(path: str) -> None:
    """Check that an ELF vmcore is a core file that holds all of its segments.

    :raises ProbeError: not an ELF core file, or shorter than its program headers say.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        header = read_elf_header(fh)
    if header is None or header.type != ET_CORE:
        raise ProbeError(
            f"{path} is an ELF file but not a core dump", "give the vmcore, not a vmlinux or .ko"
        )
    end = max((s.offset + s.filesz for s in header.segments if s.type == PT_LOAD), default=0)
    if end > size:
        raise ProbeError(f"{path} is truncated: {size} bytes, its segments need {end}", _RECOPY)


_RECOPY = "copy the whole dump again (check free space where it was written)"


def check_kdump(path: str, fmt: DumpFormat) -> None:
    """Check that a kdump-compressed or flattened file is as long as its own tables say.

    :raises ProbeError: the file is truncated.
    """
    if fmt is DumpFormat.KDUMP:
        short = kdump_shortfall(path)
        if short is not None:
            raise ProbeError(
                f"{path} is truncated: {short[0]} bytes, its pages need {short[1]}", _RECOPY
            )
    elif fmt is DumpFormat.FLATTENED:
        size = flattened_shortfall(path)
        if size is not None:
            raise ProbeError(
                f"{path} is truncated: the flattened dump stops at byte {size} "
                "without its end record",
                _RECOPY,
            )


def _check_vmlinux(prog: drgn.Program, vmlinux: str) -> None:
    if not os.path.isfile(vmlinux):
        raise ProbeError(f"vmlinux {vmlinux}: no such file", _DEBUG_HINT)
    release = _release(prog)
    try:
        given = build_id(vmlinux)
    except OSError as exc:
        raise ProbeError(
            f"cannot read {vmlinux}: {exc.strerror}", "check its permissions"
        ) from None
    if given is None:
        raise ProbeError(
            f"{vmlinux} is not a vmlinux with a build ID",
            f"give the vmlinux of kernel {release} from its -dbg package",
        )
    try:
        wanted = prog.main_module().build_id
    except LookupError:
        wanted = None
    if wanted and given != wanted:
        raise ProbeError(
            f"{vmlinux} does not match the dump: build ID {given.hex()[:12]}…, "
            f"the dump's kernel {release} has {wanted.hex()[:12]}…",
            f"give the vmlinux of kernel {release} (package linux-image-{release}-dbg)",
        )


def _release(prog: drgn.Program) -> str:
    try:
        release: bytes = prog["UTS_RELEASE"].string_()
    except (LookupError, drgn.FaultError):
        return "?"
    return release.decode(errors="replace")


def vmlinux_candidates(directories: Sequence[str], build: bytes | None, release: str) -> list[str]:
    # Where a /usr/lib/debug-style tree keeps the kernel's debug file (drgn's own places).
    out = []
    for d in directories:
        if build:
            out.append(os.path.join(d, ".build-id", build.hex()[:2], build.hex()[2:] + ".debug"))
        out += [
            os.path.join(d, "boot", f"vmlinux-{release}"),
            os.path.join(d, "lib", "modules", release, "vmlinux"),
            os.path.join(d, "usr", "lib", "debug", "boot", f"vmlinux-{release}"),
        ]
    return out


def _kernel_debug_file(
    prog: drgn.Program, vmlinux: str | None, directories: Sequence[str]
) -> tuple[str | None, str | None]:
    # The file to give drgn for the kernel, uncompressed from the debug cache where the
    # found one's DWARF is compressed; and a line when the cache could not be used. The
    # cache only stands in for a file found: with none given or found, there is none.
    try:
        build = prog.main_module().build_id
    except LookupError:
        build = None
    if vmlinux is None:
        release = _release(prog)
        for candidate in vmlinux_candidates(directories, build, release):
            with suppress(OSError):
                if os.path.isfile(candidate) and (build is None or build_id(candidate) == build):
                    vmlinux = candidate
                    break
    if vmlinux is None:
        return None, None
    return uncompressed(vmlinux)


def load_debug_info(
    target: Target, sources: DebugSources = STANDARD_PLACES, progress: Progress | None = None
) -> None:
    """Load the kernel's and its modules' debug info into a target.

    Files are tried in order: ``vmlinux`` and ``extra`` given explicitly, then
    ``debug_dir`` laid out like ``/usr/lib/debug`` (``boot/vmlinux-<release>``,
    ``lib/modules/<release>/...``, ``.build-id/xx/yyyy.debug``), then drgn's
    standard places. A kernel debug file whose DWARF is compressed is replaced by its
    uncompressed copy from :mod:`probes.drgn.debugcache` (written the first time).

    :param sources: the files and modules named.
    :param progress: called with a line before each slow step (loading debug info takes
        seconds); the CLI prints them on stderr.
    :raises ProbeError: the vmlinux does not match, or no kernel debug info was found.
    """
    prog = target.prog
    vmlinux, debug_dir, modules = sources.vmlinux, sources.debug_dir, sources.modules
    # Creates the main module from VMCOREINFO, so its build ID can be compared.
    for _ in prog.loaded_modules():
        break
    if vmlinux is not None:
        _check_vmlinux(prog, vmlinux)
    if debug_dir is not None:
        if not os.path.isdir(debug_dir):
            raise ProbeError(f"debug dir {debug_dir}: no such directory", _DEBUG_HINT)
        prog.debug_info_options.directories = (
            os.path.abspath(debug_dir),
            *prog.debug_info_options.directories,
        )
    kernel_file, why = _kernel_debug_file(prog, vmlinux, prog.debug_info_options.directories)
    if why:
        target.warnings.append(why)
    paths = [p for p in (kernel_file or vmlinux, *sources.extra) if p]
    if progress:
        progress(f"loading debug info for kernel {_release(prog)} (takes a few seconds)")
    with _drgn_warnings() as messages, suppress(drgn.MissingDebugInfoError):
        prog.load_debug_info(paths, default=modules is None)
        if modules is not None:
            load_modules(target, {"kernel", *modules})
    try:
        main = prog.main_module()
    except LookupError:
        main = None
    if main is None or main.debug_file_status != drgn.ModuleFileStatus.HAVE:
        release = _release(prog)
        raise ProbeError(
            f"no debug info found for kernel {release}",
            f"{_DEBUG_HINT}; on Debian: apt-get install linux-image-{release}-dbg",
        )
    target.missing_debug_info = _missing(prog, modules)
    target.warnings.extend(m for m in messages if "did not match any loaded" not in m)


def _missing(prog: drgn.Program, modules: Collection[str] | None) -> list[str]:
    return sorted(
        m.name
        for m in prog.modules()
        if m.debug_file_status not in (drgn.ModuleFileStatus.HAVE, drgn.ModuleFileStatus.DONT_NEED)
        and (modules is None or m.name in modules or m.name == "kernel")
    )


def load_modules(target: Target, names: Collection[str]) -> list[str]:
    """Load the debug info of more loaded modules of a target (``_`` and ``-`` alike).

    :param names: module names as the kernel prints them (``kassist_crash``).
    :return: the names whose debug info is still missing.
    """
    prog = target.prog
    wanted = {n.replace("-", "_") for n in names}
    found = [m for m in prog.modules() if m.name.replace("-", "_") in wanted]
    todo = [m for m in found if m.wants_debug_file()]
    if todo:
        with _drgn_warnings(), suppress(drgn.MissingDebugInfoError):
            prog.load_module_debug_info(*todo)
    missing = sorted(m.name for m in found if m.wants_debug_file())
    target.missing_debug_info = sorted({*target.missing_debug_info, *missing})
    return missing


def open_vmcore(
    path: str, sources: DebugSources = STANDARD_PLACES, progress: Progress | None = None
) -> Target:
    """Open a vmcore (ELF, kdump-compressed or flattened) and load its debug info.

    >>> target = open_vmcore("/var/crash/vmcore", DebugSources(debug_dir="/usr/lib/debug"))
    ... # doctest: +SKIP

    :param path: the dump.
    :param sources: where its debug info is (:func:`load_debug_info`).
    :param progress: called with a line before each slow step.
    :raises ProbeError: missing, not a vmcore, truncated, not a Linux kernel, or wrong vmlinux.
    """
    fmt = dump_format(path)
    if fmt is DumpFormat.ELF:
        check_elf_core(path)
    else:
        check_kdump(path, fmt)
    prog = drgn.Program(X86_64)
    with _drgn_warnings() as messages:
        try:
            prog.set_core_dump(path)
        except Exception as exc:  # libkdumpfile's errors are plain Exceptions
            text = str(exc).split(": ")[-1] or type(exc).__name__
            raise ProbeError(
                f"{path} cannot be read as a {fmt.value} vmcore (truncated or damaged?): {text}",
                "copy the whole dump again, or check it with `makedumpfile --dump-dmesg`",
            ) from None
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        raise ProbeError(f"{path} is a core dump of a process, not of a kernel", "give a vmcore")
    target = Target(prog, path, live=False, format=fmt, warnings=list(messages))
    load_debug_info(target, sources, progress)
    return target


def open_live(
    sources: DebugSources = STANDARD_PLACES,
    kcore: str = "/proc/kcore",
    progress: Progress | None = None,
) -> Target:
    """Open the running kernel through ``/proc/kcore`` and load its debug info.

    :param sources: where its debug info is (:func:`load_debug_info`).
    :param kcore: the kcore file (``/proc/kcore``).
    :raises ProbeUnavailable: there is no kcore here.
    :raises ProbeError: it cannot be read, or no debug info.
    """
    if not os.path.exists(kcore):
        raise ProbeUnavailable(
            f"not available here: no {kcore}",
            "this kernel was built without CONFIG_PROC_KCORE; analyse a vmcore instead",
        )
    prog = drgn.Program()
    try:
        prog.set_kernel()
    except PermissionError:
        raise ProbeError(f"cannot read {kcore}: permission denied", "run as root") from None
    except (OSError, ValueError) as exc:
        raise ProbeError(f"cannot open the running kernel: {exc}", "run as root") from None
    target = Target(prog, kcore, live=True)
    load_debug_info(target, sources, progress)
    return target


#: Seconds to wait for QEMU's QMP greeting before giving up.
QMP_GREETING_TIMEOUT = 5.0


def check_qmp(address: str, timeout: float = QMP_GREETING_TIMEOUT) -> None:
    """Check that QEMU answers on a QMP address (drgn itself would wait forever).

    QEMU serves one QMP client at a time: a second one is accepted by the
    kernel but never greeted.

    :param address: a Unix socket path, or ``host:port``.
    :raises ProbeError: nothing listens there, or QEMU does not greet within ``timeout``.
    """
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and not os.path.exists(address):
        family, where = socket.AF_INET, (host, int(port))
    else:
        family, where = socket.AF_UNIX, address  # type: ignore[assignment]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(where)
            greeting = sock.recv(4096)
        except TimeoutError:
            raise ProbeError(
                f"QEMU at {address} does not answer within {timeout:.0f} s",
                "another QMP client may be connected (QEMU serves one at a time)",
            ) from None
        except OSError as exc:
            raise ProbeError(
                f"cannot connect to QEMU at {address}: {exc.strerror or exc}",
                "give QEMU's -qmp unix:PATH,server=on,wait=off socket",
            ) from None
    if b'"QMP"' not in greeting:
        raise ProbeError(f"{address} is not a QMP socket", "give QEMU's -qmp socket")


def open_qmp(
    address: str, sources: DebugSources = STANDARD_PLACES, progress: Progress | None = None
) -> Target:
    """Open a running QEMU guest's kernel over QMP (drgn's ``--qemu``).

    The guest needs QEMU's ``-device vmcoreinfo`` and its ``qemu_fw_cfg``
    module loaded, so that drgn finds the kernel's VMCOREINFO.

    :param address: QEMU's QMP Unix socket path, or ``host:port``.
    :param sources: where its debug info is (:func:`load_debug_info`).
    :raises ProbeError: QEMU cannot be reached, the guest's kernel is not found, or no debug info.
    """
    check_qmp(address)
    prog = drgn.Program(X86_64)
    with _drgn_warnings() as messages:
        try:
            prog.set_qemu_qmp(address)
        except (OSError, ValueError) as exc:
            raise ProbeError(
                f"cannot attach to QEMU at {address}: {exc}",
                "give QEMU's -qmp unix:PATH,server=on,wait=off socket; the guest needs "
                "-device vmcoreinfo and the qemu_fw_cfg module",
            ) from None
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        raise ProbeError(
            f"QEMU at {address}: no Linux kernel found in the guest",
            "run QEMU with -device vmcoreinfo and load qemu_fw_cfg in the guest",
        )
    target = Target(prog, f"qmp:{address}", live=True, warnings=list(messages))
    load_debug_info(target, sources, progress)
    return target
