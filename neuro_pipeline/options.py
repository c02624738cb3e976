"""The allowed values of the options that more than one module checks, each defined once.

Start here: :mod:`neuro_pipeline.config` validates ``pipeline.yaml`` against these sets,
and the modules that compute with an option (extraction, evaluation, interventions) check
their arguments against the same objects, so a value cannot be accepted in one place and
refused in another. The order of each tuple is the order error messages list the values in.

The module holds plain tuples and read-only mappings of strings and imports nothing heavy
(no numpy, no torch), so that a process which only reads a configuration stays fast.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = [
    "ABLATION_INTERVENTION_MODES",
    "ABLATION_MODES",
    "ABLATION_ZERO_VALUES",
    "AGGREGATIONS",
    "AGGREGATION_ALIASES",
    "ALERT_SEVERITIES",
    "COMPUTE_DTYPES",
    "CORPUS_FORMATS",
    "EXECUTORS",
    "INTERVENTION_MODES",
    "LONG_SENTENCE_MODES",
    "MODEL_COMPONENTS",
    "SELECTIONS",
    "STORAGES",
    "STORAGE_DTYPES",
    "TEXT_TOKENIZERS",
]

# ---------------------------------------------------------------------- corpus
#: Corpus readers (``corpus.format``).
CORPUS_FORMATS: tuple[str, ...] = ("demo", "conllu", "parallel", "text")
#: Word tokenizers of plain text (``corpus.tokenizer``); :mod:`neuro_pipeline.corpus.text`
#: implements one function per name.
TEXT_TOKENIZERS: tuple[str, ...] = ("whitespace", "punct")

# ---------------------------------------------------------------------- model and extraction
#: The stack of an encoder-decoder model whose states are extracted (``model.component``,
#: the ``component`` of :func:`~neuro_pipeline.extraction.load_model`).
MODEL_COMPONENTS: tuple[str, ...] = ("encoder", "decoder")
#: Dtypes a model computes in (``model.dtype``, the ``dtype`` of ``load_model``).
COMPUTE_DTYPES: tuple[str, ...] = ("float32", "bfloat16")
#: How a word's subword vectors become one vector (``extraction.aggregation``).
AGGREGATIONS: tuple[str, ...] = ("first", "last", "mean")
#: Other names the library's aggregation arguments accept, mapped to the canonical name:
#: ``"average"`` is NeuroX's name for ``"mean"``. ``pipeline.yaml`` takes only the
#: canonical names, so that one setting is never written two ways.
AGGREGATION_ALIASES: MappingProxyType[str, str] = MappingProxyType({"average": "mean"})
#: What happens to a sentence longer than the model's limit (``extraction.long_sentences``).
LONG_SENTENCE_MODES: tuple[str, ...] = ("window", "reject")
#: Dtypes activations are stored in (``extraction.storage_dtype``).
STORAGE_DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
#: Where activations are stored (``extraction.storage``).
STORAGES: tuple[str, ...] = ("duckdb", "parquet")

# ---------------------------------------------------------------------- evaluation
#: Neuron selections compared by the evaluation and the ablation, in the order rows are
#: reported: a ranking's top neurons, random draws, its bottom neurons.
SELECTIONS: tuple[str, ...] = ("top", "random", "bottom")
#: Ablations at the probe (``evaluation.ablation_modes``), in the order rows are reported.
ABLATION_MODES: tuple[str, ...] = ("keep_retrain", "keep_zero", "remove_retrain", "remove_zero")
#: What a zeroed-out neuron is filled with by the ablation at the probe: its training mean
#: or raw 0, in the order rows are reported.
ABLATION_ZERO_VALUES: tuple[str, ...] = ("mean", "zero")

# ---------------------------------------------------------------------- interventions
#: Edits of units inside the live model (the ``mode`` of
#: :func:`~neuro_pipeline.intervention.neuron_edits`).
INTERVENTION_MODES: tuple[str, ...] = ("zero", "mean", "scale")
#: The intervention modes that ablate a neuron (``interventions.mode``); ``"scale"`` only
#: rescales it.
ABLATION_INTERVENTION_MODES: tuple[str, ...] = ("mean", "zero")

# ---------------------------------------------------------------------- running and monitoring
#: Executors a run can use (``execution.executor``).
EXECUTORS: tuple[str, ...] = ("in_process", "multiprocess", "celery")
#: Severity of the drift check when a threshold is crossed (``monitoring.alert_severity``).
ALERT_SEVERITIES: tuple[str, ...] = ("warn", "error")
