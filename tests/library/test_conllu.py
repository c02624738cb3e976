"""Tests for read_conllu: well-formed files, every label column, every malformed case, UD EWT."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from neuro_pipeline.corpus import CorpusFormatError, read_conllu

EWT_DIR = (Path(__file__).parents[2] / "../shared/data/ud-en-ewt").resolve()

# Columns below are separated by single spaces for readability; _write turns them into tabs.
GOOD = """\
    # newdoc id = doc1
    # sent_id = s1
    # text = We really don't know.
    1 We we PRON PRP Case=Nom|Number=Plur|Person=1 5 nsubj _ _
    2 really really ADV RB _ 5 advmod _ _
    3-4 don't _ _ _ _ _ _ _ _
    3 do do AUX VBP Mood=Ind|Number=Plur|Tense=Pres 5 aux _ _
    4 n't not PART RB Polarity=Neg 5 advmod _ _
    5 know know VERB VB VerbForm=Inf 0 root _ SpaceAfter=No
    6 . . PUNCT . _ 5 punct _ _

    # sent_id = s2
    1 Cats cat NOUN NNS Number=Plur 2 nsubj _ _
    2 sleep sleep VERB VBP Mood=Ind|Tense=Pres 0 root _ _
    2.1 sleep sleep VERB VBP _ _ _ 4:conj _
    3 and and CCONJ CC _ 4 cc _ _
    4 dogs dog NOUN NNS Number=Plur 2 conj _ _

