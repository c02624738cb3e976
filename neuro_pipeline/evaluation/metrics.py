"""Per-class scores and confusion counts of a probe's predictions, as tidy tables.

Start here: :func:`class_metrics` gives one row per label (support, accuracy, precision,
F1), where ``accuracy`` is NeuroX's per-class score: the share of that class's tokens
predicted correctly, i.e. its recall. :func:`confusion_table` gives the confusion matrix in
long format (one row per true/predicted pair), ready to store in DuckDB and pivot there.

Labels are written as strings (``str(label)``), as the corpus table stores them, so the
tables of integer-labelled and string-labelled tasks share one schema. A score that is 0/0
(precision of a label never predicted, accuracy of a label with no test token) is null,
not 0: "undefined" and "always wrong" are different findings.
"""

from __future__ import annotations

import numpy as np
import polars as pl

CLASS_METRICS_SCHEMA = {
    "label": pl.String,
    "support": pl.Int32,
    "n_predicted": pl.Int32,
    "accuracy": pl.Float64,
    "precision": pl.Float64,
    "f1": pl.Float64,
}
CONFUSION_SCHEMA = {"true_label": pl.String, "predicted_label": pl.String, "count": pl.Int32}


def label_string(label) -> str:
    """A label as the string the tables store: NumPy scalars are unwrapped first, so
    ``np.int64(3)`` becomes ``"3"`` and ``np.str_("NOUN")`` becomes ``"NOUN"``."""
    return str(label.item() if isinstance(label, np.generic) else label)


def _check_pair(y_true, y_pred, labels, *, owner: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_pred.ndim != 1:
        raise ValueError(
            f"{owner}: y_true and y_pred must be 1-D (one label per token); got shapes {y_true.shape} and {y_pred.shape}."
        )
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"{owner}: y_true has {len(y_true)} labels but y_pred has {len(y_pred)}; expected one prediction per token."
        )
    if len(y_true) == 0:
        raise ValueError(f"{owner}: y_true and y_pred are empty; expected at least one token.")
    if (y_true.dtype.kind in "USO") != (y_pred.dtype.kind in "USO"):
        raise ValueError(
            f"{owner}: y_true holds {y_true.dtype} labels but y_pred holds {y_pred.dtype}; "
            "both must be strings or both numbers (predictions of a probe trained on these labels)."
        )
    if labels is None:
        labels = np.union1d(y_true, y_pred)
    else:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"{owner}: labels must be a non-empty 1-D list of labels; got shape {labels.shape}.")
        if (labels.dtype.kind in "USO") != (y_true.dtype.kind in "USO"):
            raise ValueError(
                f"{owner}: labels holds {labels.dtype} values but y_true holds {y_true.dtype}; "
                "list labels of the same kind (strings or numbers) as the data."
            )
        if len(np.unique(labels)) != len(labels):
            raise ValueError(f"{owner}: labels must not repeat a label; got {labels.tolist()!r}.")
    return y_true, y_pred, labels


