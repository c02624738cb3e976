"""Concepts defined by a rule: label each word as the concept or not, with no treebank needed.

Start here: a :class:`ConceptSpec` says *what* the concept is (its name, which is also the
positive label, and exactly one rule); :func:`load_concept` turns it into a :class:`Concept`
that labels words; :func:`annotate` relabels a corpus with it, and :func:`concept_counts`
summarises the result. The rule is one of:

* ``words``: an inline word list, e.g. ``("Monday", "Tuesday")``;
* ``words_file``: a word list file, one entry per line (UTF-8, LF line ends; blank lines and
  lines starting with ``#`` are ignored; write ``\\#`` to list an entry that starts with
  ``#``);
* ``regex``: a regular expression that must match the *whole* word (:func:`re.fullmatch`);
* ``function``: the import path of a Python callable, ``package.module:callable`` (or
  ``package.module.callable``). With ``scope="word"`` it is called as ``f(word) -> bool``;
  with ``scope="sentence"`` as ``f(words) -> sequence of bool``, once per sentence, for
  concepts that depend on context.

Every word gets either the concept's name or the negative label (``"OTHER"`` by default).
Annotation never balances classes (NeuroX's ``balance_data`` flag never reached its
annotator); balance the training rows afterwards with
:func:`neuro_pipeline.corpus.balance.balance_labels`.

.. warning::
   A ``function`` concept runs user code: :func:`load_concept` imports the module (executing
   its top-level code) and labelling calls the function. :class:`ConceptSpec` never imports
   anything, so the code runs only when a configuration names the function and the concept
   is loaded. Only name functions from code you trust.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from neuro_pipeline.corpus.errors import CorpusFormatError, read_utf8_lines
from neuro_pipeline.types import Sentence

__all__ = [
    "CONCEPT_KINDS",
    "Concept",
    "ConceptError",
    "ConceptSpec",
    "annotate",
    "concept_counts",
    "load_concept",
]

logger = logging.getLogger(__name__)

#: The rule fields of :class:`ConceptSpec`; exactly one of them is set.
CONCEPT_KINDS: tuple[str, ...] = ("words", "words_file", "regex", "function")
_SCOPES = ("word", "sentence")
# A label starts with an ASCII letter or digit, so that it can never be the "_" placeholder
# of unlabelled text, and stays safe as a table value, file name part or partition key.
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_IDENTIFIER_PATH = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*")
_WORD_LIST_FORMAT = "a concept word list"


class ConceptError(ValueError):
    """A concept is misconfigured, cannot be loaded, or its function misbehaved."""


def _check_label(what: str, value: object) -> str:
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise ConceptError(
            f"{what} must be a non-empty string of ASCII letters, digits, '_', '.' and '-' "
            f"that starts with a letter or digit; got {value!r}."
        )
    return value


def _regex_error_message(name: str, pattern: str, exc: re.error) -> str:
    message = f"concept {name!r}: regex does not compile: {exc.msg}"
    if exc.pos is None:
        return f"{message}; pattern:\n    {pattern}"
    return f"{message} at position {exc.pos}:\n    {pattern}\n    {' ' * exc.pos}^"


def _compile(name: str, pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    try:
        return re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)
    except re.error as exc:
        raise ConceptError(_regex_error_message(name, pattern, exc)) from None


@dataclass(frozen=True)
class ConceptSpec:
    """What a concept is: its name (the positive label) and exactly one labelling rule.

    Building a spec validates it without reading files or importing code: the name and
    labels, that exactly one rule is given, and that a regex compiles.

    Parameters
    ----------
    name : str
        The concept, and the label of the words that belong to it. ASCII letters, digits,
        ``_``, ``.`` and ``-``, starting with a letter or digit, e.g. ``"date"``.
    words : tuple of str or None
        Inline word list; a word belongs to the concept when it equals an entry. A list is
        accepted and stored as a tuple. Entries are matched against single words, so an
        entry containing a space matches only a word that itself contains one.
    words_file : str or None
        Word list file, one entry per line: UTF-8 without BOM, LF line ends, surrounding
        whitespace stripped, blank lines and lines starting with ``#`` ignored (``\\#x``
        lists ``#x``). A relative path is resolved against ``base_dir`` of
        :func:`load_concept`.
    regex : str or None
        Regular expression (Python :mod:`re` syntax) that must match the whole word.
    function : str or None
        Import path of a callable, ``"package.module:callable"`` (``callable`` may be a dotted
        attribute path such as ``Class.method``) or ``"package.module.callable"``. It must
        return ``True`` or ``False`` (``bool``, ``numpy.bool_`` or the integers 0 and 1) for
        each word. The module must be importable (installed, or on ``PYTHONPATH``).
        **Runs user code** when loaded; see the module docstring.
    case_sensitive : bool, default True
        For ``words``, ``words_file`` and ``regex``. When False, words are compared after
        :meth:`str.casefold` and the regex gets :data:`re.IGNORECASE`. A function decides
        case itself, so False is an error with ``function``.
    negative_label : str, default "OTHER"
        Label of the words outside the concept; same character rules as ``name``, and
        different from it.
    scope : {"word", "sentence"}, default "word"
        Only for ``function``: ``"word"`` calls ``f(word) -> bool`` (once per distinct word
        form; results are cached, so ``f`` must be pure); ``"sentence"`` calls
        ``f(words: list[str]) -> Sequence[bool]`` once per sentence, one value per word.

    Raises
    ------
    ConceptError
        If a field is invalid, no rule or more than one rule is given, ``words`` is empty,
        the regex is empty or does not compile (the message shows the pattern and the
        position), ``scope`` is unknown or ``"sentence"`` without ``function``.

    Examples
    --------
    >>> ConceptSpec("weekday", words=["Monday", "Tuesday"]).words
    ('Monday', 'Tuesday')
    >>> ConceptSpec("year", regex=r"\\d{4}").regex
    '\\\\d{4}'
    >>> ConceptSpec("x", words=("a",), regex="a")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    neuro_pipeline.corpus.concepts.ConceptError: concept 'x': expected exactly one of ...; got 2 (words, regex).
    """

    name: str
    words: tuple[str, ...] | None = None
    words_file: str | None = None
    regex: str | None = None
    function: str | None = None
    case_sensitive: bool = True
    negative_label: str = "OTHER"
    scope: Literal["word", "sentence"] = "word"

    def __post_init__(self) -> None:
        _check_label("A concept name", self.name)
        name = self.name
        _check_label(f"concept {name!r}: negative_label", self.negative_label)
        if self.negative_label == name:
            raise ConceptError(
                f"concept {name!r}: negative_label must differ from the concept name; both "
                f"are {name!r}."
            )
        given = [kind for kind in CONCEPT_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            got = f"{len(given)} ({', '.join(given)})" if given else "none"
            raise ConceptError(
                f"concept {name!r}: expected exactly one of {', '.join(CONCEPT_KINDS)}; "
                f"got {got}."
            )
        if not isinstance(self.case_sensitive, bool):
            raise ConceptError(
                f"concept {name!r}: case_sensitive must be True or False; got "
                f"{self.case_sensitive!r}."
            )
        if self.scope not in _SCOPES:
            raise ConceptError(
                f"concept {name!r}: unknown scope {self.scope!r}; choose one of {list(_SCOPES)}."
            )
        if self.scope == "sentence" and self.function is None:
            raise ConceptError(
                f"concept {name!r}: scope='sentence' applies only to a function concept; "
                f"a {given[0]} concept labels each word on its own (use scope='word')."
            )
        if self.words is not None:
            object.__setattr__(self, "words", self._checked_words(self.words))
        if self.words_file is not None:
            if not isinstance(self.words_file, (str, os.PathLike)) or not str(self.words_file):
                raise ConceptError(
                    f"concept {name!r}: words_file must be a non-empty path; got "
                    f"{self.words_file!r}."
                )
            object.__setattr__(self, "words_file", str(self.words_file))
        if self.regex is not None:
            if not isinstance(self.regex, str) or not self.regex:
                raise ConceptError(
                    f"concept {name!r}: regex must be a non-empty string; got {self.regex!r}."
                )
            _compile(name, self.regex, self.case_sensitive)
        if self.function is not None:
            if not isinstance(self.function, str) or not self.function.strip():
                raise ConceptError(
                    f"concept {name!r}: function must be an import path such as "
                    f"'package.module:callable'; got {self.function!r}."
                )
            if not self.case_sensitive:
                raise ConceptError(
                    f"concept {name!r}: case_sensitive=False applies only to words, "
                    "words_file and regex concepts; a function decides about case itself."
                )

    def _checked_words(self, words: object) -> tuple[str, ...]:
        if isinstance(words, (str, bytes)) or not isinstance(words, Iterable):
            raise ConceptError(
                f"concept {self.name!r}: words must be a list of strings; got "
                f"{type(words).__name__} {words!r}."
            )
        words = tuple(words)
        if not words:
            raise ConceptError(
                f"concept {self.name!r}: words is empty; a concept needs at least one word."
            )
        for index, word in enumerate(words):
            if not isinstance(word, str) or not word:
                raise ConceptError(
                    f"concept {self.name!r}: words[{index}] must be a non-empty string; got "
                    f"{word!r}."
                )
        return words

    @property
    def kind(self) -> str:
        """Which rule defines the concept: one of :data:`CONCEPT_KINDS`."""
        return next(kind for kind in CONCEPT_KINDS if getattr(self, kind) is not None)


# A matcher labels one sentence: (words, where) -> one bool per word. `where` is
# "source:line" for messages, or None when the caller has no provenance.
_Matcher = Callable[[Sequence[str], "str | None"], list[bool]]


class Concept:
    """A loaded concept: labels words as the concept (its name) or the negative label.

    Build it with :func:`load_concept`, not directly.

    Attributes
    ----------
    name : str
        The concept name, also the positive label.
    spec : ConceptSpec
        The specification it was loaded from.
    """

    def __init__(self, spec: ConceptSpec, matcher: _Matcher, description: dict[str, Any]):
        self.name = spec.name
        self.spec = spec
        self._matcher = matcher
        self._description = description

    @property
    def positive_label(self) -> str:
        return self.spec.name

    @property
    def negative_label(self) -> str:
        return self.spec.negative_label

    def __repr__(self) -> str:
        return f"Concept(name={self.name!r}, kind={self.spec.kind!r})"

    def label_words(self, words: Sequence[str], *, where: str | None = None) -> list[str]:
        """Label each word of one sentence.

        Parameters
        ----------
        words : sequence of str
            The words of one sentence (a sentence-scope function sees them all at once).
        where : str, optional
            Where the sentence comes from (e.g. ``file:line``); error messages start with it.

        Returns
        -------
        list of str
            ``name`` for a word in the concept, ``negative_label`` otherwise; one per word.

        Raises
        ------
        ConceptError
            If a function concept returns something other than True/False, a sentence-scope
            function returns the wrong number of values, or the function raises.

        Examples
        --------
        >>> concept = load_concept(ConceptSpec("year", regex=r"\\d{4}"))
        >>> concept.label_words(["In", "2024", "a2024"])
        ['OTHER', 'year', 'OTHER']
        """
        words = list(words)
        if not words:
            return []
        positive, negative = self.spec.name, self.spec.negative_label
        return [positive if hit else negative for hit in self._matcher(words, where)]

    def describe(self) -> dict[str, Any]:
        """JSON-friendly provenance of the concept.

        Returns
        -------
        dict
            Keys ``name``, ``kind``, ``positive_label``, ``negative_label``,
            ``case_sensitive`` (None for a function), ``n_words`` and ``words_sha256``
            (distinct entries after case folding, and the first 16 hex digits of a SHA-256
            over them; None unless a word list), ``words_file`` (as given in the spec),
            ``pattern``, ``function`` and ``scope`` (None where they do not apply).

        Examples
        --------
        >>> spec = ConceptSpec("day", words=("Mon", "mon"), case_sensitive=False)
        >>> d = load_concept(spec).describe()
        >>> d["kind"], d["n_words"], d["case_sensitive"], d["pattern"]
        ('words', 1, False, None)
        """
        return dict(self._description)


def _bool_value(value: object) -> bool | None:
    """``value`` as a bool if it is bool-like (bool, numpy bool, integer 0 or 1), else None."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    return None


