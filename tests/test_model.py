"""Model building: run.seed fixes every random initial weight, a peft adapter's on a pretrained base included."""

from __future__ import annotations

import pytest
import torch

from launcher.spec.load import load_job
from trainer.training.model import build_model
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


def test_pretrained_fine_tuning_trains_in_train_mode_from_step_one(tmp_path, pretrained):
    """from_pretrained returns an eval-mode model: without .train() the first steps ran with gradient
    checkpointing and LoRA dropout off, until the first eval switched the model to train mode."""
    job = tiny_job(tmp_path, method={"kind": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.5}},
                   model={"config": None, "pretrained": str(pretrained), "tokenizer": None,
                          "gradient_checkpointing": True})
    model = build_model(load_job(job).train, ds_config={})
    assert all(m.training for m in model.modules())
    layers = model.base_model.model.model.layers
    calls = {i: 0 for i in range(len(layers))}
    for i, layer in enumerate(layers):
        # On a sublayer: transformers checkpoints a layer's forward, so the layer's own hooks run once either way.
        layer.self_attn.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    zeroed = []  # fraction of zeros each LoRA dropout produced (inputs have none)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p == 0.5:
            module.register_forward_hook(lambda _m, _inp, out: zeroed.append((out == 0).float().mean().item()))
    ids = torch.randint(3, 500, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    # Checkpointing runs each decoder layer's forward again in backward: two calls, not one.
    assert calls == {i: 2 for i in range(len(layers))}
    assert zeroed and all(0.3 < z < 0.7 for z in zeroed), zeroed
