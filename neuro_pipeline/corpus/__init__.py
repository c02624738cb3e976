"""Corpora: read annotated text into :class:`~neuro_pipeline.types.Sentence`, split it, tabulate it.

Start here:

* :func:`read_conllu` reads a Universal Dependencies treebank (label: UPOS, XPOS, DEPREL,
  LEMMA or one FEATS key); :func:`read_parallel` reads NeuroX's words/labels file pair;
  :func:`generate_demo_corpus` makes the embedded UPOS-tagged corpus (no download).
* :func:`read_text` reads plain text (one sentence per line, no labels); concepts from
  rules (:class:`ConceptSpec`, :func:`load_concept`, :func:`annotate`: a word list, a
  regex or a function) label any corpus; :func:`balance_labels` undersamples majority classes.
* :func:`split_sentences` assigns train/dev/test by sentence content;
  :func:`sentences_to_table` lays the splits out as the keyed token table
  (:data:`~neuro_pipeline.types.TOKEN_COLUMNS`) that every later stage joins on;
  :func:`label_counts` summarises it.

Malformed files raise :class:`CorpusFormatError` (a ``ValueError``) naming file and line.
"""

from neuro_pipeline.corpus.balance import BalanceResult, balance_labels
from neuro_pipeline.corpus.concepts import Concept, ConceptError, ConceptSpec, annotate, concept_counts, load_concept
from neuro_pipeline.corpus.conllu import LABEL_COLUMNS, read_conllu
from neuro_pipeline.corpus.demo import DEMO_CORPUS_NAME, DEMO_SOURCE, generate_demo_corpus
from neuro_pipeline.corpus.errors import CorpusFormatError
from neuro_pipeline.corpus.parallel import read_parallel
from neuro_pipeline.corpus.table import SPLITS, label_counts, pairs_table, sentences_to_table, split_sentences
from neuro_pipeline.corpus.text import TOKENIZERS, UNLABELLED, TextCorpus, read_text, tokenize

__all__ = [
    "BalanceResult",
    "Concept",
    "ConceptError",
    "ConceptSpec",
    "CorpusFormatError",
    "TOKENIZERS",
    "TextCorpus",
    "UNLABELLED",
    "annotate",
    "balance_labels",
    "concept_counts",
    "load_concept",
    "read_text",
    "tokenize",
    "DEMO_CORPUS_NAME",
    "DEMO_SOURCE",
    "LABEL_COLUMNS",
    "SPLITS",
    "generate_demo_corpus",
    "label_counts",
    "read_conllu",
    "read_parallel",
    "sentences_to_table",
    "pairs_table",
    "split_sentences",
]
