#!/usr/bin/env bash
# Run CI (.ci/run) as on a brand-new machine, without disturbing anyone else on this one.
#
#   tests/fresh_machine.sh [--dry] [--demo] [--keep] [--keep-pip-cache] [--nice N] [--dir DIR] [COMMIT]
#
# As root. It clones COMMIT (default: this checkout's HEAD; uncommitted changes are not
# in it) into a new folder DIR/kassist with ../shared beside it (a symlink to this
# checkout's), then runs .ci/run there inside a private mount namespace in which
#
#   - tracefs and bpffs are unmounted (setup.sh and the tests mount their own: a new
#     bpffs instance, so pins made there never meet anyone else's);
#   - an empty directory is bound over each cache and state directory kassist or its
#     tests use: ~/.cache/kassist (llama.cpp's wheel, the vmcore fixture, a user's
#     knowledge base), /var/cache/kassist (the shared knowledge base, the model cache,
#     compiled BPF objects), pip's cache, and kassist's state, configuration and
#     runtime directories where they exist (/var/lib/kassist, /var/log/kassist,
#     /run/kassist, /etc/kassist, ~/.config/kassist, ~/.local/state/kassist).
#
# What was written to those goes to DIR/hidden/ instead; the machine's own stay as
# they were. Not hidden (a namespace cannot undo them): the Debian packages already
# installed and this workplace's pip configuration (/etc/pip.conf, /opt/wheels).
#
# It prints the elapsed time, setup.sh's phase timings and pytest's summary; the whole
# log is kept in DIR/ci.log. A full run recompiles llama.cpp: 40 minutes or more on two
# cores. --dry stops once the namespace is set up and its state proved (mounts absent,
# caches empty). --demo first runs the README's first command (./setup.sh demo: set up
# from nothing, then draft a bug report with the default model) and stops if it fails,
# then runs .ci/run as the second. DIR (default: a new /var/tmp/kassist-fresh-XXXXXX)
# is removed at the end unless --keep; the log is kept beside it as DIR.log. Exit
# status: .ci/run's (98 if --demo's ./setup.sh demo failed).
set -euo pipefail

say() { printf 'fresh_machine: %s\n' "$*" >&2; }

dry=0 demo=0 keep=0 keep_pip=0 niceness=10 dir="" commit=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry) dry=1 ;;
        --demo) demo=1 ;;
        --keep) keep=1 ;;
        --keep-pip-cache) keep_pip=1 ;;
        --nice) niceness="$2"; shift ;;
        --dir) dir="$2"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) say "unknown option $1 (see --help)"; exit 2 ;;
        *) commit="$1" ;;
    esac
    shift
done

[ "$(id -u)" = 0 ] || { say "needs root (a private mount namespace, CI's real components)"; exit 2; }
command -v unshare >/dev/null || { say "needs unshare (util-linux)"; exit 2; }

repo="$(git -C "$(dirname "$(readlink -f "$0")")" rev-parse --show-toplevel)"
commit="$(git -C "$repo" rev-parse --verify "${commit:-HEAD}^{commit}")"
shared="$(readlink -f "$repo/../shared" || true)"
[ -d "$shared" ] || say "no ../shared beside $repo: the corpus tests will fail"
# DIR is removed at the end: only ever one this script made, or an empty one it was given.
if [ -n "$dir" ]; then
    mkdir -p "$dir"
    [ -z "$(ls -A "$dir")" ] || { say "--dir $dir is not empty: give a new or empty folder"; exit 2; }
else
    dir="$(mktemp -d /var/tmp/kassist-fresh-XXXXXX)"
fi
dir="$(readlink -f "$dir")"

