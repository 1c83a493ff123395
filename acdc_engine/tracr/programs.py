"""The RASP programs this package compiles with tracr, and the inputs each one accepts.

Each ``TracrProgram`` names a program from tracr's library (``tracr.compiler.lib``), the input
vocabulary and maximum length it is compiled for, and whether its inputs may repeat a token. The
first two are the ACDC paper's tracr tasks, compiled with the reference implementation's settings
(vocabulary, ``max_seq_len`` 5, BOS token "BOS"):

  tracr-reverse     ``make_reverse(tokens)``: the input reversed (categorical output).
  tracr-proportion  ``make_frac_prevs(tokens == "x")``: at each position, the fraction of the tokens
                    so far that are "x" (one numerical output).
  tracr-hist        ``make_hist()``: at each position, how often its token occurs (categorical).
  tracr-sort        ``make_sort_unique(tokens, tokens)``: the tokens in ascending order; tokens
                    must be distinct (categorical).

Nothing here imports tracr at module level: the registry is usable without it installed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterator

COMPILER_BOS = "BOS"  # the reference's choice; tracr's default is "compiler_bos"
COMPILER_PAD = "compiler_pad"  # tracr's default
MLP_EXACTNESS = 100  # tracr's default


@dataclass(frozen=True)
class TracrProgram:
    """A RASP program and what it is compiled for.

    name: the model and task name (``model=<name>``, ``task=<name>``).
    build: returns the RASP program (imports tracr).
    vocab: the input values, in the order used to draw prompts.
    max_seq_len: the longest input the compiled model takes (without BOS).
    distinct_tokens: inputs must not repeat a token (the program is only defined on such inputs).
    """

    name: str
    build: Callable[[], Any]
    vocab: tuple[Any, ...]
    max_seq_len: int
    distinct_tokens: bool = False

    def inputs(self, length: int) -> Iterator[tuple[Any, ...]]:
        """Every input of ``length`` tokens the program is defined on (without BOS), in a fixed order."""
        if self.distinct_tokens:
            return itertools.permutations(self.vocab, length)
        return itertools.product(self.vocab, repeat=length)

    def all_inputs(self) -> Iterator[tuple[Any, ...]]:
        """Every input of every length 1..max_seq_len."""
        return itertools.chain.from_iterable(self.inputs(n) for n in range(1, self.max_seq_len + 1))


def _reverse() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_reverse(rasp.tokens)


def _proportion() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_frac_prevs(rasp.tokens == "x")


def _hist() -> Any:
    from tracr.compiler import lib

    return lib.make_hist()


def _sort() -> Any:
    from tracr.compiler import lib
    from tracr.rasp import rasp

    return lib.make_sort_unique(rasp.tokens, rasp.tokens)


PROGRAMS: dict[str, TracrProgram] = {
    program.name: program
    for program in (
        TracrProgram("tracr-reverse", _reverse, (1, 2, 3), 5),
        TracrProgram("tracr-proportion", _proportion, ("w", "x", "y", "z"), 5),
        TracrProgram("tracr-hist", _hist, ("a", "b", "c"), 5),
        TracrProgram("tracr-sort", _sort, (1, 2, 3, 4, 5), 5, distinct_tokens=True),
    )
}
