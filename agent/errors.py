"""The one error type for expected failures.

Parsers and executors raise `AgentError`; only the CLI decides how to print it and which
exit code to use, so a library caller can catch it and keep going.
"""

from __future__ import annotations

# Exit codes are a contract (README.md, "The agent"): 2 is bad input, 3 is "not running/ready" for
# `agent status` (the LSB convention supervisorctl follows), 1 is any other failure.
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_READY = 3


class AgentError(Exception):
    """An expected failure, with the lines to print and the exit code to use."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILURE, lines: list[str] | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.lines = lines if lines is not None else [message]


class BadInput(AgentError):
    """Input the operator must fix (services.yaml, flags, tags): exit code 2."""

    def __init__(self, message: str, *, lines: list[str] | None = None):
        super().__init__(message, exit_code=EXIT_BAD_INPUT, lines=lines)
