"""Read and write NeuroX's activation files (HDF5 and JSON), and move them in and out of the store.

Start here: :func:`read_neurox_activations` reads a file written by NeuroX 1.0.9's
``transformers_extractor`` (or by :func:`write_neurox_hdf5` / :func:`write_neurox_json`)
into :class:`NeuroxActivations`; :func:`to_store` imports such a file into our DuckDB store
as an activation set and :func:`from_store` exports an activation set back, so results can
be compared with earlier NeuroX studies in both directions.

The two formats, as NeuroX 1.0.9 writes them (``neurox/data/writer.py``) and reads them
(``neurox/data/loader.py: load_activations``):

HDF5 (``*.hdf5``)
    One float32 dataset per sentence, named ``"0"``, ``"1"``, … (the line number of the
    sentence in the extractor's input), of shape (n_layers, n_words, hidden_size), plus a
    dataset ``sentence_to_index`` of shape (1,) holding one variable-length string: a JSON
    object (``json.dumps`` defaults, so non-ASCII is ``\\uXXXX``-escaped) mapping the
    sentence's words joined by single spaces to the dataset name. A sentence seen before is
    keyed ``"<words> (Occurrence N)"`` with N = 2, 3, …, the first N not yet used, because
    the keys must be unique; without the suffix a duplicate would overwrite the earlier key
    and ``load_activations`` would silently lose a sentence. ``load_activations`` iterates the
    mapping in its JSON order (insertion order, i.e. input order) and never looks at the
    keys' words; it returns (n_words, n_layers·hidden_size) float32 arrays.
JSON (``*.json``, really JSON Lines)
    One line per sentence: ``{"linex_index": i, "features": [{"token": word, "layers":
    [{"index": 0, "values": [...]}, …]}, …]}``. Duplicates need no handling (one line per
    sentence). NeuroX writes every value as ``round(value, 8)`` (8 decimal places), so a
    float32 value read back differs from the HDF5 one by at most 1e-8 in absolute terms
    (measured max 7.5e-9), and is bit-exact for \\|value\\| ≥ 0.125. ``load_activations``
    ignores ``linex_index`` and ``index`` (order is line order and list order) and returns
    float64 arrays. :func:`write_neurox_json` writes the exact float32 values by default
    (17 significant digits; ``decimals=8`` reproduces NeuroX's own files byte for byte).

The words in NeuroX's files are *not* the input words: they are the extractor's
"detokenized" subwords joined per word, after the tokenizer's normalisation (for an
uncased BERT, ``"Playing"`` is stored as ``"play##ing"``, an unknown word as ``"[UNK]"``).
When a sentence is longer than the model's limit NeuroX truncates it and stores fewer
words. Pass the real words (``sentences=``, e.g. :func:`read_neurox_corpus` of the
extractor's input file) to :func:`to_store` to key the activations by the corpus's
sentence hashes, so they join the corpus's ``tokens`` table.

NeuroX's extractor aggregates subwords with ``aggregation="last"`` by default (also
the default of its command line); ``"average"`` is its name for our ``"mean"``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from neuro_pipeline.options import AGGREGATION_ALIASES, AGGREGATIONS
from neuro_pipeline.store import ActivationSet, Store, StoreError
from neuro_pipeline.types import sentence_hash

log = logging.getLogger(__name__)

Format = Literal["auto", "hdf5", "json"]

#: NeuroX's default subword aggregation (``extract_representations(aggregation="last")``).
NEUROX_DEFAULT_AGGREGATION = "last"
#: Decimal places NeuroX's JSON writer keeps (``round(x, 8)``).
NEUROX_JSON_DECIMALS = 8
#: The ``long_sentences`` recorded for imported sets: NeuroX truncates long sentences.
IMPORT_LONG_SENTENCES = "truncate"

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_OCCURRENCE = re.compile(r"^(.*) \(Occurrence (\d+)\)$", re.DOTALL)
#: Every accepted aggregation name -> the canonical one.
_AGGREGATIONS = {**{name: name for name in AGGREGATIONS}, **AGGREGATION_ALIASES}


class NeuroxFormatError(ValueError):
    """A NeuroX activation file (or data to write as one) is malformed; the message names
    the file and the sentence."""


@dataclass(frozen=True)
class NeuroxActivations:
    """The contents of one NeuroX activation file.

    Attributes
    ----------
    sentences : list of list of str
        Each sentence's words, in the order NeuroX's ``load_activations`` returns them
        (HDF5: the ``sentence_to_index`` order with the ``(Occurrence N)`` suffix removed;
        JSON: line order, the ``token`` fields).
    activations : list of numpy.ndarray
        One float32 array of shape (n_words, n_layers, hidden_size) per sentence.
    n_layers, hidden_size : int
    format : {"hdf5", "json"}
    path : Path
    keys : list of str
        Where each sentence came from: the HDF5 dataset name, or the JSON ``linex_index``.
    n_duplicates : int
        Sentences whose words equal an earlier sentence's.
    duplicate_handling : str
        What was done about duplicates, in words.
    source_dtype : str
        The HDF5 datasets' dtype, or ``"json-text"``.
    n_nonfinite : int
        NaN and infinite values. They are **kept** (NeuroX keeps them too), counted here
        and in ``nonfinite_sentences``, and logged as a warning; pass ``nonfinite="error"``
        to :func:`read_neurox_activations` to refuse such files.
    nonfinite_sentences : list of int
        Indices (into ``sentences``) of the sentences holding them.
    unreferenced : list of str
        HDF5 datasets that ``sentence_to_index`` does not mention (ignored, as NeuroX does).
    sha256 : str
        Hash of the file's bytes.
    """

    sentences: list[list[str]]
    activations: list[np.ndarray]
    n_layers: int
    hidden_size: int
    format: str
    path: Path
    keys: list[str]
    n_duplicates: int
    duplicate_handling: str
    source_dtype: str
    n_nonfinite: int = 0
    nonfinite_sentences: list[int] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)
    sha256: str = ""

    @property
    def n_sentences(self) -> int:
        return len(self.sentences)

    @property
    def n_words(self) -> int:
        return sum(len(s) for s in self.sentences)

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.hidden_size

    def to_matrix(self) -> np.ndarray:
        """All words' activations as one (n_words, n_layers·hidden_size) float32 matrix, in
        NeuroX's layout (layer-major within a row: neuron = layer·hidden_size + unit)."""
        if not self.activations:
            return np.zeros((0, self.n_neurons), np.float32)
        return np.concatenate([a.reshape(a.shape[0], -1) for a in self.activations], axis=0)

    def provenance(self) -> dict[str, object]:
        """Plain-value summary of where the data came from and what was checked."""
        return {"format": self.format, "path": str(self.path), "sha256": self.sha256,
                "n_sentences": self.n_sentences, "n_words": self.n_words, "n_layers": self.n_layers,
                "hidden_size": self.hidden_size, "source_dtype": self.source_dtype,
                "n_duplicates": self.n_duplicates, "duplicate_handling": self.duplicate_handling,
                "n_nonfinite": self.n_nonfinite, "nonfinite_sentences": list(self.nonfinite_sentences),
                "unreferenced": list(self.unreferenced)}