def _word_list_matcher(
    entries: Iterable[str], case_sensitive: bool
) -> tuple[_Matcher, frozenset[str]]:
    fold = (lambda w: w) if case_sensitive else str.casefold
    vocabulary = frozenset(fold(entry) for entry in entries)

    def match(words: Sequence[str], where: str | None) -> list[bool]:
        return [fold(word) in vocabulary for word in words]

    return match, vocabulary


def _regex_matcher(pattern: re.Pattern[str]) -> _Matcher:
    def match(words: Sequence[str], where: str | None) -> list[bool]:
        return [pattern.fullmatch(word) is not None for word in words]

    return match


def _read_word_list(spec: ConceptSpec, base_dir: Path) -> tuple[list[str], str]:
    """Entries of the spec's word list file, and the path it was read from."""
    path = Path(spec.words_file)
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise FileNotFoundError(
            f"concept {spec.name!r}: words_file {spec.words_file!r} not found (looked for "
            f"{path}, relative paths are resolved against base_dir {str(base_dir)!r})."
        )
    if path.stat().st_size == 0:
        raise CorpusFormatError(path, None, "expected at least one word, got an empty file")
    lines, _ = read_utf8_lines(path, format_name=_WORD_LIST_FORMAT)
    entries = []
    for number, text in enumerate(lines, start=1):
        entry = text.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry.startswith("\\#"):
            entry = entry[1:]
        if any(character.isspace() for character in entry):
            logger.warning(
                "%s:%d: word list entry %r contains whitespace; it matches only a single word "
                "that contains the same whitespace", path, number, entry,
            )
        entries.append(entry)
    if not entries:
        raise CorpusFormatError(
            path, None, f"expected at least one word, got only blank and comment lines "
            f"({len(lines)} lines)"
        )
    return entries, str(path)


