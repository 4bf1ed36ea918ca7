"""What README.md and docs/ claim about packing and `helm upgrade`, held against what the code does.

Each test pairs the documents' sentence with the behaviour it describes, so the text cannot drift from
the code unnoticed (the helm upgrade behaviour itself runs against the real apiserver in
tests/test_chart_e2e.py::test_helm_upgrade_of_the_image_leaves_running_pods_alone).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from trainer.config.train_config import ModelConfig
from trainer.data.splits import load_tokenizer, tokenize_texts
from trainer.data.token_data import pack_documents

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def text(path: Path) -> str:
    return " ".join(path.read_text().split())  # sentences wrap across lines


def corpus_documents() -> list:
    tokenizer = load_tokenizer(ModelConfig(config={"model_type": "llama"}, tokenizer=str(DATA / "tokenizer")))
    texts = [json.loads(line)["text"] for line in (DATA / "tiny" / "train.jsonl").read_text().splitlines() if line]
    return tokenize_texts(tokenizer, texts), tokenizer.pad_token_id


def segments(packed: dict) -> list[tuple[int, int, int]]:
    """(row, start, length) of each document piece in the packed rows."""
    out = []
    for row, docs in enumerate(packed["docs"]):
        for number in sorted(set(docs[docs >= 0].tolist())):
            where = np.flatnonzero(docs == number)
            assert (np.diff(where) == 1).all()  # a piece is contiguous
            out.append((row, int(where[0]), len(where)))
    return out


def test_packing_places_whole_documents_and_cuts_only_longer_ones_as_the_docs_say():
    data_md = text(ROOT / "docs" / "data.md")
    assert "whole documents are placed into rows of `seq_len` tokens, best fit" in data_md
    assert "only a document longer than `seq_len` is cut" in data_md
    for path in DOCS:  # the description this replaced: every document cut at each row boundary
        assert "cut every `seq_len` tokens" not in text(path), path.name
        assert "concatenates documents into full" not in text(path), path.name

    documents, pad = corpus_documents()
    lengths = [len(ids) for ids, _ in documents]
    for seq_len in (64, 128):
        packed = pack_documents(documents, seq_len, pad)
        pieces = segments(packed)
        # each document fitting a row is one piece; a longer one is ceil(len / seq_len) pieces
        assert len(pieces) == sum(-(-n // seq_len) for n in lengths)
        assert sorted(n for _, _, n in pieces) == sorted(
            min(seq_len, n - start) for n in lengths for start in range(0, n, seq_len))
        real = float((packed["docs"] >= 0).mean())
        cut = sum(n > seq_len for n in lengths)
        figures = {64: ("99.5%", 950), 128: ("99.6%", 0)}[seq_len]
        assert f"{real:.1%}" == figures[0] and cut == figures[1], (seq_len, real, cut)
    assert re.search(r"rows hold 99\.6% real tokens at `seq_len` 128 and 99\.5% at 64, "
                     r"where the 950 documents", data_md)


def test_docs_say_what_helm_upgrade_does_to_running_pods():
    helm_md = text(ROOT / "docs" / "helm.md")
    for sentence in ["the training operator does not touch pods that already run: they keep the old image until "
                     "they are created again",
                     "test_helm_upgrade_of_the_image_leaves_running_pods_alone"]:
        assert sentence in helm_md
    readme = text(ROOT / "README.md")
    assert "running pods keep theirs until they are recreated" in readme
    assert "a new image reaches a pod only when the operator creates that pod again" in readme
    e2e = (ROOT / "tests" / "test_chart_e2e.py").read_text()
    assert "def test_helm_upgrade_of_the_image_leaves_running_pods_alone(" in e2e
