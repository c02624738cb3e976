"""Tests of fine-tuning a model into a new registry version, on a tiny random BERT."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from neuro_pipeline.extraction import load_model
from neuro_pipeline.hashing import hash_directory
from neuro_pipeline.retrain import (
    RetrainSummary,
    _encode,
    _first_subword_labels,
    fine_tune_token_classifier,
    next_version_name,
    retrain_demo,
)
from tests.library.tiny_models import write_tiny_bert

SENTENCES = [
    ["the", "cat", "sat", "on", "the", "mat", "."],
    ["a", "dog", "is", "playing", "!"],
    ["she", "was", "walking", "and", "he", "ran", "."],
    ["the", "big", "cats", "sat", "."],
    ["it", "is", "small", "and", "blue", "."],
    ["unhappiness", "is", "red", "."],
]
LABELS = [
    ["DET", "NOUN", "VERB", "ADP", "DET", "NOUN", "PUNCT"],
    ["DET", "NOUN", "AUX", "VERB", "PUNCT"],
    ["PRON", "AUX", "VERB", "CCONJ", "PRON", "VERB", "PUNCT"],
    ["DET", "ADJ", "NOUN", "VERB", "PUNCT"],
    ["PRON", "AUX", "ADJ", "CCONJ", "ADJ", "PUNCT"],
    ["NOUN", "AUX", "ADJ", "PUNCT"],
]
TRAIN = {"steps": 6, "batch_size": 4, "learning_rate": 1e-3, "max_length": 64}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("base") / "model")


@pytest.fixture(scope="module")
def trained(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RetrainSummary:
    out_dir = tmp_path_factory.mktemp("registry") / "v2"
    return fine_tune_token_classifier(base_dir, SENTENCES, LABELS, out_dir, seed=0, **TRAIN)


def test_written_version_loads_like_the_base_with_new_weights(
    base_dir: Path, trained: RetrainSummary
) -> None:
    base, tuned = load_model(base_dir), load_model(trained.out_dir)
    assert (tuned.n_layers, tuned.hidden_size, tuned.max_length) == (
        base.n_layers, base.hidden_size, base.max_length)
    base_weights = load_file(base_dir / "model.safetensors")
    tuned_weights = load_file(trained.out_dir / "model.safetensors")
    assert set(tuned_weights) == set(base_weights)  # no classifier/head tensors
    changed = [k for k in base_weights if not torch.equal(base_weights[k], tuned_weights[k])]
    assert any(k.startswith("encoder.layer.") for k in changed)
    # The pooler does not feed the loss, so it is saved untouched.
    assert not any(k.startswith("pooler.") for k in changed)
    _, info = AutoModel.from_pretrained(trained.out_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        assert (trained.out_dir / name).read_bytes() == (base_dir / name).read_bytes()
    assert not [p for p in trained.out_dir.parent.iterdir() if p.name.startswith(".")]


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(
    base_dir: Path, trained: RetrainSummary, tmp_path: Path
) -> None:
    again = fine_tune_token_classifier(base_dir, SENTENCES, LABELS, tmp_path / "again",
                                       seed=0, **TRAIN)
    other = fine_tune_token_classifier(base_dir, SENTENCES, LABELS, tmp_path / "other",
                                       seed=1, **TRAIN)
    first = load_file(trained.out_dir / "model.safetensors")
    second = load_file(again.out_dir / "model.safetensors")
    third = load_file(other.out_dir / "model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert (again.loss_start, again.loss_end) == (trained.loss_start, trained.loss_end)
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_training_json_records_the_run(base_dir: Path, trained: RetrainSummary) -> None:
    record = json.loads((trained.out_dir / "training.json").read_text(encoding="utf-8"))
    assert record == trained.to_json()
    assert record["labels"] == sorted({tag for tags in LABELS for tag in tags})
    assert record["base_model_hash"] == hash_directory(base_dir)
    assert record["base_model_dir"] == str(base_dir.resolve())
    assert (record["steps"], record["batch_size"], record["seed"]) == (6, 4, 0)
    assert (record["n_sentences"], record["n_skipped_long"]) == (6, 0)
    assert record["learning_rate"] == pytest.approx(1e-3)
    assert math.isfinite(record["loss_start"]) and math.isfinite(record["loss_end"])
    assert record["torch_version"] == torch.__version__


def test_labels_sit_on_the_first_subword_only(base_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    [(ids, word_ids)] = _encode(tokenizer, [["playing", "cats", "."]])
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "[CLS]", "play", "##ing", "cat", "##s", ".", "[SEP]"]
    targets = _first_subword_labels(word_ids, ["VERB", "NOUN", "PUNCT"],
                                    {"NOUN": 0, "PUNCT": 1, "VERB": 2})
    assert targets == [-100, 2, -100, 0, -100, 1, -100]


@pytest.mark.parametrize(("folders", "expected"), [
    (None, "v1"),
    ([], "v1"),
    (["v1", "v2"], "v3"),
    (["v2", "v10", "v9"], "v11"),
    (["v1", ".v7.tmp-ab12", "v5-old", "latest", "V6", "v0", "v03"], "v2"),
])
def test_next_version_name(tmp_path: Path, folders: list[str] | None, expected: str) -> None:
    registry = tmp_path / "registry"
    for name in folders or []:
        (registry / name).mkdir(parents=True)
    if folders is not None:
        registry.mkdir(exist_ok=True)
        (registry / "v99").write_text("a file, not a version")
    assert next_version_name(registry) == expected


def test_next_version_name_rejects_a_file(tmp_path: Path) -> None:
    (tmp_path / "registry").write_text("")
    with pytest.raises(NotADirectoryError, match="registry is a file"):
        next_version_name(tmp_path / "registry")


def test_retrain_demo_copies_the_base_into_v1_then_trains_v2(
    base_dir: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    steps_seen: list[tuple[int, int]] = []
    summary = retrain_demo(registry, base_model_dir=base_dir, steps=2,
                           progress=lambda step, steps: steps_seen.append((step, steps)))
    assert sorted(p.name for p in registry.iterdir()) == ["v1", "v2"]
    assert hash_directory(registry / "v1") == hash_directory(base_dir)
    assert summary.out_dir == registry / "v2"
    assert summary.base_model_hash == hash_directory(registry / "v1")
    assert summary.base_model_dir == str((registry / "v1").resolve())
    assert steps_seen == [(1, 2), (2, 2)]
    # The demo corpus has UPOS tags; the tiny model's 64 positions skip its longest sentences.
    assert {"NOUN", "VERB", "PUNCT"} <= set(summary.labels)
    assert summary.max_length == 64 and summary.n_skipped_long > 0
    assert load_model(registry / "v2").hidden_size == 32

    third = retrain_demo(registry, sentences=SENTENCES, labels=LABELS, steps=1)
    assert third.out_dir == registry / "v3"
    assert third.base_model_hash == hash_directory(registry / "v2")


def test_refuses_to_overwrite_a_version(base_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "v2").mkdir()
    with pytest.raises(FileExistsError, match=re.escape(f"{tmp_path / 'v2'} already exists")):
        fine_tune_token_classifier(base_dir, SENTENCES, LABELS, tmp_path / "v2", **TRAIN)
    assert [p.name for p in tmp_path.iterdir()] == ["v2"]


def test_a_failed_run_leaves_no_version_and_no_temporary_folder(
    base_dir: Path, tmp_path: Path
) -> None:
    def fail(step: int, steps: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fine_tune_token_classifier(base_dir, SENTENCES, LABELS, tmp_path / "v2",
                                   progress=fail, **TRAIN)
    assert list(tmp_path.iterdir()) == []


def test_long_sentences_are_skipped_and_counted(base_dir: Path, tmp_path: Path) -> None:
    long_sentence = ["the", "cat", "sat"] * 6 + ["zzz"]  # 21 subwords with [CLS] and [SEP]
    summary = fine_tune_token_classifier(
        base_dir, [*SENTENCES, long_sentence], [*LABELS, ["X"] * len(long_sentence)],
        tmp_path / "v2", steps=2, batch_size=4, max_length=16)
    assert (summary.n_sentences, summary.n_skipped_long) == (7, 1)
    assert "X" not in summary.labels  # its words were not trained on, not even truncated


def test_all_sentences_too_long(base_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="All 6 sentences are longer than max_length=4"):
        fine_tune_token_classifier(base_dir, SENTENCES, LABELS, tmp_path / "v2",
                                   steps=1, max_length=4)


def test_max_length_beyond_the_model_limit(base_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"max_length=128 exceeds the limit .* \(64 subwords\)"):
        fine_tune_token_classifier(base_dir, SENTENCES, LABELS, tmp_path / "v2", steps=1)


@pytest.mark.parametrize(("sentences", "labels", "error", "message"), [
    (SENTENCES[:3], LABELS[:2], ValueError, "Got 3 sentences but 2 label sequences"),
    ([SENTENCES[0], ["a", "dog", "ran"]], [LABELS[0], ["DET", "NOUN"]], ValueError,
     "Sentence 1 has 3 words but 2 labels"),
    ([SENTENCES[0], []], [LABELS[0], []], ValueError, "Sentence 1 has no words"),
    (["the cat sat"], [["DET", "NOUN", "VERB"]], TypeError,
     r"sentences\[0\] and labels\[0\] must be sequences of strings"),
])
def test_bad_training_data(base_dir: Path, tmp_path: Path, sentences, labels, error,
                           message) -> None:
    with pytest.raises(error, match=message):
        fine_tune_token_classifier(base_dir, sentences, labels, tmp_path / "v2", **TRAIN)
    assert not (tmp_path / "v2").exists()


def test_retrain_demo_needs_both_sentences_and_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Pass both sentences and labels"):
        retrain_demo(tmp_path / "registry", sentences=SENTENCES)
