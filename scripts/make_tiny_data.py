"""Generate the bundled tiny corpus, chat set and tokenizer under examples/data/ (outputs are committed).

Deterministic: a fixed seed, no network, no hub. Re-running it rewrites the same bytes.
The world is fixed (every object has one colour and one place), so the facts are learnable, and
documents vary in length from one sentence to a dozen.

    python scripts/make_tiny_data.py [--out examples/data]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20240611
VOCAB_SIZE = 512
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# ChatML; `add_generation_prompt` opens an assistant turn for generation.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

OBJECTS = ["ball", "cup", "lamp", "book", "chair", "box", "hat", "key", "coat", "bell", "kite", "drum",
           "bowl", "pen", "rug", "clock", "boat", "shoe", "bag", "vase"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "brown", "pink"]
PLACES = ["kitchen", "garden", "hall", "attic", "garage", "bedroom", "cellar", "library"]
ANIMALS = ["cat", "dog", "fox", "bird", "mouse", "rabbit", "horse", "frog"]
ADJECTIVES = ["small", "big", "old", "young", "happy", "quiet", "brave", "clever"]
VERBS = ["found", "saw", "lost", "liked", "carried", "painted"]
FEELINGS = ["happy", "sad", "tired", "surprised", "proud"]
SYSTEM_PROMPTS = ["You are a helpful assistant.", "Answer briefly.", "You know the house and its things."]


def build_world(rng: random.Random) -> dict[str, tuple[str, str]]:
    return {obj: (rng.choice(COLOURS), rng.choice(PLACES)) for obj in OBJECTS}


def fact_sentence(rng: random.Random, world) -> str:
    obj = rng.choice(OBJECTS)
    colour, place = world[obj]
    return rng.choice([f"The {obj} is {colour}.", f"The {obj} is in the {place}.",
                       f"The {colour} {obj} is in the {place}."])


def arithmetic_sentence(rng: random.Random) -> str:
    a, b = rng.randint(0, 49), rng.randint(0, 49)
    if rng.random() < 0.5 or a < b:
        return f"{a} plus {b} is {a + b}."
    return f"{a} minus {b} is {a - b}."


def counting_document(rng: random.Random) -> str:
    start, length, step = rng.randint(0, 80), rng.randint(3, 20), rng.choice([1, 1, 2, 5])
    numbers = ", ".join(str(start + i * step) for i in range(length))
    return f"Counting by {step} from {start}: {numbers}."


def story_document(rng: random.Random, world) -> str:
    animal, adjective = rng.choice(ANIMALS), rng.choice(ADJECTIVES)
    place = rng.choice(PLACES)
    lines = [f"Once upon a time, a {adjective} {animal} lived in the {place}."]
    for _ in range(rng.randint(1, 6)):
        obj = rng.choice(OBJECTS)
        colour, where = world[obj]
        lines.append(rng.choice([
            f"One day the {animal} went to the {where} and {rng.choice(VERBS)} the {colour} {obj}.",
            f"The {animal} was {rng.choice(FEELINGS)}.",
            f"Then the {animal} looked for the {obj} in the {where}.",
        ]))
    lines.append("The end.")
    return " ".join(lines)


def text_document(rng: random.Random, world) -> str:
    kind = rng.random()
    if kind < 0.35:
        return " ".join(fact_sentence(rng, world) for _ in range(rng.randint(1, 12)))
    if kind < 0.65:
        return " ".join(arithmetic_sentence(rng) for _ in range(rng.randint(1, 12)))
    if kind < 0.8:
        return counting_document(rng)
    return story_document(rng, world)


def qa_pair(rng: random.Random, world) -> tuple[str, str]:
    obj = rng.choice(OBJECTS)
    colour, place = world[obj]
    kind = rng.random()
    if kind < 0.3:
        return f"What colour is the {obj}?", f"The {obj} is {colour}."
    if kind < 0.6:
        return f"Where is the {obj}?", f"The {obj} is in the {place}."
    a, b = rng.randint(0, 49), rng.randint(0, 49)
    return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."


def chat_record(rng: random.Random, world) -> dict:
    messages = []
    if rng.random() < 0.4:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        question, answer = qa_pair(rng, world)
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def unique(make, count: int, exclude: set[str]) -> list:
    """`count` items whose JSON is new (not in `exclude`), so eval never repeats a train document."""
    items, seen = [], set(exclude)
    while len(items) < count:
        item = make()
        key = json.dumps(item, sort_keys=True)
        if key not in seen:
            seen.add(key)
            items.append(item)
    return items


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def train_tokenizer(texts: list[str], out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    # Written by hand rather than by save_pretrained: transformers 5 would name its own backend class and
    # put the template in a side file, which transformers 4.x cannot read. This form loads in both.
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|bos|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|pad|>",
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "model_max_length": 256,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "examples" / "data"))
    out = Path(parser.parse_args().out)
    rng = random.Random(SEED)
    world = build_world(rng)

    train = unique(lambda: {"text": text_document(rng, world)}, 3800, set())
    seen = {json.dumps(r, sort_keys=True) for r in train}
    evaluation = unique(lambda: {"text": text_document(rng, world)}, 300, seen)
    chat = unique(lambda: chat_record(rng, world), 1200, set())
    seen = {json.dumps(r, sort_keys=True) for r in chat}
    chat_eval = unique(lambda: chat_record(rng, world), 120, seen)

    write_jsonl(out / "tiny" / "train.jsonl", train)
    write_jsonl(out / "tiny" / "eval.jsonl", evaluation)
    write_jsonl(out / "tiny" / "chat.jsonl", chat)
    write_jsonl(out / "tiny" / "chat_eval.jsonl", chat_eval)

    corpus = [r["text"] for r in train]
    corpus += ["\n".join(f"{m['role']}\n{m['content']}" for m in r["messages"]) for r in chat]
    train_tokenizer(corpus, out / "tokenizer")
    for name in ("train.jsonl", "eval.jsonl", "chat.jsonl", "chat_eval.jsonl"):
        print(f"{name}: {(out / 'tiny' / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
