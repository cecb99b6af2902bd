"""Sequence continuation: increasing numerals, number words, months, decreasing numerals.

Prompts follow the sequence-continuation work (Lan, Torr, Barez): ``"Van done in 1. Hat done
in 2. Sun done in 3. Car done in 4. Bat done in"`` -> ``" 5"``, three templates ("done",
"lost", "born"), four given members by default. The wrong answer is the last given member.
For a tokenizer that cannot answer every member in one token (digit-level tokenizers and
``10``), the domain is cut to its longest run of members that it can.
"""

from __future__ import annotations

import itertools
import random
from enum import StrEnum

from circat.service.types import TaskFamily
from circat.workers.tasks.base import Example, OneToken, Task

NAMES = ("Van", "Hat", "Sun", "Car", "Bat", "Dog", "Pen", "Cup", "Box", "Map",
         "Key", "Jar", "Fan", "Bus", "Cat", "Hen", "Fox", "Owl", "Pig", "Rat")
VERBS = ("done", "lost", "born")
NUMERALS = tuple(str(i) for i in range(1, 13))
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")


class Corruption(StrEnum):
    """How the corrupted prompt of a sequence task replaces the given members."""

    RANDOM_MEMBERS = "random_members"
    """every member drawn at random from the domain (never a valid run)"""
    REPEAT_LAST = "repeat_last"
    """every member replaced by the clean sequence's last member"""
    REPEAT_ALL = "repeat_all"
    """every member replaced by one random element of the domain"""
    RANDOM_ELEMENT = "random_element"
    """one randomly chosen member replaced by another element of the domain"""


class SequenceTask(Task):
    """Continue an ordered run of ``length`` members of ``domain`` (in domain order)."""

    family = TaskFamily.SEQUENCE_CONTINUATION

    def __init__(self, name: str, domain: tuple[str, ...], length: int = 4,
                 corruption: Corruption = Corruption.RANDOM_MEMBERS):
        if not 2 <= length < len(domain):
            raise ValueError(f"sequence length must be between 2 and {len(domain) - 1}, got {length}")
        self.name, self.domain, self.length, self.corruption = name, domain, length, Corruption(corruption)

    def sample(self, rng: random.Random) -> Example:
        start = rng.randrange(len(self.domain) - self.length)
        members = list(self.domain[start:start + self.length])
        names = rng.sample(NAMES, self.length + 1)
        verb = rng.choice(VERBS)
        corrupted = self.corrupt(members, rng)
        return Example(
            clean=self.render(names, verb, members),
            corrupted=self.render(names, verb, corrupted),
            answers=(" " + self.domain[start + self.length],),
            wrongs=(" " + members[-1],),
        )

    def corrupt(self, members: list[str], rng: random.Random) -> list[str]:
        """The corrupted members, per ``self.corruption``."""
        match self.corruption:
            case Corruption.REPEAT_LAST:
                return [members[-1]] * len(members)
            case Corruption.REPEAT_ALL:
                return [rng.choice(self.domain)] * len(members)
            case Corruption.RANDOM_ELEMENT:
                i = rng.randrange(len(members))
                out = list(members)
                out[i] = rng.choice([d for d in self.domain if d != members[i]])
                return out
        while True:
            out = [rng.choice(self.domain) for _ in members]
            if not self.is_run(out):
                return out

    def is_run(self, members: list[str]) -> bool:
        """Whether ``members`` are consecutive elements of the domain, in order."""
        idx = [self.domain.index(m) for m in members]
        return all(b == a + 1 for a, b in itertools.pairwise(idx))

    @staticmethod
    def render(names: list[str], verb: str, members: list[str]) -> str:
        parts = [f"{n} {verb} in {m}." for n, m in zip(names, members, strict=False)]
        return " ".join([*parts, f"{names[len(members)]} {verb} in"])

    def words(self) -> set[str]:
        return {*NAMES, *VERBS, "in", ".", *self.domain}

    def adapt(self, fits: OneToken) -> SequenceTask:
        """Keep the longest run of the domain whose members are one token as answers."""
        prompt = self.render(list(NAMES[:2]), VERBS[0], [])
        ok = [fits(prompt, " " + m) or fits(prompt + " ", m) for m in self.domain]
        start, stop = _longest_run(ok)
        if stop - start in (len(self.domain), *range(self.length + 1)):
            return self
        return SequenceTask(self.name, self.domain[start:stop], self.length, self.corruption)


def _longest_run(flags: list[bool]) -> tuple[int, int]:
    """``(start, stop)`` of the longest run of true flags (the first one on ties)."""
    best, start = (0, 0), None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            best, start = max(best, (start, i), key=lambda r: r[1] - r[0]), None
    return best


def sequence_tasks(length: int = 4, corruption: Corruption = Corruption.RANDOM_MEMBERS) -> list[SequenceTask]:
    """The four registered sequence tasks."""
    return [
        SequenceTask("numerals", NUMERALS, length, corruption),
        SequenceTask("number-words", NUMBER_WORDS, length, corruption),
        SequenceTask("months", MONTHS, length, corruption),
        SequenceTask("decreasing-numerals", NUMERALS[::-1], length, corruption),
    ]
