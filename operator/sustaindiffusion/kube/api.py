"""Talking to the API server safely: every request has a timeout, and every failure has a kind.

`TimeoutApiClient` gives each request of the Kubernetes client a connect and read timeout unless
the call sets its own, so a half-open connection cannot hang a search forever. `api_failure` turns
any exception of a request into an `ApiFailure`: transient (429, 5xx, timeouts, lost connections:
retried with backoff, honouring Retry-After), a conflict (another writer: read again and retry), or
permanent (403 forbidden or quota exceeded, 400/422 invalid: shown in the search's status with the
server's own message, and retried slowly or not until the spec changes). The classification is a
pure function of the status code, body and headers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sustaindiffusion.search.decisions import Blocked

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
PERMANENT_RETRY_S = 30.0
MESSAGE_LIMIT = 1000


class TimeoutApiClient(client.ApiClient):
    """An ApiClient whose requests time out unless the call sets its own timeout."""

    def __init__(
        self,
        configuration: client.Configuration | None = None,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
    ) -> None:
        super().__init__(configuration)
        self.timeout = timeout

    def call_api(
        self,
        method: str,
        url: str,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        return super().call_api(
            method, url, header_params, body, post_params, _request_timeout=_request_timeout or self.timeout
        )


def read_json(request: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The body of a read (`request(*args, **kwargs)`, a method of the generated API classes) as
    plain JSON. The client's typed models cost more CPU than the request itself (a list of pods is
    parsed into objects, then turned back into dicts), and an operator stepping many searches spends
    its time there; errors still raise ApiException."""
    response = request(*args, _preload_content=False, **kwargs)
    try:
        body: dict[str, Any] = json.loads(response.data)
    finally:
        response.release_conn()
    return body


class FailureKind(StrEnum):
    TRANSIENT = "Transient"
    CONFLICT = "Conflict"
    NOT_FOUND = "NotFound"
    FORBIDDEN = "Forbidden"
    WEBHOOK_DENIED = "AdmissionWebhookDenied"  # e.g. Kueue's or a policy engine's validation
    QUOTA_EXCEEDED = "QuotaExceeded"
    REJECTED = "RequestRejected"
    INTERNAL = "InternalError"  # not the API's doing: a bug of ours


@dataclass(frozen=True)
class ApiFailure:
    kind: FailureKind
    message: str
    status: int | None = None
    retry_after: float | None = None

    @property
    def permanent(self) -> bool:
        """Retrying the same request will not help until something else changes."""
        return self.kind in (
            FailureKind.FORBIDDEN,
            FailureKind.WEBHOOK_DENIED,
            FailureKind.QUOTA_EXCEEDED,
            FailureKind.REJECTED,
        )


def classify_response(status: int, body: str | bytes | None, headers: Mapping[str, str] | None) -> ApiFailure:
    """The kind of an HTTP error response of the API server (pure)."""
    message = _server_message(body) or f"HTTP {status}"
    retry_after = _retry_after(headers)
    if status == 409:
        return ApiFailure(FailureKind.CONFLICT, message, status, retry_after)
    if status == 404:
        return ApiFailure(FailureKind.NOT_FOUND, message, status)
    if status in (401, 403):
        if "exceeded quota" in message.lower():
            return ApiFailure(FailureKind.QUOTA_EXCEEDED, message, status)
        # A webhook's denial comes back as 403 too, but it is no missing permission (RBAC).
        if message.startswith("admission webhook") and "denied the request" in message:
            return ApiFailure(FailureKind.WEBHOOK_DENIED, message, status)
        return ApiFailure(FailureKind.FORBIDDEN, message, status)
    if status in (400, 405, 413, 415, 422):
        return ApiFailure(FailureKind.REJECTED, message, status)
    return ApiFailure(FailureKind.TRANSIENT, message, status, retry_after)  # 408, 429, 5xx, others


def api_failure(error: BaseException) -> ApiFailure:
    """The kind of any exception a request (or the step around it) raised."""
    if isinstance(error, ApiException):
        if not error.status:  # the client's own wrapper of a connection failure
            return ApiFailure(FailureKind.TRANSIENT, str(error.reason or error)[:MESSAGE_LIMIT])
        return classify_response(int(error.status), error.body, dict(error.headers or {}))
    if isinstance(error, OSError | TimeoutError) or type(error).__module__.startswith("urllib3"):
        return ApiFailure(FailureKind.TRANSIENT, f"{type(error).__name__}: {error}"[:MESSAGE_LIMIT])
    return ApiFailure(FailureKind.INTERNAL, f"{type(error).__name__}: {error}"[:MESSAGE_LIMIT])


def retry_delay(failure: ApiFailure, consecutive: int) -> float:
    """Seconds before the next attempt after the `consecutive`-th failure in a row (1 for the first)."""
    if failure.kind is FailureKind.CONFLICT:
        return 0.2  # another writer got there first: read again and go on
    if failure.permanent:
        return PERMANENT_RETRY_S
    backoff = BACKOFF_S[min(max(consecutive, 1), len(BACKOFF_S)) - 1]
    return max(backoff, failure.retry_after or 0.0)


def _server_message(body: str | bytes | None) -> str:
    if not body:
        return ""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    try:
        payload = json.loads(text)
    except ValueError:
        return text.strip()[:MESSAGE_LIMIT]
    message = payload.get("message") if isinstance(payload, dict) else None
    return str(message or text)[:MESSAGE_LIMIT]


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def blocked_by(failure: ApiFailure) -> Blocked:
    """What the search's status says about a failure that keeps it from going on."""
    if failure.kind is FailureKind.REJECTED:
        return Blocked(
            failure.kind.value,
            f"the API server refused a request for this search ({failure.status}): {failure.message}; "
            "fix the spec (for example spec.execution) and the search goes on",
            fatal=True,
        )
    if failure.kind is FailureKind.FORBIDDEN:
        return Blocked(
            failure.kind.value,
            f"the operator is not allowed to act for this search: {failure.message}; "
            "grant it (the chart's RBAC) and the search goes on",
        )
    if failure.kind is FailureKind.WEBHOOK_DENIED:
        return Blocked(
            failure.kind.value,
            f"an admission webhook of the cluster refused the search's objects: {failure.message}; "
            "fix the spec (or the webhook's policy) and the search goes on",
        )
    if failure.kind is FailureKind.QUOTA_EXCEEDED:
        return Blocked(failure.kind.value, f"waiting for quota: {failure.message}")
    return Blocked(failure.kind.value, f"retrying after an error: {failure.message}")
