"""Control tasks and selectivity (Hewitt & Liang 2019): does the probe read the concept,
or memorise word identities?

Start here: :func:`evaluate_selectivity` trains, for each neuron selection, one probe on
the real labels and one on control labels, and reports ``selectivity = task accuracy -
control accuracy``. A control task gives every word *type* a random label, so a probe can
only solve it by memorising which word is which; a selection that scores well on the task
but poorly on the control encodes the concept, not just the word.

:func:`control_labels` builds the control labels as NeuroX's
``data.control_task.create_sequence_labeling_dataset`` does (``sample_from="same"``,
``case_sensitive=True``): each word type gets one label drawn from the empirical label
distribution of the training tokens, and keeps it in every split. Unlike NeuroX, which
draws from the global NumPy random state in corpus order, the draw is a hash of the seed
and the word, so the mapping is reproducible, does not depend on the order of the corpus
or on which split a word is first met in, and can be recomputed for any new word.
:func:`selectivity` is the difference itself.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import time
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import polars as pl

from neuro_pipeline.evaluation.selection import (
    DEFAULT_SELECTION_PROBE_PARAMS,
    check_selection,
    check_splits,
)
from neuro_pipeline.matrix import take_columns
from neuro_pipeline.probe import LinearProbe, column_stats

logger = logging.getLogger(__name__)

SELECTIVITY_SCHEMA = {
    "selection": pl.String,
    "k": pl.Int32,
    "task_accuracy": pl.Float64,
    "control_accuracy": pl.Float64,
    "selectivity": pl.Float64,
}


def _check_words(words, *, name: str, owner: str) -> list[str]:
    if isinstance(words, str):
        raise TypeError(f"{owner}: {name} must be a sequence of words (str), not a single string.")
    if isinstance(words, np.ndarray) and words.ndim != 1:
        raise ValueError(f"{owner}: {name} must be 1-D, one word per token; got shape {words.shape}.")
    words = list(words)
    for i, word in enumerate(words):
        if not isinstance(word, str):
            raise TypeError(f"{owner}: {name} must hold words as str; got {type(word).__name__} {word!r} at position {i}.")
    return words


def _check_seed(seed, *, owner: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not -(2**63) <= seed < 2**63:
        raise ValueError(f"{owner}: seed must be an int in [-2**63, 2**63); got {seed!r}.")
    return int(seed)


def _word_uniform(seed: int, word: str) -> int:
    """A 64-bit integer, uniform over [0, 2**64), fixed by (seed, word).

    The seed is packed to 8 bytes before the UTF-8 word, so no (seed, word) pair can
    produce the same input as another.
    """
    data = seed.to_bytes(8, "little", signed=True) + word.encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def control_labels(train_words, train_labels, words, *, seed: int = 0) -> np.ndarray:
    """Control-task labels of ``words``: one random label per word type (Hewitt & Liang 2019).

    Each distinct word gets a label drawn from the label distribution of the training
    tokens (the share of training tokens with each label, as NeuroX's ``sample_from="same"``).
    The draw is deterministic: a word's 64-bit BLAKE2b hash of ``(seed, word)``, read as a
    uniform number ``u`` in [0, 1), picks the label whose interval of the cumulative
    distribution over the *sorted* labels contains ``u`` (inverse-CDF sampling, in exact
    integer arithmetic). So a word type has the same control label in every split and
    in every call with the same seed and training labels, whatever the order of the
    corpus, and words that never occur in training still get a label.

    Word types are the strings as given: comparison is case-sensitive and nothing is
    normalised (NeuroX's default ``case_sensitive=True``), so ``"The"`` and ``"the"`` are
    two types that draw independently. Lower-case the words first for a case-insensitive
    control task.

    Parameters
    ----------
    train_words : sequence of str, length n_train
        The training tokens; checked to pair one-to-one with ``train_labels``. The mapping
        itself depends only on the training *label* distribution, not on which words occur.
    train_labels : array-like of shape (n_train,)
        The real task labels of the training tokens. The control labels are drawn from
        these label values (so a control probe has the same label set as the task), but a
        word's control label has nothing to do with its real label.
    words : sequence of str
        The tokens to label (any split, in any order).
    seed : int, default=0
        Selects the random mapping; another seed gives an independent control task.

    Returns
    -------
    numpy.ndarray of shape (len(words),)
        Control labels, of the dtype of ``np.unique(train_labels)``.

    Raises
    ------
    TypeError
        If a word is not a ``str`` (or the words are one string).
    ValueError
        If ``train_words`` and ``train_labels`` differ in length, the training labels are
        empty or hold a missing (None) label, or the seed is not a 64-bit int.

    Examples
    --------
    >>> train_words = ["the", "dog", "the", "cat"]
    >>> train_labels = ["DET", "NOUN", "DET", "NOUN"]
    >>> labels = control_labels(train_words, train_labels, ["cat", "the", "cat"])
    >>> bool(labels[0] == labels[2])  # one label per word type
    True
    >>> control_labels(["a", "b"], ["X", "X"], ["unseen", "words"]).tolist()  # one label: no choice
    ['X', 'X']
    """
    owner = "control_labels"
    seed = _check_seed(seed, owner=owner)
    train_words = _check_words(train_words, name="train_words", owner=owner)
    words = _check_words(words, name="words", owner=owner)
    train_labels = np.asarray(train_labels)
    if train_labels.ndim != 1 or len(train_labels) != len(train_words):
        raise ValueError(
            f"{owner}: train_labels must have shape ({len(train_words)},), one label per training word; "
            f"got {train_labels.shape}."
        )
    if len(train_labels) == 0:
        raise ValueError(f"{owner}: the training split is empty; control labels need its label distribution.")
    if train_labels.dtype.kind == "O" and any(label is None for label in train_labels):
        raise ValueError(f"{owner}: train_labels holds a missing label (None); every training token needs one.")
    classes, counts = np.unique(train_labels, return_counts=True)
    cumulative = np.cumsum(counts).tolist()
    total = cumulative[-1]
    label_of_type: dict[str, int] = {}
    for word in words:
        if word not in label_of_type:
            # u = h / 2**64; the label is the first with u * total < cumulative count.
            r = (_word_uniform(seed, word) * total) >> 64
            label_of_type[word] = bisect.bisect_right(cumulative, r)
    return classes[np.fromiter((label_of_type[w] for w in words), dtype=np.intp, count=len(words))]


def selectivity(task_accuracy: float, control_accuracy: float) -> float:
    """Selectivity of a probe: its task accuracy minus its control-task accuracy.

    Hewitt & Liang (2019) call a probe *selective* when it does well on the task but
    poorly on a control task of the same output space: high selectivity means the
    representation makes the concept easy to read, low (or negative) selectivity means a
    probe this expressive could reach the accuracy by memorising word types. NeuroX's
    control-task PR (#16) uses the same definition. Both accuracies must come from probes
    of the same kind on the same neurons and test tokens.

    Parameters
    ----------
    task_accuracy, control_accuracy : float in [0, 1]

    Returns
    -------
    float in [-1, 1]

    Raises
    ------
    ValueError
        If an accuracy is not a number in [0, 1].

    Examples
    --------
    >>> round(selectivity(0.95, 0.70), 6)
    0.25
    """
    for name, value in (("task_accuracy", task_accuracy), ("control_accuracy", control_accuracy)):
        if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
            raise ValueError(f"selectivity: {name} must be an accuracy in [0, 1]; got {value!r}.")
    return float(task_accuracy) - float(control_accuracy)


def evaluate_selectivity(
    X_train,
    words_train,
    y_train,
    X_test,
    words_test,
    y_test,
    selections: Mapping[str, np.ndarray] | None = None,
    *,
    seed: int = 0,
    probe_params: Mapping | None = None,
    by_class: bool = False,
) -> pl.DataFrame | tuple[pl.DataFrame, pl.DataFrame]:
    """Task accuracy, control accuracy and selectivity of probes on neuron selections.

    The control labels come from :func:`control_labels` with the training split's words
    and labels (test words get their labels from the same mapping). For each selection a
    fresh :class:`~neuro_pipeline.probe.LinearProbe` is trained on the task labels and
    another on the control labels, both on a copy of just the selected columns, and each
    is scored on the test tokens with the matching labels.

    Parameters
    ----------
    X_train, X_test : array-like of shape (n_tokens, n_neurons)
        Activations; never modified.
    words_train, words_test : sequence of str
        The word of each row (the word types of the control task; case-sensitive).
    y_train, y_test : array-like of shape (n_tokens,)
        Task labels. Test labels never seen in training count as errors.
    selections : mapping of str to array-like of int, optional
        Named neuron selections (e.g. ``{"top 5%": ranking[:k], "random": ...}``).
        Default: ``{"all": every neuron}``.
    seed : int, default=0
        Seed of the control task (:func:`control_labels`).
    probe_params : mapping, optional
        ``LinearProbe`` hyperparameters; defaults to
        :data:`~neuro_pipeline.evaluation.selection.DEFAULT_SELECTION_PROBE_PARAMS`.
    by_class : bool, default=False
        Also return the same figures per task class: for the test words of each class,
        the task probe's accuracy and the control probe's accuracy on their control labels.

    Returns
    -------
    polars.DataFrame
        One row per selection, in the mapping's order: ``selection`` (String), ``k``
        (Int32, the number of neurons), ``task_accuracy``, ``control_accuracy``,
        ``selectivity`` (Float64).
    polars.DataFrame, only with ``by_class``
        One row per selection and test class: ``selection``, ``label``, ``support``,
        ``task_accuracy``, ``control_accuracy``, ``selectivity``.

    Raises
    ------
    ValueError
        On inconsistent shapes, a selection that is empty, repeats a neuron or names one
        out of range, or control labels with a single class (too few word types).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> words = [f"w{i % 40}" for i in range(400)]
    >>> y = np.array([i % 40 % 2 for i in range(400)])
    >>> X = (y[:, None] + 0.1 * rng.normal(size=(400, 3))).astype(np.float32)
    >>> table = evaluate_selectivity(X[:200], words[:200], y[:200], X[200:], words[200:], y[200:])
    >>> table.select("selection", "k", "task_accuracy").rows()
    [('all', 3, 1.0)]
    """
    owner = "evaluate_selectivity"
    X_train, y_train, X_test, y_test = check_splits(X_train, y_train, X_test, y_test, owner=owner)
    n_neurons = X_train.shape[1]
    words_train = _check_words(words_train, name="words_train", owner=owner)
    words_test = _check_words(words_test, name="words_test", owner=owner)
    for name, words, X in (("words_train", words_train, X_train), ("words_test", words_test, X_test)):
        if len(words) != X.shape[0]:
            raise ValueError(f"{owner}: {name} has {len(words)} words but X has {X.shape[0]} rows; expected one word per row.")
    if selections is None:
        selections = {"all": np.arange(n_neurons)}
    if not isinstance(selections, Mapping) or not selections:
        raise ValueError(f"{owner}: selections must be a non-empty mapping of name -> neuron indices, or None.")
    checked = {str(name): check_selection(cols, n_neurons, name=str(name), owner=owner)
               for name, cols in selections.items()}
    params = dict(DEFAULT_SELECTION_PROBE_PARAMS if probe_params is None else probe_params)

    control_train = control_labels(words_train, y_train, words_train, seed=seed)
    control_test = control_labels(words_train, y_train, words_test, seed=seed)
    if len(np.unique(control_train)) < 2:
        raise ValueError(
            f"{owner}: every training word type drew the same control label; "
            "the control task needs more word types (or another seed)."
        )
    rows, class_rows = [], []
    y_test_str = np.asarray(y_test).astype(str)
    for name, columns in checked.items():
        start = time.perf_counter()
        if len(columns) == n_neurons:  # every neuron: no copy needed
            train_part, test_part = X_train, X_test
        else:
            train_part, test_part = take_columns(X_train, columns), take_columns(X_test, columns)
        stats = column_stats(train_part)  # one standardisation for both probes
        task_probe = LinearProbe(**params).fit(train_part, y_train, column_stats=stats)
        control_probe = LinearProbe(**params).fit(train_part, control_train, column_stats=stats)
        task_hit = task_probe.predict(test_part) == np.asarray(y_test)
        control_hit = control_probe.predict(test_part) == np.asarray(control_test)
        task, control = float(task_hit.mean()), float(control_hit.mean())
        if by_class:
            for label in np.unique(y_test_str):
                rows_of = y_test_str == label
                t, c = float(task_hit[rows_of].mean()), float(control_hit[rows_of].mean())
                class_rows.append({"selection": name, "label": str(label), "support": int(rows_of.sum()),
                                   "task_accuracy": t, "control_accuracy": c, "selectivity": selectivity(t, c)})
        rows.append(
            {
                "selection": name,
                "k": len(columns),
                "task_accuracy": task,
                "control_accuracy": control,
                "selectivity": selectivity(task, control),
            }
        )
        logger.info("%s: %s in %.1f s", owner, rows[-1], time.perf_counter() - start)
    table = pl.DataFrame(rows, schema=SELECTIVITY_SCHEMA)
    if not by_class:
        return table
    return table, pl.DataFrame(class_rows, schema={
        "selection": pl.String, "label": pl.String, "support": pl.Int32, "task_accuracy": pl.Float64,
        "control_accuracy": pl.Float64, "selectivity": pl.Float64})
