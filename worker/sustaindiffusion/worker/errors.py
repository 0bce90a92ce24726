"""Worker errors: what went wrong, and whether trying again may help (exit codes: `api.contract`)."""

from __future__ import annotations


class CandidateError(Exception):
    """One candidate failed; the others in the pod still run."""

    def __init__(self, reason: str, retryable: bool) -> None:
        super().__init__(reason)
        self.reason, self.retryable = reason, retryable


class PermanentTaskError(Exception):
    """The whole task cannot succeed as written; retrying the pod will not help."""
