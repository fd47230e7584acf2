"""The tool's exit codes (a contract: README, "Deploying"): 0 done, 1 a service failed
(before its switch: nothing was switched for it), 2 bad input refused before any AWS
write, 4 a lock is held, 5 every failure came after its switch (what it switched to
serves). Errors are the agent's AgentError and BadInput, with one more."""

from __future__ import annotations

from agent.errors import AgentError

EXIT_LOCKED = 4
EXIT_SWITCHED_THEN_FAILED = 5   # the new version serves; a step after its switch failed


class LockHeld(AgentError):
    """Another deploy holds a lock this command needs: exit 4, naming the holder."""

    def __init__(self, message: str, lines: list[str] | None = None):
        super().__init__(message, exit_code=EXIT_LOCKED, lines=lines)
