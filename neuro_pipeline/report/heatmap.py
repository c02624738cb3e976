"""Activation heatmaps over text as self-contained SVG (NeuroX's ``visualize_activations``).

Start with :func:`activation_heatmap_svg`: one sentence, one box per word, coloured by the
neuron's activation on that word. Negative values are red and positive values blue (the
NeuroX colours ``#d35f5f`` and ``#00aad4``), blended with white by ``|a| / scale``, so
zero is white and ``|a| >= scale`` is the full colour. Hovering a word shows its value
(an SVG ``<title>`` tooltip). :func:`neuron_heatmaps_svg` stacks several sentences of one
neuron under one shared scale and adds a colour-bar legend.

The SVG is built as text: no fonts or images are fetched (the generic ``monospace``
family is used, so the layout can estimate word widths), and the same input always gives
the same bytes, so a report embedding it stays reproducible.
"""

from __future__ import annotations

import hashlib
import html
import math
from collections.abc import Sequence

import numpy as np

NEGATIVE_COLOR = "#d35f5f"
POSITIVE_COLOR = "#00aad4"
_TEXT_COLOR = "#222222"
_CHAR_WIDTH = 0.6  # advance of one monospace character, in em
_PAD = 3  # horizontal padding inside a word box, px
_GAP = 4  # space between word boxes, px
_MARGIN = 6  # around the whole picture, px
_SENTENCE_GAP = 1.0  # between stacked sentences, in em (more than between lines of one sentence)


