"""Worker errors: what went wrong, and whether trying again may help."""

from __future__ import annotations

# Exit codes of the worker process (a Job's podFailurePolicy can act on them).
EXIT_OK = 0  # every candidate has a result (some may be failures, recorded with reasons)
EXIT_PERMANENT = 2  # the task cannot succeed as written: bad task, model not found, wrong class
EXIT_RETRYABLE = 75  # a transient problem (EX_TEMPFAIL): out of memory at load, device error


class CandidateError(Exception):
    """One candidate failed; the others in the pod still run."""

    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason, self.retryable = reason, retryable


class PermanentTaskError(Exception):
    """The whole task cannot succeed as written; retrying the pod will not help."""