# ------------------------------------------------------------------------ reading
def read_neurox_activations(
    path: str | Path,
    *,
    format: Format = "auto",
    nonfinite: Literal["keep", "error"] = "keep",
) -> NeuroxActivations:
    """Read a NeuroX activation file (HDF5 or JSON), validating it strictly.

    Parameters
    ----------
    path : str or Path
    format : {"auto", "hdf5", "json"}
        ``"auto"`` goes by the extension (``.hdf5``/``.h5``, ``.json``/``.jsonl``), else
        by the file's first bytes (the HDF5 signature).
    nonfinite : {"keep", "error"}
        NaN/infinite values are kept and counted (default), or refused.

    Returns
    -------
    NeuroxActivations

    Raises
    ------
    FileNotFoundError
    NeuroxFormatError
        Missing ``sentence_to_index``, a dataset it names is missing, inconsistent shapes
        between sentences or words, a sentence whose word count does not match its
        activations, a file without sentences, or (``nonfinite="error"``) NaN/inf values.
        The message names the file and the sentence (index and key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NeuroX activation file.")
    fmt = _detect_format(path, format)
    if nonfinite not in ("keep", "error"):
        raise ValueError(f"nonfinite must be 'keep' or 'error', got {nonfinite!r}.")
    result = _read_hdf5(path) if fmt == "hdf5" else _read_json(path)
    bad = [i for i, a in enumerate(result.activations) if not np.isfinite(a).all()]
    n_bad = int(sum(np.count_nonzero(~np.isfinite(result.activations[i])) for i in bad))
    if bad:
        msg = (f"{path}: {n_bad} non-finite (NaN or infinite) activation values in {len(bad)} "
               f"sentence(s), first sentence {bad[0]} (key {result.keys[bad[0]]!r}: "
               f"{_preview(result.sentences[bad[0]])})")
        if nonfinite == "error":
            raise NeuroxFormatError(msg + ".")
        log.warning("%s; kept as they are (counted in n_nonfinite).", msg)
    digest = _sha256(path)
    return NeuroxActivations(
        sentences=result.sentences, activations=result.activations, n_layers=result.n_layers,
        hidden_size=result.hidden_size, format=fmt, path=path, keys=result.keys,
        n_duplicates=result.n_duplicates, duplicate_handling=result.duplicate_handling,
        source_dtype=result.source_dtype, n_nonfinite=n_bad, nonfinite_sentences=bad,
        unreferenced=result.unreferenced, sha256=digest)


def _detect_format(path: Path, format: str) -> str:
    if format in ("hdf5", "json"):
        return format
    if format != "auto":
        raise ValueError(f"format must be 'auto', 'hdf5' or 'json', got {format!r}.")
    suffix = path.suffix.lower()
    if suffix in (".hdf5", ".h5"):
        return "hdf5"
    if suffix in (".json", ".jsonl"):
        return "json"
    with open(path, "rb") as fh:
        return "hdf5" if fh.read(8) == _HDF5_SIGNATURE else "json"


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading or writing NeuroX HDF5 files needs h5py: pip install h5py") from exc
    return h5py


def _preview(words: Sequence[str], n: int = 8) -> str:
    text = " ".join(words[:n]) + (" …" if len(words) > n else "")
    return repr(text)


def _words_of_key(key: str, n_rows: int) -> tuple[list[str], bool] | None:
    """The words a ``sentence_to_index`` key stands for, given the dataset's word count:
    (words, suffix_removed), or None if neither reading of the key fits."""
    def split(text: str) -> list[str]:
        return [] if text == "" and n_rows == 0 else text.split(" ")

    words = split(key)
    if len(words) == n_rows:
        return words, False
    m = _OCCURRENCE.match(key)
    if m and int(m.group(2)) >= 2:
        base = split(m.group(1))
        if len(base) == n_rows:
            return base, True
    return None


@dataclass
class _Read:
    sentences: list[list[str]]
    activations: list[np.ndarray]
    n_layers: int
    hidden_size: int
    keys: list[str]
    n_duplicates: int
    duplicate_handling: str
    source_dtype: str
    unreferenced: list[str] = field(default_factory=list)


def _read_hdf5(path: Path) -> _Read:
    h5py = _h5py()
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise NeuroxFormatError(f"{path}: not a readable HDF5 file ({exc}).") from exc
    with fh:
        if "sentence_to_index" not in fh:
            names = sorted(fh.keys())
            raise NeuroxFormatError(
                f"{path}: no 'sentence_to_index' dataset, so this is not a NeuroX HDF5 activation file "
                f"(it holds {len(names)} entries: {names[:5]}{' …' if len(names) > 5 else ''}).")
        mapping = _sentence_to_index(path, fh["sentence_to_index"])
        sentences: list[list[str]] = []
        activations: list[np.ndarray] = []
        keys: list[str] = []
        used: dict[str, str] = {}
        shape: tuple[int, int] | None = None
        dtypes: set[str] = set()
        renamed = 0
        for i, (key, name) in enumerate(mapping.items()):
            where = f"{path}: sentence {i} (key {key!r}, dataset {name!r})"
            if not isinstance(name, str):
                raise NeuroxFormatError(f"{where}: sentence_to_index values must be dataset names "
                                        f"(strings), got {type(name).__name__}.")
            if name in used:
                raise NeuroxFormatError(f"{where}: dataset {name!r} is also used by key {used[name]!r}; "
                                        "each sentence must have its own dataset.")
            used[name] = key
            if name not in fh or not isinstance(fh[name], h5py.Dataset):
                raise NeuroxFormatError(f"{where}: sentence_to_index names dataset {name!r}, "
                                        "which the file does not hold.")
            ds = fh[name]
            if ds.ndim != 3:
                raise NeuroxFormatError(f"{where}: dataset has shape {ds.shape}; expected 3 dimensions "
                                        "(n_layers, n_words, hidden_size).")
            if ds.dtype.kind != "f":
                raise NeuroxFormatError(f"{where}: dataset has dtype {ds.dtype}; expected floating point.")
            n_layers, n_rows, hidden = (int(x) for x in ds.shape)
            if shape is None:
                shape = (n_layers, hidden)
            elif (n_layers, hidden) != shape:
                raise NeuroxFormatError(
                    f"{where}: dataset has {n_layers} layers × {hidden} units, but sentence 0 "
                    f"(key {keys[0]!r}) has {shape[0]} × {shape[1]}; shapes must agree across sentences.")
            parsed = _words_of_key(key, n_rows)
            if parsed is None:
                raise NeuroxFormatError(
                    f"{where}: the key has {len(key.split(' '))} word(s) but the dataset holds activations "
                    f"for {n_rows} word(s); word count mismatch.")
            words, suffixed = parsed
            renamed += suffixed
            dtypes.add(str(ds.dtype))
            arr = ds[()]
            activations.append(np.ascontiguousarray(np.swapaxes(arr, 0, 1), dtype=np.float32))
            sentences.append(words)
            keys.append(name)
        if shape is None:
            raise NeuroxFormatError(f"{path}: sentence_to_index is empty; the file holds no sentences.")
        unreferenced = sorted(n for n in fh if n != "sentence_to_index" and n not in used)
    if unreferenced:
        log.warning("%s: %d dataset(s) not named in sentence_to_index are ignored (as NeuroX does): %s",
                    path, len(unreferenced), unreferenced[:5])
    dups = _count_duplicates(sentences)
    return _Read(sentences, activations, shape[0], shape[1], keys, dups,
                 f"hdf5: NeuroX's ' (Occurrence N)' suffix removed from {renamed} sentence_to_index key(s); "
                 f"{dups} duplicate sentence(s) kept in place, each with its own activations",
                 "/".join(sorted(dtypes)), unreferenced)


def _sentence_to_index(path: Path, ds) -> dict[str, object]:
    try:
        raw = ds[0] if ds.shape == (1,) else ds[()]
    except (OSError, TypeError, ValueError, KeyError) as exc:
        raise NeuroxFormatError(f"{path}: cannot read 'sentence_to_index' ({exc}).") from exc
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if not isinstance(raw, str):
        raise NeuroxFormatError(f"{path}: 'sentence_to_index' has shape {ds.shape} and dtype {ds.dtype}; "
                                "expected one string holding a JSON object.")
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise NeuroxFormatError(f"{path}: 'sentence_to_index' is not valid JSON ({exc}).") from exc
    if not isinstance(mapping, dict):
        raise NeuroxFormatError(f"{path}: 'sentence_to_index' holds a JSON {type(mapping).__name__}; "
                                "expected an object mapping sentences to dataset names.")
    return mapping


def _read_json(path: Path) -> _Read:
    sentences: list[list[str]] = []
    activations: list[np.ndarray] = []
    keys: list[str] = []
    shape: tuple[int, int] | None = None
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            i = len(sentences)
            where = f"{path}:{line_no}: sentence {i}"
            if not line.strip():
                raise NeuroxFormatError(f"{where}: empty line; NeuroX's loader cannot read it.")
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise NeuroxFormatError(f"{where}: not valid JSON ({exc}).") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("features"), list):
                raise NeuroxFormatError(f"{where}: expected an object with a 'features' list.")
            key = str(obj.get("linex_index", i))
            where = f"{where} (linex_index {key})"
            features = obj["features"]
            if not features:
                raise NeuroxFormatError(f"{where}: no features (words); NeuroX's loader cannot read it.")
            words: list[str] = []
            rows: list[list[list[float]]] = []
            for w, feat in enumerate(features):
                if not isinstance(feat, dict) or not isinstance(feat.get("token"), str) \
                        or not isinstance(feat.get("layers"), list):
                    raise NeuroxFormatError(f"{where}, word {w}: expected an object with 'token' (a string) "
                                            "and 'layers' (a list).")
                layers = feat["layers"]
                wl = f"{where}, word {w} ({feat['token']!r})"
                values = []
                for j, layer in enumerate(layers):
                    if not isinstance(layer, dict) or not isinstance(layer.get("values"), list):
                        raise NeuroxFormatError(f"{wl}, layer {j}: expected an object with a 'values' list.")
                    if layer.get("index", j) != j:
                        raise NeuroxFormatError(f"{wl}: layer {j} has index {layer.get('index')!r}; "
                                                "layers must be listed in order 0, 1, ….")
                    values.append(layer["values"])
                sizes = {len(v) for v in values}
                here = (len(values), sizes.pop() if len(sizes) == 1 else -1)
                if here[1] == -1:
                    raise NeuroxFormatError(f"{wl}: layers have different sizes "
                                            f"{[len(v) for v in values]}; shape mismatch.")
                if shape is None:
                    shape = here
                elif here != shape:
                    raise NeuroxFormatError(
                        f"{wl}: {here[0]} layers × {here[1]} units, but the file's first word has "
                        f"{shape[0]} × {shape[1]}; shapes must agree across words and sentences.")
                words.append(feat["token"])
                rows.append(values)
            try:
                arr = np.asarray(rows, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise NeuroxFormatError(f"{where}: activation values are not all numbers ({exc}).") from exc
            sentences.append(words)
            activations.append(arr.astype(np.float32))
            keys.append(key)
    if shape is None:
        raise NeuroxFormatError(f"{path}: the file holds no sentences.")
    dups = _count_duplicates(sentences)
    return _Read(sentences, activations, shape[0], shape[1], keys, dups,
                 f"json: one line per sentence, no renaming needed; {dups} duplicate sentence(s) kept "
                 "in place, each with its own activations", "json-text")


def _count_duplicates(sentences: Sequence[Sequence[str]]) -> int:
    seen: set[tuple[str, ...]] = set()
    dups = 0
    for s in sentences:
        t = tuple(s)
        dups += t in seen
        seen.add(t)
    return dups


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------ writing
def _check_for_writing(
    path: Path, sentences: Sequence[Sequence[str]], activations: Sequence[np.ndarray], suffix: str,
    *, spaces_allowed: bool,
) -> list[np.ndarray]:
    if path.suffix != suffix:
        raise ValueError(f"{path}: NeuroX's load_activations picks the format by extension; "
                         f"name the file '*{suffix}'.")
    if len(sentences) != len(activations):
        raise NeuroxFormatError(f"{path}: {len(sentences)} sentences but {len(activations)} activation arrays.")
    if not sentences:
        raise NeuroxFormatError(f"{path}: no sentences to write; NeuroX's loader cannot read an empty file.")
    out = []
    shape: tuple[int, int] | None = None
    for i, (words, arr) in enumerate(zip(sentences, activations)):
        where = f"{path}: sentence {i} ({_preview(list(words))})"
        arr = np.asarray(arr)
        if arr.ndim != 3:
            raise NeuroxFormatError(f"{where}: activations have shape {arr.shape}; expected "
                                    "(n_words, n_layers, hidden_size).")
        if not np.issubdtype(arr.dtype, np.floating):
            raise NeuroxFormatError(f"{where}: activations have dtype {arr.dtype}; expected floating point.")
        if len(words) == 0:
            raise NeuroxFormatError(f"{where}: the sentence has no words; NeuroX's loader cannot read it.")
        if arr.shape[0] != len(words):
            raise NeuroxFormatError(f"{where}: {len(words)} word(s) but activations for {arr.shape[0]}; "
                                    "word count mismatch.")
        if not spaces_allowed:
            bad = [w for w in words if " " in w]
            if bad:
                raise NeuroxFormatError(f"{where}: word {bad[0]!r} contains a space; NeuroX joins a "
                                        "sentence's words with spaces, so its word count would change.")
        if shape is None:
            shape = (arr.shape[1], arr.shape[2])
        elif (arr.shape[1], arr.shape[2]) != shape:
            raise NeuroxFormatError(f"{where}: {arr.shape[1]} layers × {arr.shape[2]} units, but sentence 0 "
                                    f"has {shape[0]} × {shape[1]}; shapes must agree across sentences.")
        out.append(arr.astype(np.float32, copy=False))
    return out


def neurox_sentence_keys(sentences: Sequence[Sequence[str]]) -> list[str]:
    """The ``sentence_to_index`` keys NeuroX gives these sentences, in order: the words
    joined by spaces, a repeat suffixed ``" (Occurrence N)"`` with the first free N ≥ 2.

    >>> neurox_sentence_keys([["a", "b"], ["c"], ["a", "b"], ["a", "b"]])
    ['a b', 'c', 'a b (Occurrence 2)', 'a b (Occurrence 3)']
    """
    taken: set[str] = set()
    keys = []
    for words in sentences:
        base = " ".join(words)
        key, counter = base, 1
        while key in taken:
            counter += 1
            key = f"{base} (Occurrence {counter})"
        taken.add(key)
        keys.append(key)
    return keys


def write_neurox_hdf5(
    path: str | Path,
    sentences: Sequence[Sequence[str]],
    activations: Sequence[np.ndarray],
) -> Path:
    """Write activations as a NeuroX HDF5 file that ``neurox.data.loader.load_activations``
    reads back to the same float32 values, bit for bit.

    Parameters
    ----------
    path : str or Path
        Must end in ``.hdf5`` (NeuroX chooses the format by extension). Written to a
        temporary file first and renamed, so a failed write leaves no partial file.
    sentences : sequence of sequence of str
        Each sentence's words (no word may contain a space: NeuroX's keys join words with
        spaces). Duplicates get NeuroX's ``" (Occurrence N)"`` keys.
    activations : sequence of numpy.ndarray
        One (n_words, n_layers, hidden_size) array per sentence; stored as float32.

    Returns
    -------
    Path
    """
    path = Path(path)
    arrays = _check_for_writing(path, sentences, activations, ".hdf5", spaces_allowed=False)
    h5py = _h5py()
    mapping = dict(zip(neurox_sentence_keys(sentences), (str(i) for i in range(len(arrays)))))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with h5py.File(tmp, "w") as fh:
            for i, arr in enumerate(arrays):
                data = np.ascontiguousarray(np.swapaxes(arr, 0, 1))  # (n_layers, n_words, hidden)
                fh.create_dataset(str(i), data.shape, dtype="float32", data=data)
            index = fh.create_dataset("sentence_to_index", (1,), dtype=h5py.special_dtype(vlen=str))
            index[0] = json.dumps(mapping)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_neurox_json(
    path: str | Path,
    sentences: Sequence[Sequence[str]],
    activations: Sequence[np.ndarray],
    *,
    decimals: int | None = None,
) -> Path:
    """Write activations as a NeuroX JSON (JSON Lines) file that ``load_activations`` reads.

    Parameters
    ----------
    path : str or Path
        Must end in ``.json``. Written to a temporary file first and renamed.
    sentences, activations
        As for :func:`write_neurox_hdf5` (here words may contain spaces).
    decimals : int, optional
        ``None`` (default) writes every float32 value exactly (its float64 ``repr``), so
        both NeuroX (float64) and :func:`read_neurox_activations` (float32) get the same
        values bit for bit. ``8`` rounds like NeuroX's own writer (``round(x, 8)``),
        which reproduces NeuroX's files byte for byte but loses up to 1e-8 per value.

    Returns
    -------
    Path
    """
    path = Path(path)
    arrays = _check_for_writing(path, sentences, activations, ".json", spaces_allowed=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for i, (words, arr) in enumerate(zip(sentences, arrays)):
                values = arr.astype(np.float64).tolist()  # exact: every float32 is a float64
                features = []
                for word, word_values in zip(words, values):
                    layers = []
                    for j, layer_values in enumerate(word_values):
                        if decimals is not None:
                            layer_values = [round(x, decimals) for x in layer_values]
                        layers.append({"index": j, "values": layer_values})
                    features.append({"token": word, "layers": layers})
                fh.write(json.dumps({"linex_index": i, "features": features}) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_neurox_activations(
    path: str | Path,
    sentences: Sequence[Sequence[str]],
    activations: Sequence[np.ndarray],
    *,
    format: Format = "auto",
    decimals: int | None = None,
) -> Path:
    """:func:`write_neurox_hdf5` or :func:`write_neurox_json`, by ``format`` or the extension."""
    fmt = format if format != "auto" else {".hdf5": "hdf5", ".json": "json"}.get(Path(path).suffix)
    if fmt == "hdf5":
        return write_neurox_hdf5(path, sentences, activations)
    if fmt == "json":
        return write_neurox_json(path, sentences, activations, decimals=decimals)
    raise ValueError(f"{path}: cannot tell the format; name the file '*.hdf5' or '*.json' "
                     "(NeuroX's load_activations goes by the extension).")


def read_neurox_corpus(path: str | Path) -> list[list[str]]:
    """The sentences of a NeuroX extractor input file, split exactly as NeuroX splits them
    (one sentence per line, ``line.strip().split(" ")``)."""
    with open(path, encoding="utf-8") as fh:
        return [line.strip().split(" ") for line in fh]


# ------------------------------------------------------------------------ the store
@dataclass(frozen=True)
class StoreImport:
    """What :func:`to_store` did.

    Attributes
    ----------
    activation_set : ActivationSet
        The (new or existing) set the activations went into.
    sentence_hashes : list of str
        Each file sentence's hash, in file order (the hash of ``sentences=`` when given).
    n_written : int
        Distinct sentences newly stored.
    n_duplicates : int
        File sentences that repeat an earlier one; the store keeps one copy per hash.
    n_conflicting_duplicates : int
        Of those, how many carried activations different from the first copy (max
        absolute difference in ``max_duplicate_difference``); the first copy is kept.
    n_already_stored : int
        Sentences the set already held (from an earlier import); those rows are kept.
    rejected : list of int
        File sentences recorded as rejected (``word_mismatch="reject"``).
    source : dict
        :meth:`NeuroxActivations.provenance` of the file.
    """

    activation_set: ActivationSet
    sentence_hashes: list[str]
    n_written: int
    n_duplicates: int
    n_conflicting_duplicates: int
    max_duplicate_difference: float
    n_already_stored: int
    rejected: list[int]
    source: dict[str, object]


def import_activation_set_id(model_version: str, aggregation: str, dtype: str = "float32",
                             long_sentences: str = IMPORT_LONG_SENTENCES) -> str:
    """The id of an imported activation set (rows in the DuckDB file, float32), as the
    pipeline computes it (:func:`neuro_pipeline.stages.versions.make_activation_set_id`)."""
    from neuro_pipeline.stages.versions import make_activation_set_id

    return make_activation_set_id(model_version, aggregation=aggregation, dtype=dtype, long_sentences=long_sentences)


def to_store(
    store: Store,
    path: str | Path,
    *,
    aggregation: str = NEUROX_DEFAULT_AGGREGATION,
    sentences: Sequence[Sequence[str]] | None = None,
    format: Format = "auto",
    model_version: str | None = None,
    word_mismatch: Literal["error", "reject"] = "error",
    duplicates: Literal["first", "error"] = "first",
    nonfinite: Literal["keep", "error"] = "keep",
) -> StoreImport:
    """Import a NeuroX activation file into the store as an activation set.

    Parameters
    ----------
    store : Store
    path : str or Path
        The NeuroX file (HDF5 or JSON).
    aggregation : {"last", "first", "average", "mean"}
        How NeuroX combined subwords when it extracted the file (the file does not say;
        NeuroX's default is ``"last"``). ``"average"`` is recorded as ``"mean"``.
    sentences : sequence of word lists, optional
        The real words of each file sentence, in file order (e.g. :func:`read_neurox_corpus`
        of the extractor's input, or a corpus's sentences), so that the rows are keyed by
        the corpus's sentence hashes. Default: the words stored in the file (NeuroX's
        normalised subword strings).
    format : {"auto", "hdf5", "json"}
    model_version : str, optional
        Default ``"neurox-import:<sha256 of the file>"``. Give several files (e.g. NeuroX's
        train and test files of one model) the same value to import them into one set.
    word_mismatch : {"error", "reject"}
        When a file sentence has fewer or more words than its entry in ``sentences`` (NeuroX
        truncates sentences longer than the model's limit): raise, or record it as a
        rejected sentence (as NeuroX's ``load_data`` drops it).
    duplicates : {"first", "error"}
        The store keeps one copy per sentence hash. When repeated sentences carry
        different activations: keep the first and report it (default), or raise.
    nonfinite : {"keep", "error"}
        Passed to :func:`read_neurox_activations`.

    Returns
    -------
    StoreImport
    """
    path = Path(path)
    if aggregation not in _AGGREGATIONS:
        raise ValueError(f"Unknown aggregation {aggregation!r}; choose one of {sorted(_AGGREGATIONS)}.")
    if word_mismatch not in ("error", "reject"):
        raise ValueError(f"word_mismatch must be 'error' or 'reject', got {word_mismatch!r}.")
    if duplicates not in ("first", "error"):
        raise ValueError(f"duplicates must be 'first' or 'error', got {duplicates!r}.")
    data = read_neurox_activations(path, format=format, nonfinite=nonfinite)
    words = data.sentences if sentences is None else [list(s) for s in sentences]
    if len(words) != data.n_sentences:
        raise NeuroxFormatError(f"{path}: the file holds {data.n_sentences} sentences but "
                                f"{len(words)} were given in `sentences`.")
    rejected: list[int] = []
    for i, (given, arr) in enumerate(zip(words, data.activations)):
        if len(given) != arr.shape[0]:
            if word_mismatch == "reject":
                rejected.append(i)
                continue
            raise NeuroxFormatError(
                f"{path}: sentence {i} (key {data.keys[i]!r}, {_preview(given)}) has {len(given)} word(s) "
                f"but the file holds activations for {arr.shape[0]}; word count mismatch (NeuroX truncates "
                "long sentences; pass word_mismatch='reject' to record such sentences as rejected).")
    version = model_version or f"neurox-import:{data.sha256}"
    agg = _AGGREGATIONS[aggregation]
    set_id = import_activation_set_id(version, agg)
    aset = ActivationSet(activation_set=set_id, model_version=version, model_dir=str(path.resolve()),
                         aggregation=agg, dtype="float32", long_sentences=IMPORT_LONG_SENTENCES,
                         n_layers=data.n_layers, hidden_size=data.hidden_size)
    try:
        existing = store.activation_set(set_id)
    except StoreError:
        existing = None
    if existing is None:
        store.register_activation_set(aset)
    elif (existing.n_layers, existing.hidden_size) != (aset.n_layers, aset.hidden_size):
        raise NeuroxFormatError(
            f"{path}: activation set '{set_id}' (model version {version!r}) already holds {existing.n_layers} "
            f"layers × {existing.hidden_size} units, but the file has {data.n_layers} × {data.hidden_size}.")
    else:
        aset = existing
    done = set(store.extracted_sentences(set_id)["sentence_hash"].to_list())
    hashes = [sentence_hash(list(w)) for w in words]
    first: dict[str, int] = {}
    todo: list[tuple[str, np.ndarray, bool]] = []
    reject_rows: list[tuple[str, int]] = []
    n_dup = n_conflict = n_already = 0
    max_diff = 0.0
    rejected_set = set(rejected)
    for i, h in enumerate(hashes):
        if h in first:
            n_dup += 1
            j = first[h]
            if i in rejected_set or j in rejected_set:
                continue
            a, b = data.activations[j], data.activations[i]
            if not np.array_equal(a, b, equal_nan=True):
                n_conflict += 1
                with np.errstate(invalid="ignore"):
                    diff = float(np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                max_diff = max(max_diff, diff)
                if duplicates == "error":
                    raise NeuroxFormatError(
                        f"{path}: sentence {i} (key {data.keys[i]!r}, {_preview(words[i])}) repeats sentence {j} "
                        f"but its activations differ (max abs difference {diff:.3g}); the store keeps one "
                        "copy per sentence (pass duplicates='first' to keep the first).")
            continue
        first[h] = i
        if h in done:
            n_already += 1
        elif i in rejected_set:
            reject_rows.append((h, len(words[i])))
        else:
            todo.append((h, data.activations[i], False))
    if n_conflict:
        log.warning("%s: %d repeated sentence(s) carry activations different from their first occurrence "
                    "(max abs difference %.3g); the store keeps the first.", path, n_conflict, max_diff)
    store.write_activations(set_id, todo, rejected=reject_rows)
    return StoreImport(activation_set=aset, sentence_hashes=hashes, n_written=len(todo), n_duplicates=n_dup,
                       n_conflicting_duplicates=n_conflict, max_duplicate_difference=max_diff,
                       n_already_stored=n_already, rejected=rejected, source=data.provenance())


def read_store_sentences(
    store: Store, activation_set: str, sentences: Sequence[Sequence[str]],
) -> list[np.ndarray]:
    """The stored activations of these sentences, one (n_words, n_layers, hidden_size) float32
    array each, in order (repeats allowed).

    Raises
    ------
    StoreError
        If a sentence is not in the set, was rejected, or was stored with another word count;
        the message names the sentence's index and words.
    """
    aset = store.activation_set(activation_set)
    status = store.extracted_sentences(activation_set)
    known = {r["sentence_hash"]: r for r in status.iter_rows(named=True)}
    hashes = [sentence_hash(list(w)) for w in sentences]
    for i, (words, h) in enumerate(zip(sentences, hashes)):
        row = known.get(h)
        where = f"{store.path}: activation set '{activation_set}', sentence {i} ({_preview(list(words))}, hash {h})"
        if row is None:
            raise StoreError(f"{where}: not in the set; extract or import it first.")
        if row["status"] != "ok":
            raise StoreError(f"{where}: recorded as {row['status']} (no activations); cannot export it.")
        if row["n_words"] != len(words):
            raise StoreError(f"{where}: stored with {row['n_words']} words, given {len(words)}.")
    if not hashes:
        return []
    keys = pl.DataFrame({
        "sentence_hash": [h for h, w in zip(hashes, sentences) for _ in range(len(w))],
        "position": np.concatenate([np.arange(len(w), dtype=np.int32) for w in sentences]),
    }, schema={"sentence_hash": pl.Utf8, "position": pl.Int32})
    matrix = store.read_activation_matrix(activation_set, keys)
    out = []
    start = 0
    for words in sentences:
        n = len(words)
        out.append(matrix[start:start + n].reshape(n, aset.n_layers, aset.hidden_size))
        start += n
    return out


def from_store(
    store: Store,
    activation_set: str,
    sentences: Sequence[Sequence[str]],
    path: str | Path,
    *,
    format: Format = "auto",
    decimals: int | None = None,
) -> Path:
    """Export an activation set's activations for these sentences as a NeuroX file.

    Parameters
    ----------
    store : Store
    activation_set : str
    sentences : sequence of word lists
        The sentences to write, in order, e.g. :func:`corpus_sentences` of a corpus or the
        lines of the labels file NeuroX will pair them with. Each must be in the set (by
        its sentence hash); repeats are written as NeuroX writes them.
    path : str or Path
        ``*.hdf5`` or ``*.json``.
    format : {"auto", "hdf5", "json"}
    decimals : int, optional
        JSON only; see :func:`write_neurox_json`.

    Returns
    -------
    Path
    """
    arrays = read_store_sentences(store, activation_set, sentences)
    return write_neurox_activations(path, sentences, arrays, format=format, decimals=decimals)


def corpus_sentences(store: Store, corpus_id: str, *, splits: Sequence[str] | None = None) -> list[list[str]]:
    """A stored corpus's sentences (word lists) in sentence order, from the ``tokens`` table."""
    tokens = store.read_tokens(corpus_id, splits=splits)
    grouped = tokens.group_by("sentence_id", maintain_order=True).agg(pl.col("token"))
    return [list(t) for t in grouped["token"].to_list()]


__all__ = [
    "IMPORT_LONG_SENTENCES", "NEUROX_DEFAULT_AGGREGATION", "NEUROX_JSON_DECIMALS", "NeuroxActivations",
    "NeuroxFormatError", "StoreImport", "corpus_sentences", "from_store", "import_activation_set_id",
    "neurox_sentence_keys", "read_neurox_activations", "read_neurox_corpus", "read_store_sentences",
    "to_store", "write_neurox_activations", "write_neurox_hdf5", "write_neurox_json",
]
