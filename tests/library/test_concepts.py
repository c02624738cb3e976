"""Tests for rule-based concepts: word lists, regexes and functions named by import path."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from neuro_pipeline.corpus.concepts import (
    ConceptError,
    ConceptSpec,
    annotate,
    concept_counts,
    load_concept,
)
from neuro_pipeline.corpus.errors import CorpusFormatError
from neuro_pipeline.types import Sentence


def _sentence(*tokens: str, source: str = "notes.txt", line: int = 1) -> Sentence:
    return Sentence(tuple(tokens), ("_",) * len(tokens), source, line)


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, code: str) -> str:
    """Write an importable module into tmp_path; return its name."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(code), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# --- word lists -----------------------------------------------------------------------------

def test_inline_words_case_sensitive_by_default():
    concept = load_concept(ConceptSpec("weekday", words=["Monday", "Friday"]))
    assert concept.label_words(["Monday", "monday", "Fri", "Friday"]) == [
        "weekday", "OTHER", "OTHER", "weekday"]


def test_inline_words_case_insensitive_uses_casefold():
    concept = load_concept(ConceptSpec("street", words=("STRASSE",), case_sensitive=False,
                                       negative_label="O"))
    assert concept.label_words(["straße", "Strasse", "street"]) == ["street", "street", "O"]


def test_words_file_skips_comments_and_blank_lines(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "brands.txt").write_text(
        "# product names\n\nAcme\n  Globex  \n\\#hashtag\n# Initech\nacme\n", encoding="utf-8")
    spec = ConceptSpec("brand", words_file="lists/brands.txt", case_sensitive=False)
    concept = load_concept(spec, base_dir=tmp_path)
    words = ["ACME", "globex", "#hashtag", "Initech", "#", "product"]
    assert concept.label_words(words) == [
        "brand", "brand", "brand", "OTHER", "OTHER", "OTHER"]
    described = concept.describe()
    assert described["kind"] == "words_file"
    assert described["n_words"] == 3  # Acme/acme fold to one entry
    assert described["words_file"] == "lists/brands.txt"
    json.dumps(described)


def test_words_file_relative_to_base_dir_not_cwd(tmp_path, monkeypatch):
    (tmp_path / "w.txt").write_text("x\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(FileNotFoundError, match=r"concept 'c': words_file 'w.txt' not found"):
        load_concept(ConceptSpec("c", words_file="w.txt"))
    assert load_concept(ConceptSpec("c", words_file="w.txt"), tmp_path).label_words(["x"]) == ["c"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"good\n\xff\xfebad\n", r"w\.txt:2: expected UTF-8 text, got invalid byte",
                     id="not-utf8"),
        pytest.param(b"a\r\nb\r\n", r"w\.txt:1: line ends with CRLF", id="crlf"),
        pytest.param(b"\xef\xbb\xbfa\n", r"w\.txt:1: expected UTF-8 text without a byte-order",
                     id="bom"),
        pytest.param(b"", r"w\.txt: expected at least one word, got an empty file", id="empty"),
        pytest.param(b"# only\n\n", r"w\.txt: expected at least one word, got only blank and "
                     r"comment lines", id="only-comments"),
    ],
)
def test_words_file_errors_name_file_and_line(tmp_path, content, message):
    (tmp_path / "w.txt").write_bytes(content)
    with pytest.raises(CorpusFormatError, match=message):
        load_concept(ConceptSpec("c", words_file="w.txt"), tmp_path)


def test_words_digest_changes_with_the_list():
    first = load_concept(ConceptSpec("c", words=("a", "b"))).describe()
    same = load_concept(ConceptSpec("c", words=("b", "a", "a"))).describe()
    other = load_concept(ConceptSpec("c", words=("a", "c"))).describe()
    assert first["words_sha256"] == same["words_sha256"] != other["words_sha256"]


# --- regex -----------------------------------------------------------------------------------

def test_regex_is_a_full_match_not_a_search():
    concept = load_concept(ConceptSpec("number", regex=r"\d+"))
    assert concept.label_words(["2024", "a2024", "2024a", "12"]) == [
        "number", "OTHER", "OTHER", "number"]


