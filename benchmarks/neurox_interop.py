"""Interop with NeuroX: do our NeuroX file readers and writers and the store's import and
export agree bit for bit with NeuroX 1.0.9 itself?

NeuroX's own extractor and ``load_activations`` run in NeuroX's venv
(``benchmarks/neurox_interop_ref.py``, a subprocess); this side reads and writes the same
files with :mod:`neuro_pipeline.interop.neurox`. :func:`run_comparison` returns one
:class:`Check` per comparison with its maximum absolute difference; run as a script it
prints them (a correctness check: nothing is timed against a reference; the seconds are
printed for information)::

    .venv/bin/python -m benchmarks.neurox_interop                     # MiniLM, aggregation last
    .venv/bin/python -m benchmarks.neurox_interop --model /path/to/hf_model --aggregation average

The NeuroX venv is ``~/.cache/neuro-bench/neurox-venv`` (``../shared/bench/setup_neurox.sh``);
``--neurox-python`` points elsewhere; without it the script says so and exits with 2.
``tests/library/test_neurox_interop.py`` runs the same comparison on a tiny random BERT.
``--quick`` is the same run (it is small already). docs/methods.md cites it ("NeuroX
activation files").

Checks (all on a small corpus with a sentence repeated three times, one repeat differing
only in case, non-ASCII words and a one-word sentence):

``read_neurox_hdf5``      our reader vs NeuroX's ``load_activations`` on NeuroX's HDF5 (bit-exact)
``read_neurox_json``      the same on NeuroX's JSON (bit-exact after float32; NeuroX returns float64)
``neurox_json_precision`` NeuroX's JSON vs its HDF5 of the same extraction (8 decimals: ≤ 1e-8)
``words_hdf5_vs_json``    the words our reader finds in both files agree
``json_bytes_decimals8``  our JSON writer with ``decimals=8`` on NeuroX's HDF5 values reproduces
                          NeuroX's JSON file byte for byte
``store_round_trip_file_words``   NeuroX HDF5 → our store → HDF5: every dataset and
                          ``sentence_to_index`` identical to NeuroX's file
``store_round_trip_corpus_words`` the same keyed by the input corpus's words (what joins the
                          corpus), values identical
``neurox_reads_our_hdf5`` / ``neurox_reads_our_json``  NeuroX's ``load_activations`` on our
                          writers' files (random float32 incl. extremes) returns our values bit for bit
``neurox_reads_store_export``  NeuroX's ``load_activations`` on the store export equals its load
                          of its own file
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks import harness
from benchmarks.harness import NEUROX_PYTHON
from neuro_pipeline.interop.neurox import (
    from_store,
    read_neurox_activations,
    read_neurox_corpus,
    to_store,
    write_neurox_hdf5,
    write_neurox_json,
)
from neuro_pipeline.store import Store

QUESTION = ("Do our NeuroX file readers and writers and the store's NeuroX import and export agree bit for bit "
            "with NeuroX 1.0.9 itself?")
NEUROX_SCRIPT = Path(__file__).resolve().parent / "neurox_interop_ref.py"

#: The corpus NeuroX extracts (one sentence per line, words split on single spaces): a
#: sentence three times (once lower-cased, which an uncased model's NeuroX key does not
#: tell apart), non-ASCII words and a one-word sentence.
CORPUS = [
    "The cat sat on the mat .",
    "The dog is playing !",
    "The cat sat on the mat .",
    "unhappiness",
    "Café naïve 日本 .",
    "the cat sat on the mat .",
    "red",
]



@dataclass
class Check:
    name: str
    ok: bool
    max_abs_diff: float
    detail: str


def neurox_available(python: str | Path = NEUROX_PYTHON) -> bool:
    return Path(python).is_file() and os.access(python, os.X_OK)


def run_neurox(python: str | Path, workdir: Path, *, extract: dict | None = None,
               load: list[tuple[Path, Path]] = (), timeout: float = 300) -> dict:
    """Run NeuroX in its venv: optionally extract (``extract``: model, corpus, hdf5, json,
    aggregation), then ``load_activations`` each file into an ``.npz``. Returns versions."""
    log = workdir / "neurox.log"
    spec = {"log": str(log), "extract": extract, "load": [[str(a), str(b)] for a, b in load]}
    proc = subprocess.run([str(python), str(NEUROX_SCRIPT), json.dumps(spec)], check=False, capture_output=True,
                          text=True, env=harness.neurox_env(), cwd=workdir, timeout=timeout)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"NeuroX failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}\n--- log ---\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_npz(path: Path) -> tuple[list[np.ndarray], int]:
    """What NeuroX's ``load_activations`` returned: per-sentence (n_words, n_layers·hidden) arrays."""
    with np.load(path) as z:
        n = sum(1 for k in z.files if k.startswith("s"))
        return [z[f"s{i}"] for i in range(n)], int(z["n_layers"])


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def compare(name: str, ours: list[np.ndarray], theirs: list[np.ndarray], *, exact: bool = True,
            tolerance: float = 0.0, detail: str = "") -> Check:
    """Compare per-sentence arrays (ours (n, L, H) or (n, L·H); theirs (n, L·H)). ``exact``:
    bit-identical as float32 (and, for float64 ``theirs``, equal as float64 too)."""
    if len(ours) != len(theirs):
        return Check(name, False, float("inf"), f"{len(ours)} vs {len(theirs)} sentences")
    worst, same = 0.0, True
    for a, b in zip(ours, theirs):
        a2 = a.reshape(a.shape[0], -1)
        if a2.shape != b.shape:
            return Check(name, False, float("inf"), f"shape {a2.shape} vs {b.shape}")
        diff = np.abs(a2.astype(np.float64) - b.astype(np.float64))
        worst = max(worst, float(np.nanmax(diff)) if diff.size else 0.0)
        same &= bool(np.array_equal(_bits(a2), _bits(b)))
        if b.dtype == np.float64:
            same &= bool(np.array_equal(a2.astype(np.float64), b, equal_nan=True))
    ok = same if exact else worst <= tolerance
    return Check(name, ok, worst, detail or ("bit-exact" if same else "not bit-exact"))


