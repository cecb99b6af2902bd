"""Greater-than (Hanna, Liu, Variengien 2023): "The war lasted from the year 1732 to the year 17".

Right answers: every two-digit year above the start year YY; wrong: every year at or below
it. The corruption sets the start year to 01 ("... from the year 1701 ..."), which leaves
nearly every year a right answer. The metric is the probability difference.

On a digit-level tokenizer (two-digit years are not one token) the task asks for the next
digit, the decade: start years end in 9 (``17X9``), so every decade digit above X names a later
year and every digit at or below X an earlier or equal one, and neither set is ambiguous.
"""

from __future__ import annotations

import random

from circat.service.types import TaskFamily
from circat.workers.tasks.base import Example, Metric, OneToken, Task

NOUNS = ("war", "expedition", "siege", "campaign", "journey", "voyage", "reign", "dispute",
         "drought", "famine", "pilgrimage", "rebellion")
CENTURIES = tuple(range(11, 18))
YEARS = tuple(f"{y:02d}" for y in range(100))
DIGITS = tuple(str(d) for d in range(10))


class GreaterThanTask(Task):
    """Name a year after the start year of the same century."""

    name = "greater-than"
    family = TaskFamily.COMPARISON
    metric = Metric.PROB_DIFF

    def __init__(self, digit_level: bool = False):
        self.digit_level = digit_level

    def sample(self, rng: random.Random) -> Example:
        noun, century = rng.choice(NOUNS), rng.choice(CENTURIES)
        if self.digit_level:
            decade = rng.randrange(9)
            return Example(
                clean=self.render(noun, century, 10 * decade + 9),
                corrupted=self.render(noun, century, 1),
                answers=DIGITS[decade + 1:],
                wrongs=DIGITS[:decade + 1],
            )
        yy = rng.randrange(2, 99)
        return Example(
            clean=self.render(noun, century, yy),
            corrupted=self.render(noun, century, 1),
            answers=tuple(YEARS[yy + 1:]),
            wrongs=tuple(YEARS[:yy + 1]),
        )

    @staticmethod
    def render(noun: str, century: int, yy: int) -> str:
        return f"The {noun} lasted from the year {century}{yy:02d} to the year {century}"

    def words(self) -> set[str]:
        return {"The", "lasted", "from", "the", "year", "to", *NOUNS, *(str(c) for c in CENTURIES), *YEARS}

    def adapt(self, fits: OneToken) -> GreaterThanTask:
        """Ask for the decade digit when two-digit years are not one token but digits are."""
        prompt = self.render(NOUNS[0], CENTURIES[-1], 32)
        if fits(prompt, YEARS[33]) or not all(fits(prompt, d) for d in DIGITS):
            return self
        return GreaterThanTask(digit_level=True)
