"""Model building: run.seed fixes every random initial weight, a peft adapter's on a pretrained base included."""

from __future__ import annotations

import pytest
import torch

from launcher.spec import load_job
from trainer.model import build_model
from trainjobs import save_tiny_pretrained, tiny_job

METHODS = {
    "lora": {"kind": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
    "prefix": {"kind": "prefix", "prefix": {"num_virtual_tokens": 4}},
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return save_tiny_pretrained(tmp_path_factory.mktemp("base") / "model")


def trainable_weights(tmp_path, pretrained, method: str, seed: int) -> dict[str, torch.Tensor]:
    job = tiny_job(tmp_path, name=f"{method}{seed}", method=METHODS[method], run={"seed": seed},
                   model={"config": None, "pretrained": str(pretrained), "tokenizer": None})
    torch.seed()  # a fresh random state, as in a new process: the build must not depend on it
    model = build_model(load_job(job).train, ds_config={})
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", METHODS)
def test_adapter_init_follows_the_seed(tmp_path, pretrained, method):
    # DeepSpeed broadcasts rank 0's weights, so unseeded adapters would not diverge across ranks, but
    # runs would not repeat: the same job gave different first losses from run to run.
    first = trainable_weights(tmp_path, pretrained, method, seed=7)
    again = trainable_weights(tmp_path, pretrained, method, seed=7)
    other = trainable_weights(tmp_path, pretrained, method, seed=8)
    random_init = [n for n in first if first[n].std() > 0]  # LoRA's B starts at zero whatever the seed
    assert first and random_init
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not any(torch.equal(first[n], other[n]) for n in random_init)
