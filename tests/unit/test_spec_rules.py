"""The rules written twice, in Python and in CEL: held-out prompts against search prompts, and
resources as Kubernetes quantities. The CEL side runs on the real API server
(tests/e2e/test_api_server.py); here, what only Python can be asked."""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from sustaindiffusion.api.prompts_overlap import (
    COLLAPSED_RUN,
    PROMPT_MAX_LENGTH,
    collapse_runs,
    first_overlap,
    normal_form,
)
from sustaindiffusion.api.quantities import MAX_UNITS, is_container_resource, is_extended, parse_quantity
from sustaindiffusion.api.rules import STORED
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.validation import ManifestError, validate_spec
from tests.support.spec_cases import BASE_SPEC, INVALID_CASES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROMPT_FILES = sorted((EXAMPLES / "prompts").glob("*.txt"))


def read_prompts(path: Path) -> list[str]:
    """One prompt per line, blank lines skipped: as the operator reads a ConfigMap's key."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        (
            "Photo portrait of a Software Engineer that codes",
            "photo portrait of a software engineer that codes.",
            True,
        ),
        ("A cat", "  a\tCAT ?! ", True),
        ("A cat", "a  cat\n\n", True),
        ("A cat", "A cats", False),
        ("A cat.", "A. cat", False),  # only final punctuation goes
        ("Été", "été", False),  # ASCII letters only, as CEL's lowerAscii
        ("...", "!", True),  # nothing but punctuation: the same empty form
    ],
)
def test_prompts_compare_without_case_whitespace_runs_and_final_punctuation(
    first: str, second: str, same: bool
) -> None:
    assert (normal_form(first) == normal_form(second)) is same


def test_the_cel_chain_of_replacements_collapses_every_run_an_inline_prompt_can_hold() -> None:
    """CEL has no regex replace: its fixed chain must give what `normal_form`'s regex gives."""
    assert PROMPT_MAX_LENGTH + 1 <= COLLAPSED_RUN  # the leading space, then the prompt
    for run in range(1, COLLAPSED_RUN + 1):
        assert collapse_runs("a" + " " * run + "b") == "a b", run


def test_the_first_held_out_prompt_at_fault_is_named() -> None:
    assert first_overlap(["a dog", "A cat"], ["a bird", "a CAT.", "a dog"]) == "a CAT."
    assert first_overlap(["a dog"], ["a bird"]) is None


def test_the_methods_56_prompts_hold_its_search_prompt() -> None:
    """Why the rule exists: the method's held-out file has the search prompt with a final period."""
    search = read_prompts(EXAMPLES / "prompts" / "search.txt")
    methods = [*read_prompts(EXAMPLES / "prompts" / "held-out.txt"), f"{search[0]}."]
    assert first_overlap(search, methods) == f"{search[0]}."


def test_every_shipped_prompt_file_pair_is_disjoint() -> None:
    assert len(PROMPT_FILES) >= 2
    for first, second in itertools.combinations(PROMPT_FILES, 2):
        assert first_overlap(read_prompts(first), read_prompts(second)) is None, (first.name, second.name)
        assert all(len(p) <= PROMPT_MAX_LENGTH for p in read_prompts(first) + read_prompts(second))


def test_every_example_holds_out_prompts_it_does_not_search() -> None:
    for path in sorted(EXAMPLES.glob("**/*.yaml")):
        spec = yaml.safe_load(path.read_text()).get("spec") or {}
        held_out = ((spec.get("validation") or {}).get("prompts") or {}).get("inline") or []
        assert first_overlap(spec["prompts"].get("inline") or [], held_out) is None, path


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        (2, Decimal(2)),
        ("1Ki", Decimal(1024)),
        ("0.5Ki", Decimal(512)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("500m", Decimal("0.5")),
        ("1e3", Decimal(1000)),
        ("1E-3", Decimal("0.001")),
        ("+1", Decimal(1)),
        ("5.", Decimal(5)),
        (".5", Decimal("0.5")),
        ("9Ei", Decimal(2**63 - 1)),  # capped, as Kubernetes caps it
        ("1e-20", Decimal("1e-9")),  # rounded up to a nano-unit, as Kubernetes rounds it
        ("-1e-20", Decimal("-1e-9")),
        ("0.9999999999", Decimal(1)),
    ],
)
def test_quantities_parse_as_kubernetes_stores_them(text: int | str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text", ["16GB", "1ki", "1e", "1e100", "1e-9999999999", "lots", "1 Gi", "--1", "0x10"]
)
def test_what_is_not_a_quantity_here(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("name", "container", "extended"),
    [
        ("cpu", True, False),
        ("hugepages-2Mi", True, False),
        ("hugepages-1.5Mi", False, False),
        ("nvidia.com/gpu", True, True),
        ("example.com/Foo_bar", True, True),
        ("kubernetes.io/widgets", True, False),  # native, prefixed
        ("requests.nvidia.com/gpu", False, False),
        ("gpu", False, False),
        ("CPU", False, False),
        ("a/b/c", False, False),
        ("/gpu", False, False),
    ],
)
def test_resource_names_as_kubernetes_classifies_them(name: str, container: bool, extended: bool) -> None:
    assert is_container_resource(name) is container
    assert is_extended(name) is extended


def test_the_largest_quantity_is_exact_as_a_double() -> None:
    assert float(MAX_UNITS) == MAX_UNITS
    assert float(MAX_UNITS + 1) == MAX_UNITS  # the first integer a double cannot hold


ADMISSION_CASES = [
    case
    for case in INVALID_CASES
    if case.path.startswith(("spec.execution.resources", "spec.validation.prompts", "spec.prompts.inline"))
    and not any(word in case.message for word in ("quantity", "exponent"))  # syntax: always
]


@pytest.mark.parametrize("case", ADMISSION_CASES, ids=[c.name for c in ADMISSION_CASES])
def test_a_stored_spec_that_a_new_rule_refuses_still_reads(case: object) -> None:
    """A search admitted before a rule existed is read back (by the operator, `report`) as stored:
    it keeps running instead of failing halfway. Where a spec is written, the rule holds."""
    spec = case.spec()  # type: ignore[attr-defined]
    with pytest.raises(ManifestError):
        validate_spec(spec)
    assert SustainSearchSpec.model_validate(spec, context=STORED).prompts is not None


def test_a_spec_without_held_out_prompts_is_not_compared() -> None:
    assert validate_spec(BASE_SPEC).validation is None
