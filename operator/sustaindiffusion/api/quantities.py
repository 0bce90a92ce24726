"""Worker container resources as Kubernetes judges them: each request and limit parsed as a quantity
and checked as the API server checks a container (`ValidateResourceRequirements` of
k8s.io/kubernetes/pkg/apis/core/validation), once for `sustaindiffusion validate` (Python) and once
for the API server (CEL, with Kubernetes' own `quantity` library), with the same messages.

What a Pod's container may not have, and so neither may `spec.execution.resources`:
- a resource name that is neither standard for containers (cpu, memory, ephemeral-storage,
  hugepages-<page size>) nor a qualified extended name (nvidia.com/gpu) nor one under kubernetes.io/;
- a negative quantity;
- a fraction of an extended resource (0.5 nvidia.com/gpu): they count whole devices;
- huge pages that are not a whole number of pages, or a page size that is not a positive whole
  number of bytes (here it must also be written as digits and a suffix, as 2Mi or 1Gi are);
- a request above its limit; for extended resources and huge pages (never overcommitted) a request
  other than its limit, or a request without a limit;
- huge pages without a cpu or memory request or limit beside them.
And what Kubernetes accepts but no container can use, refused here too:
- a fraction of a byte (memory `100m` is a tenth of a byte, a typo for 100Mi);
- more than 2^53 units: no node offers them, Kubernetes caps values above 2^63-1 silently, and
  beyond 2^53 a quantity is no longer exact as a JSON number or a CEL double (the CEL rules below
  tell whole quantities from fractions through a double: exact up to 2^53);
- an exponent of three or more digits: `1e-9999999999` is a quantity, but parsing a ten-digit
  exponent keeps the API server busy for minutes (seen on v1.35.4: `1e9999999999` in a Pod's
  limits, `1e-9999999999` through `isQuantity` in this CRD's rule), so the quantity syntax here
  allows at most two exponent digits and every CEL rule matches it before it parses anything.
Zero is allowed everywhere Kubernetes allows it (checked on a v1.35.4 API server with bare Pods).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import ROUND_UP, Decimal, InvalidOperation, localcontext
from typing import Any

from sustaindiffusion.api.rules import Rule

# Kubernetes' quantity grammar (resource.ParseQuantity), with the exponent bounded to two digits.
QUANTITY_SYNTAX = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]{1,2}))?$"
MAX_UNITS = 2**53  # doubles are exact integers up to here
STANDARD = ("cpu", "memory", "ephemeral-storage")
HUGEPAGES = "hugepages-"
BYTES = ("memory", "ephemeral-storage")  # and every hugepages-<size>

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("", 0), ("k", 3), ("M", 6))},
    **{s: Decimal(10) ** e for s, e in (("G", 9), ("T", 12), ("P", 15), ("E", 18))},
}
_NANO = Decimal("1e-9")
_SYNTAX = re.compile(QUANTITY_SYNTAX)
PAGE_SIZE_SYNTAX = r"^[0-9]*[1-9][0-9]*([KMGTPE]i|[kMGTPE])?$"
_PAGE_SIZE = re.compile(PAGE_SIZE_SYNTAX)


# ----------------------------------------------------------------------------- Python


def is_quantity(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, str) and _SYNTAX.match(value) is not None)


def parse_quantity(value: int | str) -> Decimal:
    """The value Kubernetes stores: rounded up to a nano-unit away from zero, capped at 2^63-1."""
    with localcontext(prec=300):  # exact: 64 characters, two exponent digits and a binary suffix fit
        return _parse(value)


def _parse(value: int | str) -> Decimal:
    if isinstance(value, int):
        amount = Decimal(value)
    else:
        match = _SYNTAX.match(value)
        if match is None:
            raise ValueError(f"not a Kubernetes quantity: {value!r}")
        suffix = match.group(3) or ""
        number = value[: len(value) - len(suffix)]
        try:
            amount = Decimal(number)
        except InvalidOperation:
            raise ValueError(f"not a Kubernetes quantity: {value!r}") from None
        amount *= _SUFFIXES[suffix] if suffix in _SUFFIXES else Decimal(10) ** int(suffix[1:])
    amount = amount.quantize(_NANO, rounding=ROUND_UP)  # away from zero: a little is never none
    limit = Decimal(2**63 - 1)
    return max(min(amount, limit), -limit)


def is_qualified_name(name: str) -> bool:
    """Kubernetes' IsQualifiedName: [DNS subdomain prefix '/'] name of at most 63 characters."""
    parts = name.split("/")
    if len(parts) > 2:
        return False
    if len(parts) == 2:
        prefix, name = parts
        if not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix):
            return False
    return 0 < len(name) <= 63 and _NAME_PART.match(name) is not None


