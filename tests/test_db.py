"""The one migration runner (assistant.db) and the databases that use it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.db import Migration, Schema, SchemaTooNew, migrate, schema_version
from assistant.llm import log as llm_log
from assistant.triage import store
from tests.conftest import HANG_S, ROOT, run_kassist

SCHEMA = Schema(
    "the test database",
    (
        Migration(1, ("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)",)),
        Migration(2, ("ALTER TABLE t ADD COLUMN b TEXT",)),
        Migration(3, ("CREATE INDEX IF NOT EXISTS t_by_a ON t(a)",)),
    ),
)


def _columns(conn: sqlite3.Connection) -> list[str]:
    return [r[1] for r in conn.execute("PRAGMA table_info(t)")]


def test_steps_are_applied_once_in_order_and_rerunning_is_harmless(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "a.db")
    assert migrate(conn, SCHEMA) == 0
    assert schema_version(conn) == 3
    for _ in range(3):  # a non-idempotent ALTER TABLE would fail if step 2 ran again
        assert migrate(conn, SCHEMA) == 3
    assert _columns(conn) == ["id", "a", "b"]
    rows = conn.execute("SELECT number, applied_at IS NOT NULL FROM _migrations").fetchall()
    assert rows == [(1, 1), (2, 1), (3, 1)]
    # the caller's setting is restored ("", the default, which typeshed's Literal omits)
    assert conn.isolation_level == ""  # type: ignore[comparison-overlap]


def test_an_older_file_gets_only_the_steps_it_lacks(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "a.db")
    migrate(conn, Schema(SCHEMA.name, SCHEMA.migrations[:1]))
    conn.execute("INSERT INTO t(a) VALUES ('kept')")
    conn.commit()
    assert migrate(conn, SCHEMA) == 1
    assert conn.execute("SELECT a, b FROM t").fetchall() == [("kept", None)]


def test_a_failing_step_leaves_the_previous_version_intact(tmp_path: Path) -> None:
    broken = Schema(
        SCHEMA.name,
        (
            *SCHEMA.migrations[:1],
            Migration(2, ("ALTER TABLE t ADD COLUMN b TEXT", "CREATE TABLE t (x)")),
        ),
    )
    conn = sqlite3.connect(tmp_path / "a.db")
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        migrate(conn, broken)
    assert schema_version(conn) == 1
    assert _columns(conn) == ["id", "a"]  # the ALTER of the failed step was rolled back
    assert migrate(conn, SCHEMA) == 1 and _columns(conn) == ["id", "a", "b"]


def test_a_newer_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    conn = sqlite3.connect(path)
    migrate(conn, SCHEMA)
    with pytest.raises(SchemaTooNew) as caught:
        migrate(conn, Schema(SCHEMA.name, SCHEMA.migrations[:2]))
    line = caught.value.one_line()
    assert "\n" not in line
    assert f"the test database at {path} has schema 3, newer than this kassist's 2" in line
    assert "upgrade kassist" in line
    assert schema_version(conn) == 3 and _columns(conn) == ["id", "a", "b"]


def test_steps_must_be_numbered_from_one() -> None:
    with pytest.raises(ValueError, match=r"numbered 1\.\.N"):
        Schema("x", (Migration(1, ()), Migration(3, ())))


def test_two_processes_migrating_one_new_file_apply_each_step_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    code = (
        "import sqlite3, sys\n"
        "from assistant.llm import log\n"
        "for _ in range(20):\n"
        "    c = sqlite3.connect(sys.argv[1], timeout=30); log.migrate(c); c.close()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=ROOT, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=HANG_S)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    conn = sqlite3.connect(path)
    assert schema_version(conn) == llm_log.SCHEMA.version
    numbers = [n for (n,) in conn.execute("SELECT number FROM _migrations ORDER BY number")]
    assert numbers == list(range(1, llm_log.SCHEMA.version + 1))


def test_an_llm_log_from_before_the_runner_is_adopted(tmp_path: Path) -> None:
    # What the LLM log's own migrate() left: steps in _migrations, user_version 0.
    path = tmp_path / "llm.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE _migrations (number INTEGER PRIMARY KEY, applied_at REAL)")
    for number, script in llm_log.MIGRATIONS:
        for sql in llm_log._split(script):
            conn.execute(sql)
        conn.execute("INSERT INTO _migrations VALUES (?, 1.0)", (number,))
    conn.close()
    conn = llm_log.connect(path)  # would fail on a duplicate column if step 2 ran again
    assert schema_version(conn) == llm_log.SCHEMA.version
    times = [t for (t,) in conn.execute("SELECT applied_at FROM _migrations ORDER BY number")]
    assert times == [1.0] * llm_log.SCHEMA.version


def test_a_crash_store_from_before_the_runner_gets_its_history_rows(tmp_path: Path) -> None:
    # What the store's own migrate() left: user_version only.
    path = tmp_path / "crashes.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for step in store.SCHEMA.migrations:
        for col in step.columns:
            conn.execute(f"ALTER TABLE {col.table} ADD COLUMN {col.name} {col.decl}")
        for sql in step.statements:
            conn.execute(sql)
    conn.execute(f"PRAGMA user_version = {store.SCHEMA.version}")
    conn.close()
    with store.CrashStore(path) as opened:
        assert opened.signatures() == []
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT number, applied_at FROM _migrations ORDER BY number").fetchall()
    assert rows == [(n, None) for n in range(1, store.SCHEMA.version + 1)]


@pytest.mark.parametrize(
    ("name", "args"),
    [("crashes.db", ["crashes", "list"]), ("llm.db", ["logs", "list"])],
)
def test_the_cli_says_one_line_for_a_newer_database(
    tmp_path: Path, name: str, args: list[str]
) -> None:
    path = tmp_path / "kassist" / name
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    proc = run_kassist(args, env={"XDG_STATE_HOME": str(tmp_path)})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("kassist: ") and "has schema 999, newer than this kassist's" in line
    assert line.endswith("upgrade kassist, or move the file aside")
    conn = sqlite3.connect(path)
    assert schema_version(conn) == 999
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
