"""The model's paragraph on a sysctl page: the documentation condensed, then checked.

The model sees only the key's own documentation section; what it writes goes through
the shared checker (:mod:`assistant.drafters.checker`) with that section and the page's
facts as the evidence: a sysctl, number, unit or function the evidence does not hold, a
repetition, an echo of the prompt or a cut sentence withholds it, and the page says so
in one line. The page's facts never depend on it.
"""

from __future__ import annotations

import re

from assistant.docs.facts import SysctlFacts
from assistant.docs.pages import ModelParagraph, paragraphs
from assistant.drafters.checker import Evidence, check_draft, stated_defaults
from assistant.drafters.pipeline import checked_draft, draft_prompt
from assistant.llm.base import Backend

PROMPT_NAME = "docs_sysctl_summary"
#: Characters of the documentation section handed to the model.
DOC_CHARS = 900
#: The fewest words of one sentence: the documentation's own "Defaults to 3." is one.
SENTENCE_WORDS = 3
#: The only words the paragraph may use besides the documentation's and the page's: it
#: condenses, so what it says must be said there (a 135M model otherwise makes things up).
DOC_WORDS = frozenset(
    """a an the this that these those it its in on at of to from by for with while when if
    after before and or but as is are was were be been being has have not no into which who
    where how how many much long what sets set controls control limits limit gives give
    determines determine defines define tells tell enables enable disables disable turns
    value values number maximum minimum default setting settings sysctl kernel linux
    can may will each per any all more less than only also so such used uses behavior
    behaviour whether""".split()  # noqa: SIM905
)

