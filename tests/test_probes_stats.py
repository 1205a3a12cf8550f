"""Kernel statistics: parsers on inline text, and real snapshots and rates of this kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from probes.errors import ProbeError
from probes.stats import (
    decode_taint,
    rates,
    read_section,
    sysctl,
    take_partial_snapshot,
    take_snapshot,
)
from probes.stats.netns import netns_path
from probes.stats.parse import (
    parse_cgroup_io_stat,
    parse_diskstats,
    parse_kconfig,
    parse_modules,
    parse_pressure,
    parse_snmp,
    parse_sockstat,
    parse_stat,
    typed_value,
)
from probes.stats.read import cgroup2_mount, resolve_cgroup
from tests.agent_support import NetNS, require_netns
from tests.conftest import ROOT, require, run_kassist


def test_typed_values() -> None:
    assert typed_value("4096\t131072\t6291456\n") == [4096, 131072, 6291456]
    assert typed_value("-1\n") == -1
    assert typed_value("reno cubic\n") == "reno cubic"
    assert typed_value("\n") == ""


def test_parsers_on_real_formats() -> None:
    stat = parse_stat(
        "cpu  10 0 5 100 1 0 2 0 0 0\ncpu0 5 0 2 50 0 0 1 0 0 0\nctxt 99\nintr 7 1 2\n"
    )
    assert stat["cpu"] == {
        "user": 10, "nice": 0, "system": 5, "idle": 100, "iowait": 1,
        "irq": 0, "softirq": 2, "steal": 0, "guest": 0, "guest_nice": 0,
    }  # fmt: skip
    assert (stat["ctxt"], stat["intr"]) == (99, 7)
    psi = parse_pressure(
        "some avg10=0.50 avg60=0.10 avg300=0.00 total=1234\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n"
    )
    assert psi["some"]["total"] == 1234 and psi["full"]["avg10"] == 0.0
    snmp = parse_snmp("Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RetransSegs\nTcp: 12\n")
    assert snmp == {"Ip": {"Forwarding": 1, "DefaultTTL": 64}, "Tcp": {"RetransSegs": 12}}
    disks = parse_diskstats(" 254       0 vda 100 2 800 30 50 1 400 20 0 40 50 0 0 0 0 3 1\n")
    assert disks["vda"]["reads_completed"] == 100 and disks["vda"]["flushes_completed"] == 3
    assert disks["vda"]["major"] == 254
    cfg = parse_kconfig('CONFIG_HZ=250\nCONFIG_A="x y"\n# CONFIG_B is not set\nCONFIG_C=m\n')
    assert cfg == {"CONFIG_HZ": 250, "CONFIG_A": "x y", "CONFIG_B": False, "CONFIG_C": "m"}


def test_modules_sockstat_and_cgroup_io_parsers() -> None:
    mods = parse_modules(
        "nf_tables 323584 12 nft_chain_nat,nft_ct, Live 0xffffffffc0a00000\n"
        "vboxdrv 696320 2 - Live 0x0000000000000000 (OE)\n"
    )
    assert mods[0] == {
        "name": "nf_tables", "size": 323584, "refcount": 12,
        "users": ["nft_chain_nat", "nft_ct"], "state": "Live", "taint": "",
    }  # fmt: skip
    assert mods[1]["users"] == [] and mods[1]["taint"] == "OE"
    sock = parse_sockstat("sockets: used 120\nTCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1\n")
    assert sock["TCP"] == {"inuse": 5, "orphan": 0, "tw": 2, "alloc": 7, "mem": 1}
    assert sock["sockets"] == {"used": 120}
    io = parse_cgroup_io_stat("254:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n")
    assert io == {
        "254:0": {"rbytes": 4096, "wbytes": 0, "rios": 1, "wios": 0, "dbytes": 0, "dios": 0}
    }


def test_taint_decoding() -> None:
    assert decode_taint(0) == []
    flags = decode_taint((1 << 0) | (1 << 9) | (1 << 12) | (1 << 30))
    assert [f["letter"] for f in flags] == ["P", "W", "O", "?"]
    assert "warning" in str(flags[1]["meaning"])


def test_sysctl_tree_is_typed_with_writability() -> None:
    sysctls = sysctl.read_sysctls()
    assert len(sysctls) > 500
    pid_max = sysctls["kernel.pid_max"]
    assert pid_max.value == int(Path("/proc/sys/kernel/pid_max").read_text())
    assert sysctls["kernel.ostype"].value == "Linux"
    rmem = sysctls["net.ipv4.tcp_rmem"].value
    assert isinstance(rmem, list) and len(rmem) == 3
    assert sysctls["kernel.ostype"].writable is False  # 0444
    if os.geteuid() == 0:
        assert sysctls["vm.swappiness"].writable is True
    drop = sysctls["vm.drop_caches"]
    assert drop.value is None and drop.error == "write-only"  # never read: 0200


def test_snapshot_of_this_kernel() -> None:
    snap = take_snapshot()
    for section in (
        "meminfo",
        "vmstat",
        "loadavg",
        "stat",
        "snmp",
        "netstat",
        "sockstat",
        "diskstats",
    ):
        assert section in snap.proc, section
    assert snap.proc["meminfo"]["MemTotal"] > 1 << 20
    if Path("/proc/pressure/cpu").exists():
        assert "some" in snap.proc["psi_cpu"]
    assert snap.cmdline == Path("/proc/cmdline").read_text().strip()
    assert snap.sysctls["kernel.osrelease"].value == os.uname().release
    if snap.kconfig_source is not None:
        assert snap.kconfig.get("CONFIG_BPF") == "y"
    assert snap.taint["mask"] == int(Path("/proc/sys/kernel/tainted").read_text())
    for dev, queue in snap.block_queues.items():
        assert isinstance(queue.get("logical_block_size"), int), dev
    json.dumps(snap.to_dict())  # all of it is JSON-ready


def test_rates_between_two_snapshots() -> None:
    before = take_snapshot(sysctls=False, kconfig=False)
    for _ in range(40):
        subprocess.run(["true"], check=True)
    after = take_snapshot(sysctls=False, kconfig=False)
    per_second = rates(before, after)
    seconds = after.taken - before.taken
    assert per_second["stat.processes"] * seconds >= 40
    assert per_second["stat.ctxt"] > 0
    assert all(v >= 0 for v in per_second.values())
    assert not any(k.startswith("vmstat.nr_") for k in per_second)  # gauges have no rate
    with pytest.raises(ValueError, match="after the first"):
        rates(after, before)


def test_cgroup_statistics() -> None:
    mount = cgroup2_mount()
    require(mount is not None, "no cgroup v2 hierarchy is mounted")
    assert mount is not None
    snap = take_snapshot("/", sysctls=False, kconfig=False)
    assert snap.cgroup["path"] == mount
    assert "cpu.stat" in snap.cgroup["files"]
    assert snap.cgroup["files"]["cpu.stat"]["usage_usec"] > 0
    with pytest.raises(ProbeError, match="no such cgroup"):
        resolve_cgroup("kassist-no-such-cgroup")


def test_cli_stats_json_and_rates() -> None:
    proc = run_kassist(["probe", "stats", "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema"] == "kassist.stats/1"
    assert data["sysctls"]["kernel.ostype"]["value"] == "Linux"
    proc = run_kassist(["probe", "stats", "--interval", "0.3", "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema"] == "kassist.rates/1" and data["interval_s"] >= 0.3
    assert data["rates"]["stat.ctxt"] > 0
    text = run_kassist(["probe", "stats"])
    assert text.returncode == 0 and "sysctls" in text.stdout
    assert max(len(line) for line in text.stdout.splitlines()) <= 80
    bad = run_kassist(["probe", "stats", "--cgroup", "kassist-no-such-cgroup"])
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "no such cgroup" in bad.stderr


# --- /proc/sys: one name <-> path rule, one walk ------------------------------------------


def test_sysctl_names_and_paths_swap_dots_and_slashes() -> None:
    for name, rel in [
        ("net.core.somaxconn", "net/core/somaxconn"),
        ("net.ipv4.conf.eth0/10.rp_filter", "net/ipv4/conf/eth0.10/rp_filter"),
        ("net.ipv6.neigh.br0/100.retrans_time", "net/ipv6/neigh/br0.100/retrans_time"),
    ]:
        assert sysctl.sysctl_relative(name) == rel and sysctl.sysctl_name(rel) == name
        assert sysctl.sysctl_path(name, "/x/") == f"/x/{rel}"
    assert (
        sysctl.sysctl_relative("net/ipv4/conf/eth0.10/rp_filter")
        == "net/ipv4/conf/eth0.10/rp_filter"
    )
    for bad in ("", "net..core", "net.core.", "net/../../etc/passwd", "."):
        with pytest.raises(ValueError):
            sysctl.sysctl_relative(bad)


def test_the_walk_and_the_readers_on_a_tree(tmp_path: Path) -> None:
    (tmp_path / "net/ipv4/conf/eth0.10").mkdir(parents=True)
    (tmp_path / "net/ipv4/conf/eth0.10/rp_filter").write_text("2\n")
    (tmp_path / "net/ipv4/tcp_rmem").write_text("4096\t131072\t6291456\n")
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm/stat_refresh").write_text("")  # never read: reading it does work
    assert sysctl.sysctl_names(str(tmp_path)) == [
        "net.ipv4.conf.eth0/10.rp_filter",
        "net.ipv4.tcp_rmem",
    ]
    found = sysctl.read_sysctl("net.ipv4.conf.eth0/10.rp_filter", str(tmp_path))
    assert found is not None and found.value == 2
    keys = sysctl.read_sysctl_keys(["net.ipv4.tcp_rmem", "net.ipv4.absent"], str(tmp_path))
    assert list(keys) == ["net.ipv4.tcp_rmem"] and keys["net.ipv4.tcp_rmem"].value[2] == 6291456  # type: ignore[index]
    assert sysctl.read_sysctl("net.ipv4.conf", str(tmp_path)) is None  # a directory
    assert sysctl.read_sysctl("net..x", str(tmp_path)) is None
    assert set(sysctl.read_sysctls(str(tmp_path))) == set(sysctl.sysctl_names(str(tmp_path)))


def test_a_device_with_a_dot_in_its_name_is_read_by_its_sysctl_name() -> None:
    # A VLAN-style name (eth0.10) is a component with a dot: sysctl writes it eth0/10.
    require_netns()
    ns = NetNS()
    try:
        ns.run("ip", "link", "add", "kx.10", "type", "veth", "peer", "name", "kx.11")
        code = (
            "from probes.stats import read_sysctl, sysctl_names\n"
            "name = 'net.ipv4.conf.kx/10.rp_filter'\n"
            "found = read_sysctl(name)\n"
            "print(found.value if found else None, name in sysctl_names())\n"
        )
        out = ns.run(sys.executable, "-c", code, cwd=ROOT).stdout.split()
        live = ns.run("cat", "/proc/sys/net/ipv4/conf/kx.10/rp_filter").stdout.strip()
        assert out == [live, "True"]
    finally:
        ns.close()


def test_sections_read_one_file_each() -> None:
    loadavg = read_section("loadavg")
    assert loadavg is not None and loadavg["tasks"] >= 1
    psi = read_section("psi_memory")
    require(psi is not None, "no PSI (CONFIG_PSI, psi=1)")
    assert set(psi["some"]) == {"avg10", "avg60", "avg300", "total"}
    with pytest.raises(KeyError):
        read_section("no-such-section")
    partial = take_partial_snapshot(("loadavg",), sysctls=["kernel.ostype", "kernel.nope"])
    assert set(partial.proc) == {"loadavg"} and list(partial.sysctls) == ["kernel.ostype"]


def test_a_network_namespace_is_found_or_refused_in_one_line() -> None:
    with pytest.raises(ProbeError, match=r"no network namespace .*'kassist-no-such-ns'"):
        netns_path("kassist-no-such-ns")
    with pytest.raises(ProbeError):
        netns_path("../../etc")
    assert netns_path(str(os.getpid())) == f"/proc/{os.getpid()}/ns/net"
