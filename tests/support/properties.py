"""How many examples a property test (hypothesis) tries.

All of them when the whole suite runs (``./dev test`` with no selection, as CI runs it); a third
(at least 10) when a selection runs, the inner loop of ``./dev test tests/unit``
(tests/support/parallel.py sets ``ESIGN_PROPERTY_EXAMPLES=fewer`` then). The examples are
derandomized, so both are repeatable, and the fewer are the first of the full set. Set
``ESIGN_PROPERTY_EXAMPLES=all`` to try every example in a selection too.
"""
from __future__ import annotations

import os

#: the variable, and its value for a selection's run
VARIABLE, FEWER = "ESIGN_PROPERTY_EXAMPLES", "fewer"


def examples(full: int) -> int:
    """``full`` for the whole suite, a third of it (at least 10) for a selection's run."""
    if os.environ.get(VARIABLE, "all") == FEWER:
        return min(full, max(10, full // 3))
    return full


def property_settings(full: int):
    """Deterministic in CI, no example database written into the work tree, ``examples(full)`` tried."""
    from hypothesis import settings

    return settings(max_examples=examples(full), deadline=None, database=None, derandomize=True)