def is_hugepages(name: str) -> bool:
    return name.startswith(HUGEPAGES)


def is_native(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def is_extended(name: str) -> bool:
    """Kubernetes' IsExtendedResourceName (nvidia.com/gpu): counted in whole units, never overcommitted."""
    return not is_native(name) and not name.startswith("requests.") and is_qualified_name(f"requests.{name}")


def page_size(name: str) -> Decimal | None:
    """The page size of a hugepages-<size> resource: a positive whole number of bytes, written
    without a fraction or an exponent (2Mi, 1Gi, 64Ki), at most 2^53."""
    size = name[len(HUGEPAGES) :]
    if _PAGE_SIZE.match(size) is None:
        return None
    value = parse_quantity(size)
    return value if value <= MAX_UNITS else None


def is_container_resource(name: str) -> bool:
    if not is_qualified_name(name):
        return False
    if "/" not in name:
        return name in STANDARD or (is_hugepages(name) and page_size(name) is not None)
    return is_native(name) or is_extended(name)


def overcommits(name: str) -> bool:
    """Whether a request may be below its limit (native resources other than huge pages)."""
    return is_native(name) and not is_hugepages(name)


def in_range(value: Any) -> bool:
    return is_quantity(value) and 0 <= parse_quantity(value) <= MAX_UNITS


def _counted(values: Mapping[str, Any] | None) -> dict[str, Decimal]:
    """The entries of a valid name and an in-range quantity (others have their own error)."""
    return {
        name: parse_quantity(value)
        for name, value in (values or {}).items()
        if in_range(value) and is_container_resource(name)
    }


# ----------------------------------------------------------------------------- CEL

_V = "string({v})"  # a map value is an int or a string


def _cel_ok(v: str) -> str:
    """The value is a quantity of the bounded syntax (matched before anything parses it)."""
    text = _V.format(v=v)
    return f"({text}.matches(r'{QUANTITY_SYNTAX}') && isQuantity({text}))"


def _cel_q(v: str) -> str:
    return f"quantity({_V.format(v=v)})"


def _cel_in_range(v: str) -> str:
    q = _cel_q(v)
    return (
        f"({_cel_ok(v)} && {q}.compareTo(quantity('0')) >= 0 && {q}.compareTo(quantity('{MAX_UNITS}')) <= 0)"
    )


def _cel_whole(q: str) -> str:
    """A quantity (at most 2^53) is whole: CEL's isInteger() is false for 1.0, 1000m or 0.5Ki."""
    return f"int({q}.asApproximateFloat())"


def _cel_integral(q: str) -> str:
    return f"({q}.compareTo(quantity('0').add({_cel_whole(q)})) == 0)"


def _cel_qualified(k: str) -> str:
    return f"!format.qualifiedName().validate({k}).hasValue()"


def _cel_page_size(k: str) -> str:
    size = f"{k}.substring({len(HUGEPAGES)})"
    return (
        f"({size}.matches(r'{PAGE_SIZE_SYNTAX}') && quantity({size}).compareTo(quantity('{MAX_UNITS}')) <= 0)"
    )


def _cel_native(k: str) -> str:
    return f"(!{k}.contains('/') || {k}.contains('kubernetes.io/'))"


def _cel_extended(k: str) -> str:
    return (
        f"(!{_cel_native(k)} && !{k}.startsWith('requests.') "
        f"&& !format.qualifiedName().validate('requests.' + {k}).hasValue())"
    )


def _cel_container_resource(k: str) -> str:
    standard = " || ".join(f"{k} == '{name}'" for name in STANDARD)
    return (
        f"({_cel_qualified(k)} && ({k}.contains('/') ? ({_cel_native(k)} || {_cel_extended(k)}) "
        f": ({standard} || ({k}.startsWith('{HUGEPAGES}') && {_cel_page_size(k)}))))"
    )


def _cel_counted(m: str, k: str) -> str:
    """Key `k` of map `m` has a valid name and quantity."""
    return f"({_cel_container_resource(k)} && {_cel_in_range(f'{m}[{k}]')})"


def _cel_overcommits(k: str) -> str:
    return f"({_cel_native(k)} && !{k}.startsWith('{HUGEPAGES}'))"


def _cel_bytes(k: str) -> str:
    return (
        "(" + " || ".join([*(f"{k} == '{name}'" for name in BYTES), f"{k}.startsWith('{HUGEPAGES}')"]) + ")"
    )


# ----------------------------------------------------------------------------- rules


def _first(values: Mapping[str, Any] | None, bad: Callable[[str, Any], bool]) -> tuple[str, Any]:
    """The entry at fault with the first name in sorted order, as CEL picks it (a map's order in
    CEL is not the order written)."""
    return next((name, value) for name, value in sorted((values or {}).items()) if bad(name, value))


def _map_rule(
    field: str,
    cel_bad: str,
    bad: Callable[[str, Any], bool],
    message: str,
    cel_text: str,
    text: Callable[[str, Any], str],
) -> Rule:
    """A rule on every entry of `requests` or `limits`: `cel_bad`/`bad` say an entry is at fault
    (CEL with `k` its key, `self.<field>[k]` its value), `cel_text`/`text` what the message says
    of the first such entry (CEL with @KEY@ and @VALUE@ standing for it), before `message`."""
    first = f"self.{field}.filter(k, {cel_bad}).sort()[0]"
    return Rule(
        cel=f"!has(self.{field}) || !self.{field}.exists(k, {cel_bad})",
        message=message,
        check=lambda r: not any(bad(n, v) for n, v in (getattr(r, field) or {}).items()),
        field_path=f".{field}",
        message_expression=cel_text.replace("@VALUE@", f"string(self.{field}[{first}])").replace(
            "@KEY@", first
        )
        + f" + '{message}'",
        describe=lambda r: text(*_first(getattr(r, field), bad)) + message,
        admission=True,
    )


def _name_rule(field: str) -> Rule:
    return _map_rule(
        field,
        f"!{_cel_container_resource('k')}",
        lambda name, _: not is_container_resource(name),
        " is not a resource a container can request: cpu, memory, ephemeral-storage, "
        "hugepages-<page size> (e.g. hugepages-2Mi) or an extended resource with a domain prefix "
        "(e.g. nvidia.com/gpu)",
        "'\"' + @KEY@ + '\"'",
        lambda name, _: f'"{name}"',
    )


def _integer_rule(field: str) -> Rule:
    m = f"self.{field}"
    return _map_rule(
        field,
        f"{_cel_counted(m, 'k')} && {_cel_extended('k')} && !{_cel_integral(_cel_q(f'{m}[k]'))}",
        lambda name, value: (
            name in _counted({name: value}) and is_extended(name) and not _integral(parse_quantity(value))
        ),
        " must be an integer: an extended resource counts whole devices",
        "@KEY@ + ': ' + @VALUE@",
        lambda name, value: f"{name}: {value}",
    )


def _bytes_rule(field: str) -> Rule:
    m = f"self.{field}"
    return _map_rule(
        field,
        f"{_cel_counted(m, 'k')} && {_cel_bytes('k')} && !{_cel_integral(_cel_q(f'{m}[k]'))}",
        lambda name, value: (
            name in _counted({name: value})
            and (name in BYTES or is_hugepages(name))
            and not _integral(parse_quantity(value))
        ),
        " is a fraction of a byte: give whole bytes (100m is a tenth of a byte; 100Mi is 100 MiB)",
        "@KEY@ + ': ' + @VALUE@",
        lambda name, value: f"{name}: {value}",
    )


def _pages_rule(field: str) -> Rule:
    m = f"self.{field}"
    value, size = _cel_q(f"{m}[k]"), f"quantity(k.substring({len(HUGEPAGES)}))"
    return _map_rule(
        field,
        f"{_cel_counted(m, 'k')} && k.startsWith('{HUGEPAGES}') && {_cel_integral(value)} "
        f"&& {_cel_whole(value)} % {_cel_whole(size)} != 0",
        lambda name, value: (
            name in _counted({name: value})
            and is_hugepages(name)
            and _integral(parse_quantity(value))
            and parse_quantity(value) % (page_size(name) or 1) != 0
        ),
        " is not a whole number of pages",
        "@KEY@ + ': ' + @VALUE@",
        lambda name, value: f"{name}: {value}",
    )


def _integral(value: Decimal) -> bool:
    return value == value.to_integral_value()


def _pairs(r: Any) -> list[tuple[str, Decimal, Decimal | None, Any, Any]]:
    """(name, request, limit or None, as written) for each counted request."""
    requests, limits = _counted(r.requests), _counted(r.limits)
    return [
        (name, value, limits.get(name), (r.requests or {})[name], (r.limits or {}).get(name))
        for name, value in sorted(requests.items())
    ]


_REQ, _LIM = "self.requests", "self.limits"
_REQUEST, _LIMIT = _cel_q(f"{_REQ}[k]"), _cel_q(f"{_LIM}[k]")
_PAGES, _CPU_OR_MEMORY = f"k.startsWith('{HUGEPAGES}')", "k == 'cpu' || k == 'memory'"
_BOTH = f"has(self.limits) && k in self.limits && {_cel_counted(_REQ, 'k')} && {_cel_counted(_LIM, 'k')}"


def _cross_rule(
    cel_bad: str, bad: Callable[[str, Decimal, Decimal | None], bool], message: str, cel_text: str
) -> Rule:
    """A rule on each request against its limit (`k` the resource)."""
    first = f"self.requests.filter(k, {cel_bad}).sort()[0]"
    return Rule(
        cel=f"!has(self.requests) || !self.requests.exists(k, {cel_bad})",
        message=message,
        check=lambda r: not any(bad(n, q, lim) for n, q, lim, _, _ in _pairs(r)),
        field_path=".requests",
        message_expression=cel_text.replace("@REQUEST@", f"string(self.requests[{first}])")
        .replace("@LIMIT@", f"string(self.limits[{first}])")
        .replace("@KEY@", first)
        + f" + '{message}'",
        describe=lambda r: (
            next(
                f"{n}: request {req}, limit {lim}" if lim is not None else f"{n}: request {req}"
                for n, q, limit, req, lim in _pairs(r)
                if bad(n, q, limit)
            )
            + message
        ),
        admission=True,
    )


def _hugepages_need_cpu_or_memory(r: Any) -> bool:
    names = set(r.requests or {}) | set(r.limits or {})
    return not any(is_hugepages(n) for n in names) or bool(names & {"cpu", "memory"})


def _cel_has_any(field: str, names: str) -> str:
    return f"(has(self.{field}) && self.{field}.exists(k, {names}))"


RESOURCE_RULES: tuple[Rule, ...] = (
    *(
        rule
        for field in ("requests", "limits")
        for rule in (_name_rule(field), _integer_rule(field), _bytes_rule(field), _pages_rule(field))
    ),
    _cross_rule(
        f"{_BOTH} && {_cel_overcommits('k')} && {_REQUEST}.isGreaterThan({_LIMIT})",
        lambda name, request, limit: overcommits(name) and limit is not None and request > limit,
        ": a request must not be above its limit",
        "@KEY@ + ': request ' + @REQUEST@ + ', limit ' + @LIMIT@",
    ),
    _cross_rule(
        f"{_BOTH} && !{_cel_overcommits('k')} && {_REQUEST}.compareTo({_LIMIT}) != 0",
        lambda name, request, limit: not overcommits(name) and limit is not None and request != limit,
        ": a request must equal its limit (Kubernetes never overcommits extended resources and huge pages)",
        "@KEY@ + ': request ' + @REQUEST@ + ', limit ' + @LIMIT@",
    ),
    _cross_rule(
        f"(!has(self.limits) || !(k in self.limits)) && {_cel_counted(_REQ, 'k')} "
        f"&& !{_cel_overcommits('k')}",
        lambda name, request, limit: not overcommits(name) and limit is None,
        ": a request needs a limit equal to it (Kubernetes never overcommits extended resources and huge "
        "pages)",
        "@KEY@ + ': request ' + @REQUEST@",
    ),
    Rule(
        cel=" || ".join(
            [
                f"!({_cel_has_any('requests', _PAGES)} || {_cel_has_any('limits', _PAGES)})",
                _cel_has_any("requests", _CPU_OR_MEMORY),
                _cel_has_any("limits", _CPU_OR_MEMORY),
            ]
        ),
        message="huge pages need a cpu or memory request or limit beside them",
        check=_hugepages_need_cpu_or_memory,
        admission=True,
    ),
)


# ----------------------------------------------------------------------------- one quantity

QUANTITY_RULE = Rule(
    cel=f"type(self) == int || (self.matches(r'{QUANTITY_SYNTAX}') && isQuantity(self))",
    message="must be a Kubernetes quantity, e.g. 1, 500m, 16Gi (an exponent has at most two digits)",
    check=is_quantity,
)
NON_NEGATIVE_RULE = Rule(
    cel=f"!{_cel_ok('self')} || {_cel_q('self')}.compareTo(quantity('0')) >= 0",
    message="must be greater than or equal to 0",
    check=lambda v: not is_quantity(v) or parse_quantity(v) >= 0,
    admission=True,
)
MAGNITUDE_RULE = Rule(
    cel=f"!{_cel_ok('self')} || {_cel_q('self')}.compareTo(quantity('{MAX_UNITS}')) <= 0",
    message=f"must be at most {MAX_UNITS} (2^53): no node offers more, Kubernetes caps larger values "
    "and they are not exact as JSON numbers",
    check=lambda v: not is_quantity(v) or parse_quantity(v) <= MAX_UNITS,
    admission=True,
)
VALUE_RULES = (QUANTITY_RULE, NON_NEGATIVE_RULE, MAGNITUDE_RULE)
