"""Edit chosen units of a live model's activations during the forward pass.

Start here: :func:`intervene` is a context manager that registers one forward hook per
named module (``"encoder.layer.3"``, ``"encoder.layer.3.intermediate"``, any module of any
``torch.nn.Module``) and replaces chosen units of that module's output as the model runs:
:func:`zero_units` sets them to 0, :func:`mean_units` to given values (a mean ablation:
the unit keeps its average and loses everything token-specific), :func:`scale_units`
multiplies them. The hooks are removed in ``finally``, so they are gone after the block
whether it finished or raised.

For the hidden-state neurons that extraction and ranking number globally as
``layer * hidden_size + unit`` (layer 0 = the embedding output),
:func:`layer_sites` finds the module whose output *is* each hidden state, and
:func:`ablate_neurons` turns global neuron indices into edits of those modules::

    with ablate_neurons(loaded, ranker.top_neurons(20), mode="mean", means=X.mean(axis=0)):
        outputs = loaded.model(**inputs)   # layers 0..n see the ablated units
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch

from neuro_pipeline.extraction.hooks import forward_hooks, output_recorder, resolve_module
from neuro_pipeline.options import INTERVENTION_MODES

__all__ = [
    "INTERVENTION_MODES",
    "UnitEdit",
    "ablate_neurons",
    "intervene",
    "layer_sites",
    "mean_units",
    "neuron_edits",
    "resolve_module",
    "scale_units",
    "zero_units",
]

# Words of the short input with which layer_sites matches modules to hidden states.
_PROBE_WORDS = ["the", "cat", "sat"]


@dataclass(frozen=True, eq=False)
class UnitEdit:
    """What happens to some units (last-dimension indices) of one module's output.

    Build it with :func:`zero_units`, :func:`mean_units` or :func:`scale_units`, which
    check their arguments.

    Parameters
    ----------
    units : numpy.ndarray of int64, shape (n_units,)
        Distinct unit indices, sorted.
    mode : {"zero", "mean", "scale"}
        Set the units to 0, set them to ``values``, or multiply them by ``factor``.
    values : numpy.ndarray of float32, shape (n_units,), optional
        The value of each unit for ``mode="mean"``.
    factor : float
        The multiplier for ``mode="scale"``.
    """

    units: np.ndarray
    mode: str
    values: np.ndarray | None = None
    factor: float = 1.0

    def apply(self, output: Any, *, where: str = "the module") -> Any:
        """``output`` with the edit applied, in the same structure (tensor or tuple).

        The tensor (or the first element of a tuple) must have the units in its last
        dimension; it is cloned, never changed in place, so autograd sees the edit.

        Raises
        ------
        TypeError
            If ``output`` is neither a tensor nor a tuple/list starting with one.
        ValueError
            If a unit is outside the output's width.
        """
        if isinstance(output, torch.Tensor):
            return self._edit(output, where)
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            return type(output)([self._edit(output[0], where), *output[1:]])
        raise TypeError(
            f"Cannot edit the output of {where}: expected a tensor or a tuple whose first element is "
            f"a tensor, got {type(output).__name__}. Choose a submodule that returns a tensor."
        )

    def _edit(self, tensor: torch.Tensor, where: str) -> torch.Tensor:
        width = tensor.shape[-1] if tensor.dim() else 0
        if len(self.units) and int(self.units[-1]) >= width:
            raise ValueError(
                f"Unit {int(self.units[-1])} is out of range for {where}, whose output has width "
                f"{width} (shape {tuple(tensor.shape)}); units must lie in [0, {width})."
            )
        index = torch.from_numpy(self.units).to(tensor.device)
        edited = tensor.clone()
        if self.mode == "zero":
            edited[..., index] = 0
        elif self.mode == "mean":
            edited[..., index] = torch.from_numpy(self.values).to(device=tensor.device, dtype=tensor.dtype)
        else:
            edited[..., index] = tensor[..., index] * self.factor
        return edited


def _check_units(units, owner: str) -> np.ndarray:
    array = np.asarray(units)
    if array.ndim != 1:
        raise ValueError(f"{owner}: units must be a 1-D sequence of unit indices; got shape {array.shape}.")
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"{owner}: units must be integers; got dtype {array.dtype}.")
    array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{owner}: units must be >= 0; got {int(array.min())}.")
    if len(np.unique(array)) != len(array):
        raise ValueError(f"{owner}: units must be distinct; got duplicates in {array.tolist()[:20]}.")
    return np.sort(array)


def zero_units(units: Sequence[int] | np.ndarray) -> UnitEdit:
    """An edit that sets ``units`` of a module's output to 0.

    Examples
    --------
    >>> edit = zero_units([2, 0])
    >>> edit.apply(torch.ones(1, 4)).tolist()
    [[0.0, 1.0, 0.0, 1.0]]
    """
    return UnitEdit(_check_units(units, "zero_units"), "zero")


def mean_units(units: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray) -> UnitEdit:
    """An edit that sets each of ``units`` to its value in ``values`` (a mean ablation when
    ``values`` are the units' mean activations).

    Parameters
    ----------
    units : sequence of int
        Distinct unit indices.
    values : sequence of float, same length as ``units``
        The value each unit is set to, in the order of ``units``.

    Raises
    ------
    ValueError
        If ``values`` does not have one finite value per unit.

    Examples
    --------
    >>> mean_units([3, 1], [30.0, 10.0]).apply(torch.zeros(1, 4)).tolist()
    [[0.0, 10.0, 0.0, 30.0]]
    """
    raw = np.asarray(units)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != raw.shape:
        raise ValueError(
            f"mean_units: values must hold one value per unit: {raw.size} units but values has "
            f"shape {values.shape}."
        )
    if not np.isfinite(values).all():
        raise ValueError("mean_units: values must be finite.")
    checked = _check_units(raw, "mean_units")
    order = np.argsort(raw.astype(np.int64), kind="stable")
    return UnitEdit(checked, "mean", values=values[order].astype(np.float32))


def scale_units(units: Sequence[int] | np.ndarray, factor: float) -> UnitEdit:
    """An edit that multiplies ``units`` by ``factor`` (0 zeroes them, 2 doubles them).

    Examples
    --------
    >>> scale_units([1], 2.0).apply(torch.ones(1, 3)).tolist()
    [[1.0, 2.0, 1.0]]
    """
    if isinstance(factor, bool) or not isinstance(factor, Real) or not math.isfinite(factor):
        raise ValueError(f"scale_units: factor must be a finite number; got {factor!r}.")
    return UnitEdit(_check_units(units, "scale_units"), "scale", factor=float(factor))


@contextlib.contextmanager
def intervene(model: torch.nn.Module, edits: Mapping[str, UnitEdit]) -> Iterator[None]:
    """Apply ``edits`` to the outputs of named modules of ``model`` while the block runs.

    Parameters
    ----------
    model : torch.nn.Module
        Any module (a Hugging Face model, a plain ``torch.nn.Module``).
    edits : mapping of str to UnitEdit
        Module name (as in ``model.named_modules()``, e.g. ``"encoder.layer.3"`` or
        ``"encoder.layer.3.intermediate"``) -> the edit of its output's last dimension.

    Yields
    ------
    None
        Every forward pass inside the block sees the edited outputs. The edit applies at
        every position (special tokens and padding included) and at every call of the
        module, if a forward pass calls it more than once.

    Raises
    ------
    ValueError
        If a name is not a module of ``model`` (before anything is registered); during a
        forward pass, if a unit is out of the module's width.
    TypeError
        If a value of ``edits`` is not a :class:`UnitEdit`; during a forward pass, if a
        module's output is not a tensor or a tuple starting with one.

    Notes
    -----
    The hooks are registered with ``prepend=True``, so they run before hooks already on
    the module (Hugging Face records ``hidden_states`` with forward hooks of its own,
    which therefore see the edited outputs), and they are always removed when the block
    ends, also when it raises.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Identity())
    >>> with intervene(net, {"0": zero_units([1])}):
    ...     net(torch.ones(1, 3)).tolist()
    [[1.0, 0.0, 1.0]]
    >>> net(torch.ones(1, 3)).tolist(), len(net[0]._forward_hooks)
    ([[1.0, 1.0, 1.0]], 0)
    """
    if not isinstance(edits, Mapping):
        raise TypeError(f"edits must be a mapping of module name -> UnitEdit; got {type(edits).__name__}.")
    targets = []
    for name, edit in edits.items():
        if not isinstance(edit, UnitEdit):
            raise TypeError(
                f"edits[{name!r}] must be a UnitEdit (from zero_units, mean_units or scale_units); "
                f"got {type(edit).__name__}."
            )
        targets.append((resolve_module(model, name), name, edit))
    with forward_hooks(((module, _edit_hook(name, edit)) for module, name, edit in targets), prepend=True):
        yield


def _edit_hook(name: str, edit: UnitEdit):
    def hook(module, args, output):
        return edit.apply(output, where=f"module {name!r}")

    return hook


# ------------------------------------------------------------------ global neurons
# Sites found per model; weak keys, so a discarded model is not kept alive.
_SITES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def layer_sites(loaded) -> list[str]:
    """The module whose output is each hidden-state layer of a loaded model.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`~neuro_pipeline.extraction.load_model`.

    Returns
    -------
    list of str, length ``loaded.n_layers``
        Entry ``L`` names the module whose output equals hidden state ``L`` as extraction
        reads it (layer 0 = the embedding output): for BERT ``["embeddings",
        "encoder.layer.0", ..., "encoder.layer.5"]``.

    Raises
    ------
    ValueError
        If some hidden state is not the output of any single module that runs once per
        forward pass (then name the modules yourself and use :func:`intervene`).

    Notes
    -----
    The sites are found by running the model once on a three-word input with every
    module's output recorded, and taking for each hidden state the outermost module
    (shortest name) that ran once and returned exactly that tensor; the result is cached
    per model object. Matching by value rather than by architecture-specific names means
    BERT, RoBERTa, GPT-2 and T5's encoder all resolve without a table of names.
    """
    model = loaded.model
    if model in _SITES:
        return list(_SITES[model])
    from neuro_pipeline.extraction.extract import hidden_states

    encoding = loaded.tokenizer([_PROBE_WORDS], is_split_into_words=True).encodings[0]
    ids = np.array([encoding.ids], dtype=np.int64)
    type_ids = np.array([encoding.type_ids], dtype=np.int64)
    modules = [(name, module) for name, module in model.named_modules() if name]
    names = [name for name, _ in modules]
    # None marks an output UnitEdit cannot edit (a ModelOutput, say).
    outputs: dict[str, list[torch.Tensor | None]] = {name: [] for name in names}
    hooks = [(module, output_recorder(outputs[name], name, strict=False)) for name, module in modules]
    with forward_hooks(hooks), torch.inference_mode():
        hidden = hidden_states(loaded, ids, np.ones_like(ids), type_ids)
    once = [name for name in names if len(outputs[name]) == 1 and outputs[name][0] is not None]
    sites = []
    for layer, state in enumerate(hidden):
        matches = [name for name in once
                   if outputs[name][0].shape == state.shape and torch.equal(outputs[name][0], state)]
        if not matches:
            raise ValueError(
                f"Hidden state {layer} of {type(model).__name__} is not the output of any single "
                "module that runs once per forward pass; pass module names to intervene() instead."
            )
        sites.append(min(matches, key=lambda n: (n.count("."), len(n))))
    _SITES[model] = tuple(sites)
    return sites


def neuron_edits(
    loaded,
    neurons: Sequence[int] | np.ndarray,
    *,
    mode: str = "zero",
    means: np.ndarray | None = None,
    factor: float = 0.0,
) -> dict[str, UnitEdit]:
    """Edits of the hidden-state modules that ablate global neurons.

    Parameters
    ----------
    loaded : LoadedModel
        The model; its layers are found by :func:`layer_sites`.
    neurons : sequence of int
        Global neuron indices ``layer * hidden_size + unit`` over the ``n_layers`` hidden
        states (layer 0 = the embedding output), as in rankings and activation matrices.
    mode : {"zero", "mean", "scale"}, default="zero"
        Set the neurons to 0, to ``means``, or multiply them by ``factor``.
    means : numpy.ndarray of shape (n_layers * hidden_size,) or (n_layers, hidden_size)
        Value of every neuron for ``mode="mean"``, e.g. ``X.mean(axis=0)`` of the
        activation matrix.
    factor : float, default=0.0
        Multiplier for ``mode="scale"``.

    Returns
    -------
    dict of str to UnitEdit
        One entry per layer that holds a chosen neuron, ready for :func:`intervene`.

    Raises
    ------
    ValueError
        If ``mode`` is unknown, a neuron is out of range, or ``means`` is missing or of
        the wrong shape for ``mode="mean"``.
    """
    if mode not in INTERVENTION_MODES:
        raise ValueError(f"Unknown intervention mode {mode!r}; choose one of {list(INTERVENTION_MODES)}.")
    n_neurons = loaded.n_layers * loaded.hidden_size
    neurons = np.asarray(neurons)
    if neurons.ndim != 1 or (neurons.size and neurons.dtype.kind not in "iu"):
        raise ValueError(f"neurons must be a 1-D sequence of ints; got shape {neurons.shape}, dtype {neurons.dtype}.")
    neurons = neurons.astype(np.int64)
    if neurons.size and (neurons.min() < 0 or neurons.max() >= n_neurons):
        bad = int(neurons.max() if neurons.max() >= n_neurons else neurons.min())
        raise ValueError(
            f"Neuron {bad} is out of range: {loaded.model_dir.name} has {loaded.n_layers} layers x "
            f"{loaded.hidden_size} units = {n_neurons} neurons (indices 0..{n_neurons - 1})."
        )
    if mode == "mean":
        if means is None:
            raise ValueError("mode='mean' needs means: the value of every neuron, e.g. X.mean(axis=0).")
        shape = np.shape(means)
        means = np.asarray(means, dtype=np.float64)
        if shape == (loaded.n_layers, loaded.hidden_size):
            means = means.reshape(-1)
        if means.shape != (n_neurons,):
            raise ValueError(
                f"means must have one value per neuron, shape ({n_neurons},) or "
                f"({loaded.n_layers}, {loaded.hidden_size}); got shape {shape}."
            )
    sites = layer_sites(loaded)
    layers, units = np.divmod(neurons, loaded.hidden_size)
    edits = {}
    for layer in np.unique(layers):
        chosen = units[layers == layer]
        if mode == "zero":
            edits[sites[layer]] = zero_units(chosen)
        elif mode == "scale":
            edits[sites[layer]] = scale_units(chosen, factor)
        else:
            edits[sites[layer]] = mean_units(chosen, means[layer * loaded.hidden_size + chosen])
    return edits


def ablate_neurons(
    loaded,
    neurons: Sequence[int] | np.ndarray,
    *,
    mode: str = "zero",
    means: np.ndarray | None = None,
    factor: float = 0.0,
):
    """Context manager: ablate global hidden-state neurons of ``loaded.model`` while it runs.

    ``intervene(loaded.model, neuron_edits(loaded, neurons, ...))``; see
    :func:`neuron_edits` for the arguments and :func:`intervene` for the guarantees.

    Examples
    --------
    >>> with ablate_neurons(loaded, [5, 400], mode="zero"):  # doctest: +SKIP
    ...     outputs = loaded.model(**inputs)
    """
    return intervene(loaded.model, neuron_edits(loaded, neurons, mode=mode, means=means, factor=factor))

