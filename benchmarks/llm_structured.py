"""The crash_assessment step over real crash reports: success rate and mean latency.

For each report of the syzkaller dev corpus that kassist's triage finds a crash in,
run the structured step with the default model through ``llama_cpp`` (grammar) and,
alternating, through the ``openai`` backend against ``llama_cpp.server`` on loopback
(same model; the HTTP path). Per attempt it records whether the answer was complete
JSON (the grammar held to the end) and whether pydantic accepted it; per step,
success on the first try, success after a retry, or refusal.

    .venv/bin/python benchmarks/llm_structured.py [--n 50] [--backends llama_cpp,openai]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.config import LLMConfig
from assistant.drafters.steps import assess_crash
from assistant.llm import make_backend
from assistant.llm.errors import StructuredRefusal
from assistant.llm.models import resolve_gguf
from assistant.triage import triage_path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "syzkaller-linux-reports.dev.jsonl"
N_CTX = 2048


@dataclass
class Tally:
    steps: int = 0
    first_try: int = 0
    after_retry: int = 0
    refused: int = 0
    attempts: int = 0
    complete_json: int = 0
    pydantic_refused: int = 0
    latencies: list[float] = field(default_factory=list)
    subsystems: dict[str, int] = field(default_factory=dict)


def crashes(n: int) -> list:
    out = []
    with tempfile.TemporaryDirectory() as tmp, CORPUS.open() as fh:
        for line in fh:
            rec = json.loads(line)
            if not rec.get("expect_crash") or not rec.get("title"):
                continue
            path = Path(tmp) / "log"
            path.write_text(rec["log"], encoding="utf-8", errors="replace")
            try:
                found = triage_path(str(path)).crashes
            except Exception:
                continue
            if found:
                out.append(found[0])
            if len(out) >= n:
                break
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_gguf() -> Path:
    """Return the default model's file (the one the llama_cpp backend would load)."""
    model = resolve_gguf("")
    if model is None:
        raise SystemExit("no model installed: run ./setup.sh")
    return model.path


def start_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(default_gguf()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(N_CTX),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start")


def run_one(backend: object, crash: object, tally: Tally) -> None:
    t0 = time.perf_counter()
    tally.steps += 1
    try:
        result = assess_crash(crash, backend, N_CTX)  # type: ignore[arg-type]
        kinds = result.kinds
    except StructuredRefusal as exc:
        tally.refused += 1
        kinds = exc.kinds
    else:
        if result.attempts == 1:
            tally.first_try += 1
        else:
            tally.after_retry += 1
        sub = result.value.subsystem
        tally.subsystems[sub] = tally.subsystems.get(sub, 0) + 1
    tally.latencies.append(time.perf_counter() - t0)
    tally.attempts += len(kinds)
    tally.complete_json += sum(1 for k in kinds if k != "json")
    tally.pydantic_refused += sum(1 for k in kinds if k != "valid")


def report(name: str, t: Tally) -> None:
    ok = t.first_try + t.after_retry
    print(
        f"{name}: {t.steps} steps: valid {ok} ({ok / t.steps:.0%}; first try {t.first_try}, "
        f"after a retry {t.after_retry}), refused {t.refused}"
    )
    print(
        f"  attempts {t.attempts}: complete JSON {t.complete_json} "
        f"({t.complete_json / max(t.attempts, 1):.0%}), pydantic refused {t.pydantic_refused}"
    )
    print(
        f"  latency per step: mean {statistics.mean(t.latencies):.2f} s, "
        f"median {statistics.median(t.latencies):.2f} s"
    )
    print(f"  subsystems: {json.dumps(dict(sorted(t.subsystems.items(), key=lambda kv: -kv[1])))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--backends", default="llama_cpp,openai")
    ap.add_argument("--quick", action="store_true", help="CI: --n 1")
    args = ap.parse_args()
    if args.quick:
        args.n = 1
    os.environ.setdefault("XDG_STATE_HOME", tempfile.mkdtemp(prefix="kassist-bench-"))
    names = args.backends.split(",")
    todo = crashes(args.n)
    print(
        f"{len(todo)} crashes triaged from {CORPUS.name}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    backends: dict[str, object] = {}
    server = None
    if "llama_cpp" in names:
        backends["llama_cpp"] = make_backend(LLMConfig(n_ctx=N_CTX, temperature=0.0))
    if "openai" in names:
        port = free_port()
        server = start_server(port)
        backends["openai"] = make_backend(
            LLMConfig(
                backend="openai",
                base_url=f"http://127.0.0.1:{port}/v1",
                temperature=0.0,
                timeout=120,
            )
        )
    tallies = {n: Tally() for n in backends}
    try:
        for i, crash in enumerate(todo):
            order = list(backends) if i % 2 == 0 else list(reversed(backends))
            for name in order:
                run_one(backends[name], crash, tallies[name])
            if (i + 1) % 10 == 0:
                print(f"  {i + 1}/{len(todo)} done; load average {os.getloadavg()[0]:.2f}")
                for name, tally in tallies.items():
                    report(f"  {name} so far", tally)
                sys.stdout.flush()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, tally in tallies.items():
        report(name, tally)
    if len(tallies) == 2:
        a, b = (statistics.mean(t.latencies) for t in tallies.values())
        print(f"openai/llama_cpp mean latency: {b / a:.2f}")


if __name__ == "__main__":
    main()
