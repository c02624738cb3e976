"""Shared fixtures: tiny random BERT models written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuro_pipeline.extraction import LoadedModel, load_model
from tests.library.tiny_models import write_tiny_bert


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece tokenizer; 64 positions."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_bert(tiny_bert_dir: Path) -> LoadedModel:
    return load_model(tiny_bert_dir)


@pytest.fixture(scope="session")
def short_bert(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """Like ``tiny_bert`` but with only 16 positions, so that short sentences need windows."""
    return load_model(write_tiny_bert(tmp_path_factory.mktemp("short_bert"),
                                      max_position_embeddings=16))
