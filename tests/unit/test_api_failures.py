"""How failures of API requests are classified, retried and shown: pure functions on plain values."""

from __future__ import annotations

import json

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from sustaindiffusion.kube.api import (
    ApiFailure,
    FailureKind,
    TimeoutApiClient,
    api_failure,
    blocked_by,
    classify_response,
    retry_delay,
)


def status_body(message: str, code: int) -> str:
    return json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": code})


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (409, "Operation cannot be fulfilled: the object has been modified", FailureKind.CONFLICT),
        (429, "Too many requests", FailureKind.TRANSIENT),
        (500, "Internal error", FailureKind.TRANSIENT),
        (503, "etcdserver: leader changed", FailureKind.TRANSIENT),
        (504, "Timeout", FailureKind.TRANSIENT),
        (408, "request timeout", FailureKind.TRANSIENT),
        (404, 'jobs.batch "s-g0001" not found', FailureKind.NOT_FOUND),
        (
            403,
            'jobs.batch is forbidden: User "system:serviceaccount:x:y" cannot create',
            FailureKind.FORBIDDEN,
        ),
        (
            403,
            'jobs.batch "s-g0001" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=1',
            FailureKind.QUOTA_EXCEEDED,
        ),
        (401, "Unauthorized", FailureKind.FORBIDDEN),
        (
            403,
            'admission webhook "vjob.kb.io" denied the request: metadata.annotations[kueue.x-k8s.io/x]: '
            "Invalid value",
            FailureKind.WEBHOOK_DENIED,
        ),
        (
            422,
            'Job.batch "s-g0001" is invalid: spec.template.spec.affinity: Invalid value',
            FailureKind.REJECTED,
        ),
        (400, "the server rejected our request", FailureKind.REJECTED),
    ],
)
def test_responses_are_classified_with_the_servers_message(
    status: int, message: str, kind: FailureKind
) -> None:
    failure = classify_response(status, status_body(message, status), {})
    assert (failure.kind, failure.status, failure.message) == (kind, status, message)
    assert failure.permanent is (
        kind
        in (
            FailureKind.FORBIDDEN,
            FailureKind.WEBHOOK_DENIED,
            FailureKind.QUOTA_EXCEEDED,
            FailureKind.REJECTED,
        )
    )


def test_a_body_that_is_not_a_status_is_kept_as_text() -> None:
    assert classify_response(502, "<html>Bad gateway</html>", None).message == "<html>Bad gateway</html>"
    assert classify_response(502, None, None).message == "HTTP 502"


def test_retry_after_is_honoured() -> None:
    failure = classify_response(429, status_body("slow down", 429), {"Retry-After": "7"})
    assert failure.retry_after == 7.0
    assert retry_delay(failure, 1) == 7.0
    assert retry_delay(failure, 5) == 30.0  # the backoff, when longer


def test_backoff_grows_for_transient_failures_and_conflicts_retry_at_once() -> None:
    transient = ApiFailure(FailureKind.TRANSIENT, "x")
    assert [retry_delay(transient, n) for n in (1, 2, 3, 4, 5, 9)] == [1.0, 2.0, 5.0, 10.0, 30.0, 30.0]
    assert retry_delay(ApiFailure(FailureKind.CONFLICT, "x"), 4) < 1
    assert retry_delay(ApiFailure(FailureKind.QUOTA_EXCEEDED, "x"), 1) == 30.0


def test_exceptions_are_classified() -> None:
    error = ApiException(status=422, reason="Unprocessable Entity")
    error.body = status_body("Job.batch is invalid", 422)
    assert api_failure(error).kind is FailureKind.REJECTED
    assert api_failure(ApiException(status=0, reason="connection refused")).kind is FailureKind.TRANSIENT
    timeout = urllib3.exceptions.ReadTimeoutError(None, "/api", "read timed out")
    assert api_failure(timeout).kind is FailureKind.TRANSIENT
    assert api_failure(ConnectionResetError("reset by peer")).kind is FailureKind.TRANSIENT
    assert api_failure(TimeoutError()).kind is FailureKind.TRANSIENT
    bug = api_failure(KeyError("status"))
    assert (bug.kind, bug.message) == (FailureKind.INTERNAL, "KeyError: 'status'")


def test_what_the_status_says_about_each_failure() -> None:
    rejected = blocked_by(ApiFailure(FailureKind.REJECTED, "Job.batch is invalid: affinity", 422))
    assert (rejected.reason, rejected.fatal) == ("RequestRejected", True)
    assert "Job.batch is invalid: affinity" in rejected.message
    assert "fix the spec" in rejected.message
    forbidden = blocked_by(ApiFailure(FailureKind.FORBIDDEN, "cannot create jobs", 403))
    assert (forbidden.reason, forbidden.fatal) == ("Forbidden", False)
    assert "RBAC" in forbidden.message
    quota = blocked_by(ApiFailure(FailureKind.QUOTA_EXCEEDED, "exceeded quota: gpu", 403))
    assert (quota.reason, quota.fatal) == ("QuotaExceeded", False)
    assert blocked_by(ApiFailure(FailureKind.TRANSIENT, "Service Unavailable", 503)).reason == "Transient"


def test_every_request_gets_a_timeout_unless_it_sets_one() -> None:
    seen: list[object] = []
    api = TimeoutApiClient(timeout=(1.5, 7.0))

    def request(method: str, url: str, **kwargs: object) -> None:
        seen.append(kwargs["_request_timeout"])

    api.rest_client.request = request  # type: ignore[method-assign,assignment]
    api.call_api("GET", "https://127.0.0.1:1/api")
    api.call_api("GET", "https://127.0.0.1:1/api", _request_timeout=3)
    assert seen == [(1.5, 7.0), 3]
