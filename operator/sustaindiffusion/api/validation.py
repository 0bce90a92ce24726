"""Validate a SustainSearch manifest locally, with the API server's rules and field paths.

Errors read like the API server's: one line per problem, `spec.<path>: <message>`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from sustaindiffusion.api.resource import API_VERSION, KIND
from sustaindiffusion.api.rules import RULE_ERROR_TYPE
from sustaindiffusion.api.spec import DNS_SUBDOMAIN, SustainSearchSpec


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ManifestError(ValueError):
    """A manifest that is not a valid SustainSearch; `errors` names every field at fault."""

    def __init__(self, source: str, errors: list[FieldError]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {error}" for error in errors)
        super().__init__(f"{source} is not a valid {KIND}:\n{lines}")


@dataclass(frozen=True)
class SustainSearchManifest:
    name: str
    namespace: str | None
    spec: SustainSearchSpec


def _path(loc: tuple[int | str, ...], prefix: str) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


_TYPE_NAMES = {
    "int": "integer",
    "float": "number",
    "string": "string",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
    "model": "object",
}


def _message(details: ErrorDetails) -> str:
    """The API server's wording for a pydantic error, so both paths say the same thing."""
    kind = details["type"]
    ctx: dict[str, Any] = dict(details.get("ctx") or {})
    simple = {
        "missing": "Required value",
        "extra_forbidden": "unknown field",
        "greater_than_equal": "should be greater than or equal to {ge}",
        "less_than_equal": "should be less than or equal to {le}",
        "greater_than": "should be greater than {gt}",
        "less_than": "should be less than {lt}",
        "string_too_short": "should be at least {min_length} chars long",
        "string_too_long": "Too long: may not be more than {max_length} bytes",
        "too_short": "should have at least {min_length} items",
        "too_long": "Too many: {actual_length}: must have at most {max_length} items",
        "string_pattern_mismatch": "should match '{pattern}'",
    }
    if kind in ("enum", "literal_error"):
        # As the CRD's enumeration rules word it (api/crd.py `enum_rule`).
        expected = str(ctx.get("expected", "")).replace("'", '"').replace(" or ", ", ")
        value = details.get("input")
        shown = f'"{value}"' if isinstance(value, str) else json.dumps(value)
        return f"Unsupported value: {shown}: supported values: {expected}"
    if kind == RULE_ERROR_TYPE:
        return str(ctx.get("message", details["msg"]))
    if kind in simple:
        return simple[kind].format(input=details.get("input"), **ctx)
    prefix = kind.split("_", 1)[0]
    if prefix in _TYPE_NAMES and kind.endswith(("_type", "_parsing", "_from_float")):
        return f"must be of type {_TYPE_NAMES[prefix]}"
    return details["msg"]


def field_errors(error: ValidationError, prefix: str = "spec") -> list[FieldError]:
    """Turn pydantic errors into API-server-style field errors: `spec.<path>: <message>`."""
    result = []
    for details in error.errors(include_url=False):
        path = _path(tuple(details["loc"]), prefix)
        if details["type"] == RULE_ERROR_TYPE:
            path += str((details.get("ctx") or {}).get("field_path", ""))
        result.append(FieldError(path, _message(details)))
    return result


def validate_spec(spec: Any, source: str = "spec") -> SustainSearchSpec:
    try:
        return SustainSearchSpec.model_validate(spec)
    except ValidationError as error:
        raise ManifestError(source, field_errors(error)) from None


def validate_manifest(manifest: Any, source: str = "manifest") -> SustainSearchManifest:
    """Check a whole SustainSearch object (apiVersion, kind, metadata.name, spec)."""
    if not isinstance(manifest, dict):
        raise ManifestError(
            source, [FieldError("<root>", "expected a YAML mapping (a SustainSearch object)")]
        )
    problems = []
    if manifest.get("apiVersion") != API_VERSION:
        problems.append(
            FieldError("apiVersion", f"must be {API_VERSION}, got {manifest.get('apiVersion')!r}")
        )
    if manifest.get("kind") != KIND:
        problems.append(FieldError("kind", f"must be {KIND}, got {manifest.get('kind')!r}"))
    metadata = manifest.get("metadata") or {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        problems.append(FieldError("metadata.name", "Required value: name is required"))
    elif len(name) > 253 or not re.match(DNS_SUBDOMAIN, name):
        problems.append(
            FieldError("metadata.name", "must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-', '.')")
        )
    if "spec" not in manifest:
        problems.append(FieldError("spec", "Required value"))
        raise ManifestError(source, problems)
    try:
        spec = SustainSearchSpec.model_validate(manifest["spec"])
    except ValidationError as error:
        problems.extend(field_errors(error))
        spec = None
    if problems or spec is None:
        raise ManifestError(source, problems)
    return SustainSearchManifest(name=str(name), namespace=metadata.get("namespace"), spec=spec)


def load_manifest(path: Path) -> SustainSearchManifest:
    """Read and validate a SustainSearch YAML file; errors name the file and every bad field."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as error:
        raise ManifestError(str(path), [FieldError("<file>", f"cannot read: {error.strerror}")]) from None
    except yaml.YAMLError as error:
        raise ManifestError(str(path), [FieldError("<file>", f"invalid YAML: {error}")]) from None
    if len(documents) != 1:
        raise ManifestError(
            str(path), [FieldError("<file>", f"expected one document, found {len(documents)}")]
        )
    return validate_manifest(documents[0], source=str(path))
