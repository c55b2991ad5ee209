"""A small RASP (Weiss et al. 2021, "Thinking Like Transformers"), typed as tracr types it (Lindner et al. 2023):
every sequence operation (SOp) is categorical (a one-hot subspace of the residual stream) or numerical (one
dimension), and has a finite value set, so the compiler can give it a subspace.

    tokens, indices                       the input and the positions (both categorical)
    Map(f, sop)                           f at every position (an MLP)
    SequenceMap(f, a, b)                  f(a_i, b_i) at every position (an MLP over pairs; categorical inputs)
    Select(keys, queries, predicate)      a selector: which keys j each query i attends to (categorical)
    Aggregate(selector, sop)              the mean of sop over the selected keys (an attention head): numerical
                                          sops average; categorical ones need at most one selected key (or equal
                                          values), else the program is ill-typed at that input
    SelectorWidth(selector)               how many keys each query selects (a head, then an MLP)

`evaluate(sop, tokens)` is the reference interpreter; None marks a value that is undefined (an Aggregate that
selects nothing, categorical), as in tracr. Written from the RASP and tracr papers' descriptions.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from workbench.config import ConfigError

Encoding = Literal["categorical", "numerical"]
_ids = itertools.count()


class RASPError(ConfigError):
    """A program that does not type-check, or an input the program is not defined on; always one line."""


class SOp:
    """A sequence operation: a value at every position."""

    encoding: Encoding = "categorical"

    def __init__(self):
        self.label = f"{type(self).__name__.lower()}_{next(_ids)}"

    def named(self, label: str) -> SOp:
        self.label = label
        return self

    @property
    def children(self) -> list[SOp | Selector]:
        return []

    def __repr__(self) -> str:
        return self.label


class Tokens(SOp):
    pass


class Indices(SOp):
    pass


tokens = Tokens().named("tokens")
indices = Indices().named("indices")


class Map(SOp):
    def __init__(self, f: Callable[[Any], Any], sop: SOp, encoding: Encoding = "categorical"):
        super().__init__()
        self.f, self.sop, self.encoding = f, _sop(sop, "Map"), _encoding(encoding, "Map")

    @property
    def children(self):
        return [self.sop]


class SequenceMap(SOp):
    def __init__(self, f: Callable[[Any, Any], Any], a: SOp, b: SOp, encoding: Encoding = "categorical"):
        super().__init__()
        self.f, self.a, self.b = f, _sop(a, "SequenceMap"), _sop(b, "SequenceMap")
        self.encoding = _encoding(encoding, "SequenceMap")
        for side, sop in (("a", self.a), ("b", self.b)):
            if sop.encoding != "categorical":
                raise RASPError(f"SequenceMap {self.label}: input {side}={sop.label} is numerical; a SequenceMap "
                                "compiles to a lookup table over pairs and needs categorical inputs")

    @property
    def children(self):
        return [self.a, self.b]


COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "EQ": lambda k, q: k == q, "NEQ": lambda k, q: k != q, "LT": lambda k, q: k < q, "LEQ": lambda k, q: k <= q,
    "GT": lambda k, q: k > q, "GEQ": lambda k, q: k >= q, "TRUE": lambda k, q: True, "FALSE": lambda k, q: False,
}


@dataclass(eq=False)
class Selector:
    """Which keys each query attends to: predicate(key value, query value)."""

    keys: SOp
    queries: SOp
    predicate: str | Callable[[Any, Any], bool]
    label: str = field(default_factory=lambda: f"select_{next(_ids)}")

    def __post_init__(self):
        _sop(self.keys, "Select"), _sop(self.queries, "Select")
        if isinstance(self.predicate, str) and self.predicate not in COMPARISONS:
            raise RASPError(f"Select: predicate {self.predicate!r} unknown; use one of {', '.join(COMPARISONS)} "
                            "or a function (key, query) → bool")
        for side, sop in (("keys", self.keys), ("queries", self.queries)):
            if sop.encoding != "categorical":
                raise RASPError(f"Select: {side}={sop.label} is numerical; a selector compares categorical values")

    def test(self, key, query) -> bool:
        if key is None or query is None:
            return False
        return bool((COMPARISONS[self.predicate] if isinstance(self.predicate, str) else self.predicate)(key, query))

    @property
    def children(self):
        return [self.keys, self.queries]


def Select(keys: SOp, queries: SOp, predicate: str | Callable[[Any, Any], bool]) -> Selector:  # noqa: N802
    return Selector(keys, queries, predicate)


class Aggregate(SOp):
    def __init__(self, selector: Selector, sop: SOp, encoding: Encoding | None = None):
        super().__init__()
        if not isinstance(selector, Selector):
            raise RASPError(f"Aggregate: the first argument must be a Select(…), got {type(selector).__name__}")
        self.selector, self.sop = selector, _sop(sop, "Aggregate")
        self.encoding = _encoding(encoding or sop.encoding, "Aggregate")
        if self.encoding != sop.encoding:
            raise RASPError(f"Aggregate {self.label}: a {self.encoding} aggregate of {sop.label}, which is "
                            f"{sop.encoding}; an aggregate keeps its input's encoding")

    @property
    def children(self):
        return [self.selector, self.sop]


class SelectorWidth(SOp):
    def __init__(self, selector: Selector):
        super().__init__()
        if not isinstance(selector, Selector):
            raise RASPError(f"SelectorWidth: the argument must be a Select(…), got {type(selector).__name__}")
        self.selector = selector

    @property
    def children(self):
        return [self.selector]


def numerical(sop: SOp) -> SOp:
    """Mark a Map, SequenceMap or Aggregate numerical (one residual dimension instead of a one-hot)."""
    if isinstance(sop, Tokens | Indices | SelectorWidth):
        raise RASPError(f"numerical: {sop.label} is categorical by construction")
    sop.encoding = "numerical"
    return sop


def _sop(value, where: str) -> SOp:
    if not isinstance(value, SOp):
        raise RASPError(f"{where}: expected an SOp (tokens, indices, Map, …), got {type(value).__name__} {value!r}")
    return value


def _encoding(value: str, where: str) -> Encoding:
    if value not in ("categorical", "numerical"):
        raise RASPError(f"{where}: encoding={value!r}; use 'categorical' or 'numerical'")
    return value


# --- the interpreter ---
Patch = dict[tuple[str, str], list]  # (op label, what it reads: q | k | v | x | a | b | width) → values to read instead


def evaluate(sop: SOp, inputs: Sequence, patch: Patch | None = None) -> list:
    """The program's value at every position of `inputs` (a list of tokens). `patch` makes chosen ops read other
    values (e.g. another input's) on chosen edges: the interpreter's activation patching, which defines the
    circuit a discovery method should find."""
    return _eval(sop, list(inputs), {}, patch or {})


def _read(op: SOp, channel: str, sop, xs, memo, patch) -> list:
    return patch[(op.label, channel)] if (op.label, channel) in patch else _eval(sop, xs, memo, patch)


def _selection(op: SOp, xs, memo, patch) -> list[list[bool]]:
    sel = op.selector
    keys, queries = _read(op, "k", sel.keys, xs, memo, patch), _read(op, "q", sel.queries, xs, memo, patch)
    return [[sel.test(k, q) for k in keys] for q in queries]


def _eval(node, xs: list, memo: dict, patch: Patch) -> list:
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, Tokens):
        out = list(xs)
    elif isinstance(node, Indices):
        out = list(range(len(xs)))
    elif isinstance(node, Map):
        out = [None if v is None else _call(node, node.f, v) for v in _read(node, "x", node.sop, xs, memo, patch)]
    elif isinstance(node, SequenceMap):
        pairs = zip(_read(node, "a", node.a, xs, memo, patch), _read(node, "b", node.b, xs, memo, patch), strict=True)
        out = [None if a is None or b is None else _call(node, node.f, a, b) for a, b in pairs]
    elif isinstance(node, SelectorWidth):
        out = patch.get((node.label, "width")) or [sum(row) for row in _selection(node, xs, memo, patch)]
    elif isinstance(node, Aggregate):
        values = _read(node, "v", node.sop, xs, memo, patch)
        out = [_aggregate(node, [v for v, chosen in zip(values, row, strict=True) if chosen])
               for row in _selection(node, xs, memo, patch)]
    else:
        raise RASPError(f"evaluate: {node!r} is not a RASP operation (a Select is evaluated by its Aggregate)")
    memo[id(node)] = out
    return out


def reads(op: SOp) -> list[tuple[str, SOp]]:
    """What an op reads, by channel: a head's q (queries), k (keys) and v (aggregated); a map's x, or a and b."""
    if isinstance(op, Aggregate | SelectorWidth):
        return [("q", op.selector.queries), ("k", op.selector.keys)] + ([("v", op.sop)] if isinstance(op, Aggregate)
                                                                          else [])
    if isinstance(op, Map):
        return [("x", op.sop)]
    if isinstance(op, SequenceMap):
        return [("a", op.a), ("b", op.b)]
    return []


def _call(node: SOp, f: Callable, *args):
    try:
        return f(*args)
    except Exception as e:  # a user's function: name the op and the value it failed on
        raise RASPError(f"{node.label}: its function failed on {args!r} ({type(e).__name__}: {e})") from None


def _aggregate(node: Aggregate, chosen: list):
    chosen = [v for v in chosen if v is not None]
    if node.encoding == "numerical":
        return sum(chosen) / len(chosen) if chosen else 0
    if not chosen:
        return None
    if any(v != chosen[0] for v in chosen):
        raise RASPError(f"{node.label}: a categorical Aggregate selected different values {sorted(set(chosen))}; "
                        "it needs at most one selected key (or a numerical encoding)")
    return chosen[0]


def walk(sop: SOp) -> list[SOp | Selector]:
    """Every node the program depends on, inputs first (a topological order)."""
    order, seen = [], set()

    def visit(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        for child in node.children:
            visit(child)
        order.append(node)
    visit(sop)
    return order
