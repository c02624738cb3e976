"""The DuckDB store: keyed joins, transactional replaces, and explicit errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from neuro_pipeline.store import ActivationSet, Store, StoreError


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db" / "p.duckdb")
    s.register_activation_set(ActivationSet("set1", "mv", "/m", "last", "float32", "window", 3, 4))
    return s


def test_activation_matrix_is_joined_on_keys_in_request_order(store):
    a = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    b = -np.arange(1 * 3 * 4, dtype=np.float32).reshape(1, 3, 4)
    store.write_activations("set1", [("h1", a, False), ("h2", b, True)])
    keys = pl.DataFrame({"sentence_hash": ["h2", "h1", "h1"], "position": [0, 1, 0]})
    X = store.read_activation_matrix("set1", keys)
    np.testing.assert_array_equal(X, np.stack([b[0].reshape(-1), a[1].reshape(-1), a[0].reshape(-1)]))
    X2 = store.read_activation_matrix("set1", keys, layers=[2, 0])
    np.testing.assert_array_equal(X2[1], np.concatenate([a[1, 2], a[1, 0]]))


def test_matrix_can_be_read_into_a_file_backed_array(store, tmp_path):
    from neuro_pipeline.matrix import new_matrix, take_columns, take_rows

    a = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)
    store.write_activations("set1", [("h1", a, False)])
    keys = pl.DataFrame({"sentence_hash": ["h1"] * 5, "position": [4, 0, 3, 1, 2]})
    out = new_matrix((5, 12), limit_mb=0, folder=tmp_path / "cache")
    assert isinstance(out, np.memmap) and not list((tmp_path / "cache").iterdir())
    X = store.read_activation_matrix("set1", keys, out=out)
    assert X is out
    np.testing.assert_array_equal(X, store.read_activation_matrix("set1", keys))
    np.testing.assert_array_equal(take_columns(X, [11, 0, 5]), X[:, [11, 0, 5]])
    part = take_rows(X, np.array([True, False, True, False, False]))
    assert isinstance(part, np.memmap)
    np.testing.assert_array_equal(part, X[[0, 2]])
    assert isinstance(new_matrix((5, 12), limit_mb=1, folder=tmp_path), np.ndarray)
    # Rows contiguous (the probes' chunks are then views, not a copy per pass) unless asked.
    for source in (X, np.asarray(X).copy()):
        for columns in ([11, 0, 5], np.arange(12) % 3 == 0, []):
            rows = take_columns(source, columns)
            np.testing.assert_array_equal(rows, np.asarray(X)[:, columns])
            assert rows.flags.c_contiguous and not isinstance(rows, np.memmap)
            by_column = take_columns(source, columns, order="F")
            np.testing.assert_array_equal(by_column, rows)
            assert by_column.flags.f_contiguous
    with pytest.raises(ValueError, match="C-contiguous float32 array of shape"):
        store.read_activation_matrix("set1", keys, out=np.empty((5, 12), dtype=np.float64))


def test_a_word_stored_twice_is_an_error_not_a_silent_choice(store):
    store.write_activations("set1", [("h1", np.zeros((2, 3, 4), np.float32), False)])
    with store.transaction() as con:
        con.execute("INSERT INTO activations SELECT * FROM activations WHERE position = 1 AND layer = 2")
    with pytest.raises(StoreError, match="holds 1 duplicate rows of the requested words"):
        store.read_activation_matrix("set1", pl.DataFrame({"sentence_hash": ["h1", "h1"], "position": [0, 1]}))


def test_duplicate_and_already_stored_sentences_are_written_once(store):
    a = np.ones((2, 3, 4), dtype=np.float32)
    store.write_activations("set1", [("h1", a, False), ("h1", a, False)])
    store.write_activations("set1", [("h1", a * 2, False)])
    n = store.query("SELECT count(*) AS n FROM activations")["n"][0]
    assert n == 2 * 3
    X = store.read_activation_matrix("set1", pl.DataFrame({"sentence_hash": ["h1"], "position": [1]}))
    assert X.max() == 1.0


def test_missing_words_raise_instead_of_padding(store):
    store.write_activations("set1", [("h1", np.zeros((1, 3, 4), np.float32), False)])
    with pytest.raises(StoreError, match=r"lacks 1 of 2 requested words in layer 0 \(e.g. sentence h1 position 1\)"):
        store.read_activation_matrix("set1", pl.DataFrame({"sentence_hash": ["h1", "h1"], "position": [0, 1]}))


def test_rejected_sentences_are_recorded(store):
    store.write_activations("set1", [], rejected=[("long", 900)])
    status = store.extracted_sentences("set1")
    assert status.row(0, named=True) == {"sentence_hash": "long", "n_words": 900, "status": "rejected",
                                        "windowed": False}


def test_failed_replace_keeps_previous_rows(store):
    good = pl.DataFrame({"analysis": ["a"], "activation_set": ["set1"], "task": ["t"], "method": ["m"],
                         "scope": ["overall"], "selection": ["all"], "metric": ["accuracy"], "value": [0.9]})
    store.replace_rows("metrics", good, {"analysis": "a"})
    bad = good.with_columns(pl.lit(None, pl.Utf8).alias("metric"))  # violates NOT NULL
    with pytest.raises(Exception):
        store.replace_rows("metrics", bad, {"analysis": "a"})
    assert store.query("SELECT value FROM metrics")["value"].to_list() == [0.9]


def test_unknown_activation_set_and_missing_store(tmp_path, store):
    with pytest.raises(StoreError, match="unknown activation set 'nope'; materialize token_activations first"):
        store.activation_set("nope")
    with pytest.raises(StoreError, match="the store does not exist yet"):
        with Store(tmp_path / "absent.duckdb").connect(read_only=True):
            pass


def test_not_a_duckdb_file(tmp_path):
    path = tmp_path / "junk.duckdb"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="junk.duckdb: the file exists but is not a DuckDB database "
                                         r"\(corrupt, or another kind of file\). Nothing was changed"):
        Store(path).read_tokens("x")
    assert path.read_bytes() == b"this is not a database" * 100


_ROW = pl.DataFrame({"analysis": ["a"], "activation_set": ["set1"], "task": ["t"], "method": ["m"],
                     "scope": ["overall"], "selection": ["all"], "metric": ["accuracy"], "value": [0.5]})


def _hold_lock(path, seconds: float):
    """Another process that opens the DuckDB file and keeps it for ``seconds``."""
    import subprocess
    import sys

    code = ("import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
            "time.sleep(float(sys.argv[2])); con.close()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_locked_store_is_waited_for_with_a_message(store, caplog):
    store.replace_rows("metrics", _ROW, {"analysis": "a"})
    holder = _hold_lock(store.path, 1.5)
    try:
        with caplog.at_level("WARNING", logger="neuro_pipeline.store"):
            assert store.query("SELECT value FROM metrics")["value"].to_list() == [0.5]
    finally:
        holder.wait()
    assert "waiting since" in caplog.text and f"for the DuckDB lock, held by PID {holder.pid}" in caplog.text


def test_a_store_locked_for_too_long_is_a_clear_error_and_nothing_is_written(store):
    holder = _hold_lock(store.path, 3)
    try:
        impatient = Store(store.path, lock_timeout=0.3)
        with pytest.raises(StoreError, match=rf"still locked by PID {holder.pid} \(.*\) after waiting 0 s "
                                             r"\(lock_timeout 0.3 s\); nothing was written"):
            impatient.replace_rows("metrics", _ROW, {"analysis": "a"})
    finally:
        holder.wait()
    assert store.query("SELECT count(*) AS n FROM metrics")["n"][0] == 0


def test_column_names_are_checked_before_any_sql_is_built(store):
    bad = pl.DataFrame({"value; DROP TABLE metrics; --": [1.0]})
    with pytest.raises(ValueError, match="is not a valid column name"):
        store.replace_rows("metrics", bad, {"analysis": "a"})
    with pytest.raises(ValueError, match="is not a valid column name"):
        store.replace_rows("metrics", pl.DataFrame({"value": [1.0]}), {"analysis = 'x' OR 1=1 --": "a"})
    assert "metrics" in store.query("SHOW TABLES")["name"].to_list()


@pytest.mark.parametrize("storage, rtol", [("float16", 2 ** -11), ("bfloat16", 2 ** -8)])
def test_16_bit_storage_round_trips_within_its_precision(tmp_path, storage, rtol):
    from neuro_pipeline.store import decode_activations, encode_activations

    store = Store(tmp_path / "s.duckdb")
    store.register_activation_set(ActivationSet("h", "mv", "/m", "last", "float32", "window", 3, 4, storage))
    rng = np.random.default_rng(0)
    a = rng.normal(scale=3.0, size=(5, 3, 4)).astype(np.float32)
    store.write_activations("h", [("s1", a, False)])
    keys = pl.DataFrame({"sentence_hash": ["s1"] * 5, "position": list(range(5))})
    got = store.read_activation_matrix("h", keys)
    np.testing.assert_allclose(got, a.reshape(5, -1), rtol=rtol, atol=0)
    assert not np.array_equal(got, a.reshape(5, -1))  # really stored in 16 bits
    assert store.query("SELECT count(*) AS n FROM activations")["n"][0] == 0
    assert store.query("SELECT count(*) AS n FROM activations16")["n"][0] == 15
    # NaN and Inf survive the encoding, and a streamed read of the store sees them.
    special = np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32)
    back = decode_activations(encode_activations(special, storage), storage)
    assert np.isnan(back[0]) and back[1] == np.inf and back[2] == -np.inf and back[3] == 1.0
    assert store.activation_set("h").storage_dtype == storage
    store.write_activations("h", [("s2", np.broadcast_to(special, (1, 3, 4)).copy(), False)])
    batches = list(store.activation_batches("h", pl.DataFrame({"sentence_hash": ["s2"], "position": [0]})))
    values = np.concatenate([b.values for b in batches])
    assert values.shape == (3, 4) and int((~np.isfinite(values)).sum()) == 9


def test_float16_overflow_is_refused_not_stored_as_inf():
    from neuro_pipeline.store import encode_activations

    with pytest.raises(ValueError, match=r"1 activation values exceed float16's range \(largest \|value\| 7e\+04 > 65504\); "
                                         "use extraction.storage_dtype: bfloat16"):
        encode_activations(np.array([1.0, 70000.0], dtype=np.float32), "float16")
    assert encode_activations(np.array([1.0, 70000.0], dtype=np.float32), "bfloat16").dtype == np.uint16


@pytest.mark.parametrize("storage_dtype", ["float32", "bfloat16"])
def test_parquet_storage_round_trips_and_lists_only_committed_files(tmp_path, storage_dtype):
    import os

    store = Store(tmp_path / "s.duckdb")
    parquet = tmp_path / "acts"
    aset = ActivationSet("p", "mv", "/m", "last", "float32", "window", 3, 4, storage_dtype, str(parquet))
    store.register_activation_set(aset)
    assert store.activation_set("p") == aset
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3, 4)).astype(np.float32), rng.normal(size=(3, 3, 4)).astype(np.float32)
    store.write_activations("p", [("s1", a, False)])
    store.write_activations("p", [("s2", b, True), ("s1", a, False)], rejected=[("s3", 9)])
    files = store.activation_files("p")
    assert len(files) == 2 and all(f.startswith(str(parquet / "p")) for f in files)
    keys = pl.DataFrame({"sentence_hash": ["s2", "s1", "s2"], "position": [2, 0, 0]})
    got = store.read_activation_matrix("p", keys, layers=[2, 0])
    expected = np.stack([np.concatenate([b[2, 2], b[2, 0]]), np.concatenate([a[0, 2], a[0, 0]]),
                         np.concatenate([b[0, 2], b[0, 0]])])
    tol = 0 if storage_dtype == "float32" else 2 ** -8
    np.testing.assert_allclose(got, expected, rtol=tol, atol=0)
    assert store.query("SELECT count(*) AS n FROM activations")["n"][0] == 0
    assert set(store.extracted_sentences("p")["status"]) == {"ok", "rejected"}
    # A file no commit lists (a crash between the rename and the commit) is never read.
    stray = parquet / "p" / "part-stray.parquet"
    stray.write_bytes(open(files[0], "rb").read())
    assert store.read_activation_matrix("p", keys).shape == (3, 12)
    assert store.remove_unlisted_files(store.activation_set("p")) == 0  # too young to be an orphan
    os.utime(stray, (0, 0))
    assert store.remove_unlisted_files(store.activation_set("p")) == 1 and not stray.exists()
    with pytest.raises(StoreError, match="lacks 1 of 1 requested words"):
        store.read_activation_matrix("p", pl.DataFrame({"sentence_hash": ["s9"], "position": [0]}))


def test_bfloat16_encoding_rounds_like_torch():
    import torch

    from neuro_pipeline.store import encode_activations

    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(scale=s, size=5000) for s in (1e-3, 1.0, 1e3)]).astype(np.float32)
    edges = np.array([np.finfo(np.float32).max, -np.finfo(np.float32).max, np.inf, -np.inf, 0.0, -0.0, 1e-45,
                      1.00390625, 1.01171875], dtype=np.float32)  # ties round to even
    values = np.concatenate([values, edges])
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(encode_activations(values, "bfloat16"), expected)


@pytest.mark.parametrize("storage_dtype", ["float32", "float16"])
def test_parquet_sets_of_the_older_list_layout_stay_readable_and_keep_their_layout(tmp_path, storage_dtype):
    import pyarrow.parquet as pq

    store = Store(tmp_path / "s.duckdb")
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2, 3, 4)).astype(np.float32)
    b = rng.normal(size=(4, 3, 4)).astype(np.float32)
    old = ActivationSet("o", "mv", "/m", "last", "float32", "window", 3, 4, storage_dtype, str(tmp_path / "acts"),
                        parquet_layout="list")
    store.register_activation_set(old)
    store.write_activations("o", [("s1", a, False)])
    # A later run registers the set again with today's default layout: the set keeps "list",
    # so all of its files are alike.
    store.register_activation_set(ActivationSet(*[getattr(old, f) for f in ("activation_set", "model_version",
                                  "model_dir", "aggregation", "dtype", "long_sentences", "n_layers", "hidden_size",
                                  "storage_dtype", "parquet_dir")]))
    assert store.activation_set("o").parquet_layout == "list"
    store.write_activations("o", [("s2", b, False)])
    for file in store.activation_files("o"):
        assert str(pq.read_schema(file).field("act").type).startswith("list")
    keys = pl.DataFrame({"sentence_hash": ["s2", "s1"], "position": [3, 1]})
    tol = 0 if storage_dtype == "float32" else 2 ** -11
    np.testing.assert_allclose(store.read_activation_matrix("o", keys), np.stack([b[3].ravel(), a[1].ravel()]),
                               rtol=tol)
    # A new set is written in the bytes layout (fixed-length binary) and reads the same values.
    new = ActivationSet("n", "mv", "/m", "last", "float32", "window", 3, 4, storage_dtype, str(tmp_path / "acts"))
    store.register_activation_set(new)
    store.write_activations("n", [("s1", a, False), ("s2", b, False)])
    (file,) = store.activation_files("n")
    assert pq.read_schema(file).field("act").type.byte_width == 4 * (4 if storage_dtype == "float32" else 2)
    np.testing.assert_array_equal(store.read_activation_matrix("n", keys), store.read_activation_matrix("o", keys))
    batches = list(store.activation_batches("n", keys))
    assert sum(len(b.layer) for b in batches) == 6  # 2 words x 3 layers
    assert all(b.full.all() and (b.width == 4).all() for b in batches)


def test_a_parquet_read_scans_only_the_files_holding_its_words(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    aset = ActivationSet("p", "mv", "/m", "last", "float32", "window", 2, 3, "float32", str(tmp_path / "acts"))
    store.register_activation_set(aset)
    rng = np.random.default_rng(3)
    arrays = {f"s{i}": rng.normal(size=(i + 1, 2, 3)).astype(np.float32) for i in range(3)}
    for h, arr in arrays.items():  # one file per write
        store.write_activations("p", [(h, arr, False)])
    files = store.activation_files("p")
    assert len(files) == 3
    by_sentence = dict(store.query("SELECT sentence_hash, file FROM activation_sentences").iter_rows())
    keys = pl.DataFrame({"sentence_hash": ["s2", "s0"], "position": [2, 0]})
    assert store._sentence_files(aset, keys)[0] == sorted([by_sentence["s2"], by_sentence["s0"]])
    # Deleting a file that no wanted word is in does not disturb the read.
    Path(by_sentence["s1"]).unlink()
    np.testing.assert_array_equal(store.read_activation_matrix("p", keys),
                                  np.stack([arrays["s2"][2].ravel(), arrays["s0"][0].ravel()]))
    # A sentence stored before files were recorded per sentence (file NULL): every file is scanned.
    with store.transaction() as con:
        con.execute("UPDATE activation_sentences SET file = NULL WHERE sentence_hash = 's0'")
    assert store._sentence_files(aset, keys)[0] == files


@pytest.mark.parametrize("storage", ["parquet", "duckdb"])
def test_a_sentence_stored_by_another_writer_meanwhile_keeps_its_first_rows(tmp_path, storage):
    """Two runs extracting at once may both write a sentence: the writer that commits second
    checks inside its transaction, so the sentence is catalogued once and its rows are the
    first writer's (for Parquet the second file's copy is never read)."""
    store = Store(tmp_path / "s.duckdb")
    aset = ActivationSet("p", "mv", "/m", "last", "float32", "window", 2, 3, "float32",
                         str(tmp_path / "acts") if storage == "parquet" else None)
    store.register_activation_set(aset)
    first = np.ones((2, 2, 3), dtype=np.float32)
    store.write_activations("p", [("s1", first, False)])
    second, other = np.full((2, 2, 3), 2.0, dtype=np.float32), np.full((1, 2, 3), 3.0, dtype=np.float32)
    # The second writer computed s1 too (it checked before the first committed).
    store.write_activations("p", [("s1", second, False), ("s2", other, False)])
    assert store.query("SELECT count(*) AS n FROM activation_sentences WHERE sentence_hash = 's1'")["n"][0] == 1
    keys = pl.DataFrame({"sentence_hash": ["s1", "s1", "s2"], "position": [0, 1, 0]})
    np.testing.assert_array_equal(store.read_activation_matrix("p", keys),
                                  np.stack([first[0].ravel(), first[1].ravel(), other[0].ravel()]))


def test_a_store_made_under_an_older_schema_is_brought_up_to_date_on_its_next_write_connection(tmp_path):
    """Write connections skip the DDL when the file records the current schema's
    fingerprint; a file from before a schema change (an older fingerprint, a missing
    column) gets the DDL again."""
    import duckdb

    store = Store(tmp_path / "p.duckdb")
    with store.connect() as con:
        [(fingerprint,)] = con.execute("SELECT fingerprint FROM store_schema").fetchall()
        # As a file written before `file` was catalogued, by a version with another schema.
        con.execute("ALTER TABLE activation_sentences DROP COLUMN file")
        con.execute("UPDATE store_schema SET fingerprint = 'older'")
    with store.connect() as con:
        columns = {row[0] for row in con.execute("DESCRIBE activation_sentences").fetchall()}
        assert "file" in columns
        assert con.execute("SELECT fingerprint FROM store_schema").fetchall() == [(fingerprint,)]
    # A file from before the fingerprint existed at all.
    with duckdb.connect(str(store.path)) as con:
        con.execute("DROP TABLE store_schema; ALTER TABLE activation_sentences DROP COLUMN file")
    with store.connect() as con:
        assert "file" in {row[0] for row in con.execute("DESCRIBE activation_sentences").fetchall()}
