"""The activation stage's tables: activation sets, which sentences each holds, their rows
(in the DuckDB file, or Parquet files listed here) and the model versions each analysis saw.
The rows are written and read by :mod:`neuro_pipeline.store.activations`.

``activation_sets``      activation_set → model_version, model_dir, aggregation, dtype, n_layers, hidden_size,
                         storage_dtype, parquet_dir, parquet_layout
``activation_sentences`` activation_set, sentence_hash → n_words, status ('ok' or 'rejected'), windowed, file
``activations``          activation_set, sentence_hash, position, layer → act FLOAT[] (hidden_size values)
``activations16``        the same with 16-bit values (float16 or bfloat16 bit patterns)
``activation_files``     activation_set, file → n_rows (the committed Parquet files of a set)
``model_versions``       analysis, activation_set → model_version, label, model_dir, registered_at (first analysis)
"""

from __future__ import annotations

import polars as pl

SCHEMA = """
CREATE TABLE IF NOT EXISTS activation_sets (
    activation_set VARCHAR PRIMARY KEY, model_version VARCHAR NOT NULL, model_dir VARCHAR NOT NULL,
    aggregation VARCHAR NOT NULL, dtype VARCHAR NOT NULL, long_sentences VARCHAR NOT NULL,
    n_layers INTEGER NOT NULL, hidden_size INTEGER NOT NULL, created_at TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE IF NOT EXISTS activation_sentences (
    activation_set VARCHAR NOT NULL, sentence_hash VARCHAR NOT NULL, n_words INTEGER NOT NULL,
    status VARCHAR NOT NULL, windowed BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS activations (
    activation_set VARCHAR NOT NULL, sentence_hash VARCHAR NOT NULL, position INTEGER NOT NULL,
    layer SMALLINT NOT NULL, act FLOAT[] NOT NULL);
CREATE TABLE IF NOT EXISTS activations16 (
    activation_set VARCHAR NOT NULL, sentence_hash VARCHAR NOT NULL, position INTEGER NOT NULL,
    layer SMALLINT NOT NULL, act USMALLINT[] NOT NULL);
ALTER TABLE activation_sets ADD COLUMN IF NOT EXISTS storage_dtype VARCHAR DEFAULT 'float32';
ALTER TABLE activation_sets ADD COLUMN IF NOT EXISTS parquet_dir VARCHAR;
ALTER TABLE activation_sets ADD COLUMN IF NOT EXISTS parquet_layout VARCHAR;
ALTER TABLE activation_sentences ADD COLUMN IF NOT EXISTS file VARCHAR;
CREATE TABLE IF NOT EXISTS activation_files (
    activation_set VARCHAR NOT NULL, file VARCHAR NOT NULL, n_rows BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS model_versions (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, model_version VARCHAR NOT NULL,
    label VARCHAR NOT NULL, model_dir VARCHAR NOT NULL, registered_at TIMESTAMP NOT NULL);
"""
#: Written by the activation storage itself (whole sentences in one transaction each).
TABLES: tuple[str, ...] = ()


def is_registered(store, activation_set: str) -> bool:
    """Whether the activation set is recorded in ``activation_sets``."""
    return bool(store.query("SELECT count(*) AS n FROM activation_sets WHERE activation_set = ?",
                            [activation_set])["n"][0])


def rejected_sentences(store, activation_set: str) -> list[str]:
    """The hashes of the sentences the extractor refused (too long) for this set."""
    return store.query("SELECT sentence_hash FROM activation_sentences WHERE activation_set = ? "
                       "AND status = 'rejected'", [activation_set])["sentence_hash"].to_list()


def expected_rows(store, corpus_id: str, activation_set: str) -> int:
    """The rows each layer should hold for the corpus: its distinct words, less those of
    rejected sentences."""
    return int(store.query(
        """
        WITH keys AS (SELECT DISTINCT sentence_hash, position FROM tokens WHERE corpus_id = $cid)
        SELECT count(*) AS n FROM keys k
        WHERE NOT EXISTS (SELECT 1 FROM activation_sentences s WHERE s.activation_set = $aset
                          AND s.sentence_hash = k.sentence_hash AND s.status = 'rejected')
        """, {"cid": corpus_id, "aset": activation_set})["n"][0])


def coverage(store, corpus_id: str, activation_set: str) -> dict[str, int]:
    """Whether every corpus sentence was processed with exactly its number of words:
    n_missing_sentences, n_word_count_mismatch."""
    row = store.query(
        """
        WITH sent AS (SELECT sentence_hash, count(*) AS n_words FROM tokens WHERE corpus_id = $cid
                      GROUP BY sentence_id, sentence_hash)
        SELECT count(*) FILTER (WHERE s.sentence_hash IS NULL) AS n_missing_sentences,
               count(*) FILTER (WHERE s.sentence_hash IS NOT NULL AND s.n_words <> sent.n_words)
                   AS n_word_count_mismatch
        FROM sent LEFT JOIN activation_sentences s
          ON s.sentence_hash = sent.sentence_hash AND s.activation_set = $aset
        """, {"cid": corpus_id, "aset": activation_set}).row(0, named=True)
    return {k: int(v) for k, v in row.items()}


def sentence_lengths(store, corpus_id: str, activation_set: str) -> dict[str, object]:
    """The corpus's sentences windowed or rejected for length: windowed, rejected, and
    rejected_at (``source:line`` of each rejected sentence's first occurrence)."""
    return store.query(
        """
        SELECT count(*) FILTER (WHERE s.windowed) AS windowed,
               count(*) FILTER (WHERE s.status = 'rejected') AS rejected,
               list(t.source || ':' || t.line::VARCHAR) FILTER (WHERE s.status = 'rejected') AS rejected_at
        FROM (SELECT sentence_hash, any_value(source) AS source, min(line) AS line
              FROM tokens WHERE corpus_id = $cid GROUP BY sentence_hash) t
        JOIN activation_sentences s ON s.sentence_hash = t.sentence_hash AND s.activation_set = $aset
        """, {"cid": corpus_id, "aset": activation_set}).row(0, named=True)


def version_history(store, analysis: str, task: str) -> pl.DataFrame:
    """The model versions an analysis has seen, oldest first: activation_set, model_version,
    label, model_dir, registered_at, aggregation, dtype, long_sentences, has_report (a report
    of ``task`` is stored for it)."""
    return store.query(
        """
        SELECT v.activation_set, v.model_version, v.label, v.model_dir, v.registered_at, s.aggregation, s.dtype,
               s.long_sentences,
               EXISTS (SELECT 1 FROM reports r WHERE r.analysis = v.analysis AND r.activation_set = v.activation_set
                       AND r.task = $task) AS has_report
        FROM model_versions v JOIN activation_sets s USING (activation_set)
        WHERE v.analysis = $analysis ORDER BY v.registered_at, v.label
        """, {"analysis": analysis, "task": task})
