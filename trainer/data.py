"""The trainer's data: tokenizer, records -> token documents -> cached TokenData for a split.

    tokenizer = load_tokenizer(cfg.model)
    train = build_data(cfg, tokenizer, split="train", packing=cfg.data.packing, cache_dir=cache)
    for batch in train.iter_batches(epoch, start, rank=r, world_size=w, micro_batch_size=b, seed=s): ...

Text documents are tokenized with the tokenizer's own special tokens (e.g. a BOS) and end with EOS.
Chat records are rendered with the tokenizer's chat template; only assistant turns (their content and
the end-of-turn token) are loss targets. Tokenized data is cached under cache_dir, keyed by the data
files' contents, the tokenizer, seq_len, format, packing and fields; concurrent builders (several
ranks) serialise on a file lock and the result appears atomically (write to a temp dir, then rename).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from trainer.config import ModelConfig, TrainConfig
from trainer.data_sources import DataError, data_files, field_values, files_digest, read_records, split_eval
from trainer.remote_sources import local_source
from trainer.packing import TokenData, for_attention, pack_documents, pad_documents

__all__ = ["DataError", "TokenData", "build_data", "for_attention", "load_tokenizer", "tokenize_chat", "tokenize_texts"]

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # bump when the cached arrays change meaning (2: best-fit packing)
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
    documents = []
    texts = [t for t in texts if t]
    for i in range(0, len(texts), batch):
        for ids in tokenizer(texts[i : i + batch], add_special_tokens=True, verbose=False)["input_ids"]:
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


def tokenize_chat(tokenizer, conversations: list[list[dict]], key: str) -> list[Document]:
    """Each conversation -> its rendered ids; targets are the tokens that start inside an assistant turn."""
    if not tokenizer.chat_template:
        raise DataError(f"{key}: data.format is chat but the tokenizer has no chat_template")
    documents = []
    for i, messages in enumerate(conversations):
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


def build_data(cfg: TrainConfig, tokenizer, *, split: str, packing: bool, cache_dir: Path) -> TokenData | None:
    """The tokenized sequences of `split` ("train" or "eval"), from cache_dir when already built.

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
    identity = {
        "version": CACHE_VERSION, "split": split, "data": files_digest(files), "builder": builder,
        "tokenizer": tokenizer_fingerprint(tokenizer), "seq_len": data.seq_len, "format": data.format,
        "packing": packing, "field": field, "eval_fraction": data.eval_fraction if held_out else None,
    }
    name = f"{split}-{hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]}"
    cache_dir = Path(cache_dir)
    entry = cache_dir / name
    options = {"shuffle": split == "train", "num_workers": data.num_workers, "group_by_length": data.group_by_length}
    if not (entry / "meta.json").is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(cache_dir / f"{name}.lock"):
            if not (entry / "meta.json").is_file():  # another process may have built it while we waited
                _build_entry(cfg, tokenizer, builder, files, key, field, split, held_out, packing, entry, identity)
    else:
        log.info("%s data from cache %s", split, entry)
    return TokenData.load(entry, **options)


def _build_entry(cfg, tokenizer, builder, files, key, field, split, held_out, packing, entry, identity) -> None:
    data = cfg.data
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{entry.name}-", dir=entry.parent))
    try:
        records = read_records(builder, files, key, tmp / "hf")
        values = field_values(records, field, key, str(files[0] if len(files) == 1 else files[0].parent))
        if held_out:
            values = split_eval(values, data.eval_fraction)[split == "eval"]
        if data.format == "chat":
            documents = tokenize_chat(tokenizer, values, key)
        else:
            if not all(isinstance(v, str) for v in values):
                raise DataError(f"{key}: field {field!r} must hold text in every record")
            documents = tokenize_texts(tokenizer, values)
        documents = [d for d in documents if len(d[0])]
        if not documents:
            raise DataError(f"{key}: {data.train if key == 'data.train' else data.eval} holds no documents"
                            + (" for this split" if held_out else ""))
        shape = pack_documents if packing else pad_documents
        arrays = shape(documents, data.seq_len, tokenizer.pad_token_id)
        stats = {"documents": len(documents), "tokens": int(sum(len(d[0]) for d in documents))}
        result = TokenData(arrays, packed=packing, pad_id=tokenizer.pad_token_id, shuffle=False)
        result.save(tmp / "out", {**identity, **stats})
        try:
            os.replace(tmp / "out", entry)
        except OSError:  # a builder the lock could not see (another node on shared storage) was first
            if not (entry / "meta.json").is_file():
                raise
        log.info("%s data: %d documents, %d tokens -> %d sequences of %d (cached in %s)",
                 split, stats["documents"], stats["tokens"], len(result), data.seq_len, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """A cross-process lock (flock): the first builder builds, the others wait and then read the cache."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