_WORD = re.compile(r"[a-z0-9_]+")
# A paragraph that opens with a key's name (``msgmnb`` is ...): a section documenting
# several keys, one paragraph each.
_OPENS_WITH_NAME = re.compile(r"``([a-z0-9_]+)``")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _trigrams(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def unfaithful_sentences(paragraph: str, documentation: str) -> list[str]:
    """Return the sentences that share no run of three words with the documentation.

    The paragraph condenses the documentation: a sentence with no phrase of it is the
    model's own, and a small model's own sentences are where it goes wrong.

    >>> unfaithful_sentences("It wraps back to zero. It is fast.", "the value wraps back to 300")
    ['It is fast.']
    """
    known = _trigrams(documentation)
    return [s for s in _SENTENCE.split(paragraph.strip()) if s and not _trigrams(s) & known]


def own_part(section: str, leaf: str) -> str:
    r"""Return the part of a documentation section about one key.

    A section that documents several keys a paragraph each (kernel.rst's ``msgmax``,
    ``msgmnb`` and ``msgmni``) gives the paragraphs from the one opening with the key's
    name to the next opening with another's: otherwise a sentence about a sibling (its
    meaning, its default) would pass as grounded. Any other section is whole.

    >>> text = "``a_max`` is the size. 8 by default.\n\n``b_max`` is the count. 3 by default."
    >>> own_part(text, "b_max")
    '``b_max`` is the count. 3 by default.'
    >>> own_part("Sets the size of ``a_max``.", "b_max")
    'Sets the size of ``a_max``.'
    """
    paragraphs = section.split("\n\n")
    opens = [m.group(1) if (m := _OPENS_WITH_NAME.match(p.lstrip())) else None for p in paragraphs]
    if leaf not in opens or len({o for o in opens if o}) < 2:
        return section
    own: list[str] = []
    for paragraph, name in zip(paragraphs, opens, strict=True):
        if name is not None and name != leaf and own:
            break
        if own or name == leaf:
            own.append(paragraph)
    return "\n\n".join(own)


def documentation_of(facts: SysctlFacts) -> str:
    """Return the documentation the paragraph condenses: the key's own part of its
    section, at most :data:`DOC_CHARS` characters (``""`` when it has none)."""
    if facts.doc is None:
        return ""
    return own_part(facts.doc.text, facts.name.rsplit(".", 1)[-1])[:DOC_CHARS]


# A per-interface key: net.ipv4.conf.eth0.rp_filter, net.ipv6.neigh.ifb1.ucast_solicit.
_PER_INTERFACE = re.compile(r"^net\.ipv[46]\.(?:conf|neigh)\.([^.]+)\.[^.]+$")


def interface_of(name: str) -> str | None:
    """Return the network interface a per-interface key is set for (``None``: not one,
    or the ``all``/``default`` entries, which are not an interface's own).

    >>> interface_of("net.ipv6.conf.ifb1.mtu"), interface_of("net.ipv4.conf.all.forwarding")
    ('ifb1', None)
    """
    m = _PER_INTERFACE.match(name)
    return m.group(1) if m and m.group(1) not in ("all", "default") else None


def _scope(facts: SysctlFacts) -> str:
    # What the key's name itself tells, as a fact a sentence may state.
    interface = interface_of(facts.name)
    return f"{facts.name} is set for the interface {interface}." if interface else ""


def _evidence_text(facts: SysctlFacts, documentation: str) -> str:
    # The key's name (and the interface it is set for), its own documentation and the
    # page's other paragraphs (not the page's quote of the whole section, which may
    # document its siblings too).
    cite = facts.doc.cite if facts.doc is not None else None
    others = (text for _heading, text, source in paragraphs(facts) if source != cite)
    return "\n".join([facts.name, _scope(facts), documentation, *others])


def _defaults(facts: SysctlFacts, documentation: str) -> list[str]:
    # The defaults a sentence may state: the documented ones and the compiled-in one,
    # never any other number of the page (the value here, a boot setting, a release).
    defaults = stated_defaults(documentation)
    if facts.definition is not None and facts.definition.default is not None:
        defaults.append(facts.definition.default)
    return defaults


def paragraph_problems(text: str, facts: SysctlFacts, prompt_lines: list[str]) -> list[str]:
    """Return why a paragraph on ``facts`` may not be shown (empty: it may).

    The evidence is the key's documentation section and the page's own facts: every
    sysctl, number, unit and function named must be there (the shared checker), a
    default it gives must be the documented or compiled-in one (not any number of the
    page: the value here, a boot setting, the kernel's release), its words must be the
    documentation's or plain ones, and each sentence must say something the
    documentation says.
    """
    documentation = documentation_of(facts)
    evidence_text = _evidence_text(facts, documentation)
    verdict = check_draft(
        text,
        Evidence(
            evidence_text,
            allow_causes=True,
            max_sentences=3,
            prompt_lines=prompt_lines,
            plain_words=DOC_WORDS,
            defaults=_defaults(facts, documentation),
        ),
    )
    problems = list(verdict.problems)
    unfaithful = unfaithful_sentences(text, documentation)
    if unfaithful:
        problems.append(f"a sentence the documentation does not say ({unfaithful[0][:60]!r})")
    return problems


def model_paragraph(facts: SysctlFacts, backend: Backend) -> ModelParagraph:
    """Ask the model to condense the key's documentation; check it before it is shown.

    Through the one checked-draft pipeline: each sentence is checked against the
    documentation and the page's facts, and must say something the documentation says;
    a failing sentence is dropped, a paragraph with nothing left is withheld.
    """
    if facts.doc is None:
        return ModelParagraph("", False, "no model paragraph: nothing upstream to condense")
    documentation = documentation_of(facts)
    interface = interface_of(facts.name)
    prompt = draft_prompt(
        PROMPT_NAME,
        facts=[
            ("sysctl", facts.name),
            ("documentation", documentation),
            *([("interface", interface)] if interface else []),
        ],
        name=facts.name,
        documentation=documentation,
        interface=interface,
    )
    evidence_text = _evidence_text(facts, documentation)
    # Copying the documentation is condensing it, not echoing the prompt: only the
    # instructions count as echoes.
    instructions = [ln for ln in prompt.messages[0].content.splitlines() if ln.strip()]
    evidence = Evidence(
        evidence_text,
        allow_causes=True,
        max_sentences=3,
        plain_words=DOC_WORDS,
        min_words=6,
        defaults=_defaults(facts, documentation),
        prompt_lines=instructions,
    )
    draft = checked_draft(
        prompt,
        evidence,
        backend,
        sentence_check=lambda s: [
            f"a sentence the documentation does not say ({u[:60]!r})"
            for u in unfaithful_sentences(s, documentation)
        ],
        sentence_words=SENTENCE_WORDS,
    )
    if draft.text is not None:
        return ModelParagraph(draft.text, True, draft.why, facts.doc.cite)
    why = draft.why.removeprefix("withheld: ")[:160]
    return ModelParagraph(
        draft.raw.strip(), False, f"the model's paragraph was withheld ({why})", facts.doc.cite
    )
