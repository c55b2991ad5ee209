"""Compiled ground truth: a small RASP (`rasp`), a compiler to our Transformer's weights (`compiler`), and a library
of programs (`programs`). A compiled model records its true circuit, so circuit discovery can be graded."""

from workbench.compile.compiler import Compiled, compile_program
from workbench.compile.rasp import (
    Aggregate,
    Map,
    RASPError,
    Select,
    SelectorWidth,
    SequenceMap,
    evaluate,
    indices,
    numerical,
    tokens,
)

__all__ = ["Aggregate", "Compiled", "Map", "RASPError", "Select", "SelectorWidth", "SequenceMap", "compile_program",
           "evaluate", "indices", "numerical", "tokens"]
