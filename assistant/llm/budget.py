"""A context budget: fit a crash report's evidence into the model's window by priority.

The prompt is measured with the model's own tokenizer. When it does not fit, lines
are dropped in this order, last ones first within each class: register dumps and
repeated frames, then the rest of the report, then the call trace beyond the guilty
frames, and the report's first lines last. The crash title, type and guilty frame
are template fields of their own and are never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assistant.errors import KassistError
from assistant.llm.base import Message
from assistant.llm.prompts import Prompt

#: Priority classes, from the last dropped to the first dropped.
HEAD, GUILTY, BODY, TRACE_TAIL, NOISE = range(5)
#: How many first lines of the report are kept the longest.
HEAD_LINES = 8
#: How many distinct call-trace frames count as "guilty" (innermost first).
GUILTY_FRAMES = 8
#: Tokens the chat template adds around each message (role markers), a safe upper bound.
PER_MESSAGE_OVERHEAD = 8

_TIMESTAMP = re.compile(r"^\s*\[\s*\d+\.\d+\]\s?(?:\[\s*[CT]\d+\])?\s?")
_REGISTERS = re.compile(
    r"^\s*(?:RIP|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d{1,2}|FS|GS|CS|DS|ES|CR[0-4]|DR[0-7]|"
    r"EFLAGS|pc|lr|sp|x\d+|Code|Stack|PGD|PUD|PMD|PTE|ORIG_RAX)\s*:?\s*[0-9a-fA-F<]"
)
_HEX_DUMP = re.compile(r"^\s*(?:[0-9a-f]{8,16}\s+){3,}")
_FRAME = re.compile(
    r"^\s*(?:\?\s*)?(?:\[<[0-9a-f]+>\]\s*)?([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+"
)


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


def classify(report: str) -> list[tuple[int, str]]:
    """Give each line of a crash report its priority class (see the module docstring)."""
    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    frames = 0
    for i, raw in enumerate(report.splitlines()):
        line = _TIMESTAMP.sub("", raw).rstrip()
        if not line:
            continue
        frame = _FRAME.match(line)
        if _REGISTERS.match(line) or _HEX_DUMP.match(line):
            prio = NOISE
        elif frame:
            name = frame.group(1)
            if name in seen:
                prio = NOISE
            else:
                seen.add(name)
                frames += 1
                prio = GUILTY if frames <= GUILTY_FRAMES else TRACE_TAIL
        elif i < HEAD_LINES:
            prio = HEAD
        else:
            prio = BODY
        out.append((prio, line))
    return out


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
    :param lines: (priority, line) pairs from :func:`classify`.
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