# The directories hidden behind empty ones: kassist's caches always, the rest where they
# exist (an absent one is already as on a new machine).
CACHES=("$HOME/.cache/kassist" /var/cache/kassist)
[ "$keep_pip" = 1 ] || CACHES+=("$(python3 -m pip cache dir 2>/dev/null || echo "$HOME/.cache/pip")")
for d in /var/lib/kassist /var/log/kassist /run/kassist /etc/kassist \
         "$HOME/.config/kassist" "$HOME/.local/state/kassist"; do
    [ -e "$d" ] && CACHES+=("$d")
done

say "cloning $commit into $dir/kassist"
git clone -q --no-checkout "$repo" "$dir/kassist"
git -C "$dir/kassist" checkout -q --detach "$commit"
ln -s "$shared" "$dir/shared"
for i in "${!CACHES[@]}"; do
    mkdir -p "${CACHES[$i]}" "$dir/hidden/$i"
done

# Inside the namespace: unmount, hide, prove, then run CI. Its arguments: dry, demo,
# niceness, the checkout, then pairs of (empty directory, directory it hides).
inner() {
    local dry="$1" demo="$2" niceness="$3" checkout="$4"
    shift 4
    while umount /sys/kernel/tracing 2>/dev/null; do :; done
    umount /sys/kernel/debug 2>/dev/null || true
    while umount /sys/fs/bpf 2>/dev/null; do :; done
    while [ $# -gt 0 ]; do
        mount --bind "$1" "$2"
        shift 2
    done
    local bad=0
    for fs in tracefs bpf; do
        if grep -q " $fs " /proc/self/mounts; then
            echo "fresh_machine: $fs is still mounted" >&2; bad=1
        else
            echo "fresh_machine: $fs: not mounted"
        fi
    done
    for d in "${HIDDEN[@]}"; do
        if [ -n "$(ls -A "$d")" ]; then
            echo "fresh_machine: $d is not empty" >&2; bad=1
        else
            echo "fresh_machine: $d: empty"
        fi
    done
    [ "$bad" = 0 ] || exit 99
    echo "fresh_machine: $checkout at $(git -C "$checkout" log -1 --format=%h), ../shared -> $(readlink "$checkout/../shared")"
    [ "$dry" = 1 ] && { echo "fresh_machine: --dry: the state above is a new machine's; CI not run"; exit 0; }
    cd "$checkout"
    if [ "$demo" = 1 ]; then
        echo "fresh_machine: the README's first command: ./setup.sh demo"
        nice -n "$niceness" ./setup.sh demo || { echo "fresh_machine: ./setup.sh demo failed" >&2; exit 98; }
        echo "fresh_machine: ./setup.sh demo passed; now the second: .ci/run (./setup.sh test)"
    fi
    exec nice -n "$niceness" ./.ci/run
}

pairs=()
for i in "${!CACHES[@]}"; do
    pairs+=("$dir/hidden/$i" "${CACHES[$i]}")
done
script="$(declare -f inner); HIDDEN=($(printf '%q ' "${CACHES[@]}")); inner \"\$@\""
start=$SECONDS
rc=0
unshare --mount --propagation private \
    bash -c "$script" inner "$dry" "$demo" "$niceness" "$dir/kassist" "${pairs[@]}" \
    2>&1 | tee "$dir/ci.log" || rc=${PIPESTATUS[0]}
elapsed=$((SECONDS - start))

echo
say "commit $commit, $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
say "elapsed $((elapsed / 60)) min $((elapsed % 60)) s, exit status $rc"
if [ "$dry" = 0 ]; then
    grep -E '^setup: (set up|done) in ' "$dir/ci.log" | sed 's/^/fresh_machine: /' >&2 || true
    summary="$(grep -E '[0-9]+ (passed|failed|error)' "$dir/ci.log" | tail -1 || true)"
    say "pytest: ${summary:-no summary (see $dir/ci.log)}"
fi
cp "$dir/ci.log" "$dir.log"
if [ "$keep" = 1 ]; then
    say "kept $dir (log: $dir.log)"
else
    rm -rf "$dir"
    say "log: $dir.log"
fi
exit "$rc"
