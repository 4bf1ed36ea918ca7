"""`train.tracking`: experiment trackers (TensorBoard, MLflow, Weights & Biases) fed from metrics.jsonl's records.

Torch-free and import-free of the tracker packages: the CLI validates this section. Credentials never go in
here (train.yaml is a ConfigMap, readable by anyone who can read the namespace): MLflow and W&B read them from
the environment, which cluster.secrets fills from Kubernetes Secrets.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from trainer.config.section import Section

# Keys a user might be tempted to put a credential under. Wider than the launcher's cluster.env rule
# (launcher/spec/cluster_spec.py SECRET_LIKE): a tracker section has no business with a user name or a key either.
CREDENTIAL_LIKE = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|CREDENTIAL|USER(_?NAME)?$|AUTH|^KEY$",
                             re.IGNORECASE)
CREDENTIAL_ENV = {
    "mlflow": "MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
    "wandb": "WANDB_API_KEY",
}


def refuse_credential_keys(data: Any, where_instead: str) -> Any:
    """A key that looks like a credential is refused, naming where it goes instead (never echoing its value)."""
    if isinstance(data, dict):
        for key in data:
            if isinstance(key, str) and CREDENTIAL_LIKE.search(key):
                raise ValueError(f"{key} looks like a credential; {where_instead}, never in the job file")
    return data


class TrackerSection(Section):
    tracker: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        where = f"set {CREDENTIAL_ENV[cls.tracker]} through cluster.secrets (a secretKeyRef)"
        return refuse_credential_keys(data, where)


class MlflowTracking(TrackerSection):
    """An MLflow tracking server: params (the flattened train section), metrics per log step, the model."""

    tracker: ClassVar[str] = "mlflow"
    tracking_uri: str = Field(..., min_length=1, description="The tracking server, e.g. http://mlflow.ml:5000 "
                              "(credentials: MLFLOW_TRACKING_TOKEN / _USERNAME / _PASSWORD in cluster.secrets).")
    experiment: str | None = Field(None, min_length=1, description="Experiment name; default: the job name.")
    run_name: str | None = Field(None, min_length=1, description="Run name; default: the job name.")
    log_model: bool = Field(False, description="At the end upload final/ (and final-merged/) as the run's artifacts.")

    @model_validator(mode="before")
    @classmethod
    def _no_userinfo(cls, data: Any) -> Any:
        """Before validation, on the whole section: a field error would echo the URI, credential and all."""
        uri = data.get("tracking_uri") if isinstance(data, dict) else None
        if isinstance(uri, str):
            parts = urlsplit(uri)
            if parts.username or parts.password or CREDENTIAL_LIKE.search(parts.query):
                raise ValueError(f"tracking_uri holds a credential; set {CREDENTIAL_ENV['mlflow']} through "
                                 f"cluster.secrets (a secretKeyRef), never in the job file")
        return data


class WandbTracking(TrackerSection):
    """A Weights & Biases run: the train section as its config, metrics per log step."""

    tracker: ClassVar[str] = "wandb"
    project: str = Field(..., min_length=1, description="W&B project.")
    entity: str | None = Field(None, min_length=1, description="W&B entity (team or user); default: the key's.")
    mode: Literal["online", "offline"] = Field(
        "online", description="online: stream to the server (WANDB_API_KEY in cluster.secrets; WANDB_BASE_URL in "
        "cluster.env for a self-hosted one); offline: write <output_dir>/wandb/ only, for `wandb sync` later.",
    )


class TrackingConfig(Section):
    """Experiment trackers, written by global rank 0 with the same scalars as metrics.jsonl (docs/tracking.md).
    A tracker that fails logs one warning and training goes on; a resumed run continues the same tracker run."""

    tensorboard: bool = Field(False, description="Event files under <output_dir>/tensorboard/.")
    mlflow: MlflowTracking | None = Field(None, description="Log to an MLflow tracking server.")
    wandb: WandbTracking | None = Field(None, description="Log to Weights & Biases.")

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        return refuse_credential_keys(
            data, f"tracker credentials go through cluster.secrets ({CREDENTIAL_ENV['mlflow']}; WANDB_API_KEY)")

    @property
    def enabled(self) -> bool:
        return self.tensorboard or self.mlflow is not None or self.wandb is not None
