"""Every table of the store, one module per stage: its schema (DDL) beside its name, and the
SQL of the reads the stages make. This package and :mod:`neuro_pipeline.store` are the only
places with SQL text.

Start here: each module holds ``SCHEMA`` (``CREATE TABLE IF NOT EXISTS`` statements, and the
``ALTER TABLE`` statements that bring older files up to date), ``TABLES`` (the tables its
stage replaces through :meth:`~neuro_pipeline.store.engine.Engine.replace_tables`), and
functions that run one read each and return a polars DataFrame. A new stage adds one module
here; this package finds it (:data:`SCHEMA` is every module's schema, in module order).

Keys come first in every table: ``corpus_id`` keys the corpus's rows, ``activation_set`` the
rows of one model version under one extraction setting, and ``analysis, activation_set,
task`` every result of an analysis.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil


def key_where(key: dict[str, object]) -> str:
    """``a = $a AND b = $b ...`` over the (checked) column names of ``key``: the condition of
    a read of one stage's rows, its values bound as parameters."""
    from neuro_pipeline.store.engine import check_identifier

    return " AND ".join(f"{check_identifier(k)} = ${k}" for k in key) or "TRUE"


# The table modules import key_where from here: it is defined before they are imported.
_MODULES = [importlib.import_module(f"{__name__}.{info.name}")
            for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)]

#: The DDL of every table, in module order.
SCHEMA = "\n".join(m.SCHEMA.strip() for m in _MODULES) + "\n"
#: What a file that is up to date records (table ``store_schema``).
SCHEMA_FINGERPRINT = hashlib.sha256(SCHEMA.encode()).hexdigest()[:16]
#: The tables stages may replace rows of.
WRITABLE = frozenset(t for m in _MODULES for t in m.TABLES)
