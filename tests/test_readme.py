"""The README is true for what it shows: its commands exist, its links resolve, and the
triage output it prints is what kassist prints for that log."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import ROOT, run_kassist

README = ROOT / "README.md"


def _text() -> str:
    return README.read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    """The fenced code blocks of one language, in the README's order."""
    return re.findall(rf"^```{language}\n(.*?)^```", _text(), flags=re.M | re.S)


def test_the_first_two_commands_are_setup_modes_that_setup_sh_knows() -> None:
    first = _blocks("sh")[0]
    commands = [line.split("#")[0].strip() for line in first.splitlines() if line.strip()]
    assert commands[:2] == ["./setup.sh demo", "./setup.sh test"]
    usage = subprocess.run(
        ["bash", str(ROOT / "setup.sh"), "no-such-mode"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert usage.returncode == 2
    modes = re.search(r"usage: \./setup\.sh \[([a-z|]+)\]", usage.stderr)
    assert modes is not None, usage.stderr
    assert {"demo", "test"} <= set(modes.group(1).split("|"))


def test_every_relative_link_resolves() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", _text())
    relative = [link for link in links if "://" not in link]
    assert relative, "the README links its docs"
    missing = [link for link in relative if not (ROOT / link).exists()]
    assert missing == []


def test_the_triage_example_is_what_triage_prints() -> None:
    console = _blocks("console")[0]
    command, *shown = console.splitlines()
    assert command.startswith("$ kassist ")
    result = run_kassist(command.removeprefix("$ kassist ").split())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == shown


def _subcommands() -> list[list[str]]:
    """Each `kassist WORD [WORD]` the README's shell blocks run, as argument lists."""
    found: list[list[str]] = []
    for block in _blocks("sh"):
        for line in block.splitlines():
            command = line.split("#")[0].strip()
            match = re.match(r"kassist ([a-z]+)(?: ([a-z]+)(?=\s|$))?", command)
            if match is None:
                continue
            words = [w for w in match.groups() if w is not None]
            if words not in found:
                found.append(words)
    return found


@pytest.mark.parametrize("words", _subcommands(), ids=" ".join)
def test_every_command_the_readme_runs_exists(words: list[str]) -> None:
    # "kassist tune --apply" gives ["tune"]; "kassist crashes list" gives ["crashes", "list"];
    # a second word that is not a subcommand (a question) falls back to the first.
    result = run_kassist([*words, "--help"])
    if result.returncode != 0 and len(words) == 2:
        result = run_kassist([words[0], "--help"])
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
