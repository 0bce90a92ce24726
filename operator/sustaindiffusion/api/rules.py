"""Cross-field rules, stated once and enforced twice: as CEL in the CRD (the API server) and as a
Python check in the pydantic models (local mode), with the same message in both places.

A rule sits on the smallest object it constrains, so both the API server and local validation
report it at that object's path (for example `spec.searchSpace.inferenceSteps`). A rule whose
message names what is at fault (a prompt, a resource) gives it twice as well: `message_expression`
(CEL) and `describe` (Python) build the same text, and `message` is the fixed part both contain.

A rule marked `admission` is checked where a spec is written (the API server, `sustaindiffusion
validate` and `run`) but not against a spec read back from storage (`STORED`): a search admitted
before the rule existed keeps running on its stored spec instead of failing halfway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

RULE_ERROR_TYPE = "rule"  # the pydantic error type of a failed Rule: its message is the whole text
STORED = {"stored": True}  # validation context of a spec read back from storage: admission rules skipped


def is_stored(info: ValidationInfo | None) -> bool:
    return bool(info is not None and isinstance(info.context, dict) and info.context.get("stored"))


@dataclass(frozen=True)
class Rule:
    """One validation rule: `cel` for the API server, `check` for local mode, one `message`.

    `check` returns True when the object is valid. A transition rule (one that reads `oldSelf`)
    has no local check: local mode never sees the previous object.
    """

    cel: str
    message: str
    check: Callable[[Any], bool] | None = None
    field_path: str | None = None
    message_expression: str | None = None  # CEL building the message that names what is at fault
    describe: Callable[[Any], str] | None = None  # the same message, in Python
    admission: bool = False  # not checked against a stored spec (see the module's docstring)

    def failure(self, value: Any, info: ValidationInfo | None = None) -> str | None:
        """The message if `value` breaks the rule, else None."""
        if self.check is None or (self.admission and is_stored(info)) or self.check(value):
            return None
        return self.describe(value) if self.describe is not None else self.message

    def validate(self, value: Any, info: ValidationInfo) -> Any:
        """Use as a pydantic AfterValidator on a single value."""
        message = self.failure(value, info)
        if message is not None:
            raise PydanticCustomError(RULE_ERROR_TYPE, "{message}", {"message": message, "field_path": ""})
        return value

    def as_validation(self) -> dict[str, str]:
        validation = {"rule": self.cel, "message": self.message}
        if self.message_expression:
            validation["messageExpression"] = self.message_expression
        if self.field_path:
            validation["fieldPath"] = self.field_path
        return validation


def immutable(what: str) -> Rule:
    return Rule(
        cel="self == oldSelf",
        message=f"{what} is immutable: changing it would corrupt a running search; "
        "create a new SustainSearch instead",
    )


def _add_rules_to_schema(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.as_validation() for rule in rules]


class ApiModel(BaseModel):
    """Base of every SustainSearch model: camelCase names, unknown fields refused, rules applied."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_add_rules_to_schema,
        validate_default=False,
        allow_inf_nan=False,  # JSON has no Infinity or NaN; a value that is one is refused, not passed on
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _apply_rules(self, info: ValidationInfo) -> Self:
        for rule in self.rules:
            message = rule.failure(self, info)
            if message is not None:
                # The context carries the rule's own field path (relative to this object).
                context = {"message": message, "field_path": rule.field_path or ""}
                raise PydanticCustomError(RULE_ERROR_TYPE, "{message}", context)
        return self