def activation_color(value: float, scale: float) -> str:
    """The fill colour of ``value``: white blended towards red (negative) or blue (positive).

    The blend weight is ``min(|value| / scale, 1)``; a zero ``scale`` (every value zero)
    gives white.

    >>> activation_color(0.0, 1.0), activation_color(1.0, 1.0), activation_color(-2.0, 1.0)
    ('#ffffff', '#00aad4', '#d35f5f')
    >>> activation_color(0.5, 1.0)
    '#80d5ea'
    """
    t = 0.0 if scale == 0 else min(abs(value) / scale, 1.0)
    base = NEGATIVE_COLOR if value < 0 else POSITIVE_COLOR
    rgb = [int(base[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{int(255 + t * (c - 255) + 0.5):02x}" for c in rgb)  # half up


def activation_heatmap_svg(words: Sequence[str], activations: Sequence[float], *, scale: float | None = None,
                           title: str | None = None, max_chars_per_line: int = 80, font_size: float = 14) -> str:
    """One sentence as an SVG picture of word boxes coloured by activation.

    Parameters
    ----------
    words : sequence of str
        The words of the sentence, in order.
    activations : sequence of float, length ``len(words)``
        One neuron's activation on each word.
    scale : float, optional
        The ``|activation|`` that gets the full colour. Defaults to the largest
        ``|activation|`` of this sentence; pass a common value to compare sentences.
    title : str, optional
        A caption drawn above the words.
    max_chars_per_line : int
        Words wrap onto a new line when a line would exceed this many characters (words
        plus one space between them). A longer word gets a line of its own.
    font_size : float
        Font size in px; the boxes scale with it.

    Returns
    -------
    str
        An ``<svg>`` element (no XML declaration), ready to inline in HTML. Each word is a
        ``<g class="word">`` holding a ``<title>`` tooltip ``"word: value"`` (value with 4
        significant digits), one ``<rect>`` and one ``<text>``.

    Raises
    ------
    ValueError
        If the lengths differ, a value is NaN or infinite, ``words`` is empty, or
        ``scale``, ``max_chars_per_line`` or ``font_size`` is not positive.

    Examples
    --------
    >>> svg = activation_heatmap_svg(["the", "cat"], [-0.5, 1.0])
    >>> svg.count('<rect'), 'fill="#e9afaf"' in svg, '<title>cat: 1</title>' in svg
    (2, True, True)
    """
    values = _check_sentence(words, activations, where="")
    _check_layout(max_chars_per_line, font_size)
    scale = _resolve_scale(scale, [values])
    y = _MARGIN
    parts: list[str] = []
    if title is not None:
        parts.append(_caption(title, _MARGIN, y + font_size, font_size, bold=True))
        y += _line_height(font_size)
    block, width, height = _sentence_block(words, values, scale, _MARGIN, y, max_chars_per_line, font_size)
    parts += block
    width = max(width, _text_width(title, font_size) if title else 0)
    return _svg(parts, width + 2 * _MARGIN, y + height + _MARGIN, font_size, label=title or "activation heatmap")


def neuron_heatmaps_svg(sentences: list[list[str]], activations: list[np.ndarray], *, neuron_name: str,
                        top_words: Sequence[str] | None = None, max_chars_per_line: int = 80,
                        font_size: float = 14, marked: list[Sequence[bool]] | None = None) -> str:
    """Several sentences of one neuron, stacked under one shared colour scale, with a legend.

    The scale is the largest ``|activation|`` over all the sentences, so colours compare
    across sentences. The legend is a colour bar from ``-scale`` (red) through ``0``
    (white) to ``+scale`` (blue), labelled with those three values.

    Parameters
    ----------
    sentences : list of list of str
        The words of each sentence.
    activations : list of 1-D arrays
        The neuron's activation on each word of the matching sentence.
    neuron_name : str
        Shown as the heading, e.g. ``"L2:266"`` (layer:unit).
    top_words : sequence of str, optional
        Listed under the heading (the words that activate the neuron most).
    max_chars_per_line, font_size
        As in :func:`activation_heatmap_svg`.
    marked : list of sequences of bool, optional
        Words to emphasise (bold, underlined), e.g. the words labelled with the concept
        the neuron is shown for; one flag per word of each sentence.

    Raises
    ------
    ValueError
        If there are no sentences, the two lists differ in length, ``marked`` does not
        match the sentences, or a sentence fails
        the checks of :func:`activation_heatmap_svg` (the message names the sentence).

    Examples
    --------
    >>> svg = neuron_heatmaps_svg([["a", "cat"], ["dogs"]], [np.array([0.1, 2.0]), np.array([-1.0])],
    ...                           neuron_name="L1:7", top_words=["cat"])
    >>> svg.count('class="word"'), '>-2<' in svg, '>+2<' in svg
    (3, True, True)
    """
    if len(sentences) == 0:
        raise ValueError("neuron_heatmaps_svg needs at least one sentence; got none.")
    if len(sentences) != len(activations):
        raise ValueError(f"Got {len(sentences)} sentences but {len(activations)} activation arrays; "
                         "pass one array per sentence.")
    values = [_check_sentence(w, a, where=f" in sentence {i}") for i, (w, a) in enumerate(zip(sentences, activations))]
    if marked is None:
        marked = [[False] * len(w) for w in sentences]
    if len(marked) != len(sentences) or any(len(m) != len(w) for m, w in zip(marked, sentences)):
        raise ValueError("marked must hold one flag per word of every sentence.")
    _check_layout(max_chars_per_line, font_size)
    scale = _resolve_scale(None, values)
    small = font_size * 0.85
    y = _MARGIN
    parts = [_caption(f"Neuron {neuron_name}", _MARGIN, y + font_size, font_size, bold=True)]
    width = _text_width(f"Neuron {neuron_name}", font_size)
    y += _line_height(font_size)
    if top_words:
        line = "top words: " + ", ".join(top_words)
        parts.append(_caption(line, _MARGIN, y + small, small))
        width = max(width, _text_width(line, small))
        y += _line_height(small)
    legend, legend_width, legend_height = _legend(scale, _MARGIN, y + 2, small, neuron_name)
    parts += legend
    width = max(width, legend_width)
    y += legend_height + 2 + font_size * 0.5
    for words, vals, marks in zip(sentences, values, marked):
        block, block_width, block_height = _sentence_block(words, vals, scale, _MARGIN, y, max_chars_per_line,
                                                           font_size, marks)
        parts += block
        width = max(width, block_width)
        y += block_height + _SENTENCE_GAP * font_size
    return _svg(parts, width + 2 * _MARGIN, y - _SENTENCE_GAP * font_size + _MARGIN, font_size,
                label=f"activations of neuron {neuron_name}")


# ------------------------------------------------------------------ checks
def _check_sentence(words: Sequence[str], activations: Sequence[float] | np.ndarray, *, where: str) -> np.ndarray:
    if isinstance(words, str):
        raise TypeError(f"words{where} must be a sequence of words, not one string ({words[:30]!r}); split it first.")
    values = np.asarray(activations, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"activations{where} must be 1-D (one value per word); got shape {values.shape}.")
    if len(words) != len(values):
        raise ValueError(f"Got {len(words)} words but {len(values)} activations{where}; "
                         "pass one activation per word.")
    if len(words) == 0:
        raise ValueError(f"The sentence{where} has no words.")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"Activation of word {i} ({words[i]!r}){where} is {values[i]}; "
                         f"every activation must be finite ({bad.size} are not).")
    for w in words:
        if not isinstance(w, str):
            raise TypeError(f"Every word{where} must be a str; got {type(w).__name__} {w!r}.")
    return values


def _check_layout(max_chars_per_line: int, font_size: float) -> None:
    if not (isinstance(max_chars_per_line, int) and max_chars_per_line >= 1):
        raise ValueError(f"max_chars_per_line must be a positive int; got {max_chars_per_line!r}.")
    if not (math.isfinite(font_size) and font_size > 0):
        raise ValueError(f"font_size must be a positive number; got {font_size!r}.")


def _resolve_scale(scale: float | None, values: list[np.ndarray]) -> float:
    if scale is None:
        return float(max(np.abs(v).max() for v in values))
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number; got {scale!r}.")
    return float(scale)


# ------------------------------------------------------------------ drawing
def _num(x: float) -> str:
    """A coordinate with at most one decimal (stable text, no float noise)."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _line_height(font_size: float) -> float:
    return font_size * 1.6


def _text_width(text: str, font_size: float) -> float:
    return len(text) * _CHAR_WIDTH * font_size


def _caption(text: str, x: float, baseline: float, font_size: float, *, bold: bool = False) -> str:
    weight = ' font-weight="bold"' if bold else ""
    return (f'<text x="{_num(x)}" y="{_num(baseline)}" font-size="{_num(font_size)}"{weight} '
            f'fill="{_TEXT_COLOR}">{html.escape(text)}</text>')


def _format_value(value: float) -> str:
    return f"{value:.4g}"


def _wrap(words: Sequence[str], max_chars_per_line: int) -> list[list[int]]:
    """Word indices per line: greedy, counting one space between words."""
    lines: list[list[int]] = [[]]
    used = 0
    for i, word in enumerate(words):
        need = len(word) if not lines[-1] else used + 1 + len(word)
        if lines[-1] and need > max_chars_per_line:
            lines.append([])
            need = len(word)
        lines[-1].append(i)
        used = need
    return lines


def _sentence_block(words: Sequence[str], values: np.ndarray, scale: float, x0: float, y0: float,
                    max_chars_per_line: int, font_size: float,
                    marks: Sequence[bool] | None = None) -> tuple[list[str], float, float]:
    """The word boxes of one sentence from ``(x0, y0)``: (elements, width, height)."""
    box_height = font_size * 1.4
    line_height = box_height + _GAP
    parts = []
    width = 0.0
    lines = _wrap(words, max_chars_per_line)
    for row, line in enumerate(lines):
        x = x0
        top = y0 + row * line_height
        for i in line:
            word = words[i]
            box_width = max(len(word), 1) * _CHAR_WIDTH * font_size + 2 * _PAD
            tip = html.escape(f"{word}: {_format_value(values[i])}")
            parts.append(
                f'<g class="word"><title>{tip}</title>'
                f'<rect x="{_num(x)}" y="{_num(top)}" width="{_num(box_width)}" height="{_num(box_height)}" '
                f'rx="2" fill="{activation_color(values[i], scale)}"/>'
                f'<text x="{_num(x + _PAD)}" y="{_num(top + box_height * 0.72)}" '
                + ('font-weight="bold" text-decoration="underline" ' if marks is not None and marks[i] else "")
                + f'fill="{_TEXT_COLOR}">{html.escape(word)}</text></g>')
            x += box_width + _GAP
        width = max(width, x - _GAP - x0)
    return parts, width, len(lines) * line_height - _GAP


def _legend(scale: float, x0: float, y0: float, font_size: float, key: str) -> tuple[list[str], float, float]:
    """A red-white-blue colour bar labelled -scale, 0 and +scale: (elements, width, height)."""
    bar_width, bar_height = 180.0, font_size * 0.9
    # Gradient ids must be unique within an HTML page that inlines several pictures; a
    # hash of the neuron and scale keeps them unique and the output deterministic.
    gid = "heat-" + hashlib.sha1(f"{key}|{scale!r}".encode()).hexdigest()[:10]
    labels = [(-scale, "start"), (0.0, "middle"), (scale, "end")]
    text_y = y0 + bar_height + font_size * 1.1
    parts = [
        (f'<g class="legend"><linearGradient id="{gid}" x1="0" x2="1" y1="0" y2="0">'
         f'<stop offset="0" stop-color="{NEGATIVE_COLOR}"/><stop offset="0.5" stop-color="#ffffff"/>'
         f'<stop offset="1" stop-color="{POSITIVE_COLOR}"/></linearGradient>'
         f'<rect x="{_num(x0)}" y="{_num(y0)}" width="{_num(bar_width)}" height="{_num(bar_height)}" '
         f'fill="url(#{gid})" stroke="#999999" stroke-width="0.5"/>'),
    ]
    for i, (value, anchor) in enumerate(labels):
        text = "0" if value == 0 else f"{value:+.3g}"
        parts.append(f'<text x="{_num(x0 + bar_width * i / 2)}" y="{_num(text_y)}" font-size="{_num(font_size)}" '
                     f'text-anchor="{anchor}" fill="{_TEXT_COLOR}">{html.escape(text)}</text>')
    parts.append("</g>")
    return parts, bar_width, bar_height + font_size * 1.4


def _svg(parts: list[str], width: float, height: float, font_size: float, *, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(width)}" height="{_num(height)}" '
            f'viewBox="0 0 {_num(width)} {_num(height)}" font-family="monospace" font-size="{_num(font_size)}" '
            f'role="img" aria-label="{html.escape(label)}">' + "".join(parts) + "</svg>")
