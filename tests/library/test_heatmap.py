"""Activation heatmaps over text: valid, self-contained SVG with one coloured box per word."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from neuro_pipeline.report.heatmap import (
    NEGATIVE_COLOR,
    POSITIVE_COLOR,
    activation_color,
    activation_heatmap_svg,
    neuron_heatmaps_svg,
)

SVG = "{http://www.w3.org/2000/svg}"


def _words(svg: str) -> list[ET.Element]:
    return [g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "word"]


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _word_fills(svg: str) -> list[str]:
    return [g.find(f"{SVG}rect").get("fill") for g in _words(svg)]


def test_valid_svg_with_one_rect_text_and_tooltip_per_word():
    words = ["the", "cat", "sat", "."]
    root = ET.fromstring(activation_heatmap_svg(words, [0.1, -0.2, 0.3, 0.0], title="L1:5"))
    assert root.tag == f"{SVG}svg"
    groups = _words(ET.tostring(root, encoding="unicode"))
    assert [g.find(f"{SVG}text").text for g in groups] == words
    assert [len(g.findall(f"{SVG}rect")) for g in groups] == [1, 1, 1, 1]
    assert len(root.findall(f".//{SVG}rect")) == len(words)  # no legend in the one-sentence picture
    assert float(root.get("width")) > 0 and float(root.get("height")) > 0


def test_tooltips_give_the_value_with_four_significant_digits():
    svg = activation_heatmap_svg(["a", "b", "c"], [0.123456, -2.5, 1234567.0])
    assert [g.find(f"{SVG}title").text for g in _words(svg)] == ["a: 0.1235", "b: -2.5", "c: 1.235e+06"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "blue"),   # full positive: NeuroX's blue
        (0.4, "blue"),   # weaker positive: lighter blue
        (-1.0, "red"),   # full negative: NeuroX's red
        (-0.4, "red"),
        (0.0, "white"),
    ],
)
def test_colour_direction(value, expected):
    svg = activation_heatmap_svg(["x", "max"], [value, 1.0])
    r, g, b = _rgb(_word_fills(svg)[0])
    if expected == "blue":
        assert b > r + 40 and g > r
    elif expected == "red":
        assert r > b + 40 and r > g
    else:
        assert (r, g, b) == (255, 255, 255)


def test_intensity_grows_with_magnitude_and_saturates_at_scale():
    fills = _word_fills(activation_heatmap_svg(["a", "b", "c", "d"], [0.25, 0.5, 1.0, 3.0], scale=1.0))
    reds = [_rgb(f)[0] for f in fills]
    assert reds[0] > reds[1] > reds[2] == reds[3] == _rgb(POSITIVE_COLOR)[0]
    assert fills[2] == POSITIVE_COLOR and activation_color(-5.0, 1.0) == NEGATIVE_COLOR


def test_scale_defaults_to_the_largest_magnitude_of_the_sentence():
    assert _word_fills(activation_heatmap_svg(["a", "b"], [-4.0, 2.0]))[0] == NEGATIVE_COLOR
    assert _word_fills(activation_heatmap_svg(["a", "b"], [-4.0, 2.0], scale=8.0))[0] != NEGATIVE_COLOR


def test_all_zero_sentence_is_white():
    assert set(_word_fills(activation_heatmap_svg(["a", "b"], [0.0, 0.0]))) == {"#ffffff"}


def test_markup_in_words_and_title_is_escaped():
    words = ["<b>", "&amp;", '"q"', "it's", "]]>"]
    svg = activation_heatmap_svg(words, [1.0, 2.0, 3.0, 4.0, 5.0], title='<script>alert("x")</script>')
    root = ET.fromstring(svg)  # parses: nothing leaked as markup
    assert [g.find(f"{SVG}text").text for g in _words(svg)] == words
    assert _words(svg)[0].find(f"{SVG}title").text == "<b>: 1"
    assert "<script>" not in svg and "<b>" not in svg
    assert not root.findall(f".//{SVG}script")


def test_long_sentences_wrap_onto_lines():
    words = [f"word{i}" for i in range(30)]  # 5-6 characters each
    svg = activation_heatmap_svg(words, np.linspace(-1, 1, 30), max_chars_per_line=20)
    tops = [float(g.find(f"{SVG}rect").get("y")) for g in _words(svg)]
    lines = sorted(set(tops))
    assert len(lines) == 10  # three words per line: "word0 word1 word2" is 17 characters
    assert tops == sorted(tops)  # reading order kept
    one_line = activation_heatmap_svg(words, np.linspace(-1, 1, 30), max_chars_per_line=1000)
    assert len({g.find(f"{SVG}rect").get("y") for g in _words(one_line)}) == 1
    assert float(ET.fromstring(svg).get("height")) > float(ET.fromstring(one_line).get("height"))


def test_a_word_longer_than_the_line_gets_its_own_line():
    svg = activation_heatmap_svg(["a", "x" * 30, "b"], [1.0, 2.0, 3.0], max_chars_per_line=10)
    assert len({g.find(f"{SVG}rect").get("y") for g in _words(svg)}) == 3


def test_output_is_deterministic_and_self_contained():
    args = (["the", "cat"], [0.5, -0.25])
    first = activation_heatmap_svg(*args, title="t")
    assert first == activation_heatmap_svg(*args, title="t")
    stacked = neuron_heatmaps_svg([["a"], ["b", "c"]], [np.array([1.0]), np.array([0.0, -2.0])], neuron_name="L0:1")
    assert stacked == neuron_heatmaps_svg([["a"], ["b", "c"]], [np.array([1.0]), np.array([0.0, -2.0])],
                                          neuron_name="L0:1")
    for svg in (first, stacked):
        assert "href" not in svg and "http://" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "@import" not in svg and "<image" not in svg


def test_stacked_sentences_share_one_scale_and_have_a_legend():
    svg = neuron_heatmaps_svg([["small"], ["big", "neg"]], [np.array([1.0]), np.array([4.0, -2.0])],
                              neuron_name="L2:266", top_words=["big", "<huge>"])
    root = ET.fromstring(svg)
    fills = _word_fills(svg)
    assert fills[1] == POSITIVE_COLOR  # 4.0 is the shared maximum
    assert fills[0] == activation_color(1.0, 4.0) != POSITIVE_COLOR  # not scaled to its own maximum
    assert fills[2] == activation_color(-2.0, 4.0)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Neuron L2:266" in texts and "top words: big, <huge>" in texts
    legend = [g for g in root.iter(f"{SVG}g") if g.get("class") == "legend"]
    assert len(legend) == 1
    assert [t.text for t in legend[0].iter(f"{SVG}text")] == ["-4", "0", "+4"]
    stops = [s.get("stop-color") for s in legend[0].iter(f"{SVG}stop")]
    assert stops == [NEGATIVE_COLOR, "#ffffff", POSITIVE_COLOR]
    # the sentences are stacked: the second starts below the first
    ys = [float(g.find(f"{SVG}rect").get("y")) for g in _words(svg)]
    assert ys[0] < ys[1] == ys[2]


@pytest.mark.parametrize(
    ("words", "values", "message"),
    [
        (["a", "b"], [1.0], "Got 2 words but 1 activations"),
        (["a"], [1.0, 2.0], "Got 1 words but 2 activations"),
        ([], [], "has no words"),
        (["a", "b"], [1.0, float("nan")], r"word 1 \('b'\) is nan; every activation must be finite"),
        (["a"], [float("inf")], "is inf"),
        (["a"], [[1.0]], "must be 1-D"),
    ],
)
def test_bad_sentences_are_rejected(words, values, message):
    with pytest.raises(ValueError, match=message):
        activation_heatmap_svg(words, values)


def test_a_string_instead_of_words_is_rejected():
    with pytest.raises(TypeError, match="sequence of words, not one string"):
        activation_heatmap_svg("cat", [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 0.0}, "scale must be a positive finite number"),
        ({"scale": float("nan")}, "scale must be a positive finite number"),
        ({"max_chars_per_line": 0}, "max_chars_per_line must be a positive int"),
        ({"font_size": -1}, "font_size must be a positive number"),
    ],
)
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        activation_heatmap_svg(["a"], [1.0], **kwargs)


def test_stacked_errors_name_the_sentence():
    with pytest.raises(ValueError, match="Got 2 sentences but 1 activation arrays"):
        neuron_heatmaps_svg([["a"], ["b"]], [np.array([1.0])], neuron_name="n")
    with pytest.raises(ValueError, match="at least one sentence"):
        neuron_heatmaps_svg([], [], neuron_name="n")
    with pytest.raises(ValueError, match=r"in sentence 1"):
        neuron_heatmaps_svg([["a"], ["b"]], [np.array([1.0]), np.array([np.nan])], neuron_name="n")


def test_marked_words_are_bold_and_underlined():
    from neuro_pipeline.report.heatmap import neuron_heatmaps_svg

    svg = neuron_heatmaps_svg([["the", "cat"]], [np.array([0.1, 2.0])], neuron_name="L1:7", marked=[[False, True]])
    assert svg.count('text-decoration="underline"') == 1
    assert re.search(r'font-weight="bold" text-decoration="underline" fill="[^"]+">cat<', svg)
    with pytest.raises(ValueError, match="one flag per word"):
        neuron_heatmaps_svg([["the", "cat"]], [np.array([0.1, 2.0])], neuron_name="L1:7", marked=[[True]])
