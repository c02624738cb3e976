"""Interventions: change chosen neurons inside the live model and measure its own output.

Start here: :func:`intervene` (any module of any ``torch.nn.Module``) and
:func:`ablate_neurons` (global hidden-state neurons ``layer * hidden_size + unit`` of a
loaded model) are context managers that zero, mean-ablate or scale units during the
forward pass and always remove their hooks. :func:`neuron_ablation_effects` measures what
ablating a ranking's top neurons, and matched random neurons, does to masked-word
prediction (with a masked-LM head from the checkpoint or trained by
:func:`train_mlm_head`); :func:`summarize_ablation_effects` puts the numbers side by side
with an interval over the random draws. :func:`prediction_change` does the same
comparison for a classification model's predictions.
"""

from neuro_pipeline.intervention.classification import PREDICTION_CHANGE_COLUMNS, prediction_change
from neuro_pipeline.intervention.hooks import (
    INTERVENTION_MODES,
    UnitEdit,
    ablate_neurons,
    intervene,
    layer_sites,
    mean_units,
    neuron_edits,
    scale_units,
    zero_units,
)
from neuro_pipeline.intervention.mlm import (
    ABLATION_EFFECT_COLUMNS,
    ABLATION_SUMMARY_COLUMNS,
    PREDICTION_COLUMNS,
    MaskedLMHead,
    checkpoint_mlm_head,
    concept_masks,
    concept_scores,
    load_mlm_head,
    masked_word_predictions,
    matched_random_neurons,
    neuron_ablation_effects,
    random_masks,
    save_mlm_head,
    summarize_ablation_effects,
    train_mlm_head,
)

__all__ = [
    "ABLATION_EFFECT_COLUMNS",
    "ABLATION_SUMMARY_COLUMNS",
    "INTERVENTION_MODES",
    "PREDICTION_CHANGE_COLUMNS",
    "PREDICTION_COLUMNS",
    "MaskedLMHead",
    "UnitEdit",
    "ablate_neurons",
    "checkpoint_mlm_head",
    "concept_masks",
    "concept_scores",
    "intervene",
    "layer_sites",
    "load_mlm_head",
    "masked_word_predictions",
    "matched_random_neurons",
    "mean_units",
    "neuron_ablation_effects",
    "neuron_edits",
    "prediction_change",
    "random_masks",
    "save_mlm_head",
    "scale_units",
    "summarize_ablation_effects",
    "train_mlm_head",
    "zero_units",
]
