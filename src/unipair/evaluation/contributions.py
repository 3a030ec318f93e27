"""How much each modality contributes to the fused prediction.

The value of a set S of modalities is the fused test accuracy when only S is present (the rest
marked missing through ``present``). For the empty set no input remains; its value is the
accuracy of always predicting the most frequent test class (a model with no input can do no
better on average). Exact Shapley values use every subset, so they are computed for at most
``max_exact`` modalities; leave-one-out drops (v(N) - v(N without m)) are always reported.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

__all__ = ["leave_one_out", "shapley_values"]

Value = Callable[[frozenset[str]], float]


def shapley_values(players: Sequence[str], value: Value) -> dict[str, float]:
    """Exact Shapley values: phi_i = sum over S not containing i of
    |S|! (n - |S| - 1)! / n! * (v(S + i) - v(S)). ``value`` is called once per subset."""
    n = len(players)
    cache: dict[frozenset[str], float] = {}

    def v(s: frozenset[str]) -> float:
        if s not in cache:
            cache[s] = float(value(s))
        return cache[s]

    phi = {}
    for i in players:
        others = [p for p in players if p != i]
        total = 0.0
        for k in range(n):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for subset in itertools.combinations(others, k):
                s = frozenset(subset)
                total += weight * (v(s | {i}) - v(s))
        phi[i] = total
    return phi


def leave_one_out(players: Sequence[str], value: Value) -> dict[str, float]:
    """v(all) - v(all but m): the accuracy lost when modality m goes missing."""
    everyone = frozenset(players)
    full = float(value(everyone))
    return {m: full - float(value(everyone - {m})) for m in players}
