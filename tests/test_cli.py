"""The CLI end to end, in a subprocess, as a user runs it."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from tests.conftest import DATA, WITHOUT_DAC_OVERRIDE, run_kassist

CRASH_LOG = DATA / "kasan-uaf-ip6_send_skb.log"
CLEAN_LOG = DATA / "clean-boot.log"
CRASH_KEYS = {
    "title", "alt_titles", "type", "frame", "corrupted", "corrupted_reason", "suppressed",
    "panicked", "guilty_file", "signature", "start_line", "end_line", "kernel", "task",
    "call_trace", "report",
}  # fmt: skip
FRAME_KEYS = {"function", "offset", "size", "module", "file", "line", "inline"}


def test_triage_finds_the_crash_in_a_real_log() -> None:
    proc = run_kassist(["triage", str(CRASH_LOG)])
    assert proc.returncode == 0, proc.stderr
    assert "1 crash " in proc.stdout
    assert "ip6_send_skb" in proc.stdout


def test_triage_finds_nothing_in_a_clean_boot_log() -> None:
    proc = run_kassist(["triage", "--format", "json", str(CLEAN_LOG)])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["crashes"] == []


def test_triage_json_follows_the_contract() -> None:
    proc = run_kassist(["triage", "--format", "json", str(CRASH_LOG)])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "kassist.triage/1"
    assert doc["source"] == str(CRASH_LOG)
    (crash,) = doc["crashes"]
    assert set(crash) >= CRASH_KEYS
    assert set(crash["kernel"]) >= {"release", "tainted", "hardware"}
    assert set(crash["task"]) >= {"comm", "pid", "cpu"}
    assert crash["kernel"]["release"] == "4.12.0-rc3+"
    assert crash["task"] == {"comm": "syz-executor0", "pid": 30168, "cpu": 0}
    assert crash["call_trace"] and all(set(f) == FRAME_KEYS for f in crash["call_trace"])
    assert crash["frame"] == "ip6_send_skb"
    assert crash["guilty_file"] == "net/ipv6/ip6_output.c"
    assert 1 <= crash["start_line"] <= crash["end_line"]


def test_triage_jsonl_gives_one_object_per_input_in_order() -> None:
    inputs = [str(CRASH_LOG), str(CLEAN_LOG), str(DATA / "hung-rtnl_lock.log")]
    proc = run_kassist(["triage", "--format", "jsonl", *inputs])
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [d["source"] for d in docs] == inputs
    assert [len(d["crashes"]) for d in docs] == [1, 0, 1]


def test_triage_reads_stdin_and_compressed_files(tmp_path: Path) -> None:
    proc = run_kassist(["triage", "--format", "json", "-"], input=CRASH_LOG.read_text())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["crashes"][0]["frame"] == "ip6_send_skb"
    packed = tmp_path / "console.log.gz"  # the name says nothing; the magic does
    packed.write_bytes(gzip.compress(CRASH_LOG.read_bytes()))
    proc = run_kassist(["triage", "--format", "json", str(packed)])
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["crashes"]) == 1


def test_report_without_llm_has_title_and_trace() -> None:
    proc = run_kassist(["report", "--no-llm", str(CRASH_LOG)])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("# ")
    title = json.loads(run_kassist(["triage", "--format", "json", str(CRASH_LOG)]).stdout)[
        "crashes"
    ][0]["title"]
    assert out.splitlines()[0] == f"# {title}"
    assert "## Call trace" in out
    assert "ip6_push_pending_frames" in out
    assert "`4.12.0-rc3+`" in out
    assert "Summary" not in out


def test_report_on_a_clean_log_says_no_crash() -> None:
    proc = run_kassist(["report", "--no-llm", str(CLEAN_LOG)])
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "no kernel crash found" in proc.stderr


def test_report_with_a_missing_model_falls_back_with_a_notice() -> None:
    proc = run_kassist(["report", "--model", "/nonexistent/model.gguf", str(CRASH_LOG)])
    assert proc.returncode == 0, proc.stderr
    assert "continuing without a model" in proc.stderr
    assert "## Call trace" in proc.stdout


def test_help_lists_every_subcommand() -> None:
    proc = run_kassist(["--help"])
    assert proc.returncode == 0
    for name in (
        "triage",
        "report",
        "tune",
        "docs",
        "probe",
        "agent",
        "watch",
        "chat",
        "doctor",
        "models",
    ):
        assert f"  {name}" in proc.stdout


# --- bad input: one clear line, non-zero exit, no traceback (unless --debug) ---


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(64 * 1024))
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    latin = tmp_path / "invalid-utf8.log"
    latin.write_bytes(bytes(range(0x80, 0x100)) * 200)
    unreadable = tmp_path / "unreadable.log"
    unreadable.write_text("BUG: KASAN: use-after-free in foo+0x1/0x2\n")
    unreadable.chmod(0)
    truncated_gz = tmp_path / "truncated.log.gz"
    truncated_gz.write_bytes(gzip.compress(CRASH_LOG.read_bytes() * 50)[:300])
    return {
        "missing": (tmp_path / "nope.log", "no such file"),
        "directory": (tmp_path, "is a directory"),
        "garbage": (garbage, "binary data"),
        "empty": (empty, "is empty"),
        "invalid-utf8": (latin, "binary data"),
        "unreadable": (unreadable, "permission denied"),
        "truncated-gzip": (truncated_gz, "truncated or damaged"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing", "directory", "garbage", "empty", "invalid-utf8", "unreadable", "truncated-gzip"],
)
def test_bad_input_gives_one_clear_line(case: str, tmp_path: Path) -> None:
    path, expected = _bad_inputs(tmp_path)[case]
    # root reads a mode-000 file; without CAP_DAC_OVERRIDE it cannot, like any user
    prefix = WITHOUT_DAC_OVERRIDE if case == "unreadable" and os.geteuid() == 0 else ()
    for command in (["triage"], ["report", "--no-llm"]):
        proc = run_kassist([*command, str(path)], prefix=prefix)
        assert proc.returncode != 0, (case, command)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert expected in lines[0], lines[0]
        assert str(path) in lines[0] or case == "directory"
        assert "Traceback" not in proc.stderr
        assert proc.stdout == ""


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = run_kassist(["--debug", "triage", str(tmp_path / "nope.log")])
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_a_real_log_with_a_few_invalid_bytes_still_triages(tmp_path: Path) -> None:
    raw = CRASH_LOG.read_bytes().replace(b"Call Trace:", b"Call Trace:\xff\xfe", 1)
    path = tmp_path / "damaged.log"
    path.write_bytes(raw)
    proc = run_kassist(["triage", "--format", "json", str(path)])
    assert proc.returncode == 0, proc.stderr
    assert "invalid UTF-8" in proc.stderr
    assert json.loads(proc.stdout)["crashes"][0]["frame"] == "ip6_send_skb"


def test_one_bad_input_among_several_fails_the_run_but_keeps_the_rest(tmp_path: Path) -> None:
    missing = tmp_path / "gone.log"
    proc = run_kassist(["triage", "--format", "jsonl", str(CRASH_LOG), str(missing)])
    assert proc.returncode == 1
    assert [json.loads(x)["source"] for x in proc.stdout.splitlines()] == [str(CRASH_LOG)]
    assert f"{missing}: no such file" in proc.stderr


def test_an_agent_socket_flag_keeps_the_other_llm_flags() -> None:
    # `kassist tune --socket S --max-tokens N --no-log` had rebuilt its configuration from
    # the model and backend alone: the token limit and the log switch were lost
    from assistant.cli.common import LlmFlags

    cfg = LlmFlags(max_tokens=7, no_log=True).config("/tmp/elsewhere.sock")
    assert (cfg.agent.socket, cfg.llm.max_tokens, cfg.llm.log) == ("/tmp/elsewhere.sock", 7, False)
    assert LlmFlags().config().agent.socket != "/tmp/elsewhere.sock"
