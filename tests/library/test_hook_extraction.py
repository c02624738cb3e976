"""Extraction from named modules through forward hooks: FFN widths, agreement with
hidden-state extraction, a plain torch module with its own tokenizer, hooks removed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuro_pipeline.extraction import extract_activations
from neuro_pipeline.extraction.hooks import capture_outputs, extract_module_activations

SENTENCES = [["The", "cats", "playing"], ["a", "dog", "sat", "on", "the", "mat", "."], ["unhappiness"]]


def _no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def _hooks(model: torch.nn.Module) -> dict[str, list[int]]:
    """Hook ids per module: transformers adds hidden-state hooks of its own, once, on first
    use of output_hidden_states, so a shared model is compared before and after."""
    return {name: list(m._forward_hooks) for name, m in model.named_modules()}


@pytest.mark.parametrize("aggregation", ["first", "last", "mean"])
def test_layer_modules_equal_hidden_states(tiny_bert, aggregation):
    hidden = dict(extract_activations(tiny_bert, SENTENCES, aggregation=aggregation))
    hooked = dict(extract_module_activations(tiny_bert, SENTENCES, ["embeddings", "encoder.layer.1"],
                                             aggregation=aggregation, batch_size=2))
    assert sorted(hooked) == [0, 1, 2]
    for index in range(len(SENTENCES)):
        assert list(hooked[index]) == ["embeddings", "encoder.layer.1"]
        np.testing.assert_allclose(hooked[index]["embeddings"], hidden[index][:, 0], atol=1e-5)
        np.testing.assert_allclose(hooked[index]["encoder.layer.1"], hidden[index][:, 2], atol=1e-5)


def test_ffn_intermediate_has_intermediate_width(tiny_bert):
    names = ["encoder.layer.0.intermediate", "encoder.layer.1.intermediate.intermediate_act_fn",
             "encoder.layer.1.attention.output"]
    before = _hooks(tiny_bert.model)
    out = dict(extract_module_activations(tiny_bert, SENTENCES, names))
    assert out[1]["encoder.layer.0.intermediate"].shape == (7, 64)  # intermediate_size = 2 * 32
    assert out[1]["encoder.layer.1.intermediate.intermediate_act_fn"].shape == (7, 64)
    assert out[1]["encoder.layer.1.attention.output"].shape == (7, 32)
    assert out[0]["encoder.layer.0.intermediate"].dtype == np.float32
    assert _hooks(tiny_bert.model) == before


@pytest.mark.slow
def test_minilm_ffn_width():
    from neuro_pipeline.config import embedded_model_dir
    from neuro_pipeline.extraction import load_model

    loaded = load_model(embedded_model_dir())
    out = dict(extract_module_activations(loaded, [["The", "cat", "sat"]], ["encoder.layer.3.intermediate"]))
    assert out[0]["encoder.layer.3.intermediate"].shape == (3, 1536)


class CharModel(torch.nn.Module):
    """Not a Hugging Face model: characters -> embedding -> linear -> ReLU."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(128, 8)
        self.mix = torch.nn.Linear(8, 5)
        self.act = torch.nn.ReLU()

    def forward(self, ids):
        return self.act(self.mix(self.embed(ids)))


def char_tokenize(sentences):
    """One position per character of every word, padded with 0; no special tokens."""
    rows = [[(ord(c) % 128, w) for w, word in enumerate(s) for c in word] for s in sentences]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    word_ids = []
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor([c for c, _ in row])
        word_ids.append([w for _, w in row] + [None] * (width - len(row)))
    return ids, word_ids


def test_plain_module_with_its_own_tokenizer():
    model = CharModel()
    out = dict(extract_module_activations(model, [["ab", "c"], ["xyz"]], ["mix", "act"],
                                          tokenize=char_tokenize, aggregation="mean"))
    with torch.inference_mode():
        chars = model.mix(model.embed(torch.tensor([ord(c) for c in "abc"])))
    np.testing.assert_allclose(out[0]["mix"][0], chars[:2].mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose(out[0]["mix"][1], chars[2].numpy(), atol=1e-6)
    assert out[1]["act"].shape == (1, 5) and (out[1]["act"] >= 0).all()
    assert _no_hooks(model)


def test_hooks_removed_when_tokenize_or_forward_fails():
    model = CharModel()

    def broken(sentences):
        ids, word_ids = char_tokenize(sentences)
        return ids + 1000, word_ids  # out of the embedding's range

    with pytest.raises(IndexError):
        list(extract_module_activations(model, [["ab"]], ["mix"], tokenize=broken))
    assert _no_hooks(model)
    with pytest.raises(RuntimeError, match="inside"):
        with capture_outputs(model, ["mix", "act"]):
            raise RuntimeError("inside")
    assert _no_hooks(model)


def test_errors(tiny_bert):
    with pytest.raises(ValueError, match=r"no module named 'encoder.layer.0.intermediat'\. Close names: \['encoder.layer.0.intermediate'"):
        extract_module_activations(tiny_bert, SENTENCES, ["encoder.layer.0.intermediat"])
    with pytest.raises(TypeError, match="tokenize is required for a plain CharModel"):
        extract_module_activations(CharModel(), SENTENCES, ["mix"])
    with pytest.raises(ValueError, match="modules is empty"):
        extract_module_activations(tiny_bert, SENTENCES, [])
    with pytest.raises(ValueError, match="Module names must be distinct"):
        extract_module_activations(tiny_bert, SENTENCES, ["embeddings", "embeddings"])


def test_module_output_checks(tiny_bert):
    with pytest.raises(ValueError, match=r"Module 'pooler' returned shape \(3, 32\); expected \(batch=3, positions, width\)"):
        list(extract_module_activations(tiny_bert, SENTENCES, ["pooler"]))
    model = CharModel()

    def missing_word(sentences):
        ids, word_ids = char_tokenize(sentences)
        return ids, [[None if w == 1 else w for w in row] for row in word_ids]

    with pytest.raises(ValueError, match=r"do not map positions onto its 2 words"):
        list(extract_module_activations(model, [["ab", "c"]], ["mix"], tokenize=missing_word))

    class Twice(CharModel):
        def forward(self, ids):
            return self.act(self.act(self.mix(self.embed(ids))))

    with pytest.raises(ValueError, match=r"Module 'act' ran 2 times in one forward pass; expected once"):
        list(extract_module_activations(Twice(), [["ab"]], ["act"], tokenize=char_tokenize))
