"""Where in the network is a concept? Probes per layer, and per-class neuron sets.

Start here: :func:`layerwise_probing` trains one probe per layer (NeuroX's layer-wise
probing: ``extract`` one layer, train, compare accuracies), optionally with a control task
so that each layer also gets a selectivity. :func:`layer_distribution` counts in which
layers each class's top-ranked neurons lie (NeuroX's ``plot_distributedness`` data), and
:func:`minimal_neuron_sets` finds, per class, how short a prefix of that class's ranking
already detects the class almost as well as a probe on every neuron.

The activations are the pipeline's layer-concatenated matrix: layer ``l`` is columns
``l * hidden_size`` to ``(l + 1) * hidden_size - 1``, so neuron ``j`` lies in layer
``j // hidden_size``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from numbers import Integral, Real

import numpy as np
import polars as pl

from neuro_pipeline.evaluation.control import selectivity
from neuro_pipeline.evaluation.metrics import label_string
from neuro_pipeline.evaluation.selection import (
    DEFAULT_SELECTION_PROBE_PARAMS,
    check_selection,
    check_splits,
)
from neuro_pipeline.matrix import take_columns
from neuro_pipeline.probe import LinearProbe, column_stats

logger = logging.getLogger(__name__)

DEFAULT_MINIMAL_SET_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _check_positive_int(value, *, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be an int >= 1; got {value!r}.")
    return int(value)




def layerwise_probing(
    X_train,
    y_train,
    X_test,
    y_test,
    *,
    n_layers: int,
    hidden_size: int,
    control_train=None,
    control_test=None,
    probe_params: Mapping | None = None,
) -> pl.DataFrame:
    """Test accuracy of one probe per layer, with optional control-task selectivity.

    For each layer a fresh :class:`~neuro_pipeline.probe.LinearProbe` is trained on that
    layer's columns of ``X_train`` (copied once per layer) and scored on ``X_test``. When
    control labels are given (from
    :func:`~neuro_pipeline.evaluation.control.control_labels`), a second probe per layer is
    trained and scored on them, and ``selectivity = accuracy - control_accuracy``.

    Parameters
    ----------
    X_train, X_test : array-like of shape (n_tokens, n_layers * hidden_size)
        Layer-concatenated activations; never modified.
    y_train, y_test : array-like of shape (n_tokens,)
        Task labels.
    n_layers, hidden_size : int
        The layout of the columns; their product must equal the number of columns.
    control_train, control_test : array-like of shape (n_tokens,), optional
        Control-task labels of the training and test tokens; give both or neither.
    probe_params : mapping, optional
        ``LinearProbe`` hyperparameters; defaults to
        :data:`~neuro_pipeline.evaluation.selection.DEFAULT_SELECTION_PROBE_PARAMS`.

    Returns
    -------
    polars.DataFrame
        One row per layer, in order: ``layer`` (Int32), ``n_neurons`` (Int32), ``accuracy``
        (Float64), and with control labels also ``control_accuracy`` and ``selectivity``
        (Float64).

    Raises
    ------
    ValueError
        On inconsistent shapes, a column count other than ``n_layers * hidden_size``, or
        only one of the two control label arrays.

    Examples
    --------
    Layer 0 is the label itself, layer 1 a constant, so its probe can only predict the
    majority training class (0), right on half the test tokens:

    >>> X_train = np.array([[0, 5], [0, 5], [0, 5], [1, 5]], dtype=np.float32)
    >>> X_test = np.array([[0, 5], [0, 5], [1, 5], [1, 5]], dtype=np.float32)
    >>> table = layerwise_probing(X_train, [0, 0, 0, 1], X_test, [0, 0, 1, 1], n_layers=2, hidden_size=1)
    >>> table.rows()
    [(0, 1, 1.0), (1, 1, 0.5)]
    """
    owner = "layerwise_probing"
    X_train, y_train, X_test, y_test = check_splits(X_train, y_train, X_test, y_test, owner=owner)
    n_layers = _check_positive_int(n_layers, name="n_layers", owner=owner)
    hidden_size = _check_positive_int(hidden_size, name="hidden_size", owner=owner)
    if X_train.shape[1] != n_layers * hidden_size:
        raise ValueError(
            f"{owner}: X has {X_train.shape[1]} columns but n_layers * hidden_size = {n_layers} * {hidden_size} "
            f"= {n_layers * hidden_size}; pass the layout the activations were extracted with."
        )
    if (control_train is None) != (control_test is None):
        raise ValueError(f"{owner}: give both control_train and control_test, or neither.")
    with_control = control_train is not None
    if with_control:
        control_train = np.asarray(control_train)
        control_test = np.asarray(control_test)
        for name, labels, X in (("control_train", control_train, X_train), ("control_test", control_test, X_test)):
            if labels.shape != (X.shape[0],):
                raise ValueError(
                    f"{owner}: {name} must have shape ({X.shape[0]},), one control label per token; got {labels.shape}."
                )
    params = dict(DEFAULT_SELECTION_PROBE_PARAMS if probe_params is None else probe_params)

    rows = []
    for layer in range(n_layers):
        start = time.perf_counter()
        cols = slice(layer * hidden_size, (layer + 1) * hidden_size)
        # One contiguous copy per layer, read by every FISTA pass of both probes, and one
        # standardisation for both.
        train_part = np.ascontiguousarray(X_train[:, cols])
        test_part = np.ascontiguousarray(X_test[:, cols])
        stats = column_stats(train_part)
        row = {
            "layer": layer,
            "n_neurons": hidden_size,
            "accuracy": LinearProbe(**params).fit(train_part, y_train, column_stats=stats).score(test_part, y_test),
        }
        if with_control:
            row["control_accuracy"] = (LinearProbe(**params).fit(train_part, control_train, column_stats=stats)
                                       .score(test_part, control_test))
            row["selectivity"] = selectivity(row["accuracy"], row["control_accuracy"])
        rows.append(row)
        logger.info("%s: %s in %.1f s", owner, row, time.perf_counter() - start)
    schema = {"layer": pl.Int32, "n_neurons": pl.Int32, "accuracy": pl.Float64}
    if with_control:
        schema |= {"control_accuracy": pl.Float64, "selectivity": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def layer_distribution(
    class_rankings: Mapping, *, hidden_size: int, n_layers: int, top: int = 10
) -> pl.DataFrame:
    """In which layers do each class's top neurons lie?

    Parameters
    ----------
    class_rankings : mapping of label to array-like of int
        Each class's neurons, best first (a full ranking or a prefix of one), as indices
        into the layer-concatenated columns.
    hidden_size, n_layers : int
        The layout of the columns: neuron ``j`` lies in layer ``j // hidden_size``.
    top : int, default=10
        How many leading neurons of each ranking to count (fewer when a ranking is shorter).

    Returns
    -------
    polars.DataFrame
        One row per (class, layer), every layer included, classes in the mapping's order:
        ``label`` (String), ``layer`` (Int32), ``n_neurons`` (Int32, how many of the class's
        top neurons lie in the layer), ``share`` (Float64, ``n_neurons`` / neurons counted;
        sums to 1 per class).

    Raises
    ------
    ValueError
        If a ranking is empty, not 1-D integers, repeats a neuron, or names a neuron outside
        ``0 .. n_layers * hidden_size - 1``; or if a size parameter is not a positive int.

    Examples
    --------
    >>> table = layer_distribution({"NOUN": [5, 0, 4, 9]}, hidden_size=4, n_layers=3, top=3)
    >>> table.rows()
    [('NOUN', 0, 1, 0.3333333333333333), ('NOUN', 1, 2, 0.6666666666666666), ('NOUN', 2, 0, 0.0)]
    """
    owner = "layer_distribution"
    hidden_size = _check_positive_int(hidden_size, name="hidden_size", owner=owner)
    n_layers = _check_positive_int(n_layers, name="n_layers", owner=owner)
    top = _check_positive_int(top, name="top", owner=owner)
    if not isinstance(class_rankings, Mapping) or not class_rankings:
        raise ValueError(f"{owner}: class_rankings must be a non-empty mapping of label -> ranked neuron indices.")
    n_neurons = n_layers * hidden_size
    labels, layers, counts, shares = [], [], [], []
    for label, ranking in class_rankings.items():
        name = label_string(label)
        ranking = np.asarray(ranking)
        check_selection(ranking, n_neurons, name=name, owner=owner)
        chosen = ranking[:top]
        per_layer = np.bincount(chosen // hidden_size, minlength=n_layers)
        labels += [name] * n_layers
        layers += list(range(n_layers))
        counts += per_layer.tolist()
        shares += (per_layer / len(chosen)).tolist()
    return pl.DataFrame(
        {"label": labels, "layer": layers, "n_neurons": counts, "share": shares},
        schema={"label": pl.String, "layer": pl.Int32, "n_neurons": pl.Int32, "share": pl.Float64},
    )


def _f1(is_true: np.ndarray, is_pred: np.ndarray) -> float:
    tp = int((is_true & is_pred).sum())
    denominator = int(is_true.sum()) + int(is_pred.sum())
    return 2 * tp / denominator if denominator else 0.0


def minimal_neuron_sets(
    X_train,
    y_train,
    X_test,
    y_test,
    class_rankings: Mapping,
    *,
    target_share: float = 0.9,
    sizes: Sequence[int] = DEFAULT_MINIMAL_SET_SIZES,
    probe_params: Mapping | None = None,
    full_probe: LinearProbe | None = None,
) -> pl.DataFrame:
    """Per class, the shortest prefix of its ranking that detects the class almost as
    well as a probe on every neuron.

    The yardstick is the class's one-vs-rest F1 on the test tokens:

    - *full*: one multiclass probe on every neuron (trained once, or ``full_probe``), its
      predictions read one-vs-rest (predicted ``c`` or not) against the truth (``c`` or not);
    - *prefix*: for each size ``k`` in ``sizes``, ascending, a binary probe (``c`` vs every
      other class) on the first ``k`` neurons of the class's ranking, scored the same way.

    The first size whose F1 reaches ``target_share * full F1`` is the class's minimal set;
    larger sizes are not tried. F1, not recall (NeuroX's per-class accuracy), because a
    binary probe on an imbalanced class decides at probability 1/2 while the multiclass
    probe takes the most probable class, so the two trade recall against precision
    differently; F1 counts both kinds of error and keeps the comparison fair. Cost: at most
    ``len(sizes)`` small binary probes per class, plus the one full probe.

    Parameters
    ----------
    X_train, X_test : array-like of shape (n_tokens, n_neurons)
        Activations; never modified (only the prefix columns are copied).
    y_train, y_test : array-like of shape (n_tokens,)
        Task labels (at least 2 classes in training).
    class_rankings : mapping of label to array-like of int
        Each class's neurons, best first (e.g. a per-class ranking of the linear probe).
        Every label must occur in ``y_train``. Sizes beyond a ranking's length are skipped.
    target_share : float in (0, 1], default=0.9
        The share of the full probe's F1 a prefix must reach.
    sizes : sequence of int, default=(1, 2, 4, ..., 256)
        The prefix lengths to try.
    probe_params : mapping, optional
        ``LinearProbe`` hyperparameters of the probes trained here; defaults to
        :data:`~neuro_pipeline.evaluation.selection.DEFAULT_SELECTION_PROBE_PARAMS`.
    full_probe : LinearProbe, optional
        A probe already fitted on every column of ``X_train`` with ``y_train``; saves
        training one.

    Returns
    -------
    polars.DataFrame
        One row per class, in the mapping's order: ``label`` (String), ``n_neurons``
        (Int32; null when no tried size reached the target), ``reached_f1`` (Float64; the
        F1 of the minimal set, or when never reached the best F1 of the sizes tried),
        ``target_f1``, ``full_f1`` (Float64), ``neurons`` (List(Int32): the minimal set,
        best first; empty when never reached). A class without test tokens has null
        scores and an empty set.

    Raises
    ------
    ValueError
        On inconsistent shapes, a class that is not in ``y_train``, a bad ranking, sizes
        that are not positive ints, a ``target_share`` outside (0, 1], or a ``full_probe``
        fitted on another number of neurons.

    Examples
    --------
    Neuron 0 marks class "a", neuron 1 class "b"; neuron 2 is noise:

    >>> rng = np.random.default_rng(0)
    >>> y = np.array(["a", "b", "c"] * 100)
    >>> X = np.stack([y == "a", y == "b", rng.random(300) > 0.5], axis=1).astype(np.float32)
    >>> rankings = {"a": [0, 2, 1], "b": [2, 1, 0], "c": [2, 0, 1]}
    >>> table = minimal_neuron_sets(X[:150], y[:150], X[150:], y[150:], rankings, sizes=(1, 2, 3))
    >>> table.select("label", "n_neurons", "neurons").rows()
    [('a', 1, [0]), ('b', 2, [2, 1]), ('c', 3, [2, 0, 1])]
    """
    owner = "minimal_neuron_sets"
    X_train, y_train, X_test, y_test = check_splits(X_train, y_train, X_test, y_test, owner=owner)
    n_neurons = X_train.shape[1]
    if isinstance(target_share, bool) or not isinstance(target_share, Real) or not 0 < target_share <= 1:
        raise ValueError(f"{owner}: target_share must be in (0, 1]; got {target_share!r}.")
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
        raise ValueError(f"{owner}: sizes must be a non-empty sequence of ints >= 1; got {sizes!r}.")
    sizes = sorted({_check_positive_int(size, name="every size", owner=owner) for size in sizes})
    if not isinstance(class_rankings, Mapping) or not class_rankings:
        raise ValueError(f"{owner}: class_rankings must be a non-empty mapping of label -> ranked neuron indices.")
    train_classes = np.unique(y_train)
    rankings = {}
    for label, ranking in class_rankings.items():
        if not np.isin(label, train_classes):
            raise ValueError(
                f"{owner}: class {label!r} of class_rankings does not occur in y_train; "
                f"the training labels are {train_classes.tolist()!r}."
            )
        ranking = np.asarray(ranking)
        check_selection(ranking, n_neurons, name=label_string(label), owner=owner)
        rankings[label] = ranking
    params = dict(DEFAULT_SELECTION_PROBE_PARAMS if probe_params is None else probe_params)

    start = time.perf_counter()
    stats = column_stats(X_train)  # shared by every probe on a prefix of a ranking
    if full_probe is None:
        full_probe = LinearProbe(**params).fit(X_train, y_train, column_stats=stats)
        logger.info("%s: full probe on %d neurons in %.1f s", owner, n_neurons, time.perf_counter() - start)
    elif getattr(full_probe, "n_features_in_", None) != n_neurons:
        raise ValueError(
            f"{owner}: full_probe must be a LinearProbe fitted on all {n_neurons} neurons of X_train; "
            f"got one fitted on {getattr(full_probe, 'n_features_in_', 'no data (not fitted)')}."
        )
    full_predicted = full_probe.predict(X_test)

    rows = []
    for label, ranking in rankings.items():
        is_true = y_test == label
        row = {"label": label_string(label), "n_neurons": None, "reached_f1": None,
               "target_f1": None, "full_f1": None, "neurons": []}
        rows.append(row)
        if not is_true.any():
            logger.warning("%s: class %r has no test tokens; no minimal set", owner, label)
            continue
        row["full_f1"] = _f1(is_true, full_predicted == label)
        row["target_f1"] = target_share * row["full_f1"]
        binary_train = (y_train == label).astype(np.int8)
        for size in sizes:
            if size > len(ranking):
                break
            # Sorted columns for the copy; the prefix itself is reported best first.
            columns = np.sort(ranking[:size])
            probe = LinearProbe(**params).fit(take_columns(X_train, columns), binary_train,
                                              column_stats=stats.take(columns))
            f1 = _f1(is_true, probe.predict(take_columns(X_test, columns)) == 1)
            if row["reached_f1"] is None or f1 > row["reached_f1"]:
                row["reached_f1"] = f1
            if f1 >= row["target_f1"]:
                row["n_neurons"], row["reached_f1"], row["neurons"] = size, f1, ranking[:size].tolist()
                break
        logger.info("%s: %s", owner, {k: v for k, v in row.items() if k != "neurons"})
    return pl.DataFrame(
        rows,
        schema={
            "label": pl.String,
            "n_neurons": pl.Int32,
            "reached_f1": pl.Float64,
            "target_f1": pl.Float64,
            "full_f1": pl.Float64,
            "neurons": pl.List(pl.Int32),
        },
    )