def test_regex_case_insensitive():
    sensitive = load_concept(ConceptSpec("m", regex="jan(uary)?"))
    insensitive = load_concept(ConceptSpec("m", regex="jan(uary)?", case_sensitive=False))
    assert sensitive.label_words(["JANUARY", "jan"]) == ["OTHER", "m"]
    assert insensitive.label_words(["JANUARY", "jan"]) == ["m", "m"]
    assert insensitive.describe()["pattern"] == "jan(uary)?"


def test_bad_regex_shows_pattern_and_position():
    with pytest.raises(ConceptError) as info:
        ConceptSpec("date", regex=r"\d+(-\d+")
    message = str(info.value)
    assert message == (
        "concept 'date': regex does not compile: missing ), unterminated subpattern at "
        "position 3:\n    \\d+(-\\d+\n       ^"
    )


# --- functions -------------------------------------------------------------------------------

def test_function_by_colon_and_dotted_path(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, "concept_fn_ok", """
        CALLS = []
        def is_upper(word):
            CALLS.append(word)
            return word.isupper()
    """)
    for path in (f"{module}:is_upper", f"{module}.is_upper"):
        concept = load_concept(ConceptSpec("shout", function=path))
        assert concept.label_words(["NO", "way", "NO"]) == ["shout", "OTHER", "shout"]
        assert concept.describe()["function"] == path
        assert concept.describe()["scope"] == "word"
    import concept_fn_ok

    # per distinct word form: the second "NO" came from the cache
    assert concept_fn_ok.CALLS == ["NO", "way", "NO", "way"]


def test_function_returning_none_names_function_and_word(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, "concept_fn_none", """
        import re
        def is_year(word):
            return re.fullmatch(r"\\d{4}", word) and True
    """)
    concept = load_concept(ConceptSpec("year", function=f"{module}:is_year"))
    assert concept.label_words(["1999"]) == ["year"]
    with pytest.raises(ConceptError, match=r"^notes\.txt:4: concept 'year': function "
                       r"'concept_fn_none:is_year' returned None for word 'hello'; "
                       r"expected True or False\.$"):
        annotate([_sentence("1999", "hello", line=4)], concept)


def test_function_that_raises_is_reported_with_the_word(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, "concept_fn_raises", """
        def f(word):
            return int(word) > 0
    """)
    concept = load_concept(ConceptSpec("positive", function=f"{module}:f"))
    with pytest.raises(ConceptError, match=r"function 'concept_fn_raises:f' raised ValueError "
                                           r"on word 'x'"):
        concept.label_words(["1", "x"])


def test_sentence_scope_sees_context(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, "concept_fn_sentence", """
        def after_the(words):
            return [i > 0 and words[i - 1].lower() == "the" for i in range(len(words))]
    """)
    concept = load_concept(ConceptSpec("after_the", function=f"{module}:after_the",
                                       scope="sentence"))
    out = annotate([_sentence("The", "cat", "saw", "the", "dog")], concept)
    assert out[0].labels == ("OTHER", "after_the", "OTHER", "OTHER", "after_the")


