"""Pods and Jobs for the harness's own tests: a Python command, and the restrictions the test
namespaces' `restricted` Pod Security Standard asks of every pod."""

from __future__ import annotations

import sys
from typing import Any


def python_command(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def restricted(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """`pod_spec` with what the namespaces' `restricted` Pod Security Standard asks of every pod."""
    pod_spec["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for container in pod_spec["containers"]:
        container["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return pod_spec


def restricted_job(job: dict[str, Any]) -> dict[str, Any]:
    restricted(job["spec"]["template"]["spec"])
    return job
