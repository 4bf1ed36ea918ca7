"""The two kinds of failure the CLI reports, and their exit codes (no click: local runs raise them too).

Bad input is a `trainer.errors.ConfigError` (one line per problem naming the key, exit 2): the trainer
raises the same class in a pod. Anything outside the user's input is a `RuntimeFailure` (exit 1).
"""

from __future__ import annotations

import re

from trainer.errors import ConfigError

__all__ = ["RUNTIME_ERROR", "USAGE_ERROR", "ConfigError", "RuntimeFailure", "one_line"]
USAGE_ERROR = 2  # bad job file, flag or value
RUNTIME_ERROR = 1  # the cluster or the training run failed


class RuntimeFailure(Exception):
    """Something outside the user's input failed (cluster, training processes); exit code 1."""


def one_line(text: str) -> str:
    """Control characters from user input (a key or path with a newline) shown escaped, not obeyed."""
    return re.sub(r"[\x00-\x1f\x7f\x85\u2028\u2029]", lambda m: repr(m.group())[1:-1], text)
