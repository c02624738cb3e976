"""Python's cyclic garbage collector around the imports of large packages.

Importing torch, SciPy, pandas and Dagster (the code location), great-expectations (the
checks) and transformers' model code (extraction) creates about 700,000 tracked objects
that live as long as the process. CPython runs a full collection, a walk over every tracked
object, each time the objects that survived earlier collections have grown by a quarter, so
these imports set off one full collection after another, each longer than the last. In one run
of ``benchmarks/e2e.py`` on EWT (MiniLM), the run process made 10 full collections, 1.66 s
in all: 8 while importing Dagster, the code location, great-expectations and transformers'
model code, and one of 0.41 s while importing matplotlib for the report's plot.

:func:`collector_paused` holds the collector off for such a block and restores it
afterwards, also when the block raises; objects that become garbage meanwhile are collected
at the next collection as usual. The library pauses it around its imports of
great-expectations, transformers' model code and matplotlib. The code location
(``assets/``) pauses it around its own imports and then freezes them (``gc.freeze``): that
is a choice for the processes that load it, not for a library, whose caller's objects it
would freeze too. With both, the same run made 3 full collections, 0.30 s in all (the
largest, 0.24 s, once the imported modules first reach the oldest generation).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector disabled inside the block, then enabled again if it was
    enabled before (reference counting frees memory as usual meanwhile).

    The collector is one per process: when threads overlap such blocks, it is back on once
    the block that found it on ends, and never left off.

    Examples
    --------
    >>> import gc
    >>> with collector_paused():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
