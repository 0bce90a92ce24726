"""Held-out prompts are held out: none may be a search prompt, compared without case, runs of
whitespace and final punctuation. A held-out figure on a search prompt would be in-sample.

One normal form, written twice with the same steps: in Python (`normal_form`, for `validate`, the
operator's check of ConfigMap prompts and the tests) and in CEL (`cel_normal_form`, for the API
server's rule on inline prompts). Both take the same steps on the same characters:

1. a space in front, and ASCII letters lower-cased (CEL's lowerAscii: other letters are left as
   they are, in both);
2. tab, line feed and carriage return become spaces;
3. runs of spaces become one (CEL has no regex replace: a fixed chain of replacements of 28, 7, 3,
   2, 2 and 2 spaces by one, which collapses every run up to `COLLAPSED_RUN` spaces, more than an
   inline prompt can hold);
4. what follows the last character that is neither a space nor one of `.,;:!?` is cut off.

The CEL rule stays inside the API server's cost budget with at most 200 search and 56 held-out
prompts of at most `PROMPT_MAX_LENGTH` characters (a budget measured on v1.35.4: 2000 characters
exceeded it). Its message names the first held-out prompt at fault, as written (line breaks shown
as spaces: an API server's message is one line).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

PROMPT_MAX_LENGTH = 1000  # characters; text encoders read far less (CLIP 77 tokens, SD3's T5 256)
_WHITESPACE = "\t\n\r"
_RUNS = (28, 7, 3, 2, 2, 2)
COLLAPSED_RUN = 1001  # every run of up to this many spaces ends as one (tests/unit checks it)
_PUNCTUATION = ".,;:!?"
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_KEPT = re.compile(r"^.*[^ " + re.escape(_PUNCTUATION) + "]")
_CEL_KEPT = r"^.*[^ " + _PUNCTUATION + "]"  # RE2: no character in the set needs escaping

OVERLAP_MESSAGE = (
    "is also a search prompt (compared without case, runs of whitespace and final punctuation): "
    "a held-out figure on it would be in-sample"
)


def normal_form(prompt: str) -> str:
    text = " " + prompt.translate(_LOWER)
    for character in _WHITESPACE:
        text = text.replace(character, " ")
    text = re.sub(" {2,}", " ", text)  # what the chain of replacements does to any inline prompt
    kept = _KEPT.match(text)
    return kept.group(0) if kept else ""


def cel_normal_form(prompt: str) -> str:
    """`normal_form` in CEL, of the CEL string expression `prompt`."""
    text = f"(' ' + {prompt}.lowerAscii())"
    for character in _WHITESPACE:
        text += f".replace('{character.encode('unicode_escape').decode()}', ' ')"
    for run in _RUNS:
        text += f".replace('{' ' * run}', ' ')"
    return f"{text}.find(r'{_CEL_KEPT}')"


def collapse_runs(text: str) -> str:
    """Step 3 as CEL takes it (for the test that it equals `normal_form`'s)."""
    for run in _RUNS:
        text = text.replace(" " * run, " ")
    return text


def first_overlap(search: Sequence[str], held_out: Sequence[str]) -> str | None:
    """The first held-out prompt whose normal form is a search prompt's, if any."""
    forms = {normal_form(prompt) for prompt in search}
    return next((prompt for prompt in held_out if normal_form(prompt) in forms), None)


def overlap_message(prompt: str) -> str:
    shown = prompt.replace("\n", " ").replace("\r", " ")
    return f'held-out prompt "{shown}" {OVERLAP_MESSAGE}'


def overlap_rule_cel(search: str, held_out: str) -> tuple[str, str]:
    """The rule and its message expression for two lists of prompts (CEL expressions that exist).

    The search prompts' normal forms are computed once, as the keys of a map bound in a one-element
    list (CEL in CRDs has no `cel.bind`): `[m].all(...)`/`[m].map(...)`; `distinct()` first, as a
    map literal may not repeat a key."""
    forms = f"[{search}.map(p, {cel_normal_form('p')}).distinct().transformMapEntry(i, f, {{f: true}})]"
    rule = f"{forms}.all(m, !{held_out}.exists(v, {cel_normal_form('v')} in m))"
    first = f"{forms}.map(m, {held_out}.filter(v, {cel_normal_form('v')} in m)[0])[0]"
    shown = f"{first}.replace('\\n', ' ').replace('\\r', ' ')"
    message = f"'held-out prompt \"' + {shown} + '\" {OVERLAP_MESSAGE}'"
    return rule, message
