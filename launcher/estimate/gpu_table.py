"""Memory of common training GPUs, recognised from the node selector labels a job file names.

Labels differ by platform (NVIDIA GPU feature discovery's nvidia.com/gpu.product, GKE's
cloud.google.com/gke-accelerator, AWS instance types, ...), so each entry is a pattern tried against
every label value; the first match wins, so specific names come before the generic ones.
"""

from __future__ import annotations

import re

# (pattern over a label value, name shown to the user, memory in GiB as the driver reports it)
GPUS: list[tuple[str, str, float]] = [
    (r"gh200", "GH200 96GB", 96),
    (r"h200|p5e", "H200 141GB", 141),
    (r"h100.*nvl", "H100 NVL 94GB", 94),
    (r"h100|h800|p5\.|a3-", "H100 80GB", 80),
    (r"b200", "B200 180GB", 180),
    (r"a100.*80|p4de|a2-ultragpu", "A100 80GB", 80),
    (r"a100|p4d|a2-highgpu|a2-megagpu", "A100 40GB", 40),
    (r"l40s|g6e", "L40S 48GB", 48),
    (r"l40", "L40 48GB", 48),
    (r"a6000", "RTX A6000 48GB", 48),
    (r"a10g|g5\.", "A10G 24GB", 24),
    (r"a10\b|a10$", "A10 24GB", 24),
    (r"\bl4\b|l4$|g6\.|g2-", "L4 24GB", 24),
    (r"v100.*32", "V100 32GB", 32),
    (r"v100|p3\.", "V100 16GB", 16),
    (r"t4|g4dn", "T4 16GB", 16),
    (r"4090", "RTX 4090 24GB", 24),
    (r"mi300x", "MI300X 192GB", 192),
    (r"mi250", "MI250X 64GB per GCD", 64),
]


def gpu_from_selector(node_selector: dict[str, str]) -> tuple[str, float] | None:
    """(name, GiB) of the first known GPU a node selector value names, or None."""
    values = [v.lower().replace("_", "-") for v in node_selector.values()]
    for pattern, name, gib in GPUS:
        if any(re.search(pattern, value) for value in values):
            return name, gib
    return None