"""


def _write(tmp_path: Path, text: str, name: str = "x.conllu") -> Path:
    """Dedent ``text`` and turn the spaces of non-comment lines into tabs."""
    lines = textwrap.dedent(text).split("\n")
    converted = [line if line.startswith("#") else line.replace(" ", "\t") for line in lines]
    path = tmp_path / name
    path.write_bytes("\n".join(converted).encode("utf-8"))
    return path


def _write_bytes(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "x.conllu"
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------
# Well-formed input
# ------------------------------------------------------------------------------------

def test_reads_words_labels_and_provenance(tmp_path):
    path = _write(tmp_path, GOOD)
    first, second = read_conllu(path)
    # the multiword token "don't" is replaced by its words; the empty node 2.1 is skipped
    assert first.tokens == ("We", "really", "do", "n't", "know", ".")
    assert first.labels == ("PRON", "ADV", "AUX", "PART", "VERB", "PUNCT")
    assert second.tokens == ("Cats", "sleep", "and", "dogs")
    assert (first.sent_id, second.sent_id) == ("s1", "s2")
    assert first.source == second.source == str(path)
    assert first.line == 4 and first.token_lines == (4, 5, 7, 8, 9, 10)
    assert second.line == 13 and second.token_lines == (13, 14, 16, 17)


def test_sentence_without_sent_id(tmp_path):
    path = _write(tmp_path, """\
        1 Hi hi INTJ UH _ 0 root _ _

    """)
    (sentence,) = read_conllu(path)
    assert sentence.sent_id is None and sentence.line == 1


def test_consecutive_blank_lines_between_sentences_are_allowed(tmp_path):
    path = _write(tmp_path, """\
        1 Hi hi INTJ UH _ 0 root _ _


        1 Bye bye INTJ UH _ 0 root _ _

    """)
    assert [s.tokens for s in read_conllu(path)] == [("Hi",), ("Bye",)]


@pytest.mark.parametrize(
    ("label_column", "expected"),
    [
        ("upos", ("PRON", "ADV", "AUX", "PART", "VERB", "PUNCT")),
        ("UPOS", ("PRON", "ADV", "AUX", "PART", "VERB", "PUNCT")),  # case-insensitive
        ("xpos", ("PRP", "RB", "VBP", "RB", "VB", ".")),
        ("deprel", ("nsubj", "advmod", "aux", "advmod", "root", "punct")),
        ("lemma", ("we", "really", "do", "not", "know", ".")),
        ("feats:Number", ("Plur", "_", "Plur", "_", "_", "_")),  # "_" where the key is absent
        ("FEATS:number", ("Plur", "_", "Plur", "_", "_", "_")),
        ("feats:Polarity", ("_", "_", "_", "Neg", "_", "_")),
    ],
)
def test_label_columns(tmp_path, label_column, expected):
    first, _ = read_conllu(_write(tmp_path, GOOD), label_column=label_column)
    assert first.labels == expected


@pytest.mark.parametrize("label_column", ["head", "feats:", "form", "", 3])
def test_unknown_label_column_lists_the_choices(tmp_path, label_column):
    path = _write(tmp_path, GOOD)
    with pytest.raises(ValueError, match=r"Unknown label_column .*; choose one of \['upos', "
                                         r"'xpos', 'deprel', 'lemma', 'feats:<Key>'\]"):
        read_conllu(path, label_column=label_column)


def test_unannotated_lemma_is_a_valid_label(tmp_path):
    path = _write(tmp_path, """\
        1 _ _ SYM NFP _ 0 root _ _

    """)
    (sentence,) = read_conllu(path, label_column="lemma")
    assert sentence.tokens == ("_",) and sentence.labels == ("_",)


# ------------------------------------------------------------------------------------
# Malformed input: every error names the file and the line
# ------------------------------------------------------------------------------------

ONE_WORD = "1 Hi hi INTJ UH _ 0 root _ _\n"

MALFORMED_TEXT = [
    pytest.param(
        "# sent_id = a\n1 Hi hi INTJ UH _ 0 root _\n\n",
        r"x\.conllu:2: expected 10 tab-separated columns, got 9$", id="nine-columns"),
    pytest.param(
        "1 Hi hi INTJ UH _ 0 root _ _ extra\n\n",
        r"x\.conllu:1: expected 10 tab-separated columns, got 11$", id="eleven-columns"),
    pytest.param(
        "one Hi hi INTJ UH _ 0 root _ _\n\n",
        r"x\.conllu:1: expected an integer word id .*, got 'one'", id="non-integer-id"),
    pytest.param(
        "1.x Hi hi INTJ UH _ 0 root _ _\n\n",
        r"x\.conllu:1: expected an integer word id .*, got '1\.x'", id="malformed-decimal-id"),
    pytest.param(
        ONE_WORD + "3 there there ADV RB _ 1 advmod _ _\n\n",
        r"x\.conllu:2: expected word id 2, got 3 \(word ids must be consecutive", id="gap"),
    pytest.param(
        "0 Hi hi INTJ UH _ 0 root _ _\n\n",
        r"x\.conllu:1: expected word id 1, got 0", id="starts-at-zero"),
    pytest.param(
        ONE_WORD + "1 there there ADV RB _ 1 advmod _ _\n\n",
        r"x\.conllu:2: expected word id 2, got 1", id="repeated-id"),
    pytest.param(
        ONE_WORD + "3-2 dont _ _ _ _ _ _ _ _\n\n",
        r"x\.conllu:2: expected a multiword range start < end, got 3-2", id="range-reversed"),
    pytest.param(
        ONE_WORD + "3-4 dont _ _ _ _ _ _ _ _\n\n",
        r"x\.conllu:2: expected multiword range starting at the next word id 2, got 3-4",
        id="range-skips-a-word"),
    pytest.param(
        ONE_WORD + "2-x dont _ _ _ _ _ _ _ _\n\n",
        r"x\.conllu:2: expected a multiword range like '3-4', got '2-x'", id="range-not-int"),
    pytest.param(
        ONE_WORD + "2-3 dont _ _ _ _ _ _ _ _\n2 do do AUX VBP _ 1 aux _ _\n\n",
        r"x\.conllu:2: multiword token 2-3 is missing word line\(s\) 3\.\.3 before the blank "
        r"line 4", id="range-components-missing"),
    pytest.param(
        "1-2 dont _ _ _ _ _ _ _ _\n1 do do AUX VBP _ 0 root _ _\n"
        "2-3 nto _ _ _ _ _ _ _ _\n\n",
        r"x\.conllu:3: multiword range 2-3 overlaps the range 1-2 of line 1",
        id="range-overlap"),
    pytest.param(
        ONE_WORD + "3.1 Hi hi INTJ UH _ _ _ 1:dep _\n\n",
        r"x\.conllu:2: expected empty node 1\.N after word 1, got 3\.1", id="empty-node-misplaced"),
    pytest.param(
        "1 Hi hi INTJ  _ 0 root _ _\n\n",
        r"x\.conllu:1: expected a value or '_' in every column, got an empty XPOS column \(5\)",
        id="empty-xpos"),
    pytest.param(
        "1  hi INTJ UH _ 0 root _ _\n\n",
        r"x\.conllu:1: expected a value or '_' in every column, got an empty FORM column \(2\)",
        id="empty-form"),
    pytest.param(
        "1 Hi hi _ UH _ 0 root _ _\n\n",
        r"x\.conllu:1: UPOS column \(4\) is unannotated \('_'\); expected a label for every "
        r"word \(form 'Hi'\)", id="unannotated-upos"),
    pytest.param(
        ONE_WORD,
        r"x\.conllu:1: expected a blank line after the last sentence, got the end of the file; "
        r".*add an empty line at the end of the file", id="no-final-blank-line"),
    pytest.param(
        ONE_WORD.rstrip("\n"),
        r"x\.conllu:1: expected a blank line after the last sentence", id="no-final-newline"),
    pytest.param(
        "# sent_id = a\n# text = nothing\n\n" + ONE_WORD + "\n",
        r"x\.conllu:1: expected at least one word line in the sentence, got only comment lines",
        id="comments-only-sentence"),
    pytest.param(
        ONE_WORD + "\n# sent_id = trailing\n",
        r"x\.conllu:3: expected at least one word line in the sentence, got only comment lines",
        id="trailing-comments"),
    pytest.param(
        ONE_WORD + "# late comment\n\n",
        r"x\.conllu:2: expected comment lines only before the first word line", id="late-comment"),
    pytest.param(
        "\n\n\n",
        r"x\.conllu: expected at least one sentence, got only blank lines$", id="blank-lines"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED_TEXT)
def test_malformed_file_names_file_and_line(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(CorpusFormatError, match=message):
        read_conllu(path)


def test_columns_separated_by_spaces_get_a_hint(tmp_path):
    path = _write_bytes(tmp_path, b"1 Hi hi INTJ UH _ 0 root _ _\n\n")
    with pytest.raises(CorpusFormatError, match=r"x\.conllu:1: expected 10 tab-separated "
                       r"columns, got 1 \(are the columns separated by spaces instead of tabs"):
        read_conllu(path)


@pytest.mark.parametrize(
    ("label_column", "text", "message"),
    [
        ("xpos", "1 Hi hi INTJ _ _ 0 root _ _\n\n",
         r"x\.conllu:1: XPOS column \(5\) is unannotated \('_'\)"),
        ("deprel", "1 Hi hi INTJ UH _ 0 _ _ _\n\n",
         r"x\.conllu:1: DEPREL column \(8\) is unannotated \('_'\)"),
        ("feats:Number", "1 Hi hi INTJ UH Number 0 root _ _\n\n",
         r"x\.conllu:1: expected FEATS as Key=Value pairs separated by '\|', got 'Number'"),
    ],
)
def test_unannotated_label_column(tmp_path, label_column, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(CorpusFormatError, match=message):
        read_conllu(path, label_column=label_column)


def test_unannotated_column_is_fine_when_it_is_not_the_label(tmp_path):
    path = _write(tmp_path, "1 Hi hi INTJ _ _ 0 _ _ _\n\n")
    assert read_conllu(path)[0].labels == ("INTJ",)


ENCODING_CASES = [
    pytest.param(
        b"1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\r\n\r\n",
        r"x\.conllu:1: line ends with CRLF \(\\r\\n\); CoNLL-U needs LF line ends", id="crlf"),
    pytest.param(
        b"1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n\n2\tx\r\n",
        r"x\.conllu:3: line ends with CRLF", id="crlf-later"),
    pytest.param(
        b"\xef\xbb\xbf1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n\n",
        r"x\.conllu:1: expected UTF-8 text without a byte-order mark, got a UTF-8 BOM",
        id="bom"),
    pytest.param(
        b"# sent_id = a\n# text = caf\xe9\n1\tcaf\xe9\tcafe\tNOUN\tNN\t_\t0\troot\t_\t_\n\n",
        r"x\.conllu:2: expected UTF-8 text, got invalid byte\(s\) E9 at byte offset 12 of the "
        r"line \(byte 26 of the file\)", id="latin-1"),
    pytest.param(b"", r"x\.conllu: expected at least one sentence, got an empty file$",
                 id="empty-file"),
]


@pytest.mark.parametrize(("data", "message"), ENCODING_CASES)
def test_encoding_errors(tmp_path, data, message):
    path = _write_bytes(tmp_path, data)
    with pytest.raises(CorpusFormatError, match=message):
        read_conllu(path)


def test_error_carries_path_and_line(tmp_path):
    path = _write(tmp_path, ONE_WORD + "3 x x X FW _ 1 dep _ _\n\n")
    with pytest.raises(CorpusFormatError) as info:
        read_conllu(path)
    assert isinstance(info.value, ValueError)
    assert (info.value.path, info.value.line) == (str(path), 2)
    assert info.value.reason == ("expected word id 2, got 3 (word ids must be consecutive "
                                 "integers starting at 1 in a sentence)")


# ------------------------------------------------------------------------------------
# The real treebank
# ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize(
    ("split", "n_sentences", "n_words"),
    [("dev", 2_001, 25_147), ("test", 2_077, 25_094)],
)
def test_ud_ewt_reads_completely(split, n_sentences, n_words):
    path = EWT_DIR / f"en_ewt-ud-{split}.conllu"
    if not path.exists():
        pytest.skip(f"UD EWT data not found at {path}")
    start = time.perf_counter()
    sentences = read_conllu(path)
    elapsed = time.perf_counter() - start
    assert len(sentences) == n_sentences
    assert sum(len(s.tokens) for s in sentences) == n_words
    assert all(s.sent_id for s in sentences)
    assert {label for s in sentences for label in s.labels} <= {
        "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
        "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X"}
    assert elapsed < 1.0, f"reading {path.name} took {elapsed:.2f} s"