def random_activations(seed: int = 0, hidden: int = 8, n_layers: int = 3, *, identical_repeats: bool = False
                       ) -> tuple[list[list[str]], list[np.ndarray]]:
    """Sentences (a triple repeat, non-ASCII, one word) with float32 values spanning the range,
    including extremes (largest, smallest normal and subnormal, -0.0). Repeats get their own
    random values (so a reader that drops one is caught) unless ``identical_repeats``, as a
    deterministic extractor would give them."""
    sentences = [["The", "cat", "sat"], ["Ünïcödé", "日本語", "naïve", "—"], ["The", "cat", "sat"], ["one"],
                 ["The", "cat", "sat"], ["x", "(Occurrence", "2)"]]
    rng = np.random.default_rng(seed)
    acts = []
    for s in sentences:
        scale = np.exp(rng.uniform(-20, 10, size=(len(s), n_layers, hidden)))
        acts.append((rng.standard_normal((len(s), n_layers, hidden)) * scale).astype(np.float32))
    f = np.finfo(np.float32)
    acts[1].reshape(-1)[:5] = [f.max, -f.max, f.tiny, f.smallest_subnormal, -0.0]
    if identical_repeats:
        acts[2] = acts[4] = acts[0].copy()
    return sentences, acts


def run_comparison(workdir: str | Path, model_dir: str | Path, *, python: str | Path = NEUROX_PYTHON,
                   aggregation: str = "last") -> tuple[list[Check], dict]:
    """All checks of the module docstring; returns them and run facts (versions, seconds)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    corpus = workdir / "input.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    nx_hdf5, nx_json = workdir / "neurox.hdf5", workdir / "neurox.json"
    # Our writers, on random data (NeuroX reads them in the same run).
    sents, acts = random_activations()
    ours_hdf5 = write_neurox_hdf5(workdir / "ours.hdf5", sents, acts)
    ours_json = write_neurox_json(workdir / "ours.json", sents, acts)
    versions = run_neurox(python, workdir, extract={
        "model": str(model_dir), "corpus": str(corpus), "hdf5": str(nx_hdf5), "json": str(nx_json),
        "aggregation": aggregation,
    }, load=[(nx_hdf5, workdir / "nx_hdf5.npz"), (nx_json, workdir / "nx_json.npz"),
             (ours_hdf5, workdir / "ours_hdf5.npz"), (ours_json, workdir / "ours_json.npz")])
    neurox_seconds = time.perf_counter() - start
    checks: list[Check] = []
    h5 = read_neurox_activations(nx_hdf5)
    js = read_neurox_activations(nx_json)
    nx_h5, _ = load_npz(workdir / "nx_hdf5.npz")
    nx_js, _ = load_npz(workdir / "nx_json.npz")
    checks.append(compare("read_neurox_hdf5", h5.activations, nx_h5))
    checks.append(compare("read_neurox_json", js.activations, [b.astype(np.float32) for b in nx_js],
                          detail="ours (float32) == float32(NeuroX's float64 load)"))
    prec = compare("neurox_json_precision", js.activations, nx_h5, exact=False, tolerance=1e-8)
    prec.detail = "NeuroX's own JSON (round(x, 8)) vs its HDF5, same extraction"
    checks.append(prec)
    same_words = h5.sentences == js.sentences
    checks.append(Check("words_hdf5_vs_json", same_words, 0.0,
                        f"{h5.n_sentences} sentences, {h5.n_duplicates} duplicates; e.g. {h5.sentences[1]}"))
    write_neurox_json(workdir / "ours_decimals8.json", h5.sentences, h5.activations, decimals=8)
    same_bytes = (workdir / "ours_decimals8.json").read_bytes() == nx_json.read_bytes()
    checks.append(Check("json_bytes_decimals8", same_bytes, 0.0, "byte-identical" if same_bytes else "differs"))

    # Store round trips.
    import h5py

    store = Store(workdir / "store.duckdb")
    imp = to_store(store, nx_hdf5, aggregation=aggregation)
    back = from_store(store, imp.activation_set.activation_set, h5.sentences, workdir / "store_export.hdf5")
    with h5py.File(nx_hdf5, "r") as a, h5py.File(back, "r") as b:
        same_index = a["sentence_to_index"][0] == b["sentence_to_index"][0]
        names = [n for n in a if n != "sentence_to_index"]
        same_names = sorted(names) == sorted(n for n in b if n != "sentence_to_index")
        diffs = [float(np.max(np.abs(a[n][()].astype(np.float64) - b[n][()]))) for n in names]
        same_data = same_names and all(np.array_equal(_bits(a[n][()]), _bits(b[n][()])) for n in names)
    checks.append(Check("store_round_trip_file_words", bool(same_index and same_data), max(diffs),
                        f"{len(names)} datasets bit-exact={same_data}, sentence_to_index identical={same_index}; "
                        f"{imp.n_written} distinct sentences stored, {imp.n_duplicates} duplicates"))
    words = read_neurox_corpus(corpus)
    imp2 = to_store(store, nx_hdf5, aggregation=aggregation, sentences=words,
                    model_version=f"neurox-import:corpus-words:{h5.sha256}")
    back2 = from_store(store, imp2.activation_set.activation_set, words, workdir / "store_export_corpus.hdf5")
    again = read_neurox_activations(back2)
    c = compare("store_round_trip_corpus_words", again.activations,
                [a.reshape(a.shape[0], -1) for a in h5.activations])
    c.detail += f"; words {again.sentences == words}, {imp2.n_written} distinct sentences stored"
    c.ok &= again.sentences == words
    checks.append(c)
    back_json = from_store(store, imp.activation_set.activation_set, h5.sentences, workdir / "store_export.json")

    # NeuroX reads what we wrote.
    ours_h5, _ = load_npz(workdir / "ours_hdf5.npz")
    ours_js, _ = load_npz(workdir / "ours_json.npz")
    checks.append(compare("neurox_reads_our_hdf5", acts, ours_h5,
                          detail=f"{len(sents)} sentences incl. a triple repeat, non-ASCII, one word, extremes"))
    checks.append(compare("neurox_reads_our_json", acts, ours_js, detail="exact float64 repr of every float32"))
    run_neurox(python, workdir, load=[(back, workdir / "back_hdf5.npz"), (back_json, workdir / "back_json.npz")])
    back_h5, _ = load_npz(workdir / "back_hdf5.npz")
    back_js, _ = load_npz(workdir / "back_json.npz")
    c1 = compare("neurox_reads_store_export", back_h5, nx_h5, detail="HDF5 export vs NeuroX's own file")
    c2 = compare("neurox_reads_store_export_json", back_js, nx_h5, detail="JSON export vs NeuroX's own HDF5")
    checks += [c1, c2]
    facts = {"versions": versions, "model": str(model_dir), "aggregation": aggregation,
             "n_sentences": h5.n_sentences, "n_words": h5.n_words, "n_layers": h5.n_layers,
             "hidden_size": h5.hidden_size, "neurox_words": h5.sentences,
             "seconds_total": round(time.perf_counter() - start, 2),
             "seconds_neurox_extract_and_load": round(neurox_seconds, 2)}
    return checks, facts


def main(argv: list[str] | None = None) -> int:
    ap = harness.parser(__doc__, rounds=1, neurox=True, threads=None, ewt=False)
    ap.add_argument("--aggregation", default="last", choices=["first", "last", "average"])
    ap.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temp dir)")
    args = harness.parse(ap, argv)
    python = harness.neurox_python(args, instead="nothing to compare (this check needs NeuroX itself)")
    if python is None:
        return 2
    import tempfile

    model = harness.model_dir(args)
    with tempfile.TemporaryDirectory() as tmp:
        checks, facts = run_comparison(args.workdir or tmp, model, python=python, aggregation=args.aggregation)
    width = max(len(c.name) for c in checks)
    print(f"NeuroX {facts['versions'].get('neurox')} vs neuro_pipeline.interop.neurox; model {facts['model']}, "
          f"aggregation {facts['aggregation']}; {facts['n_sentences']} sentences, {facts['n_words']} words, "
          f"{facts['n_layers']} layers x {facts['hidden_size']}")
    for c in checks:
        print(f"  {'OK  ' if c.ok else 'FAIL'} {c.name:<{width}}  max |diff| = {c.max_abs_diff:.3g}  ({c.detail})")
    print(f"  {facts['seconds_total']} s in all ({facts['seconds_neurox_extract_and_load']} s NeuroX extract + load)")
    ok = all(c.ok for c in checks)
    harness.report(args, "neurox_interop", QUESTION, quality={"ok": ok, "checks": [asdict(c) for c in checks]},
                   results={k: v for k, v in facts.items() if k != "neurox_words"})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
