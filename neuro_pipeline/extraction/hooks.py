"""Word activations of any named module of any PyTorch model, through forward hooks.

Start here: :func:`extract_module_activations` runs a model over pre-tokenised sentences
and yields, per sentence, one ``(n_words, width)`` array per named module, subwords
aggregated into words as in :func:`~neuro_pipeline.extraction.extract_activations`. The
modules can be anything that returns ``(batch, positions, width)``: the FFN units of a
BERT layer (``"encoder.layer.3.intermediate"``, width ``intermediate_size``), an attention
output, or a layer of a model that is not a Hugging Face encoder at all, which then comes
with a ``tokenize`` function that maps a batch of sentences to model inputs and the word
of every position. :func:`capture_outputs` is the hook part on its own: a context manager
that records module outputs and always removes its hooks.

:func:`forward_hooks` and :func:`output_recorder` are the mechanism underneath, shared with
:mod:`neuro_pipeline.intervention`: hooks registered for the length of a block and removed
whatever happens, and a hook that records what a module returned.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from neuro_pipeline.extraction.aggregate import Aggregation, check_aggregation, select_and_aggregate
from neuro_pipeline.extraction.extract import check_sentences
from neuro_pipeline.extraction.model import LoadedModel

__all__ = [
    "Tokenize",
    "capture_outputs",
    "extract_module_activations",
    "forward_hooks",
    "hf_tokenize",
    "output_recorder",
    "resolve_module",
]

#: ``tokenize(sentences) -> (inputs, word_ids)``: ``inputs`` is a mapping of keyword
#: arguments for ``model(**inputs)`` (or one tensor for ``model(inputs)``), padded to one
#: length; ``word_ids[i][p]`` is the word (0-based, within sentence ``i``) of position
#: ``p``, or None for positions of no word (special tokens, padding).
Tokenize = Callable[[list[list[str]]], tuple[Any, Sequence[Sequence[int | None]]]]


def resolve_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule of ``model`` called ``name`` (a dotted path from ``named_modules``).

    Raises
    ------
    ValueError
        If there is no such module; the message lists the closest valid names.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    >>> resolve_module(net, "1")
    ReLU()
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A module name must be a non-empty str such as 'encoder.layer.0'; got {name!r}.")
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f" Close names: {close}." if close else f" It has {len(names)} modules, e.g. {names[:5]}."
    raise ValueError(f"{type(model).__name__} has no module named {name!r}.{hint}")


@contextlib.contextmanager
def forward_hooks(hooks: Iterable[tuple[torch.nn.Module, Callable]], *, prepend: bool = False) -> Iterator[None]:
    """Register forward hooks while the block runs, and always remove them.

    Parameters
    ----------
    hooks : iterable of (torch.nn.Module, callable)
        Each module and the hook to register on it (``hook(module, args, output)``; what it
        returns, if not None, replaces the output).
    prepend : bool, default=False
        Run the hooks before those already on the modules (Hugging Face records
        ``hidden_states`` with hooks of its own, which then see what these hooks return).

    Yields
    ------
    None
        The hooks are removed in ``finally``: after the block, also when it raises, and when
        registering a later hook failed.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Identity())
    >>> with forward_hooks([(net[0], lambda module, args, output: output * 2)]):
    ...     net(torch.ones(1)).tolist()
    [2.0]
    >>> len(net[0]._forward_hooks)
    0
    """
    handles = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook, prepend=prepend))
        yield
    finally:
        for handle in handles:
            handle.remove()


def output_recorder(calls: list[torch.Tensor | None], name: str, *, strict: bool = True) -> Callable:
    """A forward hook that appends what a module returned to ``calls``, detached.

    A module returning a tuple or list (a transformer layer, say) counts by its first element.

    Parameters
    ----------
    calls : list
        Filled in call order, one entry per call of the module.
    name : str
        The module's name, for the error message.
    strict : bool, default=True
        When the output (or its first element) is not a tensor: raise ``TypeError`` if
        True, else append None (to survey every module of a model, some of which return
        other objects).
    """

    def hook(module, args, output):
        first = output[0] if isinstance(output, (tuple, list)) and output else output
        if isinstance(first, torch.Tensor):
            calls.append(first.detach())
        elif strict:
            raise TypeError(
                f"Module {name!r} returned {type(output).__name__}; expected a tensor or a tuple "
                "starting with one. Choose a submodule that returns a tensor."
            )
        else:
            calls.append(None)

    return hook


@contextlib.contextmanager
def capture_outputs(model: torch.nn.Module, names: Sequence[str]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the outputs of named modules of ``model`` while the block runs.

    Parameters
    ----------
    model : torch.nn.Module
    names : sequence of str
        Module names as in ``model.named_modules()``.

    Yields
    ------
    dict of str to list of torch.Tensor
        Name -> the module's output at each call, in call order, detached (the first
        element when a module returns a tuple). The lists fill as forward passes run.

    Raises
    ------
    ValueError
        If a name is not a module of ``model`` (the message lists close names) or is
        given twice.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    >>> with capture_outputs(net, ["0"]) as outputs:
    ...     _ = net(torch.zeros(4, 2))
    >>> outputs["0"][0].shape, len(net[0]._forward_hooks)
    (torch.Size([4, 3]), 0)
    """
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError(f"Module names must be distinct; got {names}.")
    modules = [resolve_module(model, name) for name in names]
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    hooks = [(module, output_recorder(outputs[name], name)) for name, module in zip(names, modules, strict=True)]
    with forward_hooks(hooks):
        yield outputs


