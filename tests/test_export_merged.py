"""A merged model to serve: a LoRA run trained under ZeRO-3 writes final-merged/ (merge_on_export), and
`llmlaunch export RUN_DIR --merge` writes the same; both load with plain transformers (peft blocked) and
give the logits of base + adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainjobs import REPO, llmlaunch, llmlaunch_env, save_tiny_pretrained, tiny_job, train

PROMPT = "Counting by 2 from 10: 12, 14,"

# Run in a fresh interpreter in which `import peft` fails: the merged directory must not need it.
PLAIN_LOGITS = """
import sys, torch
sys.modules["peft"] = None
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = AutoTokenizer.from_pretrained(sys.argv[1])(sys.argv[2], return_tensors="pt").input_ids
with torch.no_grad():
    torch.save(model(ids).logits, sys.argv[3])
"""


@pytest.fixture(scope="module")
def lora_zero3_run(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("lora3")
    base = save_tiny_pretrained(tmp / "base")
    job = tiny_job(tmp, model={"config": None, "pretrained": str(base), "tokenizer": None},
                   method={"kind": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": "all-linear",
                                                    "merge_on_export": True}},
                   deepspeed={"preset": "zero3"}, optim={"lr": 1e-2},
                   run={"max_steps": 4, "save_every": 0, "eval_every": 0})
    result = train(job)
    assert "merged the adapter into the base weights" in result.stderr
    return tmp / "out", base


def plain_logits(model_dir: Path, tmp: Path) -> torch.Tensor:
    out = tmp / f"{model_dir.name}-logits.pt"
    subprocess.run([sys.executable, "-c", PLAIN_LOGITS, str(model_dir), PROMPT, str(out)], check=True,
                   env=llmlaunch_env(), cwd=REPO, capture_output=True, text=True)
    return torch.load(out)


def adapter_logits(base: Path, adapter: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(base + adapter through peft, base alone)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(adapter)(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(base).eval()(ids).logits
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
        return tuned(ids).logits, plain


@pytest.mark.distributed
def test_zero3_lora_run_writes_a_merged_model(lora_zero3_run, tmp_path):
    out, base = lora_zero3_run
    merged = out / "final-merged"
    files = {p.name for p in merged.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files
    assert not files & {"adapter_config.json", "adapter_model.safetensors"}
    weights = load_file(merged / "model.safetensors")
    assert not any("lora" in name for name in weights)  # folded in, not carried along
    assert json.loads((merged / "config.json").read_text())["use_cache"] is True
    expected, untuned = adapter_logits(base, out / "final")
    assert (expected - untuned).abs().max() > 1e-3  # the adapter changes the output: the merge matters
    got = plain_logits(merged, tmp_path)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.distributed
def test_export_command_merges_a_finished_run(lora_zero3_run, tmp_path):
    out, base = lora_zero3_run
    target = tmp_path / "served"
    result = llmlaunch("export", str(out), "--merge", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {target}"
    a, b = load_file(out / "final-merged" / "model.safetensors"), load_file(target / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)
    expected, _ = adapter_logits(base, out / "final")
    torch.testing.assert_close(plain_logits(target, tmp_path), expected, rtol=0, atol=1e-5)


@pytest.mark.distributed
def test_export_refuses_what_it_cannot_merge(lora_zero3_run, tmp_path):
    out, _ = lora_zero3_run
    no_flag = llmlaunch("export", str(out))
    assert no_flag.returncode == 2 and no_flag.stderr.startswith("error: --merge: required")
    full = tmp_path / "full"
    (full / "final").mkdir(parents=True)
    (full / "train.yaml").write_text((out / "train.yaml").read_text().replace("kind: lora", "kind: full"))
    refused = llmlaunch("export", str(full), "--merge")
    assert refused.returncode == 2 and "method.kind is full, not lora" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    missing = llmlaunch("export", str(tmp_path / "nothing"), "--merge")
    assert missing.returncode == 2 and "no finished run" in missing.stderr
    assert not (full / "final-merged").exists()


def test_export_imports_no_tensor_library_before_it_runs():
    code = ("import sys, json; from launcher.cli import cli\n"
            "cli.main(['export', '--help'], standalone_mode=False)\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'peft', 'deepspeed'})\n"
            "print(json.dumps(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "--merge" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
