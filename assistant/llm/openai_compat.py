"""The ``openai`` backend: any OpenAI-compatible server (llama.cpp's server, vLLM, Ollama).

This is the path for fleets, where one inference service serves many hosts. It speaks
``POST {base_url}/chat/completions`` with ``stream: true`` (server-sent events) over
httpx. Connection failures, 429 and 5xx answers are retried with exponential backoff
before the first token arrives; once text has been yielded a failure is final, so an
answer is never duplicated.

Structured steps hand the schema to the server in the dialects in use, switching when
a server refuses one: ``response_format: {"type": "json_schema", ...}`` (OpenAI, vLLM,
Ollama); a GBNF ``grammar`` built by kassist (llama-cpp-python's server, whose own
schema conversion lets strings hold raw newlines, which is not JSON); and
``response_format: {"type": "json_object", "schema": ...}``. A server may still fall
back to unconstrained JSON silently, so the answer is always validated by pydantic.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from assistant.config import LLMConfig
from assistant.llm.base import (
    BackendDefaults,
    Constraint,
    GenerationStats,
    Message,
    Sampling,
    approx_tokens,
)
from assistant.llm.chat_template import plain_messages
from assistant.llm.errors import LLMUnavailable, SchemaNotSupported
from assistant.llm.grammar import check_flat, schema_to_gbnf
from assistant.llm.tool_calls import call_text

#: Attempts per request (the first included) before giving up.
ATTEMPTS = 4
#: First backoff delay in seconds; doubled after each failed attempt.
BACKOFF_S = 0.5
#: HTTP statuses worth retrying: rate limits and server-side failures.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Statuses with which a server says it does not know a response_format dialect.
DIALECT_STATUSES = frozenset({400, 422})


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in RETRY_STATUSES
    return isinstance(exc, httpx.TransportError)


class _DialectRefused(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _refuses_dialect(resp: httpx.Response) -> bool:
    # 400/422 (vLLM, OpenAI) or, from llama-cpp-python's server, a 500 whose body is the
    # request's validation error naming response_format.
    if resp.status_code in DIALECT_STATUSES:
        return True
    return resp.status_code == 500 and "response_format" in resp.text


def _formats(schema: dict[str, Any]) -> list[dict[str, Any]]:
    # The request fields that constrain the answer, in the order they are tried.
    dialects: list[dict[str, Any]] = [
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "step", "schema": schema, "strict": True},
            }
        }
    ]
    # llama-cpp-python's server takes a GBNF grammar; kassist's own is stricter than
    # the one that server builds from a schema (no control characters in strings).
    with contextlib.suppress(SchemaNotSupported):
        dialects.append({"grammar": schema_to_gbnf(schema)})
    dialects.append({"response_format": {"type": "json_object", "schema": schema}})
    return dialects


def _calls_as_text(deltas: list[dict[str, Any]]) -> Iterator[str]:
    # Streamed tool-call deltas carry an index and pieces of the name and arguments.
    merged: dict[int, dict[str, str]] = {}
    for d in deltas:
        entry = merged.setdefault(int(d.get("index", 0)), {"name": "", "arguments": ""})
        function = d.get("function") or {}
        entry["name"] += function.get("name") or ""
        entry["arguments"] += function.get("arguments") or ""
    for entry in merged.values():
        args: Any
        try:
            args = json.loads(entry["arguments"] or "{}")
        except json.JSONDecodeError:
            args = entry["arguments"]  # kept as text: the parser marks the call invalid
        yield "\n" + call_text(entry["name"], args)


class OpenAIBackend(BackendDefaults):
    """Stream chat completions from an OpenAI-compatible server.

    ``llm.base_url`` (e.g. ``http://127.0.0.1:8080/v1``), ``llm.model`` (the server's model
    name; empty: the server's default), ``llm.api_key`` and ``llm.timeout`` come from the
    configuration.
    """

    name = "openai"
    constraint: Constraint = "server-schema"

    def __init__(self, cfg: LLMConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.cfg = cfg
        self.base_url = cfg.base_url.rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise LLMUnavailable(
                f"llm.base_url {cfg.base_url!r} is not an http(s) URL",
                "set llm.base_url, e.g. http://127.0.0.1:8080/v1",
            )
        self.model_name = cfg.model or "default"
        self.location = self.base_url
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        self.client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout, connect=min(cfg.timeout, 10.0)),
            transport=transport,
        )
        self._format_index = 0  # which response_format dialect this server takes
        self.sleep = time.sleep

    def _with_retries(self, attempt: Any) -> Any:
        delay = BACKOFF_S
        for n in range(1, ATTEMPTS + 1):
            try:
                return attempt()
            except (httpx.HTTPStatusError, httpx.TransportError) as exc:
                if n == ATTEMPTS or not _retryable(exc):
                    raise
                self.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def load(self) -> list[str]:
        """Ask the server which models it serves (proves it is reachable).

        :raises LLMUnavailable: the server cannot be reached or does not answer.
        """
        try:
            resp = self._with_retries(lambda: self._checked(self.client.get(self._url("models"))))
        except (httpx.HTTPError, ValueError) as exc:
            raise self._unavailable(exc) from None
        return [str(m.get("id")) for m in resp.json().get("data", [])]

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    @staticmethod
    def _checked(resp: httpx.Response) -> httpx.Response:
        resp.raise_for_status()
        return resp

    def _unavailable(self, exc: Exception) -> LLMUnavailable:
        if isinstance(exc, httpx.HTTPStatusError):
            detail = f"HTTP {exc.response.status_code}: {exc.response.text[:200]}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        return LLMUnavailable(
            f"the LLM server at {self.base_url} failed ({detail})",
            "check llm.base_url, llm.api_key and that the server runs",
        )

    def count_tokens(self, text: str) -> int:
        """Count tokens with the server's tokenizer where it offers one (llama.cpp's
        ``/extras/tokenize/count``), else estimate."""
        root = self.base_url.removesuffix("/v1")
        try:
            resp = self.client.post(f"{root}/extras/tokenize/count", json={"input": text})
            if resp.status_code == 200:
                return int(resp.json()["count"])
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        return approx_tokens(text)

    def _body(
        self,
        messages: list[Message],
        max_tokens: int,
        json_schema: dict[str, Any] | None,
        sampling: Sampling | None = None,
    ) -> dict[str, Any]:
        how = sampling or Sampling()
        body: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in plain_messages(messages)],
            "max_tokens": max_tokens,
            "temperature": self.cfg.temperature if how.temperature is None else how.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if how.stop:
            body["stop"] = list(how.stop)
        if how.top_p < 1.0:
            body["top_p"] = how.top_p
        # llama.cpp's and vLLM's servers take these; OpenAI's ignores unknown fields.
        if how.repeat_penalty != 1.0:
            body["repeat_penalty"] = how.repeat_penalty
        if how.min_p > 0.0:
            body["min_p"] = how.min_p
        if how.grammar is not None and json_schema is None:
            body["grammar"] = how.grammar  # llama.cpp's server; others ignore it
        if how.tools:
            body["tools"] = list(how.tools)
        if self.cfg.model:
            body["model"] = self.cfg.model
        if json_schema is not None:
            body.update(_formats(json_schema)[self._format_index])
        return body

    def _open(self, body: dict[str, Any], schema: dict[str, Any] | None) -> httpx.Response:
        # Opens the SSE stream, retrying transient failures, switching dialect once if the
        # server refuses the json_schema response_format.
        while True:
            request = self.client.build_request("POST", self._url("chat/completions"), json=body)

            def attempt(req: httpx.Request = request) -> httpx.Response:
                resp = self.client.send(req, stream=True)
                if resp.status_code >= 400:
                    resp.read()
                    resp.close()
                    if schema is not None and _refuses_dialect(resp):
                        raise _DialectRefused(resp)
                resp.raise_for_status()
                return resp

            try:
                return self._with_retries(attempt)  # type: ignore[no-any-return]
            except _DialectRefused as refused:
                if schema is None or self._format_index + 1 >= len(_formats(schema)):
                    refused.response.raise_for_status()
                    raise
                for key in _formats(schema)[self._format_index]:
                    body.pop(key, None)
                self._format_index += 1
                body.update(_formats(schema)[self._format_index])

    def stream(
        self,
        messages: list[Message],
        max_tokens: int,
        stats: GenerationStats | None = None,
        json_schema: dict[str, Any] | None = None,
        sampling: Sampling | None = None,
    ) -> Iterator[str]:
        """Yield the answer's text as the server streams it.

        :raises LLMUnavailable: the server cannot be reached, or fails for good.
        """
        if json_schema is not None:
            check_flat(json_schema)
        t0 = time.perf_counter()
        body = self._body(messages, max_tokens, json_schema, sampling)
        try:
            resp = self._open(body, json_schema)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        if stats is not None:
            stats.constraint = "server-schema" if json_schema is not None else ""
        count = 0
        calls: list[dict[str, Any]] = []
        try:
            for data in self._events(resp):
                usage = data.get("usage")
                if usage and stats is not None:
                    stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    count = int(usage.get("completion_tokens") or count)
                    details = usage.get("prompt_tokens_details") or {}
                    stats.cached_tokens = int(details.get("cached_tokens") or 0)
                for choice in data.get("choices") or []:
                    delta = choice.get("delta") or {}
                    calls.extend(delta.get("tool_calls") or [])
                    text = delta.get("content")
                    if text:
                        if stats is not None and stats.first_token_s == 0.0:
                            stats.first_token_s = time.perf_counter() - t0
                        if not usage:
                            count += 1
                        yield text
            # A server that parsed the model's calls streams them as structured deltas;
            # they become the same <tool_call> text a local model writes.
            yield from _calls_as_text(calls)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        finally:
            resp.close()
            if stats is not None:
                stats.completion_tokens = count
                stats.total_s = time.perf_counter() - t0

    @staticmethod
    def _events(resp: httpx.Response) -> Iterator[dict[str, Any]]:
        # Server-sent events: "data: {json}" lines, ended by "data: [DONE]".
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                return
            try:
                data = json.loads(payload)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict):
                if "error" in data:
                    raise LLMUnavailable(f"the LLM server failed: {data['error']}", "see its log")
                yield data
