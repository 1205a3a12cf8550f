"""A context budget: fit a prompt's evidence lines into the model's window by priority.

The prompt is measured with the model's own tokenizer. Each evidence line comes with
a priority class (a small integer; the caller's classifier gives them, e.g.
:func:`assistant.drafters.crash_lines.classify` for a crash report). When the prompt
does not fit, lines are dropped highest class first, and later lines first within a
class, until it does. What a template gives as fields of its own is never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assistant.errors import KassistError
from assistant.llm.base import Message
from assistant.llm.prompts import Prompt

#: Tokens the chat template adds around each message (role markers), a safe upper bound.
PER_MESSAGE_OVERHEAD = 8


@dataclass(frozen=True)
class Evidence:
    """The report lines that fit, and what was left out.

    :param text: the kept lines, in their original order.
    :param kept: how many lines were kept.
    :param dropped: how many lines were left out.
    :param tokens: the whole prompt's size in tokens, as measured.
    """

    text: str
    kept: int
    dropped: int
    tokens: int


def messages_tokens(messages: list[Message], count: Callable[[str], int]) -> int:
    """Return the size of chat messages in tokens, template markers included."""
    return sum(count(m.content) + PER_MESSAGE_OVERHEAD for m in messages)


def fit_evidence(
    prompt: Prompt,
    context: dict[str, Any],
    lines: list[tuple[int, str]],
    count: Callable[[str], int],
    budget: int,
    key: str = "evidence",
) -> tuple[list[Message], Evidence]:
    """Render ``prompt`` with as many evidence lines as fit in ``budget`` tokens.

    :param context: the template's other variables; ``context[key]`` is set here to an
        :class:`Evidence`.
    :param lines: (priority, line) pairs; a higher priority number is dropped first.
    :param count: the model's token counter.
    :param budget: the most tokens the prompt may take (the context window less the answer).
    :return: the messages and the evidence they hold.
    :raises KassistError: even with no evidence at all the prompt does not fit.
    """
    # Lines in the order they are dropped: lowest priority first, later lines first.
    drop_order = sorted(range(len(lines)), key=lambda i: (-lines[i][0], -i))

    def render(n_dropped: int) -> tuple[list[Message], Evidence]:
        gone = set(drop_order[:n_dropped])
        kept = [line for i, (_, line) in enumerate(lines) if i not in gone]
        evidence = Evidence("\n".join(kept), len(kept), n_dropped, 0)
        messages = prompt.render(**{**context, key: evidence})
        tokens = messages_tokens(messages, count)
        return messages, Evidence(evidence.text, evidence.kept, n_dropped, tokens)

    best = render(0)
    if best[1].tokens <= budget:
        return best
    low, high = 1, len(lines)
    last = render(high)
    if last[1].tokens > budget:
        raise KassistError(
            f"prompt {prompt.name} takes {last[1].tokens} tokens without any evidence, "
            f"over the budget of {budget}",
            "raise llm.n_ctx or lower llm.max_tokens",
        )
    best = last
    while low < high:  # the fewest lines dropped that fit
        mid = (low + high) // 2
        candidate = render(mid)
        if candidate[1].tokens <= budget:
            best, high = candidate, mid
        else:
            low = mid + 1
    return best
