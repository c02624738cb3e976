"""How much an intervention changes a classifier's predictions.

Start here: :func:`prediction_change` runs a classification model (a Hugging Face
``...ForSequenceClassification`` / ``...ForTokenClassification``, or any module that
returns logits) over the same inputs with and without an intervention
(:func:`~neuro_pipeline.intervention.intervene` edits) and reports the share of
predictions that change, the drop in probability of the originally predicted class, the
KL divergence of the new distribution from the old, and accuracies when labels are known.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import polars as pl
import torch

from neuro_pipeline.intervention.hooks import UnitEdit, intervene

__all__ = ["PREDICTION_CHANGE_COLUMNS", "prediction_change"]

#: Columns of :func:`prediction_change` (one row).
PREDICTION_CHANGE_COLUMNS: dict[str, pl.DataType] = {
    "n_predictions": pl.Int64,          # predictions compared (examples, or labelled tokens)
    "share_changed": pl.Float64,        # share whose argmax class changed
    "probability_drop": pl.Float64,     # mean drop of p(originally predicted class)
    "kl_divergence": pl.Float64,        # mean KL(original || intervened), nats
    "baseline_accuracy": pl.Float64,    # null without labels
    "intervened_accuracy": pl.Float64,  # null without labels
}


def _logits_of(output: Any) -> torch.Tensor:
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"The model returned {type(output).__name__} without a logits tensor; pass "
            "get_logits=... to pick the logits out of the output."
        )
    return logits


def prediction_change(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    edits: Mapping[str, UnitEdit],
    *,
    labels: Iterable[torch.Tensor] | None = None,
    get_logits: Callable[[Any], torch.Tensor] = _logits_of,
) -> pl.DataFrame:
    """Compare a classifier's predictions with and without an intervention.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(**batch)``; its output's logits (``output.logits``, or the
        output itself if it is a tensor) have shape (..., n_classes).
    batches : iterable of mapping of str to torch.Tensor
        Model inputs. Each batch is run twice: as is, then inside
        ``intervene(model, edits)``.
    edits : mapping of str to UnitEdit
        Module name -> edit, as for :func:`~neuro_pipeline.intervention.intervene`.
    labels : iterable of torch.Tensor, optional
        One tensor per batch with the class index of every prediction (shape of the
        logits without the class dimension); entries ``< 0`` (e.g. -100 for padding in
        token classification) are left out of every statistic.
    get_logits : callable, optional
        Picks the logits out of the model's output.

    Returns
    -------
    polars.DataFrame
        One row, columns :data:`PREDICTION_CHANGE_COLUMNS`.

    Raises
    ------
    ValueError
        If there are no predictions, or ``labels`` does not fit the logits.

    Examples
    --------
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 3))
    >>> from neuro_pipeline.intervention import scale_units
    >>> table = prediction_change(net, [{"input": torch.randn(8, 4)}], {"0": scale_units([0], 1.0)})
    >>> table["share_changed"][0], table["kl_divergence"][0]
    (0.0, 0.0)
    """
    label_batches = iter(labels) if labels is not None else None
    changed = n = 0
    drop = kl = 0.0
    hits_before = hits_after = 0
    with torch.inference_mode():
        for batch in batches:
            before = get_logits(model(**batch)).float()
            with intervene(model, edits):
                after = get_logits(model(**batch)).float()
            keep = torch.ones(before.shape[:-1], dtype=torch.bool, device=before.device)
            target = None
            if label_batches is not None:
                target = next(label_batches).to(before.device)
                if target.shape != before.shape[:-1]:
                    raise ValueError(
                        f"labels of shape {tuple(target.shape)} do not fit logits of shape "
                        f"{tuple(before.shape)}; expected shape {tuple(before.shape[:-1])}."
                    )
                keep = target >= 0
            log_p, log_q = torch.log_softmax(before[keep], -1), torch.log_softmax(after[keep], -1)
            predicted = log_p.argmax(-1)
            changed += int((log_q.argmax(-1) != predicted).sum())
            drop += float((log_p.exp() - log_q.exp()).gather(1, predicted[:, None]).sum())
            kl += float((log_p.exp() * (log_p - log_q)).sum())
            n += int(keep.sum())
            if target is not None:
                hits_before += int((predicted == target[keep]).sum())
                hits_after += int((log_q.argmax(-1) == target[keep]).sum())
    if n == 0:
        raise ValueError("prediction_change got no predictions: batches is empty or every label is < 0.")
    return pl.DataFrame(
        [{"n_predictions": n, "share_changed": changed / n, "probability_drop": drop / n,
          "kl_divergence": max(kl / n, 0.0),
          "baseline_accuracy": hits_before / n if labels is not None else None,
          "intervened_accuracy": hits_after / n if labels is not None else None}],
        schema=PREDICTION_CHANGE_COLUMNS,
    )
