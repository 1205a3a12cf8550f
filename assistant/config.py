"""Configuration: /etc, then the user's config dir, then KASSIST_* variables, then flags.

Later sources override earlier ones key by key. A config file is TOML with one
table per section::

    [llm]
    backend = "llama_cpp"
    model = "/srv/models/qwen2.5-1.5b-instruct-q4_k_m.gguf"
    max_tokens = 256

    [agent]
    socket = "/run/kassist/agent.sock"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from assistant.errors import KassistError

SYSTEM_CONFIG = Path("/etc/kassist/config.toml")


def user_config_dir() -> Path:
    """Return ``$XDG_CONFIG_HOME/kassist`` (default ``~/.config/kassist``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kassist"


def user_cache_dir() -> Path:
    """Return ``$XDG_CACHE_HOME/kassist`` (default ``~/.cache/kassist``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kassist"


def user_state_dir() -> Path:
    """Return where kassist keeps its state: ``/var/lib/kassist`` as root, else XDG state."""
    if os.geteuid() == 0 and not os.environ.get("XDG_STATE_HOME"):
        return Path("/var/lib/kassist")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kassist"


@dataclass(frozen=True)
class LLMConfig:
    """The LLM runtime's settings.

    :param backend: backend name (``llama_cpp``, ``openai``, ``transformers``, ``none``).
    :param model: a GGUF path, a model directory or a server model name; empty: the default.
    :param n_ctx: context window in tokens.
    :param n_threads: CPU threads for generation; 0: the cores not already busy when the
        model loads (see ``assistant.llm.llama_cpp.default_threads``).
    :param max_tokens: the most tokens one answer may generate.
    :param temperature: sampling temperature; 0 is greedy.
    :param base_url: the OpenAI-compatible server's URL (``openai`` backend).
    :param api_key: the server's key (``openai`` backend).
    :param timeout: seconds to wait for a server (``openai`` backend).
    :param log: whether prompts and responses are logged to the state dir.
    """

    backend: str = "llama_cpp"
    model: str = ""
    n_ctx: int = 2048
    n_threads: int = 0
    max_tokens: int = 160
    temperature: float = 0.2
    base_url: str = "http://127.0.0.1:8080/v1"
    api_key: str = ""
    timeout: float = 60.0
    log: bool = True


@dataclass(frozen=True)
class AgentConfig:
    """The kernel agent's settings.

    :param socket: path of the agent's Unix stream socket.
    :param group: the group whose members may talk to the agent (besides root).
    :param state_dir: where the journal lives.
    :param policy: a policy TOML file; empty: the built-in default policy.
    :param audit_log: the JSON-lines audit log.
    :param sysctl_conf: where changes applied with ``--persist`` are written for the next boot.
    """

    socket: str = "/run/kassist/agent.sock"
    group: str = "kassist"
    state_dir: str = "/var/lib/kassist"
    policy: str = ""
    audit_log: str = "/var/log/kassist/audit.jsonl"
    sysctl_conf: str = "/etc/sysctl.d/90-kassist.conf"


@dataclass(frozen=True)
class ChatConfig:
    """The chat's settings: its keys (Textual key names) and whether it keeps a history.

    :param key_cancel: stop the answer being generated.
    :param key_approve: approve the selected proposed change (a dry run is shown first).
    :param key_reject: reject the selected proposed change.
    :param key_copy: copy the last answer (its last code block with ``key_copy_code``).
    :param key_export: export the conversation to Markdown.
    :param key_help: the help screen.
    :param key_quit: leave.
    :param history: record conversations in ``STATE/chat.db``.
    :param native_tools: let a model with tool calls (the Qwen family) call the chat's
        tools itself, the deterministic router as its fallback.
    """

    key_cancel: str = "escape"
    key_approve: str = "ctrl+o"
    key_reject: str = "ctrl+r"
    key_copy: str = "ctrl+y"
    key_copy_code: str = "ctrl+k"
    key_export: str = "ctrl+e"
    key_help: str = "f1"
    key_quit: str = "ctrl+q"
    history: bool = True
    native_tools: bool = False


@dataclass(frozen=True)
class Config:
    """All of kassist's settings, merged from every source."""

    llm: LLMConfig = field(default_factory=LLMConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    sources: tuple[str, ...] = ()


# Environment variables, by name, and the (section, key) each one sets.
# KASSIST_<SECTION>_<KEY> works for every key; these are the short forms.
ENV_SHORTHANDS: Mapping[str, tuple[str, str]] = {
    "KASSIST_MODEL": ("llm", "model"),
    "KASSIST_BACKEND": ("llm", "backend"),
    "KASSIST_SOCKET": ("agent", "socket"),
}

_SECTIONS: Mapping[str, type[Any]] = {"llm": LLMConfig, "agent": AgentConfig, "chat": ChatConfig}


def _coerce(section: str, key: str, raw: object, where: str) -> object:
    # TOML gives typed values; the environment gives strings. Both end up as the
    # field's own type, or a one-line error naming the source.
    cls = _SECTIONS[section]
    ftype = {f.name: f.type for f in fields(cls)}[key]
    try:
        if ftype == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(text)
        if ftype == "int":
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(str(raw))
        if ftype == "float":
            return float(str(raw))
        return str(raw)
    except ValueError:
        raise KassistError(
            f"{where}: {section}.{key} must be {ftype}, not {raw!r}",
            "fix the value or remove it",
        ) from None


def _merge(cfg: Config, section: str, values: Mapping[str, object], where: str) -> Config:
    if section not in _SECTIONS:
        raise KassistError(
            f"{where}: unknown section [{section}]",
            f"known sections: {', '.join(sorted(_SECTIONS))}",
        )
    current = getattr(cfg, section)
    known = {f.name for f in fields(current)}
    updates: dict[str, object] = {}
    for key, raw in values.items():
        if key not in known:
            raise KassistError(
                f"{where}: unknown key {section}.{key}",
                f"known keys: {', '.join(sorted(known))}",
            )
        updates[key] = _coerce(section, key, raw, where)
    return replace(cfg, **{section: replace(current, **updates)})


def _load_file(cfg: Config, path: Path) -> Config:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return cfg
    except PermissionError:
        raise KassistError(f"cannot read {path}", "check its permissions") from None
    except tomllib.TOMLDecodeError as exc:
        raise KassistError(f"{path}: not valid TOML ({exc})", "fix the file") from None
    for section, values in data.items():
        if not isinstance(values, dict):
            raise KassistError(f"{path}: {section} must be a table", f"write [{section}]")
        cfg = _merge(cfg, section, values, str(path))
    return replace(cfg, sources=(*cfg.sources, str(path)))


def _env_updates(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        section: str
        key: str
        if name in ENV_SHORTHANDS:
            section, key = ENV_SHORTHANDS[name]
        else:
            parts = name.split("_", 2)
            if len(parts) != 3 or parts[0] != "KASSIST" or parts[1].lower() not in _SECTIONS:
                continue
            section, key = parts[1].lower(), parts[2].lower()
            known = {f.name for f in fields(_SECTIONS[section])}
            if key not in known:
                continue
        out.setdefault(section, {})[key] = value
    return out


def load_config(
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    environ: Mapping[str, str] | None = None,
    system_file: Path = SYSTEM_CONFIG,
    user_file: Path | None = None,
) -> Config:
    """Merge every configuration source, later ones winning.

    :param overrides: values from command-line flags, by section and key; ``None`` values
        are ignored (a flag that was not given).
    :param environ: the environment to read ``KASSIST_*`` from (default ``os.environ``).
    :param system_file: the system-wide file.
    :param user_file: the user's file (default ``$XDG_CONFIG_HOME/kassist/config.toml``).
    :raises KassistError: a file that is not TOML, an unknown key, or a mistyped value.
    """
    cfg = Config()
    cfg = _load_file(cfg, system_file)
    cfg = _load_file(cfg, user_file or user_config_dir() / "config.toml")
    env = os.environ if environ is None else environ
    for section, values in _env_updates(env).items():
        cfg = _merge(cfg, section, values, "environment")
    for osection, ovalues in (overrides or {}).items():
        given = {k: v for k, v in ovalues.items() if v is not None}
        if given:
            cfg = _merge(cfg, osection, given, "command line")
    return cfg
