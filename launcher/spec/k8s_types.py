"""Kubernetes value types for the job file: quantities, names, labels, env names.

Each type checks what the API server would reject, so a bad value fails at `llmlaunch validate`
with the key named, not later as a server error about a half-created job.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

# Largest values of the API's int32 / int64 fields (replicas, backoffLimit / seconds, UIDs).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# The API server's own patterns (apimachinery validation).
QUANTITY = re.compile(
    r"^[+]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
CAPABILITY = re.compile(r"^[A-Z_]+$")


def has_control_character(text: str) -> bool:
    """C0/C1 controls, DEL and the Unicode line/paragraph separators: never part of a name or path."""
    return any(unicodedata.category(c) == "Cc" or c in "\u2028\u2029" for c in text)


def _scalar_to_str(value: Any) -> Any:
    """YAML reads `cpu: 8` or `NCCL_IB_TIMEOUT: 22` as numbers; Kubernetes wants strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _quantity(value: str) -> str:
    if not QUANTITY.fullmatch(value):
        raise ValueError("not a Kubernetes quantity such as 8, 500m, 64Gi")
    return value


def _dns_label(value: str) -> str:
    if len(value) > 63 or not DNS1123_LABEL.fullmatch(value):
        raise ValueError("must be a DNS-1123 label: lowercase letters, digits, '-', at most 63")
    return value


def _dns_subdomain(value: str) -> str:
    if len(value) > 253 or not DNS1123_SUBDOMAIN.fullmatch(value):
        raise ValueError("must be a DNS-1123 name: lowercase letters, digits, '-' and '.'")
    return value


def check_label_key(key: str) -> str:
    """`prefix/name` or `name`, as labels, annotations, node selectors and resource names use."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"key {key!r}: prefix must be a DNS-1123 subdomain")
    if len(name) > 63 or not LABEL_NAME.fullmatch(name):
        raise ValueError(f"key {key!r}: name part must be at most 63 letters, digits, '-', '_', '.'")
    return key


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key, val in value.items():
        check_label_key(key)
        if len(val) > 63 or not LABEL_VALUE.fullmatch(val):
            raise ValueError(f"value of {key!r} must be at most 63 letters, digits, '-', '_', '.' (got {val!r})")
    return value


def _not_reserved(key: str) -> str:
    if RESERVED_LABEL.match(key):
        raise ValueError(f"key {key!r} is set by llmlaunch, Helm or the operators (list, delete and the "
                         "PodMonitor select on it)")
    return key


def _extra_labels(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        _not_reserved(key)
    return value


def _annotations(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        check_label_key(key)
    return value


def _env_name(value: str) -> str:
    if not ENV_NAME.fullmatch(value):
        raise ValueError("not an environment variable name")
    return value


def _duration(value: str) -> str:
    if not value or not DURATION.fullmatch(value):
        raise ValueError("not a Prometheus duration such as 15s or 1m")
    return value


def _capability(value: str) -> str:
    if not CAPABILITY.fullmatch(value):
        raise ValueError("not a Linux capability name such as IPC_LOCK")
    return value


def _str_dict(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scalar_to_str(v) for k, v in value.items()}
    return value


LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
)
# Label keys that select a job's objects and pods (names.py); no user labels field may set them.
RESERVED_LABEL = re.compile(r"^((app\.kubernetes\.io|helm\.sh|training\.kubeflow\.org|jobset\.sigs\.k8s\.io|"
                            r"batch\.kubernetes\.io)/|kueue\.x-k8s\.io/queue-name$)")
SCALAR = ["string", "number", "boolean"]  # YAML scalars a job file may write where Kubernetes wants a string


def _schema(**schema: Any) -> WithJsonSchema:
    """The JSON schema of a type (for `llmlaunch schema`, editors and the chart's values.schema.json).
    Patterns are RE2- and ECMA-compatible, so Helm and editors check them as the validators here do."""
    return WithJsonSchema(schema)


def _map_schema(values: dict, reserved: bool = False) -> WithJsonSchema:
    names = {"pattern": LABEL_KEY.pattern, **({"not": {"pattern": RESERVED_LABEL.pattern}} if reserved else {})}
    return _schema(type="object", propertyNames=names, additionalProperties=values)


Quantity = Annotated[str, BeforeValidator(_scalar_to_str), AfterValidator(_quantity),
                     _schema(type=["string", "number"], pattern=QUANTITY.pattern, minimum=0)]
DnsLabel = Annotated[
    str, AfterValidator(_dns_label), _schema(type="string", maxLength=63, pattern=DNS1123_LABEL.pattern)
]
DnsName = Annotated[str, AfterValidator(_dns_subdomain),
                    _schema(type="string", maxLength=253, pattern=DNS1123_SUBDOMAIN.pattern)]
ResourceName = Annotated[str, AfterValidator(check_label_key), _schema(type="string", pattern=LABEL_KEY.pattern)]
EnvName = Annotated[str, AfterValidator(_env_name), _schema(type="string", pattern=ENV_NAME.pattern)]
Duration = Annotated[str, AfterValidator(_duration), _schema(type="string", minLength=1, pattern=DURATION.pattern)]
Capability = Annotated[str, AfterValidator(_capability), _schema(type="string", pattern=CAPABILITY.pattern)]
Labels = Annotated[dict[str, str], BeforeValidator(_str_dict), AfterValidator(_labels),
                   _map_schema({"type": SCALAR, "maxLength": 63, "pattern": LABEL_VALUE.pattern})]
# Labels a user adds to llmlaunch's objects (cluster.labels, monitoring.labels, the chart's labels).
ExtraLabels = Annotated[
    dict[str, str],
    BeforeValidator(_str_dict),
    AfterValidator(_labels),
    AfterValidator(_extra_labels),
    _map_schema({"type": SCALAR, "maxLength": 63, "pattern": LABEL_VALUE.pattern}, reserved=True),
]
ExtraLabelKey = Annotated[
    str,
    AfterValidator(check_label_key),
    AfterValidator(_not_reserved),
    _schema(type="string", pattern=LABEL_KEY.pattern, **{"not": {"pattern": RESERVED_LABEL.pattern}}),
]
Annotations = Annotated[dict[str, str], BeforeValidator(_str_dict), AfterValidator(_annotations),
                        _map_schema({"type": SCALAR})]
StrDict = Annotated[dict[str, str], BeforeValidator(_str_dict),
                    _schema(type="object", additionalProperties={"type": SCALAR})]
