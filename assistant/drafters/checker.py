"""The one check every draft passes before anyone sees it: meaning and grounding.

A draft (a report's summary, a tuning explanation, a documentation paragraph) is
refused when it

- repeats itself (a repeated run of words) or echoes the prompt's own lines;
- does not end a sentence, or is out of its length bounds;
- contradicts a fact: another severity word, another kind of crash, another function
  named as the crashing one, another kernel version, another default value;
- names a kernel symbol, source file, number, sysctl or commit that the evidence does
  not hold.

:func:`check_draft` returns a :class:`Verdict`; a drafter shows a refused draft to
nobody, says so in one line and uses a sentence built from the facts instead.
:func:`cut_to_sentence` is the sentence-aware cut a drafter applies first.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: Words in a run that, seen twice, make a draft repetitive.
REPEAT_NGRAM = 4
#: Words (split at white space) of a prompt line that, found in the draft, make it an echo.
ECHO_WORDS = 4
#: Default length bounds of a draft, in words.
MIN_WORDS = 8
MAX_WORDS = 120

#: Kinds of crash, by the words that name them; a draft may name only the fact's kinds.
KINDS: dict[str, tuple[str, ...]] = {
    "use-after-free": (
        "use-after-free",
        "use after free",
        "freed memory",
        "dangling pointer",
        "been freed",
        "after it was freed",
        "after free",
    ),
    "out-of-bounds": ("out-of-bounds", "out of bounds", "buffer overflow", "overflow"),
    "double-free": ("double-free", "double free", "invalid-free", "invalid free"),
    "null-pointer": ("null-ptr-deref", "null pointer", "null-pointer", "null dereference"),
    "uninit": ("uninit-value", "uninitialized", "uninitialised", "uninit"),
    "info-leak": ("infoleak", "info-leak", "information leak"),
    "deadlock": ("deadlock", "circular locking", "lock inversion", "lock order"),
    "hang": ("hung task", "task hung", "blocked for more than", "hang", "hung"),
    "rcu-stall": ("rcu stall", "rcu detected stall", "stall"),
    "soft-lockup": ("soft lockup", "soft-lockup", "lockup"),
    "leak": ("memory leak",),
    "data-race": ("data race", "data-race"),
    "oom": ("out of memory", "oom"),
    "gpf": ("general protection fault",),
    "paging": ("paging request", "page fault"),
    "warning": ("warning", "warn_on"),
    "bug": ("kernel bug", "bug()"),
    "sleep-atomic": ("sleeping function", "scheduling while atomic", "invalid context"),
    # the detectors: KMSAN's report is not KASAN's
    "kasan": ("kasan",),
    "kmsan": ("kmsan",),
    "kfence": ("kfence",),
    "kcsan": ("kcsan",),
    "ubsan": ("ubsan",),
    "lockdep": ("lockdep",),
}
#: Kinds that may be named whatever the fact is (a use-after-free is also a warning's cause).
_ANY_KIND = {"bug"}
#: Kinds close enough that naming one for the other does not mislead.
_KIN = ({"hang", "rcu-stall", "soft-lockup"}, {"use-after-free", "double-free"})

_SEVERITY_WORDS = {"low", "medium", "moderate", "high", "critical", "minor", "severe", "serious"}
_SEVERITY_RANK = {
    "low": 0,
    "minor": 0,
    "medium": 1,
    "moderate": 1,
    "high": 2,
    "serious": 2,
    "severe": 2,
    "critical": 3,
}
_SEVERITY = re.compile(
    r"\b(low|medium|moderate|high|critical|minor|severe|serious)(?:[- ](?:severity|priority|"
    r"impact|risk))\b|\bseverity\b\W+(?:\w+\W+){0,2}?(low|medium|moderate|high|critical|minor)\b"
    r"|\b(?:is|as)\s+(low|medium|moderate|critical|minor)\b(?!\s+section)"
    r"|\b(low|medium|moderate|high|critical|minor|severe|serious)[- ](?:\w+[- ])?"
    r"(?:error|bug|issue|problem|crash|failure|flaw|vulnerability|fault)s?\b",
    re.IGNORECASE,
)
_BENIGN = re.compile(
    r"\b(?:harmless|benign|not (?:a )?(?:serious|severe|critical)|no impact)\b", re.I
)

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
# Words that look like kernel symbols: snake_case with an underscore, or name().
_SYMBOL = re.compile(rf"\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b|\b({_IDENT})\(\)")
_FILE = re.compile(r"\b((?:[\w.-]+/)+[\w.-]+\.(?:c|h|rs|S|rst|txt))\b|\b([\w-]+\.(?:c|h|rs|S))\b")
# A number, with a short unit stuck to it (5.1x, 10ms, 4k, 95%): the number must be there.
_NUMBER = re.compile(r"(?<![\w.])(0x[0-9a-fA-F]+|\d+(?:\.\d+)*)(?:[a-zA-Z]{1,3}|%)?(?![\w])")
# A device, interface or CPU name: letters then digits (sda1, loop9, nvme0n1, eth0).
_DEVICE = re.compile(r"(?<![\w./-])([a-z]{2,}\d+(?:[a-z]+\d+)*)(?![\w-])")
_SYSCTL = re.compile(r"\b((?:net|vm|kernel|fs|dev|abi|debug|user|sunrpc|crypto)\.[\w.-]*\w)\b")
_COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)([0-9a-f]{7,40})\b")
_VERSION = re.compile(
    r"\b(?:kernel|linux|version|release|v)\s*(?:version\s*)?(\d+\.\d+(?:\.\d+)?(?:-[\w.+-]*\w)?\+?)",
    re.IGNORECASE,
)
# "crashed in X", "an error in X", "in function X", "X crashed": X named as the crashing one.
_CRASHED_IN = re.compile(
    rf"\b(?:crash(?:ed|es)?|fault(?:ed|s)?|oops(?:ed)?|failed|panicked|occurred|happened|"
    rf"triggered|hit|error|bug|problem|issue|failure|encountered|detected|found|reported|"
    rf"fired|hung|stalled|stuck|use-after-free|out-of-bounds|access(?:ed)?|read|write)"
    rf"\s+(?:\w+\s+){{0,2}}?in\s+(?:the\s+)?(?:function\s+)?`?({_IDENT})`?"
    rf"|\bguilty function(?: is| was|:)?\s+`?({_IDENT})`?"
    rf"|(?<!\w)`?({_IDENT})`?(?:\(\))?\s+(?:crashed|faulted|oopsed|panicked)\b",
    re.IGNORECASE,
)
_CALLED_FROM = re.compile(
    rf"\bcalled (?:from|by)\s+(?:the\s+)?(?:function\s+)?`?({_IDENT}[\w.]*)`?"
)
_WORD = re.compile(r"[a-z0-9_]+(?:[-'][a-z0-9_]+)*")
_SENTENCE_END = re.compile(r"[.!?][\"')\]`]*$")
# A sentence end inside a text: the mark, closers, then a space or the end.
_SENTENCE_BREAK = re.compile(r"[.!?][\"')\]`]*(?=\s|$)")
_ABBREVIATION = re.compile(r"\b(?:e\.g|i\.e|etc|vs|cf|approx|no)\.$", re.IGNORECASE)
# A sentence about a default ("the default value is 60", "defaults to 60", "60 by default"):
# its number is checked against the default, not against any number of the evidence.
_DEFAULT_CLAIM = re.compile(
    r"\bdefaults?\b(?:\s+(?:value|setting))?(?:\s*[=:]|\s+(?:is|of|to|was))+\s*`?(-?\d+|0x[0-9a-f]+)\b"
    r"|(?<![\w.])(-?\d+|0x[0-9a-f]+)`?\s+by\s+default\b",
    re.IGNORECASE,
)
# A label at the start of a line ("Crash: ...", "Kernel: ..."), as prompts write facts.
_LABEL = re.compile(r"^\s*([A-Z][\w ()/-]{1,30}):\s")


@dataclass(frozen=True)
class Evidence:
    """What a draft may say: the evidence text, the facts it must not contradict, and the
    prompt it came from.

    :param text: everything the draft may draw on (the crash report, the facts as shown,
        documentation quoted to the model): every name and number in a draft must be here.
    :param severity: the fact's severity (``low``, ``medium``, ``high``, ``critical``).
    :param kind: the crash's kind as its title or type says it (``KASAN: use-after-free
        Read in f``, ``KASAN-USE-AFTER-FREE-READ``); the kinds named in it are allowed.
    :param function: the crashing (guilty) function.
    :param kernel: the kernel release (``6.1.0-21-amd64``).
    :param functions: the crashing function's callers in the call trace: a function
        named as a caller (``called from X``) must be one of them (empty: not checked).
    :param prompt_lines: the prompt's own lines, which a draft must not echo back.
    :param min_words: the fewest words a draft may have.
    :param max_words: the most.
    :param allow_causes: whether the draft may give causes (``because``, ``caused by``,
        ``due to``); a summary of facts may not, an explanation of a tuning step may.
    :param max_sentences: the most sentences (``None``: no limit).
    :param plain_words: the only words a draft may use besides the evidence's, e.g.
        :data:`SUMMARY_WORDS` for a summary that restates facts (``None``: any word).
    :param defaults: the values a sentence about the default may give, as written (``60``);
        empty: such sentences are checked like any number.
    """

    text: str
    severity: str | None = None
    kind: str | None = None
    function: str | None = None
    kernel: str | None = None
    functions: Sequence[str] = ()
    prompt_lines: Sequence[str] = ()
    min_words: int = MIN_WORDS
    max_words: int = MAX_WORDS
    allow_causes: bool = True
    max_sentences: int | None = None
    plain_words: frozenset[str] | None = None
    defaults: Sequence[str] = ()


#: The words a summary of facts may use besides the evidence's own: how a kernel
#: engineer restates a report, and nothing that claims more than it says.
SUMMARY_WORDS = frozenset(
    """a an the this that it its in on at of to from by for with while when during after
    before and or as is was were be been has had have did does not no into through via
    which who whose where called calling caller function functions task tasks process
    thread kernel linux version release cpu cpus detected reported reports report found
    hit triggered fired fault faulted crashed crash crashes oops oopsed bug warning warned
    read reads write writes wrote access accessed accessing memory object objects freed
    free byte bytes size address invalid bad out bounds out-of-bounds use-after-free
    double-free null pointer dereference null-pointer uninit-value uninitialised
    uninitialized value values slab cache page paging request unable handle handling
    hung hang hangs blocked waiting waited wait more than seconds second stall stalled
    rcu self-detected lockup soft hard stuck lock locks locking lockdep possible
    deadlock circular dependency holding held acquire acquiring acquired inconsistent
    state scheduling atomic context sleeping sleep preemptible code leak leaked
    data race data-race general protection divide error invalid opcode stack guard
    kasan kmsan kfence kcsan ubsan kmemleak wild-memory-access global-out-of-bounds
    slab-out-of-bounds stack-out-of-bounds vmalloc-out-of-bounds use user space
    program syscall system call interrupt softirq timer workqueue worker running ran
    executing executed killed kill warn warns""".split()  # noqa: SIM905 (a word list reads better as text)
)


@dataclass
class Verdict:
    """Whether a draft may be shown.

    :param ok: no problem found.
    :param problems: one short phrase per problem, e.g. ``names `foo_bar`, absent from
        the evidence``.
    :param unsupported: the names and numbers the evidence does not hold.
    """

    ok: bool
    problems: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)


def cut_to_sentence(text: str) -> str:
    """Return ``text`` up to its last complete sentence (all of it when it ends one).

    >>> cut_to_sentence("It crashed. Then it")
    'It crashed.'
    """
    text = text.strip()
    if _SENTENCE_END.search(text) or not text:
        return text
    last = 0
    for m in _SENTENCE_BREAK.finditer(text):
        if not _ABBREVIATION.search(text[: m.end()]):
            last = m.end()
    return text[:last].strip() if last else text


def split_sentences(text: str) -> list[str]:
    """Split a text into its sentences (an abbreviation's dot does not end one).

    >>> split_sentences("It hung, e.g. in f(). Then it panicked.")
    ['It hung, e.g. in f().', 'Then it panicked.']
    """
    text = " ".join(text.split())
    out: list[str] = []
    start = 0
    for m in _SENTENCE_BREAK.finditer(text):
        if _ABBREVIATION.search(text[: m.end()]):
            continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    if text[start:].strip():
        out.append(text[start:].strip())
    return [s for s in out if s]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _repetition(draft: str) -> list[str]:
    words = _words(draft)
    seen: set[tuple[str, ...]] = set()
    for i in range(len(words) - REPEAT_NGRAM + 1):
        gram = tuple(words[i : i + REPEAT_NGRAM])
        if gram in seen:
            return [f'repeats itself ("{" ".join(gram)}")']
        seen.add(gram)
    sentences = [s.strip().lower() for s in _SENTENCE_BREAK.split(draft) if s.strip()]
    if len(sentences) != len(set(sentences)):
        return ["repeats a sentence"]
    return []


def _echo(draft: str, prompt_lines: Sequence[str]) -> list[str]:
    labels = set()
    flat = " ".join(draft.lower().split())
    for line in prompt_lines:
        if m := _LABEL.match(line):
            labels.add(m.group(1).lower())
        # A whole line, or one sentence of it, found in the draft.
        for part in [line, *_SENTENCE_BREAK.split(line)]:
            words = part.lower().split()
            if len(words) >= ECHO_WORDS and " ".join(words) in flat:
                return [f'echoes the prompt ("{part.strip()[:60]}")']
    for line in draft.splitlines():
        if (m := _LABEL.match(line)) and m.group(1).lower() in labels:
            return [f'echoes the prompt\'s "{m.group(1)}:" line']
    return []


def _ending(draft: str) -> list[str]:
    return [] if _SENTENCE_END.search(draft.strip()) else ["does not end a sentence"]


def _length(draft: str, evidence: Evidence) -> list[str]:
    n = len(_words(draft))
    if n < evidence.min_words:
        return [f"too short ({n} words, at least {evidence.min_words})"]
    if n > evidence.max_words:
        return [f"too long ({n} words, at most {evidence.max_words})"]
    sentences = len(_SENTENCE_BREAK.findall(draft))
    if evidence.max_sentences is not None and sentences > evidence.max_sentences:
        return [f"too long ({sentences} sentences, at most {evidence.max_sentences})"]
    return []


#: Inflections a restatement may change (longest first): "accepted" restates "Accept",
#: "generated" restates "Generate", "requests" restates "request". No "ies": "applies"
#: loses its "es", and its "i" meets the one "apply"'s "y" becomes.
_INFLECTIONS = ("ing", "ed", "es", "s", "d")


def word_stem(word: str) -> str:
    """Return a word without its inflection, so that the forms of one verb or noun meet.

    >>> [word_stem(w) for w in ("accepted", "accept", "generated", "generate", "applies")]
    ['accept', 'accept', 'generat', 'generat', 'appli']
    >>> {word_stem(w) for w in ("apply", "applies", "applied", "applying")}
    {'appli'}
    """
    for suffix in _INFLECTIONS:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("y"):
        return word[:-1] + "i"
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def _known_word(word: str, known: set[str] | frozenset[str], stems: set[str]) -> bool:
    # Another form of a known word is known: "accepted" restates "Accept".
    return word in known or word_stem(word) in stems


def _beyond(draft: str, evidence: Evidence) -> list[str]:
    # Words that are neither the evidence's nor the plain words a restatement needs.
    if evidence.plain_words is None:
        return []
    known = set(_words(evidence.text)) | evidence.plain_words
    stems = {word_stem(k) for k in known}
    # Names (with digits, underscores) are the grounding check's; this one reads words.
    # A hyphenated word unknown as a whole is read part by part: an invented "SYN-DORSEL"
    # is refused, a known "use-after-free" is not.
    extra = [
        w
        for w in dict.fromkeys(_words(draft))
        if not _known_word(w, known, stems)
        and all(p.isalpha() for p in w.split("-") if p)
        and any(not _known_word(p, known, stems) for p in w.split("-") if p)
    ]
    if extra:
        return [f"says more than the facts ({', '.join(extra[:4])})"]
    return []


def kinds_named(text: str) -> set[str]:
    """Return the kinds of crash (keys of :data:`KINDS`) that a text names."""
    low = text.lower().replace("_", "-")
    found = set()
    for kind, words in KINDS.items():
        # "slab-out-of-bounds" names out-of-bounds: a hyphen may come before, not after.
        if any(re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![\w-])", low) for w in words):
            found.add(kind)
    # "use-after-free" holds "free"-words of its own; a stall is not a soft lockup.
    if "use-after-free" in found:
        found.discard("double-free")
    return found


_CAUSE = re.compile(
    r"\b(?:because|caused by|due to|as a result of|results? from|the (?:root )?cause)\b", re.I
)


def _guessed_cause(draft: str, evidence: Evidence) -> list[str]:
    if not evidence.allow_causes and (m := _CAUSE.search(draft)):
        return [f'guesses a cause ("{m.group(0)}"), the facts give none']
    return []


def _other_severity(draft: str, evidence: Evidence) -> list[str]:
    if not evidence.severity:
        return []
    problems = []
    fact = _SEVERITY_RANK.get(evidence.severity.lower())
    for m in _SEVERITY.finditer(draft):
        word = next(g for g in m.groups() if g).lower()
        if word in _SEVERITY_WORDS and _SEVERITY_RANK.get(word) != fact:
            problems.append(f'says "{m.group(0).strip()}", the severity is {evidence.severity}')
            break
    if fact is not None and fact >= 2 and _BENIGN.search(draft):
        problems.append(f"calls it harmless, the severity is {evidence.severity}")
    return problems


def _other_kind(draft: str, evidence: Evidence) -> list[str]:
    if not evidence.kind:
        return []
    allowed = kinds_named(evidence.kind) | _ANY_KIND
    for kin in _KIN:
        if allowed & kin:
            allowed |= kin
    other = sorted(kinds_named(draft) - allowed)
    if allowed - _ANY_KIND and other:
        return [f"names another kind of crash ({', '.join(other)})"]
    return []


def _other_crashing_function(draft: str, evidence: Evidence) -> list[str]:
    # Matches may overlap ("the kernel crashed in f": "kernel crashed", "crashed in f").
    pos = 0
    while m := _CRASHED_IN.search(draft, pos):
        name = next((g for g in m.groups() if g), "")
        if _looks_like_symbol(name) and name != evidence.function:
            said = f"not `{evidence.function}`" if evidence.function else "the report names none"
            return [f"names `{name}` as the crashing function, {said}"]
        pos = m.start() + 1
    return []


def _other_caller(draft: str, evidence: Evidence) -> list[str]:
    if not evidence.functions:
        return []
    for m in _CALLED_FROM.finditer(draft):
        caller = m.group(1).rstrip(".")
        if caller not in evidence.functions:
            return [f"names `{caller}` as a caller, the trace does not"]
    return []


def _other_default(draft: str, evidence: Evidence) -> list[str]:
    if not evidence.defaults:
        return []
    for value in stated_defaults(draft):
        if value not in evidence.defaults:
            known = " or ".join(evidence.defaults)
            return [f"gives the default as {value}, the default is {known}"]
    return []


def _other_kernel(draft: str, evidence: Evidence) -> list[str]:
    if not evidence.kernel:
        return []
    for m in _VERSION.finditer(draft):
        version = m.group(1)
        if not (evidence.kernel.startswith(version) or version.startswith(evidence.kernel)):
            return [f"names kernel {version}, the kernel is {evidence.kernel}"]
    return []


#: The facts a draft must not contradict, each checked on its own (in the order its
#: problems are told): at most one problem each, but for severity (a word, and "harmless").
_CONTRADICTIONS: tuple[Callable[[str, Evidence], list[str]], ...] = (
    _guessed_cause,
    _other_severity,
    _other_kind,
    _other_crashing_function,
    _other_caller,
    _other_default,
    _other_kernel,
)


def _contradictions(draft: str, evidence: Evidence) -> list[str]:
    return [problem for check in _CONTRADICTIONS for problem in check(draft, evidence)]


def stated_defaults(text: str) -> list[str]:
    """Return the values a text gives as a default, in order.

    >>> stated_defaults("The default value is 60. It defaults to 0x10; 5 by default.")
    ['60', '0x10', '5']
    """
    return [m.group(1) or m.group(2) for m in _DEFAULT_CLAIM.finditer(text)]


#: Plain nouns that follow "in the" without naming a function ("crashes in the store").
_PLACES = frozenset({"store", "log", "logs", "system", "machine", "queue", "list", "table"})


def _looks_like_symbol(word: str) -> bool:
    if word in SUMMARY_WORDS or word in _PLACES:
        return False
    return "_" in word or any(c.isdigit() for c in word) or (word.islower() and len(word) > 3)


def unsupported_names(draft: str, evidence_text: str) -> list[str]:
    """Return the symbols, files, numbers, sysctls, commits and device names a draft names
    that the evidence text does not hold, in order of appearance.

    >>> unsupported_names("It fails in tcp_close() at net/ipv4/tcp.c.", "tcp_close+0x1/0x2")
    ['net/ipv4/tcp.c']
    """
    idents = set(re.findall(r"[A-Za-z0-9_][\w.+-]*", evidence_text))
    idents |= set(re.findall(r"\w+", evidence_text))
    numbers = set(_NUMBER.findall(evidence_text))
    low = evidence_text.lower()
    found: list[str] = []

    def add(name: str) -> None:
        if name not in found:
            found.append(name)

    for m in _FILE.finditer(draft):
        name = m.group(1) or m.group(2)
        if name not in evidence_text:
            add(name)
    for m in _SYSCTL.finditer(draft):
        if m.group(1) not in evidence_text:
            add(m.group(1))
    for m in _SYMBOL.finditer(draft):
        name = m.group(1) or m.group(2)
        if name not in idents and not any(name in f for f in found):
            add(name)
    for m in _COMMIT.finditer(draft):
        if m.group(1).lower() not in low:
            add(m.group(1))
    for m in _DEVICE.finditer(draft):
        if m.group(1) not in idents:
            add(m.group(1))
    stripped = _FILE.sub(" ", _SYSCTL.sub(" ", draft))
    for m in _NUMBER.finditer(stripped):
        number = m.group(1)
        if number not in numbers and number.lower() not in low:
            add(number)
    return found


def check_draft(text: str, evidence: Evidence) -> Verdict:
    """Check a draft against its evidence; see the module docstring for what is refused.

    :param text: the draft as it would be shown (after :func:`cut_to_sentence`).
    """
    draft = text.strip()
    if not draft:
        return Verdict(False, ["is empty"])
    problems = [
        *_length(draft, evidence),
        *_ending(draft),
        *_repetition(draft),
        *_echo(draft, evidence.prompt_lines),
        *_contradictions(draft, evidence),
        *_beyond(draft, evidence),
    ]
    unsupported = unsupported_names(draft, evidence.text)
    if unsupported:
        names = ", ".join(f"`{n}`" for n in unsupported[:5])
        problems.append(f"names {names}, absent from the evidence")
    return Verdict(not problems, problems, unsupported)


# --- a reader's check: does a sentence add to the title, and is it English? ---

#: Words that carry no fact of their own when a sentence is compared with a title.
_FILLER = SUMMARY_WORDS | {"there", "also", "then", "here", "now"}
# A word (or name) twice in a row: "the the", "in in".
_DOUBLED = re.compile(r"\b([\w/.-]+)\s+\1\b", re.IGNORECASE)
# An article before a verb form: "a using", "a was", "the detected".
_ARTICLE_VERB = re.compile(
    r"\b(?:a|an|the)\s+(?:was|were|is|are|has|have|had|been|using|did|does|hit)\b", re.I
)
# A finite verb phrase inside a noun phrase: "hit a stack guard page was hit".
_TWO_VERBS = re.compile(r"\b(hit|detected|reported|triggered)\b.*\bwas \1\b", re.I)
# syzkaller's placeholder for a frame it could not find, read as a function.
_CORRUPTED_FRAME = re.compile(r"\bin corrupted\b", re.I)
# A run of "in X" places: "in f, in task t, in task u".
_IN_CHAIN = re.compile(r"(?:,\s*in\s+[\w/.:-]+(?:\s+[\w/.:-]+)?){2,}", re.I)

# A label with its value left out: "task sshd (pid) on CPU 1".
_EMPTY_LABEL = re.compile(r"\((?:pid|cpu|task|address|size|line)\)", re.I)

_SLIPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (_EMPTY_LABEL, "a label without its value"),
    (_DOUBLED, "a word doubled"),
    (_ARTICLE_VERB, "an article before a verb"),
    (_TWO_VERBS, "a verb repeated"),
    (_CORRUPTED_FRAME, '"in corrupted", a placeholder read as a function'),
    (_IN_CHAIN, 'a run of "in" places'),
)


def _repeated_phrase(sentence: str) -> bool:
    # Two content words in a row, said twice: "RCU usage in f, warning RCU usage in t".
    pairs = [
        (a, b)
        for a, b in itertools.pairwise(_words(sentence))
        if a not in _FILLER and b not in _FILLER
    ]
    return len(pairs) != len(set(pairs))


def grammar_slips(sentence: str) -> list[str]:
    """Return the slips of English a reader would stop at (empty: none found).

    >>> grammar_slips("The kernel hit a stack guard page was hit in corrupted.")
    ['a verb repeated', '"in corrupted", a placeholder read as a function']
    """
    slips = [why for pattern, why in _SLIPS if pattern.search(sentence)]
    if _repeated_phrase(sentence):
        slips.append("a phrase repeated")
    return slips


def restates_title(sentence: str, title: str, table: Sequence[str] = ()) -> bool:
    """Tell whether a sentence says nothing the title and the facts table do not: each of
    its content words is one of theirs (or a filler word).

    :param table: values the report's facts table shows (task, kernel release).

    >>> restates_title("The kernel detected a use-after-free read in tcp_close.",
    ...                "KASAN: use-after-free Read in tcp_close")
    True
    """
    known = set(_words(" ".join([title, *table])))
    content = [w for w in _words(sentence) if w not in _FILLER]
    return all(w in known for w in content)


def reader_problems(sentence: str, title: str, table: Sequence[str] = ()) -> list[str]:
    """Return why a reader would not keep a sentence of a report's paragraph: broken
    English, or nothing beyond the title and the facts table."""
    problems = [f"broken English ({why})" for why in grammar_slips(sentence)]
    if restates_title(sentence, title, table):
        problems.append("only restates the title")
    return problems
