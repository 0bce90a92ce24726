"""A validated point's held-out values as `export-profile` prints them: the change against the
defaults with its interval first, the in-sample value last and labelled so. What its per-prompt
counts support is `search.prompt_counts`'s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table


def held_out_table(held_out: Mapping[str, Any]) -> Table:
    """A validated point's held-out values (the profile's `heldOut`): the change against the
    defaults with its interval first, the in-sample value last and labelled so."""
    table = Table(
        title=f"held out: {held_out['prompts']} prompts x {held_out['imagesPerPrompt']} images, fresh seeds"
    )
    for column in ("objective", "vs defaults [95%]", "held-out value [95%]", "in-sample value"):
        table.add_column(column)
    in_sample = held_out.get("inSample") or {}
    for name, value in held_out["objectives"].items():
        change, low, high = (value.get(k) for k in ("changePercent", "changeLow", "changeHigh"))
        if change is None:
            versus = "-"
        elif low is None or high is None:
            versus = f"{change:+.1f}%"
        else:
            versus = f"{change:+.1f}% [{low:+.1f}, {high:+.1f}]"
        measured = in_sample.get(name)
        table.add_row(
            name,
            versus,
            f"{value['value']:.4g} [{value['low']:.4g}, {value['high']:.4g}]",
            f"{measured:.4g} (in-sample)" if measured is not None else "-",
        )
    return table
