"""The job files every manifest test renders: each example as written, plus a few variants."""

from __future__ import annotations

from pathlib import Path

from launcher.spec import JobSpec, load_job

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# No image is built in these tests; any reference does (the cluster commands require one: no default).
TEST_IMAGE = "registry.example.com/ml/llmlaunch-trainer:0.1.0"

VARIANTS = {  # name -> (example, overrides)
    "tiny-4nodes": ("tiny", ["cluster.nodes=4"]),
    "tiny-trainjob": ("tiny", ["cluster.api=trainjob", "cluster.nodes=2", "cluster.storage.size=10Gi", "cluster.storage.keep=true"]),
    "tiny-elastic": ("tiny", ["cluster.nodes=2", "cluster.elastic={min_nodes: 1, max_nodes: 3}"]),
    # every pod setting a Trainer v2.3 runtime patch carries (tests/test_trainjob.py compares it with a PyTorchJob's)
    "tiny-trainjob-full": ("tiny", [
        "cluster.api=trainjob", "cluster.nodes=2", "cluster.gpus_per_node=2", "cluster.storage.claim=shared",
        "cluster.service_account=trainer", "cluster.image_pull_secrets=[regcred]", "cluster.env.FOO=bar",
        "cluster.secrets=[{env: HF_TOKEN, secret: hf, key: token}]", "cluster.network.nccl.NCCL_DEBUG=WARN",
        "cluster.network.rdma={count: 1}", "cluster.security.add_capabilities=[SYS_PTRACE]",
        "cluster.scheduling.node_selector.pool=gpu", "cluster.scheduling.tolerations=[{key: gpu, operator: Exists}]",
        "cluster.scheduling.affinity={nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: "
        "{nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}",
        "cluster.termination_grace_period_seconds=300", "cluster.run_policy.active_deadline_seconds=86400",
        "cluster.annotations={example.com/team: ml}", "cluster.labels={team: ml}", "cluster.scheduling.queue=team-a",
    ]),
    "tiny-locked-down": ("tiny", ["cluster.network.block_metadata_egress=true",
                                  "cluster.network.metrics_from={namespace_selector: {team: sre}, pod_selector: {}}"]),
}


def cases() -> dict[str, tuple[Path, list[str]]]:
    # An example without an image (a user must build one) renders with TEST_IMAGE.
    out = {p.stem: (p, [] if "\n  image:" in p.read_text() else [f"cluster.image={TEST_IMAGE}"])
           for p in sorted(EXAMPLES.glob("*.yaml"))}
    out.update({name: (EXAMPLES / f"{example}.yaml", sets) for name, (example, sets) in VARIANTS.items()})
    return out


def load_case(name: str) -> JobSpec:
    path, overrides = cases()[name]
    return load_job(path, overrides, resolve_paths=False)
