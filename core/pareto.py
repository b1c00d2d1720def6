"""The Pareto front of runs: the ones no other run beats on both accuracy and cost."""

from __future__ import annotations

from typing import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points ``(cost, accuracy)`` on the Pareto front, by increasing cost.

    Lower cost and higher accuracy are better. A point is on the front when no other point has
    a cost at most its own and an accuracy at least its own with one of them strictly better.
    Of exact duplicates the first is kept; points with a NaN or None coordinate are never on it.
    """
    valid = [(float(c), float(a), i) for i, (c, a) in enumerate(points)
             if c is not None and a is not None and c == c and a == a]
    valid.sort(key=lambda t: (t[0], -t[1], t[2]))  # cheapest first; of equal cost the most accurate
    front, best = [], float("-inf")
    for _cost, a, i in valid:
        if a > best:  # more accurate than every cheaper (or equally cheap, listed earlier) point
            front.append(i)
            best = a
    return front


__all__ = ["pareto_front"]
