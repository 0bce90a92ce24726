"""What per-prompt wins, trades and losses against the defaults can support, in numbers and in one line.

A validated point is compared with the defaults prompt by prompt (`search.heldout`): a win where it
is better in at least one objective and worse in none, a loss the reverse, a trade (or a tie)
otherwise. A handful of prompts says little, so every count comes with:

- the sign test: under "wins and losses are equally likely", how surprising are as many wins (or
  losses) as seen among the prompts that were decided (trades left out), two-sided and exact;
- a 95% Wilson interval of the share of prompts won (and lost), trades included in the total;
- one line that says what can and cannot be concluded at the 5% level, including when too few
  prompts were decided for any outcome to be significant.

Pure: the status (`.status.validation`), the report, `export-profile` and `analyze` use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LEVEL = 0.05
_Z = 1.959963984540054  # the 97.5% normal quantile


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial test of `wins` against `losses` at one half (1 when none decided)."""
    decided = wins + losses
    if decided == 0:
        return 1.0
    tail = sum(math.comb(decided, k) for k in range(min(wins, losses) + 1)) / float(2**decided)
    return min(1.0, 2 * tail)


def wilson(successes: int, total: int) -> tuple[float, float]:
    """95% Wilson score interval of a share (0 to 1 when there is nothing to count)."""
    if total == 0:
        return 0.0, 1.0
    share = successes / total
    centre = (share + _Z**2 / (2 * total)) / (1 + _Z**2 / total)
    half = _Z * math.sqrt(share * (1 - share) / total + _Z**2 / (4 * total**2)) / (1 + _Z**2 / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def fewest_decided() -> int:
    """The fewest decided prompts that can make the sign test significant at `LEVEL` (6)."""
    return next(n for n in range(1, 64) if sign_test(n, 0) < LEVEL)


@dataclass(frozen=True)
class PromptVerdict:
    wins: int
    trades: int  # or ties
    losses: int
    p_value: float  # sign test, wins against losses
    win_share: tuple[float, float]  # 95% interval of the share of prompts won
    loss_share: tuple[float, float]

    @property
    def prompts(self) -> int:
        return self.wins + self.trades + self.losses

    def counts(self) -> str:
        return (
            f"{_plural(self.wins, 'win')}, {_plural(self.trades, 'trade')}, {_plural(self.losses, 'loss')} "
            f"of {_plural(self.prompts, 'prompt')}"
        )

    def conclusion(self) -> str:
        """What the counts support, at the 5% level."""
        decided = self.wins + self.losses
        if decided == 0:
            return "no prompt decided either way: the counts cannot tell the point from the defaults"
        test = f"sign test p={self.p_value:.2g}"
        if self.p_value < LEVEL:
            more, fewer = ("wins", "losses") if self.wins > self.losses else ("losses", "wins")
            return f"more {more} than {fewer} beyond chance at 5% ({test})"
        if decided < fewest_decided():
            return (
                f"not significant at 5% ({test}); with {_plural(decided, 'decided prompt')} no count could "
                f"be (it takes at least {fewest_decided()}): more held-out prompts are needed to conclude"
            )
        return f"not significant at 5% ({test}): the counts cannot tell wins from losses"

    def line(self) -> str:
        low, high = self.win_share
        return f"{self.counts()} (share won, 95% interval: {low:.0%} to {high:.0%}): {self.conclusion()}"

    def as_document(self) -> dict[str, object]:
        return {
            "signTestP": self.p_value,
            "winShare95": list(self.win_share),
            "lossShare95": list(self.loss_share),
            "conclusion": self.conclusion(),
        }


def _plural(count: int, noun: str) -> str:
    return (
        f"{count} {noun}" if count == 1 else f"{count} {noun}es" if noun.endswith("s") else f"{count} {noun}s"
    )


def verdict(wins: int, trades: int, losses: int) -> PromptVerdict:
    total = wins + trades + losses
    return PromptVerdict(
        wins, trades, losses, sign_test(wins, losses), wilson(wins, total), wilson(losses, total)
    )