def hf_tokenize(loaded: LoadedModel) -> Tokenize:
    """The ``tokenize`` function of a loaded Hugging Face model: its fast tokenizer on
    pre-tokenised words, padded on the right, with ``word_ids`` from the tokenizer.

    Raises
    ------
    ValueError
        When called on a sentence longer than ``loaded.max_length`` subwords (use
        :func:`~neuro_pipeline.extraction.extract_activations`, which splits long
        sentences into windows), or if ``loaded`` is an encoder-decoder model read from
        its decoder stack.
    """
    if loaded.kind == "encoder-decoder" and loaded.component == "decoder":
        raise ValueError(
            "hf_tokenize feeds the model's own stack; for the decoder of an encoder-decoder model "
            "use extract_activations, which feeds the decoder by teacher forcing."
        )
    tokenizer = loaded.tokenizer
    device = loaded.model.device

    def tokenize(sentences: list[list[str]]):
        batch = tokenizer(sentences, is_split_into_words=True, padding=False, truncation=False,
                          verbose=False)
        lengths = [len(ids) for ids in batch["input_ids"]]
        for i, length in enumerate(lengths):
            if length > loaded.max_length:
                raise ValueError(
                    f"A sentence of {len(sentences[i])} words has {length} subwords, more than "
                    f"max_length {loaded.max_length} of {loaded.model_dir.name}. Shorten it, or "
                    "use extract_activations, which splits long sentences into windows."
                )
        width = max(lengths)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
        ids = torch.full((len(sentences), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(sentences), width), dtype=torch.long)
        types = torch.zeros((len(sentences), width), dtype=torch.long)
        for i, length in enumerate(lengths):
            ids[i, :length] = torch.tensor(batch["input_ids"][i])
            mask[i, :length] = 1
            if "token_type_ids" in batch:
                types[i, :length] = torch.tensor(batch["token_type_ids"][i])
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if "token_type_ids" in tokenizer.model_input_names:
            inputs["token_type_ids"] = types.to(device)
        if loaded.kind == "decoder":
            inputs["use_cache"] = False
        return inputs, [batch.word_ids(i) for i in range(len(sentences))]

    return tokenize


