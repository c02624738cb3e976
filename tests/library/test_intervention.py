"""Interventions on tiny random BERTs: hooks always removed, exactly the chosen units
edited, global neurons mapped to the right layers, and the masked-LM measurement
(checkpoint head, trained head, predictions, matched random controls, summary)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from neuro_pipeline.extraction import load_model
from neuro_pipeline.extraction.hooks import capture_outputs
from neuro_pipeline.intervention import (
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
from tests.library.tiny_models import write_tiny_bert, write_tiny_gpt2

SENTENCES = [
    ["the", "cat", "sat", "on", "the", "mat", "."],
    ["a", "big", "dog", "was", "walking", "."],
    ["she", "is", "happy", "and", "he", "is", "small", "!"],
    ["the", "red", "cats", "sat", "on", "a", "blue", "mat"],
]
LABELS = [
    ["DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "PUNCT"],
    ["DET", "ADJ", "NOUN", "AUX", "VERB", "PUNCT"],
    ["PRON", "AUX", "ADJ", "CCONJ", "PRON", "AUX", "ADJ", "PUNCT"],
    ["DET", "ADJ", "NOUN", "VERB", "ADP", "DET", "ADJ", "NOUN"],
]


def _all_hooks(model: torch.nn.Module) -> dict[str, tuple[list, list]]:
    return {name: (list(m._forward_hooks), list(m._forward_pre_hooks)) for name, m in model.named_modules()}


def _inputs(loaded, sentences=SENTENCES):
    batch = loaded.tokenizer(sentences, is_split_into_words=True, padding=True, return_tensors="pt")
    return dict(batch)


def _hidden(loaded, inputs):
    with torch.inference_mode():
        return loaded.model(**inputs, output_hidden_states=True).hidden_states


@pytest.fixture()
def fresh_bert() -> BertModel:
    """A BertModel never run with output_hidden_states, so it has no hooks at all."""
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=32)
    torch.manual_seed(0)
    return BertModel(config).eval()


# ------------------------------------------------------------------ hooks are removed
def test_hooks_removed_after_success(fresh_bert):
    assert all(hooks == ([], []) for hooks in _all_hooks(fresh_bert).values())
    ids = torch.tensor([[2, 5, 7, 3]])
    with intervene(fresh_bert, {"encoder.layer.0": zero_units([1, 2]),
                                "encoder.layer.1.intermediate": scale_units([0], 3.0)}):
        assert len(fresh_bert.encoder.layer[0]._forward_hooks) == 1
        fresh_bert(input_ids=ids)
    assert all(hooks == ([], []) for hooks in _all_hooks(fresh_bert).values())


def test_hooks_removed_after_exception_in_block(fresh_bert):
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(fresh_bert, {"embeddings": zero_units([0]), "encoder.layer.1": zero_units([3])}):
            fresh_bert(input_ids=torch.tensor([[2, 5, 3]]))
            raise RuntimeError("boom")
    assert all(hooks == ([], []) for hooks in _all_hooks(fresh_bert).values())


def test_hooks_removed_after_exception_in_hook(fresh_bert):
    with pytest.raises(ValueError, match=r"Unit 99 is out of range for module 'encoder.layer.0', whose output has width 16"):
        with intervene(fresh_bert, {"encoder.layer.0": zero_units([99])}):
            fresh_bert(input_ids=torch.tensor([[2, 5, 3]]))
    assert all(hooks == ([], []) for hooks in _all_hooks(fresh_bert).values())


def test_unknown_module_registers_nothing_and_lists_close_names(fresh_bert):
    with pytest.raises(ValueError, match=r"no module named 'encoder.layers.0'\. Close names: \['encoder.layer.0'"):
        with intervene(fresh_bert, {"embeddings": zero_units([0]), "encoder.layers.0": zero_units([0])}):
            pass
    assert all(hooks == ([], []) for hooks in _all_hooks(fresh_bert).values())


def test_ablate_neurons_leaves_only_the_hooks_that_were_there(tiny_bert):
    inputs = _inputs(tiny_bert)
    _hidden(tiny_bert, inputs)  # transformers installs its own hidden-state hooks once
    before = _all_hooks(tiny_bert.model)
    with ablate_neurons(tiny_bert, [3, 40], mode="zero"):
        _hidden(tiny_bert, inputs)
    assert _all_hooks(tiny_bert.model) == before
    with pytest.raises(KeyError):
        with ablate_neurons(tiny_bert, [3], mode="zero"):
            raise KeyError("inside")
    assert _all_hooks(tiny_bert.model) == before


# ------------------------------------------------------------------ exactly the chosen units
def test_layer_sites_match_hidden_states(tiny_bert, tmp_path):
    assert layer_sites(tiny_bert) == ["embeddings", "encoder.layer.0", "encoder.layer.1"]
    gpt2 = load_model(write_tiny_gpt2(tmp_path / "gpt2"))
    assert layer_sites(gpt2) == ["drop", "h.0", "ln_f"]


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_zero_ablation_changes_exactly_the_chosen_units(tiny_bert, layer):
    units = np.array([0, 5, 31])
    hidden = tiny_bert.hidden_size
    inputs = _inputs(tiny_bert)
    clean = _hidden(tiny_bert, inputs)
    with ablate_neurons(tiny_bert, layer * hidden + units, mode="zero"):
        ablated = _hidden(tiny_bert, inputs)
    for below in range(layer):
        torch.testing.assert_close(ablated[below], clean[below], rtol=0, atol=0)
    others = np.setdiff1d(np.arange(hidden), units)
    torch.testing.assert_close(ablated[layer][..., others], clean[layer][..., others], rtol=0, atol=0)
    assert torch.all(ablated[layer][..., units] == 0)
    assert torch.any(clean[layer][..., units] != 0)
    for above in range(layer + 1, len(clean)):
        assert not torch.allclose(ablated[above], clean[above])
    # Nothing stays behind: the next pass is the clean one again.
    torch.testing.assert_close(_hidden(tiny_bert, inputs)[-1], clean[-1], rtol=0, atol=0)


def test_mean_and_scale_modes(tiny_bert):
    inputs = _inputs(tiny_bert)
    clean = _hidden(tiny_bert, inputs)
    means = np.arange(tiny_bert.n_layers * tiny_bert.hidden_size, dtype=np.float64) / 100
    neurons = np.array([32 + 7, 32 + 2])  # layer 1, units 7 and 2
    with ablate_neurons(tiny_bert, neurons, mode="mean", means=means):
        ablated = _hidden(tiny_bert, inputs)
    assert torch.all(ablated[1][..., 7] == torch.tensor(0.39)) and torch.all(ablated[1][..., 2] == torch.tensor(0.34))
    with ablate_neurons(tiny_bert, [5], mode="scale", factor=2.0):
        scaled = _hidden(tiny_bert, inputs)
    torch.testing.assert_close(scaled[0][..., 5], 2 * clean[0][..., 5])


def test_intervention_on_ffn_units_is_seen_downstream(tiny_bert):
    inputs = _inputs(tiny_bert)
    name = "encoder.layer.0.intermediate"
    with capture_outputs(tiny_bert.model, [name]) as clean, torch.inference_mode():
        tiny_bert.model(**inputs)
    with intervene(tiny_bert.model, {name: mean_units([60, 1], [0.5, -0.5])}):
        with capture_outputs(tiny_bert.model, [name]) as edited, torch.inference_mode():
            tiny_bert.model(**inputs)
    before, after = clean[name][0], edited[name][0]
    assert after.shape[-1] == 64
    assert torch.all(after[..., 60] == 0.5) and torch.all(after[..., 1] == -0.5)
    keep = np.setdiff1d(np.arange(64), [1, 60])
    torch.testing.assert_close(after[..., keep], before[..., keep], rtol=0, atol=0)


def test_neuron_edits_errors(tiny_bert):
    with pytest.raises(ValueError, match=r"Neuron 96 is out of range: .* 3 layers x 32 units = 96 neurons"):
        neuron_edits(tiny_bert, [1, 96])
    with pytest.raises(ValueError, match=r"Unknown intervention mode 'drop'; choose one of \['zero', 'mean', 'scale'\]"):
        neuron_edits(tiny_bert, [1], mode="drop")
    with pytest.raises(ValueError, match=r"mode='mean' needs means"):
        neuron_edits(tiny_bert, [1], mode="mean")
    with pytest.raises(ValueError, match=r"means must have one value per neuron, shape \(96,\)"):
        neuron_edits(tiny_bert, [1], mode="mean", means=np.zeros(32))
    with pytest.raises(ValueError, match="units must be distinct"):
        zero_units([1, 1])
    with pytest.raises(ValueError, match="values must hold one value per unit: 2 units"):
        mean_units([1, 2], [0.0])
    assert set(neuron_edits(tiny_bert, [0, 33, 95])) == {"embeddings", "encoder.layer.0", "encoder.layer.1"}


# ------------------------------------------------------------------ masked-LM heads
@pytest.fixture(scope="module")
def mlm_bert(tmp_path_factory) -> tuple[Path, BertForMaskedLM]:
    """The tiny BERT saved as a BertForMaskedLM checkpoint (with its cls.predictions head)."""
    path = write_tiny_bert(tmp_path_factory.mktemp("tiny_mlm"))
    torch.manual_seed(1)
    model = BertForMaskedLM(BertConfig.from_pretrained(path)).eval()
    model.save_pretrained(path)
    return path, model


def test_checkpoint_head_reproduces_bert_for_masked_lm(mlm_bert, tiny_bert):
    path, reference = mlm_bert
    loaded = load_model(path)
    head = checkpoint_mlm_head(loaded)
    states = torch.randn(5, 32)
    with torch.inference_mode():
        torch.testing.assert_close(head(states), reference.cls(states))
    assert checkpoint_mlm_head(tiny_bert) is None  # a plain BertModel has no head


def test_predictions_match_a_manual_masked_forward(mlm_bert):
    path, reference = mlm_bert
    loaded = load_model(path)
    head = checkpoint_mlm_head(loaded)
    plan = [(0, (1,)), (2, (2, 4))]
    table = masked_word_predictions(loaded, head, SENTENCES, plan, labels=LABELS)
    assert table.schema == pl.Schema(PREDICTION_COLUMNS)
    assert table.select("mask_set", "sentence", "position", "label").rows() == [
        (0, 0, 1, "NOUN"), (1, 2, 2, "ADJ"), (1, 2, 4, "PRON")]
    # Manually: sentence 2 with words 2 ("happy") and 4 ("he") masked, through BertForMaskedLM.
    encoding = loaded.tokenizer(SENTENCES[2], is_split_into_words=True)
    ids = torch.tensor([encoding["input_ids"]])
    word_ids = encoding.word_ids()
    masked = ids.clone()
    for column, word in enumerate(word_ids):
        if word in (2, 4):
            masked[0, column] = loaded.tokenizer.mask_token_id
    with torch.inference_mode():
        log_p = torch.log_softmax(reference(input_ids=masked).logits[0], dim=-1)
    for position, row in ((2, 1), (4, 2)):
        columns = [c for c, w in enumerate(word_ids) if w == position]
        expected = sum(float(log_p[c, ids[0, c]]) for c in columns)
        correct = all(int(log_p[c].argmax()) == int(ids[0, c]) for c in columns)
        assert table["log_likelihood"][row] == pytest.approx(expected, abs=1e-4)
        assert table["correct"][row] == correct and table["n_subwords"][row] == len(columns)


def test_train_save_and_load_head(tiny_bert, tmp_path):
    head = train_mlm_head(tiny_bert, SENTENCES * 3, n_rounds=2, n_epochs=2, batch_size=8,
                          validation_fraction=0.25)
    record = head.training_record
    assert record["model_version"] == tiny_bert.version and record["source"] == "trained"
    assert record["settings"]["n_epochs"] == 2 and len(record["train_loss_per_epoch"]) == 2
    assert 0 <= record["heldout_subword_accuracy"] <= 1
    directory = save_mlm_head(head, tmp_path / "head")
    assert json.loads((directory / "mlm_head.json").read_text()) == record
    again = load_mlm_head(tiny_bert, directory)
    states = torch.randn(4, 32)
    with torch.inference_mode():
        torch.testing.assert_close(again(states), head(states))
    # The decoder stays tied to the model's embeddings and is not part of the saved head.
    assert "decoder.weight" not in again.state_dict() and again._tied[0] is tiny_bert.model.get_input_embeddings()
    other = load_model(write_tiny_bert(tmp_path / "other", seed=3))
    with pytest.raises(ValueError, match="was trained for model version"):
        load_mlm_head(other, directory)


def test_mask_plans():
    plan = random_masks(SENTENCES, mask_fraction=0.3, n_rounds=2, seed=0)
    for index in range(len(SENTENCES)):
        rounds = [set(p) for i, p in plan if i == index]
        assert len(rounds) == 2 and not rounds[0] & rounds[1]
    assert random_masks(SENTENCES, seed=4) == random_masks(SENTENCES, seed=4)
    plan = concept_masks(LABELS, "NOUN", n_concept=1, n_outside=2, seed=0)
    for index, positions in plan:
        labels = [LABELS[index][p] for p in positions]
        assert labels.count("NOUN") == (1 if "NOUN" in LABELS[index] else 0)
        assert len(labels) - labels.count("NOUN") == 2
    with pytest.raises(ValueError, match="mask_fraction must be a number in"):
        random_masks(SENTENCES, mask_fraction=0)


def test_matched_random_neurons():
    chosen = np.array([1, 2, 35, 70])  # layers 0, 0, 1, 2 of 32 units
    draws = matched_random_neurons(chosen, n_layers=3, hidden_size=32, n_draws=20, seed=0)
    assert draws.shape == (20, 4)
    for draw in draws:
        np.testing.assert_array_equal(np.bincount(draw // 32, minlength=3), [2, 1, 1])
        assert not set(draw) & set(chosen)
    np.testing.assert_array_equal(draws, matched_random_neurons(chosen, n_layers=3, hidden_size=32,
                                                                n_draws=20, seed=0))
    assert len({tuple(d) for d in draws}) > 1
    with pytest.raises(ValueError, match="Layer 0 holds 3 chosen neurons but only 1 other units"):
        matched_random_neurons([0, 1, 2], n_layers=1, hidden_size=4, n_draws=1)


def test_ablation_effects_and_summary(mlm_bert):
    path, _ = mlm_bert
    loaded = load_model(path)
    head = checkpoint_mlm_head(loaded)
    plan = concept_masks(LABELS, "NOUN", seed=0)
    means = np.zeros(loaded.n_layers * loaded.hidden_size)
    effects = neuron_ablation_effects(loaded, head, SENTENCES, LABELS, plan, [40, 41, 70],
                                      concept="NOUN", n_random=3, mode="mean", means=means)
    assert effects.schema == pl.Schema(ABLATION_EFFECT_COLUMNS)
    assert effects.height == 2 * (2 + 3)
    baseline = concept_scores(masked_word_predictions(loaded, head, SENTENCES, plan, labels=LABELS), "NOUN")
    assert effects.filter(pl.col("condition") == "baseline").select(baseline.columns).rows() == baseline.rows()
    assert effects.filter(pl.col("condition") == "top")["n_neurons"].to_list() == [3, 3]
    assert effects.filter(pl.col("condition") == "random")["draw"].unique().sort().to_list() == [0, 1, 2]
    summary = summarize_ablation_effects(effects)
    assert summary.schema == pl.Schema(ABLATION_SUMMARY_COLUMNS)
    assert summary.select("group", "metric").rows() == [
        ("concept", "accuracy"), ("concept", "log_likelihood"),
        ("outside", "accuracy"), ("outside", "log_likelihood")]
    assert (summary["random_low"] <= summary["random_mean"]).all()
    assert (summary["random_mean"] <= summary["random_high"]).all()
    with pytest.raises(ValueError, match="masks no word of the concept 'INTJ'"):
        neuron_ablation_effects(loaded, head, SENTENCES, LABELS, plan, [40], concept="INTJ",
                                n_random=1, mode="zero")


# ------------------------------------------------------------------ classification heads
def test_prediction_change_of_a_sequence_classifier(tiny_bert_dir):
    from transformers import BertForSequenceClassification

    from neuro_pipeline.intervention.classification import PREDICTION_CHANGE_COLUMNS, prediction_change

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig.from_pretrained(tiny_bert_dir, num_labels=3)).eval()
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([0.0, 0.5, 0.0]))
    loaded = load_model(tiny_bert_dir)
    inputs = _inputs(loaded)
    labels = torch.tensor([0, 1, 2, 1])
    with torch.inference_mode():
        before = model(**inputs).logits.argmax(-1)
    # Zeroing the whole pooler output leaves the classifier's bias: every prediction -> class 1.
    table = prediction_change(model, [inputs], {"bert.pooler": zero_units(range(32))}, labels=[labels])
    assert table.schema == pl.Schema(PREDICTION_CHANGE_COLUMNS)
    row = table.row(0, named=True)
    assert row["n_predictions"] == 4
    assert row["share_changed"] == pytest.approx(float((before != 1).float().mean()))
    assert row["baseline_accuracy"] == pytest.approx(float((before == labels).float().mean()))
    assert row["intervened_accuracy"] == pytest.approx(0.5)
    assert row["kl_divergence"] >= 0
    assert all(not m._forward_hooks for m in model.modules())
    unchanged = prediction_change(model, [inputs], {"bert.pooler": scale_units([0, 1], 1.0)})
    assert unchanged.row(0) == (4, 0.0, 0.0, 0.0, None, None)


def test_ranks_and_top_k_accuracy(mlm_bert):
    path, _ = mlm_bert
    loaded = load_model(path)
    head = checkpoint_mlm_head(loaded)
    plan = concept_masks(LABELS, "ADJ", n_concept=2, n_outside=3, seed=1)
    table = masked_word_predictions(loaded, head, SENTENCES, plan, labels=LABELS)
    assert (table["correct"] == (table["rank"] == 1)).all() and (table["rank"] >= 1).all()
    effects = neuron_ablation_effects(loaded, head, SENTENCES, LABELS, plan, [5, 6], concept="ADJ",
                                      n_random=2, mode="zero", top_k=[1, 50])
    assert effects.height == 2 * 2 * (2 + 2)
    at_1 = effects.filter(pl.col("top_k") == 1)
    at_50 = effects.filter(pl.col("top_k") == 50)
    assert (at_50["accuracy"] >= at_1["accuracy"]).all()
    assert at_50["log_likelihood"].to_list() == at_1["log_likelihood"].to_list()
    summary = summarize_ablation_effects(effects)
    assert summary.height == 2 * 2 * 2 and summary["top_k"].unique().sort().to_list() == [1, 50]
