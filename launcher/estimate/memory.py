"""Memory per GPU before the GPUs are booked: model states by ZeRO stage and offload, activations, buffers.

Torch-free. Model states follow DeepSpeed's own accounting (the estimators in deepspeed.runtime.zero),
per byte of each trainable (T) or stored (N) parameter, W ranks, 16-bit (p = 2) or fp32 (p = 4) weights:

  stage 0/1/2  params p·N; grads p·T (stage 2: p·T/W); the optimizer keeps an fp32 master copy, Adam's
               two moments and an fp32 gradient (mixed precision), partitioned over W from stage 1 on
  stage 3      params p·N/W plus one gathered layer (the largest, L); grads p·L plus the fp32 partition
  offload      the optimizer (and under stage 3 the parameters) move to host memory: `offload_gib`

Activations: what autograd keeps per token and layer of a Llama-style block (norm inputs, q/k/v, attention
output, gate/up/act/product of the MLP: ~16 h + 4 i values), one layer's worth with gradient checkpointing
plus each layer's input, the logits with their fp32 log-softmax and its gradient, the block-diagonal
mask when packing. Buffers: DeepSpeed's gradient buckets (allocated whole on a GPU; on a CPU only the
part written is resident). Not counted: the CUDA context and allocator fragmentation (~0.5-1.5 GiB).
"""

from __future__ import annotations

from typing import Any

from launcher.estimate.gpu_table import gpu_from_selector
from launcher.estimate.model_shape import ModelShape, shape_of, trainable_params
from trainer.config.ds_config import build_ds_config, resolve_precision, zero_stage

GIB = 1024**3


def _offloaded(zero: dict[str, Any], key: str) -> bool:
    return (zero.get(key) or {}).get("device", "none") in ("cpu", "nvme")


def model_states(n: int, t: int, largest: int, world: int, stage: int, p: int, offload_opt: bool,
                 offload_param: bool) -> dict[str, float]:
    """Bytes per rank of parameters, gradients and optimizer, and what offload puts in host memory."""
    mixed = p < 4
    fp32_grad = 4 if mixed else 0  # the optimizer steps on an fp32 copy of a 16-bit gradient
    if stage == 0:  # fp32: torch's AdamW on the weights; 16-bit: DeepSpeed adds an fp32 master copy
        return {"params": p * n, "grads": (p + fp32_grad) * t, "optimizer": (8 + (4 if mixed else 0)) * t,
                "offload": 0}
    shard = t / world
    if stage in (1, 2):
        adam = 12  # two moments + the fp32 partition DeepSpeed steps (a copy even of fp32 weights)
        grads = (p * t if stage == 1 else p * shard) + fp32_grad * shard
        if offload_opt:  # the partitioned gradient and the whole optimizer live on the host
            return {"params": p * n, "grads": 0, "optimizer": 0, "offload": (grads - (p * t if stage == 1 else 0))
                    + adam * shard}
        return {"params": p * n, "grads": grads, "optimizer": adam * shard, "offload": 0}
    # ZeRO-3: one layer's weights and gradient gathered at a time; the fp32 gradient partition the
    # optimizer steps on (in fp32 training the reduced partition is a second copy of it).
    params = p * largest + (0 if offload_param else p * n / world)
    partition = 4 * shard + (0 if mixed else p * shard)
    master = 4 * shard if mixed else 0  # fp32 weights are stepped in place
    if offload_opt:
        host = partition + (8 * shard + master) + (p * n / world if offload_param else 0)
        return {"params": params, "grads": p * largest, "optimizer": 0, "offload": host}
    return {"params": params, "grads": p * largest + partition, "optimizer": 8 * shard + master, "offload": 0}


def activations(cfg, shape: ModelShape, p: int) -> float:
    """Bytes autograd holds at the start of backward (the peak) for one micro batch."""
    tokens = cfg.run.micro_batch_size * cfg.data.seq_len
    h, i, layers = shape.hidden, shape.intermediate, shape.layers
    kv = shape.kv_heads * shape.head_dim
    per_layer = 12 * h + 4 * kv + 4 * i  # norms (input, fp32 rms), q/k/v and their rotations, attention, MLP
    if cfg.method.kind == "lora":  # lora dropout keeps a copy of each adapted input
        targets = shape.linear_dims() if cfg.method.lora.target_modules == "all-linear" else {
            t: d for t, d in shape.linear_dims().items() if t in cfg.method.lora.target_modules}
        per_layer += sum(d[0] for d in targets.values())
    # With checkpointing: each layer's input, and one layer recomputed in backward.
    body = layers * h + per_layer if cfg.model.gradient_checkpointing else layers * per_layer
    values = tokens * (body + 4 * h)  # + final norm and the hidden state the head reads
    head = tokens * shape.vocab * (p + (4 if p < 4 else 0) + 4 + 4)  # logits, fp32 copy, log-softmax, its grad
    extra = 0.0
    seq = cfg.data.seq_len
    if cfg.data.packing and cfg.method.kind != "prefix":
        extra += cfg.run.micro_batch_size * seq * seq * p  # the additive block-diagonal mask
    if cfg.model.attn_implementation == "eager":
        extra += (
            (1 if cfg.model.gradient_checkpointing else layers)
            * cfg.run.micro_batch_size
            * shape.heads
            * seq
            * seq
            * p
            * 2
        )
    return values * p + head + extra


