"""Deterministic cues in a chat message: the things a person names, and what they ask for.

A 135M model cannot be trusted to pick a tool or copy an argument, so routing starts
here: the paths, crash signatures, sysctl names, probe names, durations, changeset ids
and log levels a message names are found by pattern, and each tool has a table of
phrases that ask for it. :func:`route_by_cues` turns both into a decision with a
confidence; the router asks the model only for what the cues leave open.

The message is data: nothing here executes or follows it.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

#: The actions the chat can take: one per tool, and ``clarify`` (ask instead of guessing).
CLARIFY = "clarify"

# A path: absolute, ~/ or ./ relative, or a relative name with a slash or a log-ish suffix.
_PATH = re.compile(
    r"(?<![\w.:/-])("
    r"(?:~|\.{1,2})?/[\w.@:+,=~%-]+(?:/[\w.@:+,=~%-]*)*"  # /abs, ./rel, ~/x
    r"|[\w.@+-]{2,}/[\w.@:+,=~%/-]*[\w/]{2,}"  # dir/file (not "I/O")
    r"|[\w@+-][\w.@+-]*\.(?:log|txt|gz|xz|zst|bz2|json|jsonl|out|\d{1,2})"  # name.log, messages.1
    r")(?![\w/])"
)
# A crash signature (or its prefix): hex with at least one letter and one digit, 6-40 long.
_SIGNATURE = re.compile(r"(?<![\w.-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)([0-9a-f]{6,40})(?![\w.-])")
_SYSCTL_ROOTS = ("net", "vm", "kernel", "fs", "dev", "user", "abi", "debug", "crypto", "sunrpc")
_SYSCTL = re.compile(
    r"(?<![\w./-])((?:" + "|".join(_SYSCTL_ROOTS) + r")(?:\.[A-Za-z0-9_-]+)+)(?![\w-])"
)
_DURATION = re.compile(r"\b(\d{1,4})\s*(?:s|secs?|seconds?)\b", re.IGNORECASE)
_MINUTES = re.compile(r"\b(\d{1,3})\s*(?:m|mins?|minutes?)\b", re.IGNORECASE)
_CHANGESET = re.compile(
    r"(?:changesets?|change|cs|#|roll ?back|revert|undo)\s*(?:number|no\.?|id)?\s*#?\s*(\d{1,9})\b",
    re.IGNORECASE,
)
_SET_VALUE = re.compile(r"\b(?:to|=)\s*([0-9][\w. -]*?|[a-z_]+)\s*(?:[.!?,]|$)", re.IGNORECASE)
_REC_ID = re.compile(r"\b(?:recommendation|rec)\s+([A-Za-z][\w.-]*\d[\w.-]*|[A-Za-z][\w-]*)")
_APPLY_ID = re.compile(
    r"\bapply\s+(?:the\s+)?(?:recommendation\s+)?([A-Za-z][\w.]*-?\d[\w.-]*|[a-z]+-[\w-]+:[\w.-]+)"
)
_TRAILING_NUMBER = re.compile(r"\s(\d{1,4})\s*$")

#: Log levels by the words people use for them (printk levels: 0 emerg ... 7 debug).
LEVEL_WORDS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"\bemerg", re.I), 0),
    (re.compile(r"\balert", re.I), 1),
    (re.compile(r"\bcrit", re.I), 2),
    (re.compile(r"\berr(?:or)?s?\b", re.I), 3),
    (re.compile(r"\bwarn", re.I), 4),
)
#: Log sources by the words that name them.
SOURCE_WORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bpstore\b|previous boot|last boot", re.I), "pstore"),
    (re.compile(r"\bjournal", re.I), "journal"),
    (re.compile(r"\bkmsg\b", re.I), "kmsg"),
)


@dataclass
class Cues:
    """What a message names.

    :param paths: file or directory paths, in order.
    :param signatures: crash signatures or their hex prefixes.
    :param sysctls: sysctl names (``net.core.somaxconn``).
    :param leaves: keys named by their last part only (``somaxconn``): a weaker cue.
    :param probe: an eBPF probe named in the message.
    :param duration: seconds asked for (``for 10 seconds``, ``30s``).
    :param changeset: a changeset id (``changeset 3``, ``#3``).
    :param value: the value after ``to``/``=`` in a request to set a key.
    :param rec_id: a recommendation id (``apply somaxconn-1``).
    :param level: a printk level named in words (``errors`` = 3).
    :param source: a log source named (``pstore``, ``journal``, ``kmsg``).
    """

    paths: list[str] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    sysctls: list[str] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    probe: str | None = None
    duration: int | None = None
    changeset: int | None = None
    value: str | None = None
    rec_id: str | None = None
    level: int | None = None
    source: str | None = None


def _strip_sentence_end(token: str) -> str:
    return token.rstrip(".,;:!?)'\"")


def find_cues(text: str, probe_names: Iterable[str]) -> Cues:
    """Find the paths, signatures, sysctls, probe and numbers a message names.

    :param text: the message.
    :param probe_names: the eBPF probes the library has (``runqlat``, ...).
    """
    sysctls, leaves, written = _sysctl_cues(text)
    rest = text  # the message without the names found so far
    for name in written:
        rest = rest.replace(name, " ")
    paths = _path_cues(rest, text)
    for path in paths:
        rest = rest.replace(path, " ")
    changeset = _CHANGESET.search(rest)
    rec = _APPLY_ID.search(text) or _REC_ID.search(text)
    return Cues(
        paths=paths,
        signatures=[m.group(1) for m in _SIGNATURE.finditer(rest.lower())],
        sysctls=sysctls,
        leaves=leaves,
        probe=_probe_cue(text, probe_names),
        duration=_duration_cue(rest),
        changeset=int(changeset.group(1)) if changeset else None,
        value=_set_value(text, written),
        rec_id=rec.group(1) if rec else None,
        level=_first_named(LEVEL_WORDS, text),
        source=_first_named(SOURCE_WORDS, text),
    )


def _sysctl_cues(text: str) -> tuple[list[str], list[str], list[str]]:
    # The sysctl names written whole, else the keys named by their leaf only; and each as
    # the message writes it ("somaxconn").
    written = [_strip_sentence_end(m.group(1)) for m in _SYSCTL.finditer(text)]
    if written:
        return list(written), [], written
    leaves = []
    for leaf, key in known_leaves().items():
        if found := _word(leaf).search(text):
            written.append(found.group(0))
            leaves.append(key)
    return [], leaves, written


def _path_cues(rest: str, text: str) -> list[str]:
    found = (_strip_sentence_end(m.group(1)) for m in _PATH.finditer(rest))
    return [path for path in found if _is_path(path, text)]


def _is_path(path: str, text: str) -> bool:
    relative = not path.startswith(("/", "./", "../", "~/"))
    if relative and "." not in path.rsplit("/", 1)[-1] and path.count("/") < 2:
        return False  # and/or, TCP/IP, read/write: words, not paths
    if path.startswith("/") and len(path) == 1:
        return False
    # the slash command itself is no path
    return not (re.fullmatch(r"/[a-z_]+", path) and _slash_command(text) == path[1:])


def _probe_cue(text: str, probe_names: Iterable[str]) -> str | None:
    names = {n.lower(): n for n in probe_names}
    return next(
        (names[w.lower()] for w in re.findall(r"[A-Za-z_]+", text) if w.lower() in names), None
    )


def _duration_cue(rest: str) -> int | None:
    # Seconds asked for: "10 s", "for 2 minutes", "for a minute".
    if seconds := _DURATION.search(rest):
        return int(seconds.group(1))
    minutes = _MINUTES.search(rest)
    if minutes and re.search(r"\bfor\b", rest, re.I):
        return int(minutes.group(1)) * 60
    if re.search(r"\bfor (?:a|one) minute\b", rest, re.I):
        return 60
    return None


def _set_value(text: str, written: list[str]) -> str | None:
    # The value after "to"/"=" that follows the first key named.
    if not written:
        return None
    v = _SET_VALUE.search(text.split(written[0], 1)[1])
    return v.group(1).strip() if v else None


_T = TypeVar("_T")


def _first_named(table: tuple[tuple[re.Pattern[str], _T], ...], text: str) -> _T | None:
    # The value of a table's first pattern the text holds.
    return next((value for pattern, value in table if pattern.search(text)), None)


@functools.cache
def known_leaves() -> dict[str, str]:
    """Return the last component of each key tuning knows → the key (``somaxconn``: one key).

    Leaves that several keys share (``rmem_max``?) are left out: they name nothing.
    """
    from assistant.tuning.scenarios import KNOWN_KEYS

    leaves: dict[str, list[str]] = {}
    for key in KNOWN_KEYS:
        leaves.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    return {leaf: keys[0] for leaf, keys in leaves.items() if len(keys) == 1 and len(leaf) > 5}


@functools.cache
def _word(word: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w.-])" + re.escape(word) + r"(?![\w.-])", re.IGNORECASE)


def _slash_command(text: str) -> str | None:
    m = re.match(r"\s*/([a-z_]+)\b", text)
    return m.group(1) if m else None


# -- what each tool is asked for with -----------------------------------------------------

#: Phrases that ask for a tool, with a weight each: the strongest total wins. They name
#: concepts (crash, trace, tune, ...), not sentences of any test set.
PHRASES: Mapping[str, tuple[tuple[str, float], ...]] = {
    "crashes": (
        (r"\bcrash(?:es|ed)?\b", 2.0),
        (r"\boops(?:es)?\b", 2.0),
        (r"\bpanick?(?:ed|s)?\b", 1.5),
        (r"\bkasan\b|\bkfence\b|\bubsan\b|\blockdep\b", 1.0),
        (r"\bsignatures?\b", 1.5),
        (r"\b(?:bugs?|warnings?)\b.*\b(?:stored|recorded|seen|store)\b", 2.0),
        (r"\b(?:recorded|stored|store)\b", 1.0),
        (r"\b(?:new|recent|lately|latest|this week|today|any|list|how many|most often)\b", 0.5),
    ),
    "crash": (),
    "report": (
        (r"\b(?:bug )?reports?\b", 2.5),
        (r"\bwrite(?:[- ]up)?\b|\bdraft\b|\bcompose\b|\bfile an? (?:bug|issue)\b", 2.0),
        (r"\bemail\b|\blkml\b|\bmailing list\b|\bmaintainers?\b|\bupstream\b", 2.0),
    ),
    "triage": (
        (r"\btriage\b", 3.0),
        (r"\b(?:crash(?:es|ed)?|oops|bugs?|wrong|panic)\b", 1.0),
        (r"\b(?:log|console|dmesg|syslog|messages)\b", 1.0),
        (r"\b(?:check|scan|analy[sz]e|parse|look at|find|name|contain)\b", 1.0),
    ),
    "vmcore": (
        (r"\bvmcore\b|\bkdump\b|\bcrash ?dump\b|\bdump\b|\bdrgn\b", 3.0),
        (r"\bblocked tasks\b|\bbacktrace\b|\bcrashed task\b|\bat crash time\b", 1.5),
    ),
    "stats": (
        (r"\bpsi\b|\bpressure\b", 2.5),
        (r"\bmemory\b|\bram\b|\bswap(?:ping)?\b", 2.0),
        (r"\bload(?:ed| average)?\b|\buptime\b|\bcpu\b|\bbusy\b|\butili[sz]ation\b", 2.0),
        (r"\bcounters?\b|\bsnapshot\b|\bstats?\b|\bstatistics\b", 2.0),
        (r"\bsockets?\b|\btime[- ]wait\b|\bconnections? (?:open|count)\b|\bestablished\b", 2.0),
        (r"\bhow busy\b|\bi/?o\b", 1.5),
        (r"\boverload\w*\b", 2.0),
        (r"\b(?:overview|summary)\b", 1.5),
        (r"\bright now\b|\bcurrent(?:ly)?\b", 0.5),
    ),
    "health": (
        (
            r"\bhow(?:'s| is) (?:the |this |my |our )?(?:system|machine|host|box|server|computer)"
            r"(?: doing| holding up)?\b",
            5.0,
        ),
        (r"\b(?:system|machine|host|box|server|computer) health\b|\bhealth ?check\b", 5.0),
        (r"\bstatus of (?:the |this |my )?(?:system|machine|host|box|server)\b", 5.0),
        (
            r"\b(?:anything|something|what(?:'s| is)) wrong with (?:the |this |my |our )?"
            r"(?:system|machine|host|box|server|computer)\b",
            5.0,
        ),
        (
            r"\b(?:machine|system|host|box|server|computer|everything)\b.{0,20}"
            r"\b(?:slow|sluggish|laggy|unresponsive|hanging|struggling)\b",
            5.0,
        ),
        (
            r"\b(?:is|are) (?:the |this |my )?(?:system|machine|host|box|server) (?:ok|okay|fine|"
            r"healthy|alright)\b",
            5.0,
        ),
        (r"\bverdict\b|\boverall\b|\beverything (?:ok|okay|fine)\b", 3.0),
    ),
    "top": (
        (r"\b(?:using|uses|eating|consuming|hogging|burning) (?:the )?most\b", 5.0),
        (r"\bwhat(?:'s| is) (?:using|eating|hogging|consuming|burning)\b", 5.0),
        (
            r"\b(?:top|busiest|heaviest|biggest) (?:processes|process|tasks|programs|consumers)\b",
            5.0,
        ),
        (
            r"\bwhich (?:process|processes|program|programs|task|tasks)\b.{0,30}"
            r"\b(?:using|uses|eat|hog|consum|burn|most|heav)",
            4.0,
        ),
        (r"\bwho(?:'s| is) (?:using|eating|hogging)\b|\bhogs?\b", 4.0),
    ),
    "explain": (
        (r"\bexplain\b.*\b(?:recommendation|finding|tuning|tune|advice|suggestion)s?\b", 5.0),
        (r"\bwhy (?:do|does|did) (?:you|tune|kassist|it) (?:recommend|suggest|propose)\b", 5.0),
        (r"\bwhy (?:this|that|the) (?:recommendation|finding|change)\b", 4.0),
    ),
    "help": (
        (
            r"^\s*help\s*[?!.]*$|\bwhat can you do\b|\bcan you help\b|\bhow do i use (?:you|this)\b"
            r"|\bwhat (?:commands|tools)\b|\blist (?:the )?(?:commands|tools)\b",
            5.0,
        ),
    ),
    "probe": (
        (r"\btrace\b|\btracing\b|\bbpftrace\b|\bebpf\b|\bprobe\b", 2.5),
        (r"\bmeasure\b|\bwatch\b|\brecord\b|\bhistogram\b|\bprofile\b|\bcount\b", 1.5),
        (r"\blatency\b|\bdelays?\b", 1.5),
        (r"\bretransmi", 2.0),
        (r"\bsyscalls?\b|\bsystem calls?\b|\berrno\b", 2.0),
        (r"\bpage ?faults?\b", 2.5),
        (r"\bpackets?\b.*\bdrop|\bdrop\w*\b.*\bpackets?\b|\bwhere\b.*\bdropp", 2.0),
        (r"\boom kills?\b|\boom-kill", 2.0),
        (r"\breclaim\b", 2.0),
        (r"\bfailing\b|\bfail(?:ed)?\b", 0.5),
    ),
    "tune": (
        (r"\btun(?:e|ing)\b|\boptimi[sz]e\b|\brecommend\w*\b|\bsuggest\w*\b", 3.0),
        (r"\bsysctls?\b.*\b(?:change|set|should)\b|\bkernel parameters?\b", 2.0),
        (r"\bwhy (?:are|is|do|does)\b", 1.5),
        (
            r"\b(?:drop(?:s|ped|ping)?|refus\w+|overflow\w*|exhaust\w*|running out|run out|full)\b",
            2.0,
        ),
        (r"\btoo many\b|\blimits?\b|\bmisconfigur\w*\b|\bimprove\b|\bthroughput\b", 1.5),
        (r"\bhow (?:to|can i|do i) (?:fix|reduce|avoid|stop)\b|\bwhat to change\b", 1.5),
        # the problems the tuning table knows
        (
            r"\bsyn flood\w*|conntrack|\bbacklog\b|\bephemeral\b|\binotify\b|\blisten queue\b"
            r"|\bneighbou?r table\b|\btime wait bucket|\bopen files\b|\bfile[- ]max\b"
            r"|\bpids?\b|\bthreads-max\b|\breceive buffer|\brcvbuf\b|\baio\b|\bdirty\b"
            r"|\bwriteback\b|\bports?\b.*\bexhaust|\bsomaxconn\b|\bfile descriptors?\b"
            r"|\bout of (?:file|pids?|ports|inotify|threads|handles)",
            3.0,
        ),
        (r"\b(?:packets?|datagrams?|udp)\b.*\blost\b", 2.0),
        (r"\bsyns?\b", 2.0),
        (r"\bany fix\b|\bhow (?:do i|to|can i) fix\b|\bfix (?:it|this)\b", 1.5),
        (
            r"\b(?:cannot|can't|unable to|fails? to|failing to)"
            r" (?:create|open|allocate|fork|add|start)\b",
            2.5,
        ),
        (r"\btim(?:e|es|ing) ?out\b|\blost\b|\bsettings?\b|\bhelp my\b|\bwhat to do\b", 1.5),
        (r"\bfindings?\b|\bwhat would you\b|\bwhat should i\b", 1.5),
    ),
    "docs": (
        (r"\bdocument\w*\b|\bdocs?\b", 3.0),
        (
            r"\bundocumented\b|\b(?:lack|lacks|lacking|no|without|missing) (?:any )?doc"
            r"|\b(?:nobody|no one|not) documented\b",
            4.0,
        ),
    ),
    "agent_status": (
        (r"\bagent\b", 2.0),
        (r"\bstatus\b|\brunning\b|\bup\b|\bstate\b", 1.5),
        (r"\bmanage[sd]?\b|\boverrid\w*\b", 2.0),
    ),
    "agent_history": (
        (r"\bhistory\b|\bchangesets\b|\bpast changes\b", 3.0),
        (r"\bwhat (?:has|did) (?:kassist|the agent|you)\b.*\b(?:change|appl)", 3.0),
        (r"\bchanges? (?:were |was )?made\b|\bwhen did\b|\blast changed?\b", 2.5),
        (r"\b(?:agent|kassist)\b.*\b(?:chang|modif|alter|touch)", 2.0),
        (r"\bwhat (?:changes?|settings?|keys?) (?:has|have|did) (?:kassist|the agent|you)\b", 3.0),
        (r"\b(?:changed|applied)\b", 1.5),
        (r"\brolled back\b|\byesterday\b|\brecent\b", 1.0),
        (r"\bagent\b", 0.5),
    ),
    "apply": (
        (r"\bapply\b|\bgo ahead\b", 3.0),
        (r"\b(?:set|change|increase|decrease|raise|lower)\b.*\bto\b", 2.5),
    ),
    "rollback": (
        (r"\broll ?back\b|\brevert\b|\bundo\b", 4.0),
        (r"\blast change\b|\bwhat you applied\b", 1.0),
    ),
    "logs": (
        (r"\bdmesg\b|\bkernel (?:log|messages)\b|\bkmsg\b|\bpstore\b|\bjournal\b", 3.0),
        (r"\blog\b|\bmessages\b", 1.0),
        (r"\berrors?\b|\bwarnings?\b|\bcritical\b", 1.0),
        (r"\bthis boot\b|\bsince boot\b|\bprevious boot\b", 1.5),
        (r"\bshow\b|\bprint\b|\bread\b|\blast\b", 0.5),
    ),
    "disks": (
        (r"\bdisks?\b|\bdrives?\b|\bnvme\b|\bssd\b|\bhdd\b|\bstorage\b", 3.0),
        (r"\bfail[- ]slow\b|\bdying\b|\bfailing\b|\bhealth\b|\bslow\b|\bsmart\b", 1.5),
        (r"\bdevices?\b", 0.5),
    ),
    "answer": (
        (r"^\s*(?:hi|hello|hey|thanks?|thank you|good (?:morning|evening))\b", 4.0),
        (r"\bwho are you\b", 4.0),
        # questions about the kernel in general, not about this machine
        (r"^\s*what(?:'s| is| are) (?:a |an )\w+", 3.0),
        (r"^\s*what(?:'s| is| are) (?:the )?[\w-]+\s*\??\s*$", 2.0),
        (r"\bmeans?\b|\b(?:work|works)\s*\??\s*$|\bdifference between\b", 3.0),
        (r"^\s*(?:explain|describe) (?:what|how|why)\b", 3.0),
        (r"^\s*how (?:do i|does one|to|can i) (?!fix|reduce|avoid|stop|improve)", 3.0),
        (r"^\s*what does \w+ do\b", 2.0),
        (r"^\s*how (?:does|do) \w+ (?:find|detect|catch|decide|pick|choose|know)\b", 3.0),
        (r"^\s*why (?:does|do) (?:the |a )?kernel \w+(?: itself)?\s*\??\s*$", 2.5),
    ),
}

_COMPILED: dict[str, tuple[tuple[re.Pattern[str], float], ...]] = {
    tool: tuple((re.compile(p, re.IGNORECASE), w) for p, w in rows)
    for tool, rows in PHRASES.items()
}


def phrase_scores(text: str) -> dict[str, float]:
    """Score each tool by the phrases of :data:`PHRASES` the message holds."""
    return {
        tool: sum(w for p, w in rows if p.search(text)) for tool, rows in _COMPILED.items() if rows
    }


@dataclass(frozen=True)
class CueDecision:
    """A tool picked from cues, with its arguments and how sure the cues are (0..1)."""

    action: str
    args: dict[str, Any]
    confidence: float
    alternatives: tuple[str, ...] = ()


def _set_request(text: str) -> bool:
    return (
        re.search(
            r"\b(?:set|change|increase|decrease|raise|lower|bump|apply)\b", text, re.IGNORECASE
        )
        is not None
        and re.search(r"\bto\b|=", text, re.IGNORECASE) is not None
    )


def _path_action(text: str, path: str, scores: Mapping[str, float]) -> CueDecision:
    if path.startswith("/dev/") and not path.startswith("/dev/kmsg"):
        return CueDecision("disks", {}, 0.8)
    looks_dump = re.search(r"vmcore|dump|kdump|\.kdump$|\.flat$", path, re.IGNORECASE)
    if looks_dump or (scores.get("vmcore", 0) >= 3 and "dmesg" not in path):
        return CueDecision("vmcore", {"path": path}, 0.9)
    if scores.get("report", 0) >= 2:
        return CueDecision("report", {"target": path}, 0.9)
    return CueDecision("triage", {"path": path}, 0.85)


def _signature_action(text: str, sig: str, scores: Mapping[str, float]) -> CueDecision:
    if scores.get("report", 0) >= 2:
        return CueDecision("report", {"target": sig}, 0.9)
    return CueDecision("crash", {"signature": sig}, 0.85)


def _sysctl_action(text: str, cues: Cues, scores: Mapping[str, float]) -> CueDecision:
    key = cues.sysctls[0]
    if _set_request(text) and cues.value is not None:
        return CueDecision("apply", {"target": key, "value": cues.value}, 0.85)
    if _ADVICE_REQUEST.search(text) and scores.get("docs", 0) < 3:
        return CueDecision("tune", {"key": key}, 0.8)  # "should I raise somaxconn?"
    if _TUNE_REQUEST.search(text) and scores.get("docs", 0) < 3:
        return CueDecision("tune", {}, 0.6)
    return CueDecision("docs", {"key": key}, 0.85)


_TUNE_REQUEST = re.compile(r"\btun(?:e|ing)\b|\boptimi[sz]e\b|\brecommend|\bsuggest", re.I)
#: Asking whether a key should change: the evidence for that key answers it.
_ADVICE_REQUEST = re.compile(
    r"\bshould (?:i|we)\b|\bis it (?:worth|wise|a good idea|safe|necessary)\b"
    r"|\bdo (?:i|we) need to\b|\bwould it help\b|\b(?:raise|lower|increase|decrease|bump|reduce)\b",
    re.I,
)
#: The kernel's ring buffer, named in the words people use for it.
_RING_BUFFER = re.compile(
    r"\bdmesg\b|\bkmsg\b|\bkernel (?:log|ring buffer|messages)\b|\bring buffer\b", re.I
)
#: Asking for crashes to be found (not records to be shown).
_CRASH_HUNT = re.compile(
    r"\btriage\b|\bcrash(?:es|ed)?\b|\boops(?:es)?\b|\bpanic|\bbugs?\b|\bkasan\b|\banaly[sz]e\b",
    re.I,
)
#: A thing the conversation talked about before ("that crash", "it").
_REFERENT = re.compile(
    r"\b(?:that|this|the last|the latest|the same|the first|the above)\s+"
    r"(?:crash|oops|panic|bug|warning|one|report|trace)\b|\bfor it\b|\bof it\b",
    re.I,
)
#: "what does it do?" alone asks about the key talked about before; after a sentence of its
#: own ("dmesg says '...'. What does that mean?"), "that" is what the sentence quoted.
_WHAT_DOES_IT_DO = re.compile(
    r"^\s*(?:and |so |ok,? )?what does (?:it|that|this)(?: key| setting| sysctl| one)?"
    r" (?:do|mean|control)\b\s*\??\s*$",
    re.I,
)
#: A question about the kernel in general (what a thing is, means, does, how it works or
#: is configured): the documentation answers it, not a reading of this machine.
_CONCEPT = re.compile(
    r"^\s*what(?:'s| is| are) (?:a |an )\w+|^\s*what (?:is|are) [\w./-]+ (?:and|for|in)\b"
    r"|\bmean(?:s|ing|t)?\b|\bdifference between\b|\bdiffers?\b"
    r"|^\s*what (?:causes|kinds? of|types? of|unit)\b|^\s*what happens (?:if|when)\b"
    r"|^\s*how (?:long|much \w+|often) (?:does|do|will)\b|\bsafe\b"
    r"|^\s*when (?:should|would|does|do|is|are)\b"
    r"|^\s*(?:over|in|for|at|by|from) which\b"
    r"|^\s*what (?:limits|controls|decides|determines|triggers)\b"
    r"|^\s*how (?:is|are) [\w ./'\"-]{1,40}?\b(?:reserved|computed|calculated|measured"
    r"|counted|defined|chosen|decided|set up|kept|made|enforced|applied|handled|stored|written"
    r"|cached|used|limited|bounded|sized|allocated|freed|tracked|accounted|flushed|reclaimed"
    r"|selected)\b"
    r"|^\s*how (?:does|do) [\w ./'\"-]{1,40}?\b(?:work|differ|decide|find|detect|choose|pick"
    r"|limit|count|measure|handle|protect|get|become)\b"
    r"|^\s*what (?:does|do) [\w ./'\"-]{1,60}?\b(?:do|mean|control|limit|protect|decide|count"
    r"|show|measure|report|find|detect|catch|cost|affect|govern|represent)\b"
    r"|\bhow (?:do|can|should) (?:i|you|one|we) (?:get|make|enable|disable|keep|prevent"
    r"|configure|turn|change|read|tell|debug|use|interpret)\b"
    r"|\bhow (?:do|can) (?:i|we) (?:stop|prevent) [\w ]{1,40}? from\b"
    # the kernel's general behaviour, a generic "why", what a thing is made of or defaults to
    r"|^\s*(?:why|how|when|where|does|do|can|will|would)(?: does| do| would| will| can)?"
    r" (?:the )?kernel\b|^\s*why (?:would|does|do) (?!it\b|this\b|that\b|they\b|my\b|our\b)"
    r"|^\s*(?:tell me about|explain|describe)\b|^\s*(?:is|are) [\w ./-]{1,40}?\b(?:per|always|ever"
    r"|only)\b|\bmade of\b|\b(?:purpose|point) of\b|\bby default\b"
    # a kind of thing rather than this one: "in an oops", "on a database server"
    r"|\b(?:in|from|of) an? (?:oops|panic|crash|splat|warning|stack trace|backtrace|report)\b"
    r"|\bon an? [\w-]+ (?:server|machine|host|system|box)\b"
    r"|^\s*how (?:big|large|small|high|low|far) (?:can|does|do|is|are|may)\b"
    r"|^\s*what (?:kernel )?(?:parameter|option|setting|sysctl|knob|information|fields?)s?"
    r" (?:does|do|makes?|controls?|sets?|enables?|turns?|limits?)\b"
    r"|^\s*where (?:are|is|does|do)\b"
    # a bare name asked for ("what is PSI?", "what's direct reclaim?"), not a reading of one
    r"|^\s*what(?:'s| is| are) (?!(?:the|my|our|this|that|these|those|it|there|your|its|up"
    r"|wrong|going|happening|using|eating|hogging|consuming|left|new)\b)"
    r"(?![\w ./+-]*\b(?:usage|like|load|uptime|status|utili[sz]ation|now)\b)"
    r"[\w./+-]+(?: [\w./+-]+){0,4}\s*\??\s*$"
    # ... or with "the", when it names no reading ("the memory pressure", "the top crashes")
    r"|^\s*what(?:'s| is| are) the "
    r"(?![\w ./+-]*\b(?:usage|like|load|uptime|status|utili[sz]ation|now|pressure|memory|cpu"
    r"|swap|free|value|level|state|rate|saying|doing|showing|running|top|latest|last|recent"
    r"|biggest|worst|most)\b)"
    r"[\w./+-]+(?: [\w./+-]+){0,4}\s*\??\s*$"
    # what a reading or a message tells, one thing beside another, a general cause
    r"|^\s*what (?:does|do) [\w ./=-]{1,60}?\b(?:tell|indicate|imply|signal|suggest"
    r"|stand for|contain|include|hold)\b"
    r"|\bthe same (?:thing )?as\b|\bdifferent (?:from|than)\b|\bversus\b|\bvs\.?\s"
    r"|\bcompared? (?:to|with)\b"
    r"|^\s*which [\w ./-]{1,40}?\b(?:is|are) (?:the )?(?:best|better|recommended|preferred"
    r"|suited|right)\b"
    r"|^\s*why (?:might|could|can|may)\b"
    r"|^\s*is there (?:a|any) way to\b|\bis it possible to\b"
    # "what happens to X when ...", a yes/no question about a named thing, "a sign of"
    r"|^\s*what happens to [\w ./-]{1,40}? (?:if|when|after|during)\b"
    r"|^\s*(?:does|do) (?!(?:it|this|that|these|those|they|there|my|our|i|we|you|anything"
    r"|the (?:system|machine|box|server|host))\b)[\w./-]+(?: [\w./-]+){0,4} [a-z]+s?\b"
    r"|^\s*(?:is|are) [\w ./-]{1,40}?\b(?:a sign|a symptom|caused by|related to)\b"
    r"|^\s*(?:how (?:many|much)|what(?:'s| is) the (?:max(?:imum)?|min(?:imum)?|limit|largest"
    r"|smallest|highest|lowest)\b)[\w ./-]{1,60}?\b(?:can|may|could)\b"
    r"|^\s*what (?:can|could|might|would|usually|typically) (?:cause|trigger|lead)"
    r"|^\s*what (?:are|do) the (?:\w+ )?(?:columns|fields|values|numbers|lines|entries|flags"
    r"|letters|modes|levels|states)\b"
    r"|\bhow (?:do|can|should) (?:i|you|one|we) (?:decode|diagnose|troubleshoot|investigate"
    r"|capture|collect|reserve|protect|allow|switch|set up|obtain)\b"
    r"|^\s*(?:is|are) (?:an? |high |low )?[\w ./-]{1,40}?\b(?:bad|normal|good|harmful"
    r"|dangerous|a problem|expected|worrying)\b"
    r"|^\s*why (?:is|are|does|do|would|can) [\w ./-]{1,60}? (?:when|while|even though"
    r"|although)\b",
    re.I,
)
#: Words that put a question on this machine's state or asks for a reading: a tool's.
_THIS_MACHINE = re.compile(
    r"\bright now\b|(?<![\w.])current(?:ly)?(?![\w.])|\bat the moment\b|\bat present\b"
    r"|\b(?:this|my|our|the) (?:machine|box|host|server|computer|node)\b|\bthis system\b"
    r"|\bhere\b|\blately\b|\brecent(?:ly)?\b|\btoday\b|\byesterday\b|\bthis (?:week|boot)\b"
    r"|\b(?:last|previous) boot\b|\bsince (?:the )?(?:last )?boot\b|\bmost often\b"
    r"|\bon (?:this|my|our)\b|\bbeing \w+(?:ed|en)\b|\bkeeps? \w+ing\b"
    # whether events happened ("have there been any oopses?", "any crashes?")
    r"|\b(?:have|has) there been\b|^\s*any\b"
    # a reading asked for in the imperative ("... measure it", "and check the log")
    r"|(?:^|[.?!;,]\s*|\b(?:please|and|then|you)\s+)(?:measure|trace|show me|check|list|watch"
    r"|scan|record|analy[sz]e)\b",
    re.I,
)
#: A general "why is X ...?" (no deixis, no complaint): what a property of X is for.
_WHY_IS = re.compile(
    r"^\s*why (?:is|are)(?:n't| not)? "
    r"(?!(?:it|this|that|these|those|they|there|my|our|everything|everyone|nothing"
    r"|the (?:system|machine|box|server|host))\b)[\w ./'-]{1,60}\s*\??\s*$",
    re.I,
)
#: What makes a "why is X ...?" a complaint about this machine: a degree ("so slow", "too
#: many"), a symptom it ends on, or something X is doing now ("is kswapd using CPU").
_COMPLAINT = re.compile(
    r"\b(?:so|too|that|such)\s+\w+|\b\w+ing\b(?! (?:for|of)\b)"
    r"|\b(?:slow|sluggish|high|full|dropped|lost|failed|killed|stuck|hung|down|frozen"
    r"|unresponsive|busy|broken|gone|missing)\s*[?!.]*\s*$",
    re.I,
)
#: Kernel interface files a question may be about (not logs to triage).
_INTERFACE_PATH = re.compile(r"^/(?:proc|sys)/(?!vmcore|kcore|kmsg)")
#: Quoted text (what the kernel printed, a name): data the question is about, no cue.
_QUOTED = re.compile(
    r"(?<!\w)'[^'\n]{2,200}'(?!\w)|\"[^\"\n]{2,200}\"|\u201c[^\u201d\n]{2,200}\u201d"
)
#: Where a message's sentences end (a period inside a name like vm.swappiness does not).
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+(?=\S)")
#: A sentence that asks: a question, or a request to explain or show something.
_ASKS = re.compile(
    r"\?\s*$|^\s*(?:what|how|why|when|where|which"
    r"|who|is|are|was|were|do|does|did|should|would|could|can|may|might|will|any|tell|explain"
    r"|describe|show|list|check|measure|trace)\b",
    re.I,
)


def about_this_machine(text: str) -> bool:
    """Tell whether a message speaks of this machine's state or asks for a reading.

    >>> [about_this_machine(t) for t in ("is my server swapping?", "what is swap for?")]
    [True, False]
    """
    return _THIS_MACHINE.search(text) is not None


#: A request that wraps a question ("can you tell me", "I'd like to know", "I don't
#: understand"): what follows is the question asked.
_WRAPPER = re.compile(
    r"^\s*(?:please\s+)?(?:(?:can|could|would|will) you (?:please )?(?:tell me|explain|say)"
    r"|i(?:'d| would) like to (?:know|understand)|i (?:want|need) to (?:know|understand)"
    r"|i (?:do not|don't) (?:understand|know|get)|i wonder|help me understand|tell me"
    r"|explain(?: to me)?)\s*,?\s+",
    re.I,
)
#: "what memory.high does", as a wrapped question puts it (no inversion).
_EMBEDDED = re.compile(
    r"^\s*(?:what|how|why) [\w ./'-]{1,60}?\b(?:is|are|does|do|means?|works?|controls?"
    r"|counts?|happens)\s*[.?]?\s*$",
    re.I,
)


def _clauses(sentence: str) -> list[str]:
    # The sentence, and what follows a comma in it: "In dmesg, what does X show?" asks
    # what its second clause asks; a wrapped question ("can you tell me what X is?") asks
    # what it wraps.
    parts = sentence.split(", ")
    found = [", ".join(parts[i:]) for i in range(len(parts))]
    unwrapped = _WRAPPER.sub("", sentence, count=1)
    if unwrapped != sentence:
        found.append(unwrapped)
        if _EMBEDDED.match(unwrapped):
            found.append("what is " + unwrapped)  # read as the question it wraps
    return found


def _concept_sentence(sentence: str) -> bool:
    if about_this_machine(sentence):
        return False
    if _WHY_IS.match(sentence) and not _COMPLAINT.search(sentence):
        return True
    return any(_CONCEPT.search(clause) for clause in _clauses(sentence))


def asks(text: str) -> str:
    """Tell what a message asks: ``concept`` (the kernel in general: what a thing is,
    means or does, why in general), ``reading`` (this machine's state, or a reading), or
    ``both`` (one sentence of each). "" when its form says neither.

    Quoted text is what the question is about, not part of its form; a sentence that
    tells rather than asks ("dmesg on my server says '...'.") is the question's context:
    its words about this machine do not make a question about what a thing means one
    about this machine.

    >>> [asks(t) for t in ("What is PSI?", "is my server swapping?",
    ...  "vmstat on my box shows a high si. What is swap-in?",
    ...  "Is my box swapping, and what is swappiness?", "hello")]
    ['concept', 'reading', 'concept', 'both', '']
    >>> [asks(t) for t in ("What does MemAvailable mean?",
    ...  "what is the memory pressure right now?", "how long do tasks wait? measure it")]
    ['concept', 'reading', 'both']
    """
    text = _QUOTED.sub("MESSAGE", text)
    sentences = [s for part in _SENTENCE_END.split(text) for s in part.split("; ") if s.strip()]
    questions = [s for s in sentences if _ASKS.search(s)] or sentences
    clauses = [c for s in questions for c in re.split(r",? and (?=what|how|why|is|are)", s)]
    concept = any(_concept_sentence(c) for c in clauses)
    reading = any(about_this_machine(c) for c in clauses)
    if concept:
        return "both" if reading else "concept"
    if reading or about_this_machine(text):
        return "reading"
    whole = _CONCEPT.search(text) is not None
    return "concept" if whole else ""


#: What a "top" question ranks by, by the words it uses (checked in order; default cpu).
TOP_BY: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bmemory\b|\bram\b|\brss\b", re.I), "memory"),
    (re.compile(r"\bi/?o\b|\bdisk\b|\bwrit\w*\b|\bread\w*\b", re.I), "io"),
)


def _leaf_names_the_key(text: str, scores: Mapping[str, float]) -> bool:
    # "should I raise somaxconn?" is about the key; "when did the agent change somaxconn"
    # is about the agent's history, where the key is only a detail.
    others = max((v for t, v in scores.items() if t not in ("docs", "tune", "apply")), default=0)
    asks = _ADVICE_REQUEST.search(text) or _set_request(text) or scores.get("docs", 0) >= 3
    return bool(asks) and others < 3


def _top_args(text: str) -> dict[str, Any]:
    by = next((name for pattern, name in TOP_BY if pattern.search(text)), "cpu")
    return {"by": by}


def _probe_args(cues: Cues, text: str) -> dict[str, Any]:
    args: dict[str, Any] = {"name": cues.probe}
    duration = cues.duration
    if duration is None:
        m = _TRAILING_NUMBER.search(text)
        duration = int(m.group(1)) if m else None
    if duration is not None:
        args["duration"] = duration
    return args


#: A probe for what a message describes when it names none (checked in order).
PROBE_TOPICS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"run ?queue|schedul|wait\w* for (?:a )?cpu", re.I), "runqlat"),
    (re.compile(r"block|disk|\bi/?o\b.*latency|\bbio\b", re.I), "biolatency"),
    (re.compile(r"retransmi", re.I), "tcpretrans"),
    (re.compile(r"packets?|skb|drop", re.I), "skbdrop"),
    (re.compile(r"\boom\b", re.I), "oomkill"),
    (re.compile(r"reclaim", re.I), "reclaimlat"),
    (re.compile(r"syscall|system call|errno", re.I), "syserrors"),
    (re.compile(r"page ?fault", re.I), "pagefaults"),
)


def _logs_args(cues: Cues) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if cues.source is not None:
        args["source"] = cues.source
    if cues.level is not None:
        args["level"] = cues.level
    return args


def _best(scores: Mapping[str, float]) -> tuple[str, float, float, str]:
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    (top, s1), (second, s2) = ranked[0], ranked[1] if len(ranked) > 1 else ("", 0.0)
    return top, s1, s2, second


def route_by_cues(text: str, probe_names: Iterable[str]) -> CueDecision:
    """Pick a tool and its arguments from the message's cues alone.

    The confidence is high when a named thing (a path, signature, sysctl, probe) settles
    it, middling for a clear phrase, and low when phrases tie or nothing matches; the
    router asks the model, or the person, below its floor.
    """
    cues = find_cues(text, list(probe_names))
    form = asks(text)
    # a /proc or /sys file is an interface, never a log to triage: asked about, the
    # documentation answers; asked for a reading, the phrases pick the tool
    interface = bool(cues.paths) and _INTERFACE_PATH.match(cues.paths[0]) is not None
    msg = _Message(text, cues, phrase_scores(text), form, interface)
    for rule in _RULES:
        if (decision := rule(msg)) is not None:
            return decision
    return _by_phrases(msg)


@dataclass(frozen=True)
class _Message:
    """A message with its cues, the scores of its phrases, and the form of its question."""

    text: str
    cues: Cues
    scores: Mapping[str, float]
    form: str  # what asks() says the message asks: "concept", "reading", ...
    interface: bool  # its first path is a /proc or /sys interface file

    @property
    def concept(self) -> bool:
        return self.form == "concept"

    def score(self, tool: str) -> float:
        return self.scores.get(tool, 0)


def _rollback(m: _Message) -> CueDecision | None:
    if m.score("rollback") < 4:
        return None
    if m.cues.changeset is not None:
        return CueDecision("rollback", {"changeset": m.cues.changeset}, 0.95)
    return CueDecision("rollback", {}, 0.8)


def _named_path(m: _Message) -> CueDecision | None:
    if m.cues.paths and not m.interface:
        return _path_action(m.text, m.cues.paths[0], m.scores)
    return None


def _tune_id(m: _Message) -> CueDecision | None:
    # A tune id (scenario:key) to apply.
    if m.cues.rec_id is not None and ":" in m.cues.rec_id and m.score("apply") >= 3:
        return CueDecision("apply", {"id": m.cues.rec_id}, 0.9)
    return None


def _named_sysctl(m: _Message) -> CueDecision | None:
    return _sysctl_action(m.text, m.cues, m.scores) if m.cues.sysctls else None


def _recommendation_id(m: _Message) -> CueDecision | None:
    if m.cues.rec_id is not None and m.score("apply") >= 3:
        return CueDecision("apply", {"id": m.cues.rec_id}, 0.9)
    return None


def _named_signature(m: _Message) -> CueDecision | None:
    return _signature_action(m.text, m.cues.signatures[0], m.scores) if m.cues.signatures else None


def _undocumented(m: _Message) -> CueDecision | None:
    return CueDecision("docs", {"key": "undocumented"}, 0.9) if m.score("docs") >= 4 else None


def _named_probe(m: _Message) -> CueDecision | None:
    if m.cues.probe is None:
        return None
    return CueDecision("probe", _probe_args(m.cues, m.text), 0.9)


def _ring_buffer(m: _Message) -> CueDecision | None:
    # "check dmesg for crashes": triage the ring buffer.
    hunt = _RING_BUFFER.search(m.text) and _CRASH_HUNT.search(m.text) and not m.concept
    return CueDecision("triage", {}, 0.85) if hunt else None


def _referent_report(m: _Message) -> CueDecision | None:
    # "write a bug report for that crash": the crash the conversation talked about.
    if _REFERENT.search(m.text) and m.score("report") >= 2:
        return CueDecision("report", {}, 0.85)
    return None


def _what_does_it_do(m: _Message) -> CueDecision | None:
    # The key the conversation talked about last.
    return CueDecision("docs", {}, 0.7) if _WHAT_DOES_IT_DO.search(m.text) else None


def _named_leaf(m: _Message) -> CueDecision | None:
    # A key named by its last part only, in a question about that key.
    if m.cues.leaves and _leaf_names_the_key(m.text, m.scores):
        return _sysctl_action(m.text, replace(m.cues, sysctls=m.cues.leaves), m.scores)
    return None


def _explain(m: _Message) -> CueDecision | None:
    if m.score("explain") < 4:
        return None
    rec_id = m.cues.rec_id
    return CueDecision("explain", {"id": rec_id} if rec_id and ":" in rec_id else {}, 0.85)


def _concept(m: _Message) -> CueDecision | None:
    # the documentation answers it
    asked_about = m.concept or (m.interface and m.form != "reading")
    return CueDecision("answer", {}, 0.8) if asked_about else None


#: What settles a message before its phrases are weighed, strongest first: a named thing,
#: then a request a phrase alone makes clear.
_RULES: tuple[Callable[[_Message], CueDecision | None], ...] = (
    _rollback,
    _named_path,
    _tune_id,
    _named_sysctl,
    _recommendation_id,
    _named_signature,
    _undocumented,
    _named_probe,
    _ring_buffer,
    _referent_report,
    _what_does_it_do,
    _named_leaf,
    _explain,
    _concept,
)


def _by_phrases(m: _Message) -> CueDecision:
    # The tool whose phrases weigh most; a tool that needs a thing the message does not
    # name cannot be the answer.
    scores = {t: v for t, v in m.scores.items() if t not in NEEDS_A_NAME}
    top, s1, s2, second = _best(scores)
    if s1 <= 0:
        return CueDecision("answer", {}, 0.2)
    if top == "probe":
        return _probe_topic(m, _confidence(s1, s2))
    args = _PHRASE_ARGS[top](m) if top in _PHRASE_ARGS else {}
    alternatives = (second,) if s2 > 0 else ()
    return CueDecision(top, args, _confidence(s1, s2), alternatives)


def _probe_topic(m: _Message, confidence: float) -> CueDecision:
    # A probe for what the message describes, or a question back when it names none.
    for pattern, name in PROBE_TOPICS:
        if pattern.search(m.text):
            return CueDecision(
                "probe", _probe_args(replace(m.cues, probe=name), m.text), confidence
            )
    return CueDecision(CLARIFY, {}, 0.3, ("probe",))


#: The arguments of a tool picked by its phrases, from the message.
_PHRASE_ARGS: Mapping[str, Callable[[_Message], dict[str, Any]]] = {
    "logs": lambda m: _logs_args(m.cues),
    "top": lambda m: _top_args(m.text),
}


#: Tools that need a path or a signature: phrases alone never pick them.
NEEDS_A_NAME = frozenset({"triage", "vmcore", "report", "crash"})


#: A message that asks rather than tells: it starts like a question, or holds a "?".
_QUESTION = re.compile(
    r"^\s*(?:what|how|why|when|where|which|who|whom|is|are|was|were|do|does|did|should|would"
    r"|could|can|may|might|will|shall|if|suppose|imagine|wonder)\b|\?|\bhow to\b",
    re.I,
)
#: "what would happen if", "hypothetically", "just tell me", "a dry run", a condition
#: ("only if it is safe", "in case"), a request to explain, words reported from someone
#: else ("the log says: set ...", "... is what my colleague suggested").
_HYPOTHETICAL = re.compile(
    r"\bwhat (?:would|will|if)\b|\bwould (?:happen|it|that|this)\b"
    r"|\bif\b|\bunless\b|\bin case\b|\bhypothetical\w*|\bsuppose\b|\bin theory\b"
    r"|\b(?:just|only) (?:tell|explain|show|describe)\b|\bdry[- ]?run\b"
    r"|\bwithout (?:applying|changing|touching)\b|\bexplain\w*|\bdescribe\w*|\btell me\b"
    r"|\bcurious\b|\bwonder\w*|\bimpact\b|\beffects?\b|\bthoughts?\b|\bcompar\w+"
    r"|\b(?:says?|said|suggests|suggested|recommends|recommended|told|according to|quoted?)\b"
    r"|\b(?:is|was) what\b|\bkidding\b|\bjoke\b",
    re.I,
)
#: A negated change: "do NOT set", "don't apply anything", "never roll back", "I don't
#: want you to set", "refrain from", "never mind".
_NEGATION = re.compile(
    r"\b(?:don'?t|do not|doesn'?t|does not|never|not|no need to|without|won'?t|shouldn'?t)"
    r"[\s,]+(?:[\w,]+\s+){0,5}?"
    r"(?:set|setting|change|changing|apply|applying|touch|modify|roll|revert|undo|write|do"
    r"|make)\b|\b(?:apply|change|touch) nothing\b|\brefrain\b|\bavoid\w*\b|\bhold off\b"
    r"|\bnever ?mind\b|\bcancel\b|\bnot\W*$",
    re.I,
)
#: Apostrophes and quotes as typed on other keyboards, made the one they are tested as.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'",
                              "`": "'", "\u2032": "'"})  # fmt: skip
#: What may come before the change an imperative asks for ("please", "ok", "go ahead and",
#: "... and"), then the verb that asks for it. Anything else is no imperative.
_LEAD_IN = (
    r"(?:[^.?!;:]{0,80}?\band\s+)?"
    r"(?:(?:please|pls|kindly|ok(?:ay)?|yes|sure|now|alright|then|so|go ahead)[\s,]+)*"
)
_CHANGE_VERBS = (
    r"set|change|apply|raise|lower|increase|decrease|bump|reduce|drop|roll\s*back|revert|undo"
    r"|restore|tune|adjust|make|write|put|update|enable|disable|double|halve|switch|configure"
    r"|modify|persist"
)
#: The longest message that may be an imperative (a change is asked in one short line).
MAX_REQUEST_CHARS = 1000
_IMPERATIVE = re.compile(rf"^\s*{_LEAD_IN}(?:{_CHANGE_VERBS})\b", re.I)


def mood(text: str) -> str:
    """Tell how a message speaks of a change: ``imperative``, ``question``,
    ``hypothetical``, ``negation`` or ``statement``. Only an imperative may become a
    proposal: a message that starts (after "please", "ok", "go ahead and", "... and") with
    the verb of a change, and holds no negation, condition, question or reported speech.
    Anything else fails closed: it is answered and dry-run.

    >>> [mood(t) for t in ("set vm.swappiness to 10", "do NOT set it, just tell me",
    ...                    "what would happen if I set it to 5", "can you set it to 5?",
    ...                    "Don\u2019t set it to 5.", "the log: set it to 5")]
    ['imperative', 'negation', 'hypothetical', 'question', 'negation', 'statement']
    """
    if len(text) > MAX_REQUEST_CHARS:
        return "statement"
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    if _NEGATION.search(text):
        return "negation"
    if _HYPOTHETICAL.search(text):
        return "hypothetical"
    if _QUESTION.search(text):
        return "question"
    return "imperative" if _IMPERATIVE.match(text) else "statement"


_SMALL_TALK = re.compile(
    r"^\s*(?:hi|hello|hey|thanks?|thank you|good (?:morning|evening|afternoon)|bye|ok(?:ay)?"
    r"|who are you|what can you do|help)\b[\w\s,!.?']{0,30}$",
    re.IGNORECASE,
)


def is_small_talk(text: str) -> bool:
    """Tell whether a message is a greeting, thanks or a request for help (no lookup)."""
    return _SMALL_TALK.match(text) is not None


def _confidence(top: float, second: float) -> float:
    # A clear winner by a margin is trusted; a near tie is not.
    if top <= 0:
        return 0.0
    margin = (top - second) / top
    return round(min(0.95, 0.3 + 0.1 * top + 0.4 * margin), 2)
