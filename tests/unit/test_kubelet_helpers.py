"""Unit tests for the test kubelet's pure parts: `$(VAR)` expansion, downward-API field paths,
container-to-host path mapping and the termination-message rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.kubelet import (
    TERMINATION_MESSAGE_LIMIT,
    PathMapper,
    expand_references,
    field_path_value,
    termination_message,
)


def test_expand_references_follows_kubernetes_rules() -> None:
    variables = {"A": "1", "B_C": "two"}
    assert expand_references("$(A)-$(B_C)", variables) == "1-two"
    assert expand_references("$(MISSING)", variables) == "$(MISSING)"
    assert expand_references("$$(A)", variables) == "$(A)"


def test_field_path_values() -> None:
    pod = {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u",
            "labels": {"app": "x"},
            "annotations": {"batch.kubernetes.io/job-completion-index": "2"},
        },
        "spec": {"nodeName": "n", "serviceAccountName": "default"},
        "status": {},
    }
    assert field_path_value(pod, "metadata.name") == "p"
    assert field_path_value(pod, "metadata.namespace") == "ns"
    assert field_path_value(pod, "spec.nodeName") == "n"
    assert field_path_value(pod, "status.podIP") == "127.0.0.1"
    assert field_path_value(pod, "metadata.labels['app']") == "x"
    assert field_path_value(pod, "metadata.annotations['batch.kubernetes.io/job-completion-index']") == "2"
    with pytest.raises(ValueError, match="unsupported"):
        field_path_value(pod, "spec.containers")


def test_path_mapper_rewrites_only_whole_path_prefixes(tmp_path: Path) -> None:
    mapper = PathMapper(tmp_path / "rootfs")
    mapper.add("/etc/task")
    mapper.add("/etc/task/nested")
    mapper.add("/dev/termination-log")
    assert mapper.rewrite("/etc/task") == str(tmp_path / "rootfs/etc/task")
    assert mapper.rewrite("/etc/task/a.json") == str(tmp_path / "rootfs/etc/task/a.json")
    assert mapper.rewrite("/etc/task/nested/b") == str(tmp_path / "rootfs/etc/task/nested/b")
    assert mapper.rewrite("/etc/taskforce") == "/etc/taskforce"
    assert mapper.rewrite("--flag=/etc/task") == "--flag=/etc/task"
    assert mapper.rewrite("/dev/termination-log") == str(tmp_path / "rootfs/dev/termination-log")


def test_termination_message_file_wins_and_is_truncated(tmp_path: Path) -> None:
    message, log = tmp_path / "msg", tmp_path / "log"
    message.write_bytes(b"x" * (TERMINATION_MESSAGE_LIMIT + 100))
    log.write_text("log line\n")
    assert len(termination_message(message, log, "FallbackToLogsOnError", 1)) == TERMINATION_MESSAGE_LIMIT


def test_termination_message_falls_back_to_logs_only_on_error(tmp_path: Path) -> None:
    message, log = tmp_path / "msg", tmp_path / "log"
    message.write_bytes(b"")
    log.write_text("\n".join(f"line {i}" for i in range(200)))
    fallback = termination_message(message, log, "FallbackToLogsOnError", 2)
    assert fallback.endswith("line 199")
    assert "line 100" not in fallback  # only the tail
    assert termination_message(message, log, "FallbackToLogsOnError", 0) == ""
    assert termination_message(message, log, "File", 2) == ""
