"""Storage faults of the activation files, at the library and through ``neuro-pipeline run``.

- A Parquet activation file truncated to half its bytes, or deleted: the activation check
  fails naming the file and the sentences it held; :func:`repair_activation_files` removes
  them from the catalogue (and deletes the torn file), and the next extraction redoes exactly
  those sentences, ending equal to an uninterrupted run.
- The disk fills up while the activations are written: the command fails with a clear error
  (the file and folder, the disk is full, how many sentences were stored completely), leaves
  no half-written file and no catalogue row without its rows, and the next run (with space
  again) resumes and ends with the store of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from neuro_pipeline import stages as npl
from neuro_pipeline.config import load_config
from neuro_pipeline.stages.activations import find_damaged_files, repair_activation_files
from neuro_pipeline.store import Store
from tests.pipeline.faults import assert_equals_reference, run_cli, write_fault_analysis

#: Words per write in the library tests: the tiny corpus then spans several files.
FLUSH_WORDS = 30


def _matrix(cfg, store: Store, hashes: list[str] | None = None) -> tuple[pl.DataFrame, np.ndarray]:
    aset = npl.current_activation_set(cfg, store)
    keys = store.query("SELECT DISTINCT sentence_hash, position FROM tokens ORDER BY ALL")
    if hashes is not None:
        keys = keys.filter(pl.col("sentence_hash").is_in(hashes))
    return keys, store.read_activation_matrix(aset.activation_set, keys)


def _catalogue(store: Store, aset: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    sentences = store.query("SELECT sentence_hash, n_words, status, windowed, file FROM activation_sentences "
                            "WHERE activation_set = ? ORDER BY ALL", [aset])
    files = store.query("SELECT file, n_rows FROM activation_files WHERE activation_set = ? ORDER BY ALL", [aset])
    return sentences, files


# ------------------------------------------------ truncated or deleted file

@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_activation_file_is_named_by_the_check_and_repaired(tmp_path, tiny_model_dir, damage):
    cfg = load_config(write_fault_analysis(tmp_path, tiny_model_dir))
    store = Store(cfg.store_path)
    npl.materialize_corpus(cfg, store)
    first = npl.materialize_activations(cfg, store, flush_words=FLUSH_WORDS)
    assert npl.check_activations(cfg, store).success
    keys, uninterrupted = _matrix(cfg, store)
    aset = first.activation_set
    sentences, files = _catalogue(store, aset)
    assert files.height >= 3, "the corpus must span several files"
    target = files["file"][1]
    held = sorted(sentences.filter(pl.col("file") == target)["sentence_hash"].to_list())
    assert held
    path = Path(target)
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    else:
        path.unlink()

    # The check names the file, why, and its sentences as source:line (sentence N).
    report = npl.check_activations(cfg, store)
    assert not report.success
    result = {r["expectation"]: r for r in report.results}["activation_files_intact"]
    assert not result["success"] and result["unexpected_count"] == 1
    first_seen = store.query("SELECT sentence_hash, min(sentence_id) AS sentence_id, any_value(source) AS source, "
                             "min(line) AS line FROM tokens GROUP BY sentence_hash ORDER BY sentence_id")
    named = [f"{r['source']}:{r['line']} (sentence {r['sentence_id']})"
             for r in first_seen.filter(pl.col("sentence_hash").is_in(held)).iter_rows(named=True)]
    example = result["unexpected_examples"][0]
    assert example.startswith(f"{target}: {'missing' if damage == 'delete' else 'unreadable: truncated'}")
    assert f"it held {len(held)} sentence(s) of this corpus: {', '.join(named)}" in example
    assert result["observed_value"]["n_sentences"] == len(held)
    # The other files were still judged: the rows of the damaged file's sentences are missing.
    failed = {r["expectation"] for r in report.results if not r["success"]}
    assert "expect_column_values_to_be_between" in failed

    # The repair forgets exactly that file and its sentences; nothing else changes.
    repair = repair_activation_files(cfg, store)
    assert repair.activation_set == aset
    assert [d.file for d in repair.damaged] == [target] and repair.n_files == 1
    assert repair.sentence_hashes == held and repair.n_sentences == len(held)
    assert repair.sentences_in_corpus == named
    assert repair.deleted_files == ([target] if damage == "truncate" else [])
    assert not path.exists()
    assert repair.lines() == [f"{target}: {repair.damaged[0].reason}; {len(held)} sentence(s) will be extracted "
                              "again" + ("; the file was deleted" if damage == "truncate" else "")]
    after_sentences, after_files = _catalogue(store, aset)
    assert after_sentences.equals(sentences.filter(pl.col("file") != target))
    assert after_files.equals(files.filter(pl.col("file") != target))
    assert all(Path(f).exists() for f in after_files["file"])
    assert not find_damaged_files(cfg, store).files
    assert repair_activation_files(cfg, store).damaged == []

    # The next extraction redoes exactly those sentences and ends as the uninterrupted run.
    resumed = npl.materialize_activations(cfg, store, flush_words=FLUSH_WORDS)
    assert (resumed.n_extracted, resumed.n_reused) == (len(held), first.n_sentences - len(held))
    resumed_keys, matrix = _matrix(cfg, store)
    assert resumed_keys.equals(keys)
    np.testing.assert_array_equal(matrix, uninterrupted)
    assert npl.check_activations(cfg, store).success


def test_a_file_with_other_rows_than_catalogued_is_damaged_and_nothing_is_done_without_a_store(
        tmp_path, tiny_model_dir):
    import pyarrow.parquet as pq

    cfg = load_config(write_fault_analysis(tmp_path, tiny_model_dir))
    store = Store(cfg.store_path)
    assert repair_activation_files(cfg, store).activation_set is None
    assert not cfg.store_path.exists(), "the repair creates no store"
    npl.materialize_corpus(cfg, store)
    assert repair_activation_files(cfg, store).activation_set is None  # no activation set yet
    npl.materialize_activations(cfg, store, flush_words=FLUSH_WORDS)
    file = store.activation_files(npl.current_activation_set(cfg, store).activation_set)[0]
    table = pq.read_table(file)
    pq.write_table(table.slice(0, table.num_rows - 1), file)
    damage = find_damaged_files(cfg, store)
    assert [(d.file, d.reason) for d in damage.files] == [
        (file, f"holds {table.num_rows - 1:,} rows where the catalogue lists {table.num_rows:,}")]
    assert not npl.check_activations(cfg, store).success


# ------------------------------------------------------------- disk full

_SITECUSTOMIZE = textwrap.dedent('''\
    """Test fault injection (tests/pipeline/test_storage_faults.py): the Parquet writer of the
    activation files (pyarrow.parquet.write_table of a ``part-*`` file) writes half a file and
    fails with ENOSPC once NEURO_TEST_ENOSPC_AFTER files were written (counted across processes
    in the file NEURO_TEST_ENOSPC_COUNTER). pyarrow is patched when it is first imported."""
    import errno
    import os
    import sys

    AFTER = os.environ.get("NEURO_TEST_ENOSPC_AFTER")
    COUNTER = os.environ.get("NEURO_TEST_ENOSPC_COUNTER", "")


    def _wrap(module):
        original = module.write_table

        def write_table(table, where, *args, **kwargs):
            if not os.path.basename(str(where)).startswith((".part-", "part-")):
                return original(table, where, *args, **kwargs)
            done = int(open(COUNTER).read() or 0) if os.path.exists(COUNTER) else 0
            original(table, where, *args, **kwargs)
            if done >= int(AFTER):
                with open(where, "r+b") as f:  # what a full disk leaves: a torn file
                    f.truncate(os.path.getsize(where) // 2)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
            with open(COUNTER, "w") as f:
                f.write(str(done + 1))

        module.write_table = write_table


    class _PatchOnImport:
        def find_spec(self, name, path=None, target=None):
            if name != "pyarrow.parquet":
                return None
            sys.meta_path.remove(self)
            import importlib.util

            spec = importlib.util.find_spec(name)
            exec_module = spec.loader.exec_module

            def patched(module):
                exec_module(module)
                _wrap(module)

            spec.loader.exec_module = patched
            return spec


    if AFTER is not None:
        sys.meta_path.insert(0, _PatchOnImport())
    ''')


@contextlib.contextmanager
def _disk_filling_up(folder: Path, reference_store: Store, scratch: Path) -> Iterator[tuple[str, dict, object]]:
    """A fault that fills the disk after the first activation file (the training split's) was
    written, the second (the test split's) failing: (how, the environment for the command, a
    function that gives the space back). First a real small filesystem: a tmpfs mounted on
    the analysis's Parquet folder (``store/activations``, the default ``extraction.parquet_dir``)
    with room for the first file and half the second; where mounting is not permitted (not
    root, a container), ENOSPC injected from outside the code: a ``sitecustomize.py`` first on
    PYTHONPATH that makes pyarrow's Parquet writer tear the second file and raise ENOSPC.
    ``NEURO_TEST_DISK_FULL=inject`` forces the injection."""
    sizes = sorted(os.path.getsize(f) for f in reference_store.query("SELECT file FROM activation_files")["file"])
    assert len(sizes) == 2, "the reference extraction writes one file per split"
    target = folder / "store" / "activations"
    target.mkdir(parents=True)
    room = sizes[1] + sizes[0] // 2
    mounted = False
    if os.environ.get("NEURO_TEST_DISK_FULL") != "inject" and os.geteuid() == 0:
        with contextlib.suppress(OSError):  # no mount command: inject
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs", str(target)],
                                     capture_output=True, timeout=30).returncode == 0
    try:
        if mounted:
            def give_space_back() -> None:
                subprocess.run(["mount", "-o", "remount,size=64m", str(target)], check=True)

            yield f"a tmpfs of {room:,} bytes", dict(os.environ), give_space_back
        else:
            scratch.mkdir()
            (scratch / "sitecustomize.py").write_text(_SITECUSTOMIZE, encoding="utf-8")
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(scratch),
                                                                              os.environ.get("PYTHONPATH")])),
                   "NEURO_TEST_ENOSPC_AFTER": "1", "NEURO_TEST_ENOSPC_COUNTER": str(scratch / "written")}
            yield "ENOSPC injected by sitecustomize.py", env, lambda: None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(target)], check=False)


def test_a_full_disk_while_writing_activations_fails_clearly_and_the_next_run_resumes(
        tmp_path, tiny_model_dir, fault_reference):
    """Uses a real full filesystem (a small tmpfs on the Parquet folder) where mounting is
    permitted (root, outside most containers), else ENOSPC injected into pyarrow's writer by
    a sitecustomize.py on the command's PYTHONPATH; the output names which."""
    folder = tmp_path / "analysis"
    config = write_fault_analysis(folder, tiny_model_dir)
    cfg = load_config(config)
    ref = Store(fault_reference)
    ref_cfg = load_config(fault_reference.parent.parent / "pipeline.yaml")
    split_of = ref.query("SELECT DISTINCT ON (sentence_hash) sentence_hash, split FROM tokens "
                         "ORDER BY sentence_hash, sentence_id")
    n_train, n_all = int((split_of["split"] == "train").sum()), split_of.height
    with _disk_filling_up(folder, ref, tmp_path / "inject") as (how, env, give_space_back):
        print(f"disk full by {how}")
        failed = run_cli(config, env=env)
        assert failed.returncode != 0, failed.stdout[-3000:]
        stderr = failed.stderr
        cause = next((line for line in stderr.splitlines() if line.startswith("neuro-pipeline: the run failed")), "")
        print(cause)
        store = Store(cfg.store_path)
        aset = npl.current_activation_set(cfg, store)
        set_folder = Path(aset.parquet_dir) / aset.activation_set
        # The user sees the cause on one line: the disk is full, where, what was kept.
        assert "DiskFullError: the disk is full: writing the activation file " in cause, stderr[-4000:]
        assert f" in {set_folder} failed (" in cause and "the partial file was removed" in cause, cause
        assert (f"{n_train} of the {n_all} sentences this run had to extract were stored completely" in cause
                and "nothing half-written was kept" in cause), cause
        # Nothing half-written: no temporary or unlisted file, every listed file intact, and
        # exactly the training split's sentences catalogued, each with all its rows.
        listed = store.activation_files(aset.activation_set)
        assert sorted(str(p) for p in set_folder.iterdir()) == sorted(listed), "a file is not listed"
        assert len(listed) == 1 and not find_damaged_files(cfg, store, aset).files
        done = store.extracted_sentences(aset.activation_set)
        assert done.height == n_train and set(done["status"]) == {"ok"}
        # The previous good results stay readable, and are those of the uninterrupted run.
        kept = done["sentence_hash"].to_list()
        _, stored = _matrix(cfg, store, kept)
        _, expected = _matrix(ref_cfg, ref, kept)
        np.testing.assert_array_equal(stored, expected)

        give_space_back()
        resumed = run_cli(config)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert_equals_reference(cfg.store_path, fault_reference)
        assert not [p for p in set_folder.iterdir() if p.name.endswith(".tmp")]