def test_sentence_scope_wrong_length_names_source_and_line(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, "concept_fn_short", """
        def first_only(words):
            return [True]
    """)
    concept = load_concept(ConceptSpec("first", function=f"{module}:first_only",
                                       scope="sentence"))
    assert annotate([_sentence("One")], concept)[0].labels == ("first",)
    with pytest.raises(ConceptError, match=r"^corpus\.txt:7: concept 'first': function "
                       r"'concept_fn_short:first_only' returned 1 values for a sentence of 3 "
                       r"words"):
        annotate([_sentence("One"), _sentence("a", "b", "c", source="corpus.txt", line=7)],
                 concept)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        pytest.param("no_such_module_xyz:f", r"concept 'c': function 'no_such_module_xyz:f': "
                     r"cannot import module 'no_such_module_xyz': No module named "
                     r"'no_such_module_xyz'", id="missing-module"),
        pytest.param("concept_fn_attrs:missing", r"function 'concept_fn_attrs:missing': "
                     r"'concept_fn_attrs' has no attribute 'missing'", id="missing-attribute"),
        pytest.param("concept_fn_attrs:VALUE", r"function 'concept_fn_attrs:VALUE' is not "
                     r"callable \(got int 3\)", id="not-callable"),
        pytest.param("concept_fn_broken:f", r"function 'concept_fn_broken:f': importing module "
                     r"'concept_fn_broken' raised ZeroDivisionError", id="import-raises"),
        pytest.param("just_a_name", r"function 'just_a_name' is not an import path",
                     id="no-module"),
    ],
)
def test_function_load_errors_name_the_import_path(tmp_path, monkeypatch, path, message):
    _module(tmp_path, monkeypatch, "concept_fn_attrs", "VALUE = 3\n")
    _module(tmp_path, monkeypatch, "concept_fn_broken", "1 / 0\n")
    spec = ConceptSpec("c", function=path)  # building a spec imports nothing
    with pytest.raises(ConceptError, match=message):
        load_concept(spec)


# --- spec validation -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"words": ("a",), "regex": "a"},
                     r"expected exactly one of words, words_file, regex, function; got 2 "
                     r"\(words, regex\)", id="two-kinds"),
        pytest.param({}, r"expected exactly one of .*; got none", id="no-kind"),
        pytest.param({"words": ()}, r"words is empty", id="empty-words"),
        pytest.param({"words": "Monday"}, r"words must be a list of strings; got str",
                     id="words-string"),
        pytest.param({"words": ("a", "")}, r"words\[1\] must be a non-empty string", id="blank"),
        pytest.param({"regex": "a", "scope": "sentence"},
                     r"scope='sentence' applies only to a function concept", id="scope"),
        pytest.param({"function": "m:f", "scope": "doc"}, r"unknown scope 'doc'",
                     id="bad-scope"),
        pytest.param({"function": "m:f", "case_sensitive": False},
                     r"case_sensitive=False applies only to", id="case-function"),
        pytest.param({"words": ("a",), "negative_label": "c"},
                     r"negative_label must differ from the concept name", id="same-labels"),
        pytest.param({"regex": ""}, r"regex must be a non-empty string", id="empty-regex"),
    ],
)
def test_spec_validation(kwargs, message):
    with pytest.raises(ConceptError, match=message):
        ConceptSpec("c", **kwargs)


@pytest.mark.parametrize("name", ["", "_", "has space", "date/time", "-x", 3])
def test_invalid_names(name):
    with pytest.raises(ConceptError, match=r"A concept name must be a non-empty string"):
        ConceptSpec(name, words=("a",))


def test_valid_names_and_spec_is_hashable():
    spec = ConceptSpec("Date_v2.1-x", words=["a"])
    assert hash(spec) == hash(ConceptSpec("Date_v2.1-x", words=("a",)))


# --- annotate and counts ---------------------------------------------------------------------

def test_annotate_keeps_tokens_and_provenance():
    original = Sentence(("In", "2024", "."), ("ADP", "NUM", "PUNCT"), "ud.conllu", 12,
                        "s-1", (12, 13, 14))
    concept = load_concept(ConceptSpec("year", regex=r"\d{4}"))
    (out,) = annotate([original], concept)
    assert out.labels == ("OTHER", "year", "OTHER")
    assert (out.tokens, out.source, out.line, out.sent_id, out.token_lines) == (
        original.tokens, "ud.conllu", 12, "s-1", (12, 13, 14))
    assert original.labels == ("ADP", "NUM", "PUNCT")


def test_concept_counts_with_and_without_concept():
    concept = load_concept(ConceptSpec("year", regex=r"\d{4}"))
    none_matched = annotate([_sentence("no", "dates")], concept)
    assert concept_counts(none_matched) == {"OTHER": 2}
    assert concept_counts(none_matched, concept=concept) == {"OTHER": 2, "year": 0}
    with pytest.raises(ValueError, match=r"expects only the labels \['OTHER', 'year'\]; got "
                                         r"also \['_'\]"):
        concept_counts([_sentence("x")], concept=concept)