def extract_module_activations(
    model: LoadedModel | torch.nn.Module,
    sentences: Sequence[Sequence[str]],
    modules: Sequence[str],
    *,
    tokenize: Tokenize | None = None,
    aggregation: Aggregation = "last",
    batch_size: int = 32,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield the word activations of named modules for each sentence, in batches.

    Parameters
    ----------
    model : LoadedModel or torch.nn.Module
        A model from :func:`~neuro_pipeline.extraction.load_model` (its tokenizer is
        used unless ``tokenize`` is given), or any module, called as ``model(**inputs)``
        (or ``model(inputs)`` when ``tokenize`` returns one tensor). For an
        encoder-decoder ``LoadedModel`` the encoder stack is run; names are still
        relative to ``model`` (``"encoder.block.0"``).
    sentences : sequence of sequence of str
        Pre-tokenised sentences; none may be empty.
    modules : sequence of str
        Module names from ``model.named_modules()``. Each must run once per forward pass
        and return (batch, positions, width) (or a tuple starting with such a tensor).
    tokenize : callable, optional
        ``tokenize(batch_of_sentences) -> (inputs, word_ids)``; see :data:`Tokenize`.
        Required for a plain ``torch.nn.Module``; defaults to :func:`hf_tokenize` for a
        ``LoadedModel``.
    aggregation : {"first", "last", "mean", "average"}, default="last"
        Which subword stands for a word (:func:`~neuro_pipeline.extraction.aggregate_subwords`).
    batch_size : int, default=32
        Sentences per forward pass.

    Yields
    ------
    index : int
        Position of the sentence in ``sentences``. Sentences come out sorted by length
        (longest first) so that batches carry little padding; use ``index`` to place them.
    activations : dict of str to numpy.ndarray of shape (n_words, width), float32
        One array per module, in the order of ``modules``.

    Raises
    ------
    ValueError
        If a module name is unknown (close names are listed) or repeated, ``modules`` is
        empty, a sentence is empty, ``batch_size`` or ``aggregation`` is invalid (all
        checked when called); during iteration, if a module runs other than once per
        forward pass or returns a tensor that is not (batch, positions, width), or if
        ``word_ids`` leave a word without any position.
    TypeError
        If a sentence is a str, or ``tokenize`` is missing for a plain module.

    Examples
    --------
    >>> loaded = load_model(model_dir)  # doctest: +SKIP
    >>> ffn = dict(extract_module_activations(loaded, [["The", "cat"]],
    ...                                       ["encoder.layer.3.intermediate"]))  # doctest: +SKIP
    >>> ffn[0]["encoder.layer.3.intermediate"].shape  # doctest: +SKIP
    (2, 1536)
    """
    how = check_aggregation(aggregation)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    modules = list(modules)
    if not modules:
        raise ValueError("modules is empty; name at least one module, e.g. 'encoder.layer.0.intermediate'.")
    if len(set(modules)) != len(modules):
        raise ValueError(f"Module names must be distinct; got {modules}.")
    if isinstance(model, LoadedModel):
        root = model.model
        tokenize = tokenize if tokenize is not None else hf_tokenize(model)
        runner = model.model.get_encoder() if model.kind == "encoder-decoder" else model.model
    elif isinstance(model, torch.nn.Module):
        if tokenize is None:
            raise TypeError(
                f"tokenize is required for a plain {type(model).__name__}: a function mapping a batch "
                "of sentences (lists of words) to (inputs, word_ids)."
            )
        root = runner = model
    else:
        raise TypeError(f"model must be a LoadedModel or a torch.nn.Module; got {type(model).__name__}.")
    for name in modules:
        resolve_module(root, name)
    check_sentences(sentences)
    return _extract(root, runner, sentences, modules, tokenize, how, batch_size)


def _extract(root, runner, sentences, modules, tokenize, how, batch_size):
    # Longest first, by characters: the only length known before tokenising.
    order = sorted(range(len(sentences)), key=lambda i: -sum(len(w) + 1 for w in sentences[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        words = [list(sentences[i]) for i in chunk]
        per_module = _run_batch(root, runner, words, modules, tokenize, how)
        offsets = np.cumsum([0] + [len(w) for w in words])
        for row, index in enumerate(chunk):
            yield index, {name: arrays[offsets[row] : offsets[row + 1]] for name, arrays in per_module.items()}


def _run_batch(root, runner, words, modules, tokenize, how) -> dict[str, np.ndarray]:
    """Forward one batch; module name -> (total words of the batch, width) float32."""
    with torch.inference_mode():
        inputs, word_ids = tokenize(words)
        with capture_outputs(root, modules) as outputs:
            if isinstance(inputs, Mapping):
                runner(**inputs)
            else:
                runner(inputs)
        return {name: _aggregate(name, outputs[name], word_ids, words, how) for name in modules}


def _aggregate(name: str, calls: list[torch.Tensor], word_ids, words: list[list[str]], how: str) -> np.ndarray:
    """(total words of the batch, width) activations of one module for one batch."""
    if len(calls) != 1:
        raise ValueError(
            f"Module {name!r} ran {len(calls)} times in one forward pass; expected once. Choose a "
            "module that runs once per pass (a layer, not a shared submodule)."
        )
    output = calls[0]
    n_rows = len(words)
    if len(word_ids) != n_rows:
        raise ValueError(f"tokenize returned word_ids for {len(word_ids)} sentences; expected {n_rows}.")
    if output.dim() != 3 or output.shape[0] != n_rows:
        raise ValueError(
            f"Module {name!r} returned shape {tuple(output.shape)}; expected (batch={n_rows}, positions, "
            "width). Choose a module whose output has one vector per position."
        )
    n_positions = output.shape[1]
    ids = np.full((n_rows, n_positions), -1, dtype=np.int64)
    for row, row_ids in enumerate(word_ids):
        if len(row_ids) > n_positions:
            raise ValueError(
                f"word_ids of sentence row {row} has {len(row_ids)} positions but module {name!r} "
                f"returned {n_positions}; expected at most one word id per position."
            )
        ids[row, : len(row_ids)] = [-1 if w is None else w for w in row_ids]
    offsets = np.cumsum([0] + [len(w) for w in words])
    valid = ids >= 0
    for row, sentence in enumerate(words):
        row_ids = ids[row][valid[row]]
        counts = np.bincount(row_ids, minlength=len(sentence)) if row_ids.size else np.zeros(len(sentence))
        if len(counts) > len(sentence) or (counts == 0).any():
            raise ValueError(
                f"word_ids of sentence row {row} do not map positions onto its {len(sentence)} words: "
                f"expected every word id in [0, {len(sentence)}) to occur at least once."
            )
    positions = np.flatnonzero(valid)
    word_index = (ids + offsets[:-1, None])[valid]
    layer = output.reshape(n_rows * n_positions, -1)
    return select_and_aggregate([layer], positions, word_index, int(offsets[-1]), how)[:, 0]
