"""The trainer's data: tokenizer, records -> token documents -> cached TokenData for a split.

    tokenizer = load_tokenizer(cfg.model)
    train = build_data(cfg, tokenizer, split="train", packing=cfg.data.packing, cache_dir=cache)
    for batch in train.iter_batches(epoch, start, rank=r, world_size=w, micro_batch_size=b, seed=s): ...

Text documents are tokenized with the tokenizer's own special tokens (e.g. a BOS) and end with EOS.
Chat records are rendered with the tokenizer's chat template; only assistant turns (their content and
the end-of-turn token) are loss targets. Tokenized data is cached under cache_dir as token shards
shared by all splits and shapes, and a row layout per split, keyed by a manifest of the data files
(relative path, size, mtime), the tokenizer, seq_len, format, packing and fields (trainer/data/prep.py;
the layout of the cache: docs/data.md). A restart with the same manifest reads no data byte.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from trainer.config.train_config import ModelConfig, TrainConfig
from trainer.data.prep import DataSource, prepare
from trainer.data.prep_progress import PrepMetrics
from trainer.data.remote_sources import local_source
from trainer.data.sources import DataError, data_files, manifest
from trainer.data.token_data import TokenData, for_attention

__all__ = ["DataError", "TokenData", "build_data", "for_attention", "load_tokenizer", "tokenize_chat", "tokenize_texts"]

log = logging.getLogger(__name__)
CACHE_VERSION = 3  # bump when the cached files change meaning (3: token shards and a row layout)
EOS_NAMES = ("<|endoftext|>", "</s>", "<|im_end|>", "<eos>", "<|end_of_text|>")


def load_tokenizer(model_cfg: ModelConfig):
    """model.tokenizer (a directory or a tokenizer.json file) or else model.pretrained's tokenizer.

    Guarantees an eos token (documents end with it) and a pad token (the eos one when the tokenizer has none).
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    key = "model.tokenizer" if model_cfg.tokenizer else "model.pretrained"
    source = model_cfg.tokenizer or model_cfg.pretrained
    try:
        if Path(source).is_file():
            tokenizer = PreTrainedTokenizerFast(tokenizer_file=source)
            vocab = tokenizer.get_vocab()
            tokenizer.eos_token = next((name for name in EOS_NAMES if name in vocab), None)
        else:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=model_cfg.trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        raise DataError(f"{key}: cannot load a tokenizer from {source} ({str(e).splitlines()[0]})") from e
    if tokenizer.eos_token is None:
        raise DataError(f"{key}: the tokenizer at {source} has no eos token (set eos_token in tokenizer_config.json)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenizer_fingerprint(tokenizer) -> str:
    """Changes whenever the tokenizer would produce other ids or another chat rendering."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    digest.update(vocab.encode())
    special = [type(tokenizer).__name__, tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token,
               tokenizer.chat_template]
    digest.update(json.dumps(special).encode())
    return digest.hexdigest()


Document = tuple[np.ndarray, np.ndarray]  # (token ids, is-loss-target)


def tokenize_texts(tokenizer, texts: list[str], batch: int = 1000) -> list[Document]:
    """Each non-empty text -> its ids (with the tokenizer's own BOS if it adds one) + EOS, all targets."""
    eos = tokenizer.eos_token_id
    backend = getattr(tokenizer, "backend_tokenizer", None)
    # The Rust tokenizer's encode_batch_fast gives the ids tokenizer(texts) gives (tests/test_data.py compares
    # them), about twice as fast: it computes no character offsets and builds no Python attention masks.
    fast = getattr(backend, "encode_batch_fast", None)
    if backend is not None and (backend.truncation is not None or backend.padding is not None):
        fast = None  # tokenizer(texts) switches a tokenizer.json's truncation / padding off; encode would not
    documents = []
    texts = [t for t in texts if t]
    for i in range(0, len(texts), batch):
        part = texts[i : i + batch]
        if fast is not None:
            encoded = [e.ids for e in fast(part, add_special_tokens=True)]
        else:
            encoded = tokenizer(part, add_special_tokens=True, verbose=False)["input_ids"]
        for ids in encoded:
            if not ids or ids[-1] != eos:
                ids = ids + [eos]
            documents.append((np.array(ids, np.int32), np.ones(len(ids), bool)))
    return documents


def render_chat(tokenizer, messages: list[dict], key: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns.

    A turn's span starts after the generation prompt (e.g. `<|im_start|>assistant\\n`) and ends after the
    end-of-turn token, trailing whitespace excluded. It relies on the template rendering a prefix of the
    conversation as a prefix of the text, which holds for ChatML, Llama and most templates.
    """
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    render = tokenizer.apply_chat_template
    full = render(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        prompt = render(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        upto = render(messages[: i + 1], tokenize=False)
        if not (upto.startswith(prompt) and full.startswith(upto)):
            raise DataError(f"{key}: the tokenizer's chat template does not render a conversation's turns "
                            f"as prefixes of the whole, so assistant turns cannot be located")
        spans.append((len(prompt), len(prompt) + len(upto[len(prompt) :].rstrip())))
    return full, spans


def tokenize_chat(tokenizer, conversations: list[list[dict]], key: str, first: int = 0) -> list[Document]:
    """Each conversation -> its rendered ids; targets are the tokens that start inside an assistant turn.
    `first`: the record number of conversations[0], for errors."""
    if not tokenizer.chat_template:
        raise DataError(f"{key}: data.format is chat but the tokenizer has no chat_template")
    documents = []
    for i, messages in enumerate(conversations, first):
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise DataError(f"{key}: record {i}: messages must be a list of {{role, content}} objects")
        text, spans = render_chat(tokenizer, messages, key)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        starts = np.array([start for start, _ in enc["offset_mapping"]], np.int64)
        targets = np.zeros(len(starts), bool)
        for begin, end in spans:
            targets |= (starts >= begin) & (starts < end)
        documents.append((np.array(enc["input_ids"], np.int32), targets))
    return documents


def build_data(cfg: TrainConfig, tokenizer, *, split: str, packing: bool, cache_dir: Path, rank: int | None = None,
               world_size: int | None = None, metrics: PrepMetrics | None = None) -> TokenData | None:
    """The tokenized sequences of `split` ("train" or "eval"), from cache_dir when already prepared.

    Every process calls this (rank / world_size: its global rank and the number of processes, from
    RANK / WORLD_SIZE by default); they tokenize the data's work units together (trainer/data/prep.py).
    Eval comes from data.eval, else from the data.eval_fraction hold-out of data.train (then train loses
    it), else there is none and this returns None.
    """
    data = cfg.data
    if split not in ("train", "eval"):
        raise ValueError(f"split must be train or eval, not {split!r}")
    held_out = data.eval is None and data.eval_fraction > 0
    if split == "eval" and data.eval is None and not held_out:
        return None
    key, path = ("data.eval", data.eval) if split == "eval" and data.eval else ("data.train", data.train)
    builder, files = data_files(local_source(path, key, Path(cache_dir), split), key)  # s3:// and hf:// fetched first
    if data.format == "chat" and builder == "text":
        raise DataError(f"{key}: data.format chat needs records with a {data.messages_field!r} field "
                        f"(jsonl, json or parquet), not text files")
    field = data.messages_field if data.format == "chat" else ("text" if builder == "text" else data.text_field)
    source = DataSource(key=key, builder=builder, files=files, manifest=manifest(files), field=field,
                        chat=data.format == "chat", chunk_mb=data.chunk_mb, corpus=_digest({
                            "version": CACHE_VERSION, "builder": builder, "field": field, "format": data.format,
                            "tokenizer": tokenizer_fingerprint(tokenizer), "chunk_mb": data.chunk_mb}))
    identity = {"corpus": source.corpus, "manifest": source.manifest, "split": split, "seq_len": data.seq_len,
                "packing": packing, "eval_fraction": data.eval_fraction if held_out else None}
    entry = Path(cache_dir) / f"{split}-{_digest(identity)}"
    options = {"shuffle": split == "train", "num_workers": data.num_workers, "group_by_length": data.group_by_length}
    if (entry / "meta.json").is_file():  # a restart: no data byte is read
        log.info("%s data from cache %s", split, entry)
    else:
        prepare(source, entry, tokenize=_tokenizer_of(tokenizer, source), split=split, seq_len=data.seq_len,
                packing=packing, pad_id=tokenizer.pad_token_id, eval_fraction=data.eval_fraction if held_out else None,
                chunk_records=data.chunk_records, rank=int(os.environ.get("RANK", "0")) if rank is None else rank,
                world_size=int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size,
                metrics=metrics)
    return TokenData.load(entry, **options)


def _tokenizer_of(tokenizer, source: DataSource):
    """(values of a batch, number of its first record) -> one document per value; empty text: no tokens."""
    empty = (np.zeros(0, np.int32), np.zeros(0, bool))

    def tokenize(values: list, first: int) -> list[Document]:
        if source.chat:
            return tokenize_chat(tokenizer, values, source.key, first)
        if not all(isinstance(v, str) for v in values):
            raise DataError(f"{source.key}: field {source.field!r} must hold text in every record")
        documents = iter(tokenize_texts(tokenizer, values))  # drops the empty texts
        return [next(documents) if v else empty for v in values]

    return tokenize


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:24]