def class_metrics(y_true, y_pred, *, labels=None) -> pl.DataFrame:
    """Support, accuracy (recall), precision and F1 of each class.

    For a label ``c`` with ``tp`` tokens of class ``c`` predicted as ``c``:

    - ``support``: tokens whose true label is ``c``;
    - ``n_predicted``: tokens predicted as ``c``;
    - ``accuracy = tp / support`` (recall; NeuroX's per-class score), null when support is 0;
    - ``precision = tp / n_predicted``, null when ``c`` is never predicted;
    - ``f1 = 2 tp / (support + n_predicted)``, null when both are 0. A class that occurs but
      is never predicted has F1 0 (and a null precision), unlike scikit-learn, which
      reports precision 0 with a warning.

    Every token counts, whichever labels are listed: a token of an unlisted class that is
    predicted as ``c`` is a false positive of ``c``. Labels that the probe never saw in
    training are simply never predicted: their accuracy and F1 are 0.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_tokens,)
        True and predicted labels (both strings or both numbers).
    labels : array-like, optional
        Which labels get a row, in this order. Default: every label in ``y_true`` or
        ``y_pred``, sorted.

    Returns
    -------
    polars.DataFrame
        One row per label: ``label`` (String), ``support`` (Int32), ``n_predicted`` (Int32),
        ``accuracy``, ``precision``, ``f1`` (Float64, null where undefined).

    Raises
    ------
    ValueError
        If the arrays are not 1-D, differ in length, are empty, or mix string and numeric
        labels; or if ``labels`` is empty, repeats a label, or is of the other kind.

    Examples
    --------
    >>> table = class_metrics(["N", "N", "N", "V"], ["N", "N", "V", "V"])
    >>> table.select("label", "support", "accuracy", "precision").rows()
    [('N', 3, 0.6666666666666666, 1.0), ('V', 1, 1.0, 0.5)]
    >>> class_metrics(["N", "V"], ["N", "N"], labels=["V", "ADJ"]).rows()
    [('V', 1, 0, 0.0, None, 0.0), ('ADJ', 0, 0, None, None, None)]
    """
    y_true, y_pred, labels = _check_pair(y_true, y_pred, labels, owner="class_metrics")
    rows = []
    for label in labels:
        is_true = y_true == label
        is_pred = y_pred == label
        support = int(is_true.sum())
        n_predicted = int(is_pred.sum())
        tp = int((is_true & is_pred).sum())
        rows.append(
            {
                "label": label_string(label),
                "support": support,
                "n_predicted": n_predicted,
                "accuracy": tp / support if support else None,
                "precision": tp / n_predicted if n_predicted else None,
                "f1": 2 * tp / (support + n_predicted) if support + n_predicted else None,
            }
        )
    return pl.DataFrame(rows, schema=CLASS_METRICS_SCHEMA)


def confusion_table(y_true, y_pred, *, labels=None) -> pl.DataFrame:
    """The confusion matrix in long format: one row per (true label, predicted label).

    Every pair of the labels gets a row, zero counts included, so the table is the full
    square matrix (``labels`` x ``labels``) and pivots without gaps. Tokens whose true or
    predicted label is not among ``labels`` are not counted (as
    :func:`sklearn.metrics.confusion_matrix`); with the default ``labels`` every token is.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_tokens,)
        True and predicted labels (both strings or both numbers).
    labels : array-like, optional
        The labels of the rows and columns, in this order. Default: every label in
        ``y_true`` or ``y_pred``, sorted.

    Returns
    -------
    polars.DataFrame
        ``len(labels) ** 2`` rows ordered by true label then predicted label (in the order
        of ``labels``): ``true_label`` (String), ``predicted_label`` (String), ``count`` (Int32).

    Raises
    ------
    ValueError
        As :func:`class_metrics`.

    Examples
    --------
    >>> confusion_table(["N", "N", "V"], ["N", "V", "V"]).rows()
    [('N', 'N', 1), ('N', 'V', 1), ('V', 'N', 0), ('V', 'V', 1)]
    """
    y_true, y_pred, labels = _check_pair(y_true, y_pred, labels, owner="confusion_table")
    n = len(labels)
    # Position of each token's labels in `labels`; -1 = not listed.
    true_idx = np.full(len(y_true), -1)
    pred_idx = np.full(len(y_pred), -1)
    for i, label in enumerate(labels):
        true_idx[y_true == label] = i
        pred_idx[y_pred == label] = i
    kept = (true_idx >= 0) & (pred_idx >= 0)
    counts = np.bincount(true_idx[kept] * n + pred_idx[kept], minlength=n * n)
    names = [label_string(label) for label in labels]
    return pl.DataFrame(
        {
            "true_label": [names[i // n] for i in range(n * n)],
            "predicted_label": [names[i % n] for i in range(n * n)],
            "count": counts,
        },
        schema=CONFUSION_SCHEMA,
    )