def buffers(zero: dict[str, Any], stage: int, n: int, p: int, on_gpu: bool) -> float:
    """DeepSpeed's gradient reduce buckets (contiguous_gradients) and ZeRO-3's parameter prefetch bucket.

    A GPU allocates the buckets whole. On a CPU only pages written are resident: the gradient buckets
    fill as backward frees activations (after the peak), while prefetched parameters are live at it.
    """
    if stage == 0:
        return 0.0
    elements = 0.0
    if on_gpu and zero.get("contiguous_gradients", True):  # DeepSpeed's default
        count = 2 if stage < 3 and zero.get("overlap_comm", False) else 1
        elements += count * float(zero.get("reduce_bucket_size", 5e8))
    if stage == 3:
        prefetch = float(zero.get("stage3_prefetch_bucket_size", 5e7))
        elements += prefetch if on_gpu else min(prefetch, n)
    return elements * p


def estimate(spec, nodes: int | None = None, gpus_per_node: int | None = None,
             gpu_memory: float | None = None) -> dict[str, Any]:
    """The per-GPU plan of a job (a launcher.spec.job_spec.JobSpec); *_gib values in GiB."""
    cfg, cluster = spec.train, spec.cluster
    nodes = nodes or cluster.nodes
    gpus = cluster.gpus_per_node if gpus_per_node is None else gpus_per_node
    world = nodes * max(gpus, 1)
    precision = resolve_precision(cfg.precision, has_gpu=gpus > 0)
    ds = build_ds_config(cfg, world, precision)
    zero, stage = ds.get("zero_optimization", {}), zero_stage(ds)
    p = 2 if precision in ("bf16", "fp16") else 4
    shape = shape_of(cfg)
    n, t = shape.total_params, trainable_params(cfg, shape)
    states = model_states(n, t, shape.largest_layer, world, stage, p, _offloaded(zero, "offload_optimizer"),
                          stage == 3 and _offloaded(zero, "offload_param"))
    act = activations(cfg, shape, p)
    buf = buffers(zero, stage, n, p, on_gpu=gpus > 0)
    total = states["params"] + states["grads"] + states["optimizer"] + act + buf
    gpu_name, gpu_gib = None, gpu_memory
    if gpu_memory is None and gpus > 0:
        found = gpu_from_selector(cluster.scheduling.node_selector)
        if found:
            gpu_name, gpu_gib = found
    elif gpu_memory is not None:
        gpu_name = "--gpu-memory"
    return {
        "params_gib": states["params"] / GIB, "grads_gib": states["grads"] / GIB,
        "optimizer_gib": states["optimizer"] / GIB, "activations_gib": act / GIB, "buffers_gib": buf / GIB,
        "total_gib": total / GIB, "offload_gib": states["offload"] / GIB, "gpu": gpu_name, "gpu_gib": gpu_gib,
        "fits": None if gpu_gib is None else total / GIB <= gpu_gib,
        "parameters": n, "trainable_parameters": t, "world_size": world, "gpus_per_node": gpus, "zero_stage": stage,
        "precision": precision,
    }


def describe(plan: dict[str, Any]) -> str:
    rows = [("parameters", "params_gib"), ("gradients", "grads_gib"), ("optimizer states", "optimizer_gib"),
            ("activations", "activations_gib"), ("buffers", "buffers_gib"), ("total", "total_gib")]
    lines = [f"per GPU, {plan['world_size']} ranks, ZeRO {plan['zero_stage']}, {plan['precision']}; "
             f"{plan['parameters']:,} parameters ({plan['trainable_parameters']:,} trainable)"]
    lines += [f"  {what:<17} {plan[key]:9.2f} GiB" for what, key in rows]
    if plan["offload_gib"]:
        lines.append(f"  {'host (offload)':<17} {plan['offload_gib']:9.2f} GiB per rank")
    if plan["gpu_gib"] is None and plan["gpus_per_node"] == 0:
        lines.append("fits: n/a (a CPU job: cluster.gpus_per_node is 0; --gpus-per-node plans one on GPUs)")
    elif plan["gpu_gib"] is None:
        lines.append("fits: unknown (no known GPU in cluster.scheduling.node_selector; pass --gpu-memory GiB)")
    else:
        verdict = "yes" if plan["fits"] else "NO"
        lines.append(f"fits: {verdict} ({plan['total_gib']:.2f} of {plan['gpu_gib']:g} GiB, {plan['gpu']})")
    return "\n".join(lines)
