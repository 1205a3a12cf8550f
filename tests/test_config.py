"""Configuration precedence: /etc, then the user's file, then KASSIST_* variables, then flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.config import load_config
from assistant.errors import KassistError


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_later_sources_win_key_by_key(tmp_path: Path) -> None:
    system = _write(
        tmp_path / "etc.toml", '[llm]\nmodel = "/etc.gguf"\nmax_tokens = 10\nn_ctx = 512\n'
    )
    user = _write(tmp_path / "user.toml", '[llm]\nmodel = "/user.gguf"\nmax_tokens = 20\n')
    cfg = load_config(
        overrides={"llm": {"max_tokens": 40, "model": None}},
        environ={"KASSIST_LLM_MAX_TOKENS": "30", "KASSIST_MODEL": "/env.gguf"},
        system_file=system,
        user_file=user,
    )
    assert cfg.llm.n_ctx == 512  # only /etc sets it
    assert cfg.llm.model == "/env.gguf"  # env beats both files; the flag was not given
    assert cfg.llm.max_tokens == 40  # the flag beats everything
    assert cfg.sources == (str(system), str(user))


def test_environment_values_are_typed(tmp_path: Path) -> None:
    cfg = load_config(
        environ={"KASSIST_LLM_LOG": "no", "KASSIST_LLM_TEMPERATURE": "0.5", "KASSIST_SOCKET": "/s"},
        system_file=tmp_path / "none",
        user_file=tmp_path / "none",
    )
    assert cfg.llm.log is False
    assert cfg.llm.temperature == 0.5
    assert cfg.agent.socket == "/s"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[llm\n", "not valid TOML"),
        ("[llm]\nmax_tokens = 'many'\n", "must be int"),
        ("[llm]\nflavour = 1\n", "unknown key llm.flavour"),
        ("[gpu]\nx = 1\n", "unknown section [gpu]"),
    ],
)
def test_bad_config_files_give_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    bad = _write(tmp_path / "bad.toml", text)
    with pytest.raises(KassistError) as info:
        load_config(environ={}, system_file=bad, user_file=tmp_path / "none")
    assert message in info.value.one_line()
    assert str(bad) in info.value.one_line()
    assert "\n" not in info.value.one_line()


def test_a_mistyped_environment_variable_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KassistError, match=r"environment: llm\.n_ctx must be int"):
        load_config(
            environ={"KASSIST_LLM_N_CTX": "big"},
            system_file=tmp_path / "x",
            user_file=tmp_path / "y",
        )
