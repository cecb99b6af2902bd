"""Indirect object identification (Wang et al. 2022) with ABBA and BABA orders.

"When Mary and John went to the store, John gave a drink to" -> " Mary" (the indirect
object, IO); the wrong answer is the repeated subject (S). The ABC corruption replaces the
three name slots with three other distinct names, so no name is repeated. For a tokenizer
that splits some names, only the names it answers in one token are used.
"""

from __future__ import annotations

import random
from enum import StrEnum

from circat.service.types import TaskFamily
from circat.workers.tasks.base import Example, OneToken, Task

NAMES = ("Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Anna", "Kate",
         "Paul", "Rose", "Lisa", "Mark", "Sarah", "Jane", "Mike", "Emma", "Eric", "Laura")
PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station")
OBJECTS = ("drink", "book", "ring", "bone", "apple", "kiss", "basketball", "computer")
TEMPLATES = (
    "Then, {A} and {B} went to the {place}. {C} gave a {obj} to",
    "When {A} and {B} went to the {place}, {C} gave a {obj} to",
    "After {A} and {B} met at the {place}, {C} handed a {obj} to",
    "While {A} and {B} were working at the {place}, {C} passed a {obj} to",
    "Friends {A} and {B} found a {obj} at the {place}. {C} gave it to",
)


class Order(StrEnum):
    """Where the indirect object stands: first (ABBA) or second (BABA)."""

    ABBA = "ABBA"
    BABA = "BABA"


class IOITask(Task):
    """Complete with the name that appeared once."""

    name = "ioi"
    family = TaskFamily.NAME_COPYING

    def __init__(self, orders: tuple[Order, ...] = (Order.ABBA, Order.BABA), names: tuple[str, ...] = NAMES):
        if len(names) < 5:
            raise ValueError(f"IOI needs at least 5 names, got {len(names)}")
        self.orders, self.names = tuple(Order(o) for o in orders), names

    def sample(self, rng: random.Random) -> Example:
        template, place, obj = rng.choice(TEMPLATES), rng.choice(PLACES), rng.choice(OBJECTS)
        io, s, x, y, z = rng.sample(self.names, 5)
        first, second = (io, s) if rng.choice(self.orders) is Order.ABBA else (s, io)
        fill = {"place": place, "obj": obj}
        return Example(
            clean=template.format(A=first, B=second, C=s, **fill),
            corrupted=template.format(A=x, B=y, C=z, **fill),
            answers=(" " + io,),
            wrongs=(" " + s,),
        )

    def adapt(self, fits: OneToken) -> IOITask:
        """Keep the names that are one token as answers (at least five)."""
        prompt = TEMPLATES[0].format(A="Mary", B="John", C="John", place=PLACES[0], obj=OBJECTS[0])
        kept = tuple(n for n in self.names if fits(prompt, " " + n))
        return self if len(kept) in (len(self.names), *range(5)) else IOITask(self.orders, kept)

    def words(self) -> set[str]:
        words = {*self.names, *PLACES, *OBJECTS}
        for t in TEMPLATES:
            words.update(t.replace("{A}", "").replace("{B}", "").replace("{C}", "")
                         .replace("{place}", "").replace("{obj}", "").split())
        return words
