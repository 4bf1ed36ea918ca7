"""JobSpec: a whole job file (name + cluster + train) as a typed model.

The `train` part is trainer.config.train_config.TrainConfig, shipped unchanged to the pods as train.yaml; the `cluster`
part describes where and how the pods run. Loading a file and checking the rules that span sections is
launcher.spec.load's (load_job); this module imports neither, so everything that takes a JobSpec can import it.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from launcher.spec.cluster_spec import ClusterSpec
from trainer.config.train_config import TrainConfig

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # services are named after the job: a letter first
MAX_NAME = 40  # leaves room for the longest suffix we append (e.g. "-worker-12345" and pod hashes)


class JobSpec(BaseModel):
    """A job file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Job name (DNS-1123 label; prefixes every object's name).")
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    train: TrainConfig

    @field_validator("name")
    @classmethod
    def _dns_name(cls, name: str) -> str:
        if not DNS1035.fullmatch(name):
            raise ValueError("must be lowercase letters, digits and '-', starting with a letter and ending "
                             "alphanumeric, since Kubernetes services are named after it")
        if len(name) > MAX_NAME:
            raise ValueError(f"must be at most {MAX_NAME} characters (got {len(name)})")
        return name
