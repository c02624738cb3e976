"""Interoperability with other tools' files.

Start here: :mod:`neuro_pipeline.interop.neurox` reads and writes NeuroX's activation files
(HDF5 and JSON) and moves them into and out of the store (:func:`to_store`,
:func:`from_store`), so results can be compared with earlier NeuroX studies.
"""

from neuro_pipeline.interop.neurox import (
    NeuroxActivations,
    NeuroxFormatError,
    StoreImport,
    corpus_sentences,
    from_store,
    neurox_sentence_keys,
    read_neurox_activations,
    read_neurox_corpus,
    read_store_sentences,
    to_store,
    write_neurox_activations,
    write_neurox_hdf5,
    write_neurox_json,
)

__all__ = [
    "NeuroxActivations",
    "NeuroxFormatError",
    "StoreImport",
    "corpus_sentences",
    "from_store",
    "neurox_sentence_keys",
    "read_neurox_activations",
    "read_neurox_corpus",
    "read_store_sentences",
    "to_store",
    "write_neurox_activations",
    "write_neurox_hdf5",
    "write_neurox_json",
]
