"""Generate the SustainSearch CustomResourceDefinition from the pydantic models.

    python -m sustaindiffusion.api.crd            # print the CRD as YAML
    python -m sustaindiffusion.api.crd --write    # rewrite crds/sustainsearch.yaml
    python -m sustaindiffusion.api.crd --check    # fail if the committed file differs

The pydantic JSON schema is turned into a Kubernetes structural schema: references inlined,
`Optional` unwrapped, JSON-Schema-2020 exclusive bounds rewritten to OpenAPI v3 form, defaults
(also those of default factories) written out so the API server defaults exactly as pydantic does,
and each model's rules emitted as `x-kubernetes-validations`.

The spec's enumerations are rules too (`self in [...]`), not the schema's `enum`: the API server
skips every CEL rule of an object that breaks an `enum`, and says so in a line of its own ("<nil>:
Invalid value: null: some validation rules were not checked ..."); as a rule, an unknown value is
refused in the same words as before ('Unsupported value: "Beauty": supported values: ...', as
local validation says it) and the object's other rules still run.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from sustaindiffusion.api.resource import GROUP, KIND, LIST_KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from sustaindiffusion.api.spec import IMMUTABLE_ALGORITHM_FIELDS, IMMUTABLE_SPEC_FIELDS, SustainSearchSpec
from sustaindiffusion.api.status import SustainSearchStatus

Schema = dict[str, Any]

REPO = Path(__file__).resolve().parents[3]
CRD_PATH = REPO / "crds" / "sustainsearch.yaml"
# Helm installs CRDs from the chart's own crds/ folder: the same generated file, written twice.
CHART_CRD_PATH = REPO / "charts" / "sustaindiffusion" / "crds" / "sustainsearch.yaml"


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    """Inline `$ref`s, unwrap nullable `anyOf`s and rewrite keywords for a structural schema."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        validations = target.get("x-kubernetes-validations", []) + node.pop("x-kubernetes-validations", [])
        target.update(node)  # the field's own description and default win over the model's
        if validations:
            target["x-kubernetes-validations"] = validations
        return _resolve(target, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {branches}")
        branch = _resolve(branches[0], defs)
        branch.update({k: v for k, v in node.items() if k != "default" or v is not None})
        return _resolve(branch, defs)
    result: Schema = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key == "additionalProperties" and value is False:
            continue  # unknown fields are pruned by the server, and refused under strict field validation
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            result["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            result[key] = True
            continue
        if key == "const":
            result["enum"] = [value]
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            result[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties"):
            result[key] = _resolve(value, defs)
        else:
            result[key] = value
    if result.get("x-kubernetes-preserve-unknown-fields") and result.get("additionalProperties") is True:
        # `additionalProperties: true` gives every value an empty schema, under which the API
        # server prunes nested fields (an affinity kept only its top-level keys): the object
        # itself preserves what it holds.
        del result["additionalProperties"]
    return result


def enum_rule(values: list[str]) -> Schema:
    """An enumeration as a CEL rule, worded as the API server words an `enum` refusal."""
    quoted = ", ".join(f'"{value}"' for value in values)
    return {
        "rule": f"self in {json.dumps(values)}",
        "messageExpression": f"'Unsupported value: \"' + self + '\": supported values: {quoted}'",
    }


def enums_as_rules(node: Any) -> Any:
    """Every string `enum` under `node` as a rule (see the module's docstring)."""
    if isinstance(node, list):
        return [enums_as_rules(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: enums_as_rules(value) for key, value in node.items()}
    values = result.get("enum")
    if (
        result.get("type") == "string"
        and isinstance(values, list)
        and all(isinstance(v, str) for v in values)
    ):
        del result["enum"]
        description = result.get("description", "").rstrip()
        result["description"] = f"{description} One of: {', '.join(values)}.".lstrip()
        result["x-kubernetes-validations"] = [enum_rule(values), *result.get("x-kubernetes-validations", [])]
    return result


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    """The BaseModel classes inside an annotation (through Optional, Annotated, list and dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list):
        return [m for arg in typing.get_args(annotation) for m in _model_types(arg)]
    return []


def _json_default(info: FieldInfo) -> Any:
    if info.is_required():
        return None
    value = info.get_default(call_default_factory=True)
    if value is None or info.annotation is None:
        return None
    return TypeAdapter(info.annotation).dump_python(value, mode="json", by_alias=True, exclude_none=True)


def _inject_defaults(model: type[BaseModel], schema: Schema) -> None:
    """Write every field default (factories included) so the API server defaults as pydantic does."""
    for name, info in model.model_fields.items():
        prop = schema["properties"][info.alias or name]
        default = _json_default(info)
        if default is None:
            prop.pop("default", None)
        else:
            prop["default"] = default
        for sub_model in _model_types(info.annotation):
            target = prop["items"] if prop.get("type") == "array" else prop
            _inject_defaults(sub_model, target)


def structural_schema(model: type[BaseModel]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: Schema = _resolve(raw, defs)
    _inject_defaults(model, schema)
    return schema


def _printer_columns() -> list[Schema]:
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Generation", "type": "string", "jsonPath": ".status.generationProgress"},
        {"name": "Evaluations", "type": "integer", "jsonPath": ".status.evaluations.succeeded"},
        {"name": "Front", "type": "integer", "jsonPath": ".status.frontSize"},
        {"name": "Queue", "type": "string", "jsonPath": ".spec.execution.queueName"},
        {"name": "Queued", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Queued")].reason'},
        {"name": "Energy-J", "type": "number", "format": "float", "jsonPath": ".status.energy.totalJoules"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def build_crd() -> Schema:
    spec = enums_as_rules(structural_schema(SustainSearchSpec))
    for field, rule in IMMUTABLE_SPEC_FIELDS.items():
        spec["properties"][field].setdefault("x-kubernetes-validations", []).append(rule.as_validation())
    algorithm = spec["properties"]["algorithm"]["properties"]
    for field, rule in IMMUTABLE_ALGORITHM_FIELDS.items():
        algorithm[field].setdefault("x-kubernetes-validations", []).append(rule.as_validation())
    status = structural_schema(SustainSearchStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": LIST_KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["sustaindiffusion"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": SustainSearchSpec.__doc__,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "API version."},
                                "kind": {"type": "string", "description": "Kind."},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated from the pydantic models by `make crds` (python -m sustaindiffusion.api.crd --write).\n"


def render_crd() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"rewrite {CRD_PATH} and the chart's copy")
    mode.add_argument("--check", action="store_true", help="exit 1 if the committed CRD is out of date")
    args = parser.parse_args(argv)
    text = render_crd()
    if args.write:
        for path in (CRD_PATH, CHART_CRD_PATH):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    elif args.check:
        stale = [path for path in (CRD_PATH, CHART_CRD_PATH) if not path.exists() or path.read_text() != text]
        if stale:
            print(f"{', '.join(map(str, stale))} out of date: run `make crds`", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
