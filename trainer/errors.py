"""ConfigError: bad input, one line per problem naming the key (exit code 2 in the CLI and in a pod).

Its own module, free of pydantic, so that the CLI's commands that read no job file (--help, init,
status, list, logs, delete) start without building the job file's models.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A job file or train.yaml problem; each entry of `problems` is one line naming the key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its class name when the message is empty)."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__
