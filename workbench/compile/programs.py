"""The programs the `rasp` experiment compiles (after tracr's library and the RASP paper), each with the vocabulary
and lengths it is compiled and checked for."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from workbench.compile.rasp import Aggregate, Map, Select, SelectorWidth, SequenceMap, SOp, indices, numerical, tokens


def make_length() -> SOp:
    """How many tokens there are, at every position."""
    return SelectorWidth(Select(tokens, tokens, "TRUE")).named("length")


def make_reverse() -> SOp:
    """The input backwards: position i reads position length − 1 − i."""
    opposite = SequenceMap(lambda n, i: n - 1 - i, make_length(), indices).named("opposite_index")
    return Aggregate(Select(indices, opposite, "EQ"), tokens).named("reverse")


def make_histogram() -> SOp:
    """At each position, how many times its token occurs."""
    return SelectorWidth(Select(tokens, tokens, "EQ")).named("histogram")


def make_sort_unique() -> SOp:
    """The tokens in ascending order (the keys must be distinct): each token's target position is the number of
    smaller tokens, and position i reads the token whose target is i."""
    smaller = SelectorWidth(Select(tokens, tokens, "LT")).named("target_position")
    return Aggregate(Select(smaller, indices, "EQ"), tokens).named("sort")


def make_frac_prevs(token="x") -> SOp:
    """The fraction of the tokens so far (this one included) that are `token` (numerical)."""
    is_token = numerical(Map(lambda t: 1 if t == token else 0, tokens)).named("is_" + str(token))
    return numerical(Aggregate(Select(indices, indices, "LEQ"), is_token)).named("frac_prevs")


def make_double_histogram() -> SOp:
    """At each position, how many distinct tokens share its token's count (tracr's double histogram)."""
    histogram = make_histogram()
    return SelectorWidth(Select(histogram, histogram, "EQ")).named("double_histogram")


@dataclass(frozen=True)
class Program:
    make: callable
    vocab: tuple
    max_len: int
    unique: bool = False  # inputs without repeated tokens (sort's keys)
    source: str = ""


PROGRAMS: dict[str, Program] = {
    "reverse": Program(make_reverse, ("a", "b", "c"), 5),
    "histogram": Program(make_histogram, ("a", "b", "c"), 5),
    "sort": Program(make_sort_unique, (1, 2, 3, 4, 5, 6, 7, 8), 5, unique=True),
    "frac_prevs": Program(make_frac_prevs, ("x", "y"), 6),
    "double_histogram": Program(make_double_histogram, ("a", "b", "c"), 5),
}


def program_source(name: str) -> str:
    """The Python source of a library program (and of the helpers it calls from this module)."""
    make = PROGRAMS[name].make
    helpers = [f for f in (make_length, make_histogram) if f.__name__ in inspect.getsource(make) and f is not make]
    return "\n\n".join(inspect.getsource(f) for f in [*helpers, make])