def _import_callable(spec: ConceptSpec) -> Callable[..., Any]:
    """Import the spec's function; every failure names the import path and the cause."""
    path = spec.function.strip()
    if ":" in path:
        module_name, _, attribute_path = path.partition(":")
    else:
        module_name, _, attribute_path = path.rpartition(".")
    prefix = f"concept {spec.name!r}: function {path!r}"
    if not (_IDENTIFIER_PATH.fullmatch(module_name) and _IDENTIFIER_PATH.fullmatch(attribute_path)):
        raise ConceptError(
            f"{prefix} is not an import path; expected 'package.module:callable' or "
            "'package.module.callable'."
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConceptError(
            f"{prefix}: cannot import module {module_name!r}: {exc} (is it installed or on "
            "PYTHONPATH?)"
        ) from exc
    except Exception as exc:
        raise ConceptError(
            f"{prefix}: importing module {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    reached = module_name
    for part in attribute_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConceptError(f"{prefix}: {reached!r} has no attribute {part!r}.") from None
        reached = f"{reached}.{part}"
    if not callable(target):
        raise ConceptError(
            f"{prefix} is not callable (got {type(target).__name__} {target!r:.60}); "
            "expected a function."
        )
    return target


def _function_matcher(spec: ConceptSpec, function: Callable[..., Any]) -> _Matcher:
    label = f"concept {spec.name!r}: function {spec.function!r}"

    def located(where: str | None) -> str:
        return f"{where}: {label}" if where else label

    if spec.scope == "word":
        cache: dict[str, bool] = {}

        def match_words(words: Sequence[str], where: str | None) -> list[bool]:
            hits = []
            for word in words:
                hit = cache.get(word)
                if hit is None:
                    try:
                        result = function(word)
                    except Exception as exc:
                        raise ConceptError(
                            f"{located(where)} raised {type(exc).__name__} on word {word!r}: "
                            f"{exc}"
                        ) from exc
                    hit = _bool_value(result)
                    if hit is None:
                        raise ConceptError(
                            f"{located(where)} returned {result!r} for word {word!r}; "
                            "expected True or False."
                        )
                    cache[word] = hit
                hits.append(hit)
            return hits

        return match_words

    def match_sentence(words: Sequence[str], where: str | None) -> list[bool]:
        words = list(words)
        try:
            result = function(list(words))
        except Exception as exc:
            raise ConceptError(
                f"{located(where)} raised {type(exc).__name__} on the sentence "
                f"{' '.join(words[:8])!r}{'...' if len(words) > 8 else ''}: {exc}"
            ) from exc
        if isinstance(result, (str, bytes)) or not isinstance(result, Iterable):
            raise ConceptError(
                f"{located(where)} returned {result!r}; expected a sequence of "
                f"{len(words)} booleans, one per word."
            )
        values = list(result)
        if len(values) != len(words):
            raise ConceptError(
                f"{located(where)} returned {len(values)} values for a sentence of "
                f"{len(words)} words; expected one True/False per word."
            )
        hits = []
        for word, value in zip(words, values):
            hit = _bool_value(value)
            if hit is None:
                raise ConceptError(
                    f"{located(where)} returned {value!r} for word {word!r}; expected True "
                    "or False."
                )
            hits.append(hit)
        return hits

    return match_sentence


def _words_digest(vocabulary: frozenset[str]) -> str:
    return hashlib.sha256("\n".join(sorted(vocabulary)).encode("utf-8")).hexdigest()[:16]


def load_concept(spec: ConceptSpec, base_dir: str | os.PathLike[str] = ".") -> Concept:
    """Load a concept: read its word list file or import its function.

    Parameters
    ----------
    spec : ConceptSpec
        The concept.
    base_dir : str or os.PathLike, default "."
        Directory against which a relative ``words_file`` is resolved (typically the folder
        of the configuration file).

    Returns
    -------
    Concept

    Raises
    ------
    FileNotFoundError
        If ``words_file`` does not exist.
    CorpusFormatError
        If ``words_file`` is empty, has no entries, has a BOM, non-UTF-8 bytes or CRLF line
        ends (the message names the file and line).
    ConceptError
        If the function's module cannot be imported (or raises while importing), lacks the
        attribute, or the attribute is not callable; the message names the import path.

    Notes
    -----
    For a ``function`` concept this imports user code, which executes the module's top-level
    statements; it is the only code run before labelling. Load only concepts you trust.

    Examples
    --------
    >>> concept = load_concept(ConceptSpec("weekday", words=("monday",), case_sensitive=False))
    >>> concept.label_words(["See", "you", "Monday"])
    ['OTHER', 'OTHER', 'weekday']
    """
    if not isinstance(spec, ConceptSpec):
        raise TypeError(f"load_concept expects a ConceptSpec; got {type(spec).__name__}.")
    kind = spec.kind
    description: dict[str, Any] = {
        "name": spec.name,
        "kind": kind,
        "positive_label": spec.name,
        "negative_label": spec.negative_label,
        "case_sensitive": None if kind == "function" else spec.case_sensitive,
        "n_words": None,
        "words_sha256": None,
        "words_file": spec.words_file,
        "pattern": spec.regex,
        "function": spec.function,
        "scope": spec.scope if kind == "function" else None,
    }
    if kind in ("words", "words_file"):
        if kind == "words":
            entries, origin = list(spec.words), "inline list"
        else:
            entries, origin = _read_word_list(spec, Path(base_dir))
        matcher, vocabulary = _word_list_matcher(entries, spec.case_sensitive)
        description["n_words"] = len(vocabulary)
        description["words_sha256"] = _words_digest(vocabulary)
        logger.debug("concept %r: %d distinct words from %s", spec.name, len(vocabulary), origin)
    elif kind == "regex":
        matcher = _regex_matcher(_compile(spec.name, spec.regex, spec.case_sensitive))
    else:
        matcher = _function_matcher(spec, _import_callable(spec))
    return Concept(spec, matcher, description)


def annotate(sentences: Sequence[Sentence], concept: Concept) -> list[Sentence]:
    """Relabel sentences with a concept: its name for words in it, the negative label otherwise.

    Parameters
    ----------
    sentences : sequence of Sentence
        The corpus; existing labels are replaced.
    concept : Concept
        From :func:`load_concept`.

    Returns
    -------
    list of Sentence
        New sentences in the same order with the same tokens, source, line, sent_id and
        token_lines; only the labels differ. No class balancing is done here.

    Raises
    ------
    ConceptError
        If the concept's function misbehaves; the message starts with the sentence's
        ``source:line``.

    Examples
    --------
    >>> s = Sentence(("Born", "1999", "."), ("_", "_", "_"), "demo:x", 3)
    >>> annotate([s], load_concept(ConceptSpec("year", regex=r"\\d{4}")))[0].labels
    ('OTHER', 'year', 'OTHER')
    """
    if not isinstance(concept, Concept):
        raise TypeError(
            f"annotate expects a Concept from load_concept; got {type(concept).__name__}."
        )
    annotated = []
    n_positive = 0
    for sentence in sentences:
        labels = concept.label_words(sentence.tokens, where=f"{sentence.source}:{sentence.line}")
        n_positive += labels.count(concept.name)
        annotated.append(replace(sentence, labels=tuple(labels)))
    if annotated and not n_positive:
        logger.warning("concept %r matched no word in %d sentences", concept.name, len(annotated))
    return annotated


def concept_counts(
    sentences: Iterable[Sentence], *, concept: Concept | None = None
) -> dict[str, int]:
    """Number of words per label.

    Parameters
    ----------
    sentences : iterable of Sentence
        Typically the output of :func:`annotate`.
    concept : Concept, optional
        When given, both its labels appear in the result (with 0 when absent), and a label
        that is neither is an error (the sentences were not annotated with this concept).

    Returns
    -------
    dict of str to int
        Label to word count, sorted by label.

    Raises
    ------
    ValueError
        If ``concept`` is given and a word carries another label.

    Examples
    --------
    >>> s = Sentence(("Born", "1999", "."), ("OTHER", "year", "OTHER"), "demo:x", 3)
    >>> concept_counts([s])
    {'OTHER': 2, 'year': 1}
    """
    counts: Counter[str] = Counter()
    for sentence in sentences:
        counts.update(sentence.labels)
    if concept is not None:
        expected = {concept.positive_label, concept.negative_label}
        other = sorted(set(counts) - expected)
        if other:
            raise ValueError(
                f"concept_counts(concept={concept.name!r}) expects only the labels "
                f"{sorted(expected)}; got also {other}. Annotate the sentences with this "
                "concept first."
            )
        for label in expected:
            counts.setdefault(label, 0)
    return dict(sorted(counts.items()))
