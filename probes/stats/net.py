"""Networking counters beside the snapshot's: per-CPU softnet, neighbour tables, listeners.

Each reads this process's network namespace (enter another with
:func:`probes.stats.netns.enter_netns`). Parsers are pure and tested on inline text;
readers fetch and hand over.
"""

from __future__ import annotations

import subprocess

from probes.stats.read import read_text

#: A CPU's row of /proc/net/softnet_stat: packets processed, dropped, time squeezes.
SoftnetRow = tuple[int, int, int]
#: A listening TCP socket: its address, accept queue now, and the queue's limit.
Listener = tuple[str, int, int]
#: Neighbour tables whose statistics /proc/net/stat holds (IPv4 ARP, IPv6 NDISC).
NEIGH_TABLES = ("arp_cache", "ndisc_cache")


def parse_softnet(text: str) -> list[SoftnetRow]:
    """Parse /proc/net/softnet_stat: per CPU, packets processed, dropped and time squeezes.

    Columns are hexadecimal ``unsigned int`` counters; the first three are
    ``processed``, ``dropped`` (input queue longer than netdev_max_backlog) and
    ``time_squeeze`` (net_rx_action ran out of netdev_budget or netdev_budget_usecs).

    >>> parse_softnet("0000a3f1 00000002 0000001e 0 0\\n")
    [(41969, 2, 30)]
    """
    rows = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 3:
            rows.append((int(cols[0], 16), int(cols[1], 16), int(cols[2], 16)))
    return rows


def softnet_deltas(before: list[SoftnetRow] | None, after: list[SoftnetRow]) -> list[SoftnetRow]:
    """Return per-CPU increases of softnet_stat (unsigned 32-bit counters wrap).

    :param before: the earlier rows (``None``: ``after`` are totals since boot).
    """
    if before is None or len(before) != len(after):
        return after
    return [
        ((b0 - a0) % (1 << 32), (b1 - a1) % (1 << 32), (b2 - a2) % (1 << 32))
        for (a0, a1, a2), (b0, b1, b2) in zip(before, after, strict=True)
    ]


def parse_neigh_stat(text: str) -> int:
    """Return ``table_fulls`` of /proc/net/stat/arp_cache (or ndisc_cache), summed over CPUs.

    The header names the columns; values are hexadecimal.

    >>> parse_neigh_stat("entries table_fulls\\n00000002 00000003\\n00000002 0000000c\\n")
    15
    """
    lines = text.splitlines()
    if not lines:
        return 0
    names = lines[0].split()
    if "table_fulls" not in names:
        return 0
    col = names.index("table_fulls")
    return sum(int(cols[col], 16) for cols in (ln.split() for ln in lines[1:]) if len(cols) > col)


def parse_ss_listeners(text: str) -> list[Listener]:
    """Parse ``ss -ltnH``: per listening socket, its address, accept-queue length and limit.

    For a listener ss shows Recv-Q = the accept queue now (``sk_ack_backlog``) and
    Send-Q = its limit (``sk_max_ack_backlog``: min(listen()'s backlog, somaxconn)).
    """
    out = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[0] == "LISTEN" and cols[1].isdigit() and cols[2].isdigit():
            out.append((cols[3], int(cols[1]), int(cols[2])))
    return out


def read_softnet() -> list[SoftnetRow]:
    """Read /proc/net/softnet_stat (empty when it cannot be read)."""
    text = read_text("/proc/net/softnet_stat")
    return parse_softnet(text) if text else []


def read_neigh_fulls() -> dict[str, int]:
    """Read ``table_fulls`` of the ARP and NDISC neighbour tables (table → count since boot)."""
    out = {}
    for table in NEIGH_TABLES:
        text = read_text(f"/proc/net/stat/{table}")
        if text:
            out[table] = parse_neigh_stat(text)
    return out


def read_listeners() -> list[Listener]:
    """Run ``ss -ltnH`` (iproute2, sock_diag) here; empty when it cannot run.

    /proc/net/tcp shows a listener's accept queue but not its limit, hence ss.
    """
    try:
        proc = subprocess.run(
            ["ss", "-ltnH"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_ss_listeners(proc.stdout) if proc.returncode == 0 else []
