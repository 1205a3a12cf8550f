"""Scale-out (issue 26 item 2): several ``kassist watch`` receivers behind one address, one
real PostgreSQL store.

Three receivers bind one netconsole address (``SO_REUSEPORT``: the kernel spreads the
senders over them by their source address and port). Hosts send real oops reports; some
report is sent again from another socket of the same host (a forwarder restarted: it may
land on another receiver). Every report must be stored once under its host (a report is
named by host, boot and printk timestamp), and each new signature drafted once across the
fleet (the lease in PostgreSQL), however many receivers saw it first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import wait_until
from tests.fleet_support import metric, receiver
from tests.netconsole_sender import NetconsoleSender
from tests.pg_support import postgres, server_down
from tests.watch_support import WatchProcess, oops_lines

RECEIVERS = 3
HOSTS = 12
TOKENS = ("fa", "fb", "fc", "fd")


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as db:
        return list(db.execute(sql).fetchall())


def _reports(host: int) -> list[list[str]]:
    # two reports a host, of two of the four signatures; the marker makes each report's
    # text its own (a report's name is its host, boot and timestamp, not its text)
    return [oops_lines(TOKENS[(host + k) % len(TOKENS)], marker=host * 10 + k) for k in (0, 1)]


def test_receivers_behind_one_address_store_each_report_once_and_draft_each_signature_once(
    tmp_path: Path,
) -> None:
    with postgres() as url:
        watches: list[WatchProcess] = []
        port = 0
        try:
            for i in range(RECEIVERS):
                d = tmp_path / f"r{i}"
                d.mkdir()
                w, p = receiver(d, f"netconsole:127.0.0.1:{port}", "--store", url, "--no-llm",
                                "--outbox", str(d / "outbox"), "--drafts-per-hour", "1000",
                                "--host", f"receiver-{i}")  # fmt: skip
                watches.append(w)
                port = port or p
            senders = [
                NetconsoleSender(("127.0.0.1", port), source=(f"127.0.0.{10 + h}", 0))
                for h in range(HOSTS)
            ]
            for h, s in enumerate(senders):
                for report in _reports(h):
                    s.lines([*report, "after the report"])
            # host 0 sends its first report again from another socket (same address, same
            # sequence numbers and timestamps): the same report, maybe through another receiver
            again = NetconsoleSender(("127.0.0.1", port), source=("127.0.0.10", 0))
            again.lines([*_reports(0)[0], "after the report"])
            again.close()
            for s in senders:
                s.close()
            want = HOSTS * 2
            wait_until(
                lambda: _rows(url, "SELECT count(*) FROM hits")[0][0] >= want,
                f"{want} hits stored",
                context=lambda: "\n".join(w.log.read_text()[-2000:] for w in watches),
            )
            wait_until(
                lambda: (
                    _rows(url, "SELECT count(*) FROM drafts WHERE done_at IS NOT NULL")[0][0]
                    >= len(TOKENS)
                ),
                f"{len(TOKENS)} drafts done",
                context=lambda: "\n".join(w.log.read_text()[-2000:] for w in watches),
            )
            time.sleep(2)  # a duplicate or a second draft would come now
        finally:
            for w in watches:
                w.stop()
        per_host = _rows(url, "SELECT host, signature, count(*) FROM hits GROUP BY 1, 2")
        assert len(per_host) == HOSTS * 2
        assert all(n == 1 for _, _, n in per_host), per_host
        assert {str(h) for h, _, _ in per_host} == {f"127.0.0.{10 + h}" for h in range(HOSTS)}
        # each report keeps the address it came from (migration 5 on PostgreSQL)
        assert _rows(url, "SELECT count(*) FROM hits WHERE sender IS DISTINCT FROM host") == [(0,)]
        signatures = _rows(url, "SELECT signature, count FROM crashes WHERE count > 0")
        assert len(signatures) == len(TOKENS) and all(n == HOSTS // 2 for _, n in signatures)
        drafts = _rows(url, "SELECT signature, owner, done_at FROM drafts")
        assert sorted(str(s) for s, _, _ in drafts) == sorted(str(s) for s, _ in signatures)
        assert all(done is not None for _, _, done in drafts)
        written = [p for w in watches for p in (w.tmp / "outbox").glob("*.md")]
        assert sorted(p.stem for p in written) == sorted(str(s) for s, _ in signatures)
        # the receivers raced for the same signatures (the kernel spread the hosts over
        # them) and all but one of each race was told another one drafts it
        new = sum(metric(w.tmp, "kassist_watch_new_signatures_total").get("", 0) for w in watches)
        elsewhere = sum(
            metric(w.tmp, "kassist_watch_drafts_elsewhere_total").get("", 0) for w in watches
        )
        assert new > len(TOKENS)
        assert elsewhere == new - len(TOKENS)


def test_a_postgresql_server_that_goes_away_and_comes_back_loses_nothing(tmp_path: Path) -> None:
    with postgres() as url:
        watch, port = receiver(tmp_path, "netconsole:127.0.0.1:0", "--store", url, "--no-llm")
        host = NetconsoleSender(("127.0.0.1", port), source=("127.0.0.40", 0))
        try:
            host.lines([*oops_lines("pga", marker=1), "after the report"])
            wait_until(
                lambda: _rows(url, "SELECT count(*) FROM hits")[0][0] == 1,
                "the first hit stored",
                context=watch.log.read_text,
            )
            with server_down(url):
                host.lines([*oops_lines("pgb", marker=2), "after the report"])
                wait_until(
                    lambda: "wait; retrying" in watch.log.read_text(),
                    "the store's outage retried",
                    context=watch.log.read_text,
                )
            wait_until(
                lambda: _rows(url, "SELECT count(*) FROM hits")[0][0] >= 2,
                "the second hit stored after the outage",
                context=watch.log.read_text,
            )
            time.sleep(2)  # a second copy would come now
        finally:
            host.close()
            watch.stop()
        rows = _rows(url, "SELECT h.host, c.title FROM hits h JOIN crashes c USING (signature)")
        assert sorted(str(t).split(" in ")[-1] for _, t in rows) == [
            "kassist_wpga_level3",
            "kassist_wpgb_level3",
        ]
        assert {str(h) for h, _ in rows} == {"127.0.0.40"}
        assert "store: writing again" in watch.log.read_text()
