"""parse_prompt_attention gives exactly A1111's pieces, floats included, for any text."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.prompt.attention import parse_prompt_attention, scan_attention

B = ("BREAK", -1)

A1111_CASES = [
    # The examples in A1111's own docstring.
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
    # Brackets and weights.
    ("", [("", 1.0)]),
    ("((x))", [("x", 1.2100000000000002)]),
    ("[x]", [("x", 0.9090909090909091)]),
    ("[[x]]", [("x", 0.8264462809917354)]),
    ("(x:1.3)", [("x", 1.3)]),
    ("(x : 1.3)", [("x ", 1.3)]),
    ("(x:+1.5)", [("x", 1.5)]),
    ("(x:-1)", [("x", -1.0)]),
    ("(x:.5)", [("x", 0.5)]),
    ("(x:1.)", [("x", 1.0)]),
    ("((x:1.5))", [("x", 1.6500000000000001)]),
    ("[(x:1.5)]", [("x", 1.3636363636363635)]),
    ("(a [b] c)", [("a ", 1.1), ("b", 1.0), (" c", 1.1)]),
    ("(a (b:1.5) c:1.2)", [("a ", 1.2), ("b", 1.7999999999999998), (" c", 1.2)]),
    ("((a) (b))", [("a", 1.2100000000000002), (" ", 1.1), ("b", 1.2100000000000002)]),
    ("(a:1.2) (b:1.2)", [("a", 1.2), (" ", 1.0), ("b", 1.2)]),
    ("(a:1.5:1.2)", [("a:1.5", 1.2)]),
    ("(a:)", [("a:", 1.1)]),
    ("a:b", [("a:b", 1.0)]),
    ("x:1.2)", [("x:1.2)", 1.0)]),
    # Unbalanced brackets.
    ("a)b]c", [("a)b]c", 1.0)]),
    ("[unbalanced", [("unbalanced", 0.9090909090909091)]),
    ("a ( b [ c", [("a ", 1.0), (" b ", 1.1), (" c", 1.0)]),
    # Escapes; a lone backslash disappears, as in A1111.
    ("a\\\\b", [("a\\b", 1.0)]),
    ("a\\b", [("ab", 1.0)]),
    ("\\\\(x)", [("\\", 1.0), ("x", 1.1)]),
    ("(x)\\)", [("x", 1.1), (")", 1.0)]),
    ("(\\(x\\))", [("(x)", 1.1)]),
    # BREAK: an upper-case word; inside brackets it is scaled and so no longer a BREAK.
    ("a BREAK b", [("a", 1.0), B, ("b", 1.0)]),
    ("a\nBREAK\nb", [("a", 1.0), B, ("b", 1.0)]),
    ("BREAK", [("", 1.0), B, ("", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), B, ("", 1.0), B, ("b", 1.0)]),
    ("aBREAK b", [("aBREAK b", 1.0)]),
    ("a break b", [("a break b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),
    # Prompts as pasted from Civitai.
    (
        "masterpiece, best quality, (ultra detailed:1.2), 1girl, ((silver hair)), [[blurry]], "
        "(bokeh:0.8)",
        [
            ("masterpiece, best quality, ", 1.0),
            ("ultra detailed", 1.2),
            (", 1girl, ", 1.0),
            ("silver hair", 1.2100000000000002),
            (", ", 1.0),
            ("blurry", 0.8264462809917354),
            (", ", 1.0),
            ("bokeh", 0.8),
        ],
    ),
    (
        "(masterpiece:1.2), (best quality:1.2), ((((detailed eyes)))), (colorful:1.1), "
        "[low quality:0.5]",
        [
            ("masterpiece", 1.2),
            (", ", 1.0),
            ("best quality", 1.2),
            (", ", 1.0),
            ("detailed eyes", 1.4641000000000006),
            (", ", 1.0),
            ("colorful", 1.1),
            (", ", 1.0),
            ("low quality:0.5", 0.9090909090909091),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), A1111_CASES)
def test_pieces_equal_a1111_including_float_rounding(text, expected):
    pieces = parse_prompt_attention(text)
    assert pieces == expected
    assert [repr(weight) for _, weight in pieces] == [repr(w) for _, w in expected]


def test_break_marker_keeps_a1111s_integer_weight():
    assert repr(parse_prompt_attention("a BREAK b")[1]) == "('BREAK', -1)"


@pytest.mark.parametrize(
    ("text", "pieces", "malformed"),
    [
        ("(x:1.2.3)", [("x:1.2.3)", 1.1)], [":1.2.3)"]),
        ("(x:...)", [("x:...)", 1.1)], [":...)"]),
        ("(a:1.2.3) b", [("a:1.2.3) b", 1.1)], [":1.2.3)"]),
        ("x:1.2.3)", [("x:1.2.3)", 1.0)], []),
    ],
)
def test_weight_a1111_cannot_read_is_plain_text_and_reported(text, pieces, malformed):
    scan = scan_attention(text)
    assert scan.pieces == pieces
    assert scan.malformed == malformed


def test_ten_thousand_nested_brackets_parse_quickly():
    started = time.perf_counter()
    assert parse_prompt_attention("(" * 10_000 + "x" + ")" * 10_000) == [("x", math.inf)]
    [(text, weight)] = parse_prompt_attention("[" * 10_000 + "x")
    assert text == "x" and 0 <= weight < 1e-300
    assert parse_prompt_attention("(" * 10_000 + "x") == [("x", math.inf)]
    assert time.perf_counter() - started < 2


ATTENTION_TEXT = st.lists(
    st.sampled_from(["(", ")", "[", "]", "\\", ":", "1", ".", " ", "a", "BREAK", "é", ","]),
    max_size=60,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | ATTENTION_TEXT)
def test_any_text_gives_pieces_without_failing(text):
    scan = scan_attention(text)
    assert scan.pieces
    assert all(isinstance(piece, str) for piece, _ in scan.pieces)
    # Nothing but brackets, unreadable backslashes and weights is lost.
    kept = "".join(piece for piece, weight in scan.pieces if (piece, weight) != ("BREAK", -1))
    assert len(kept) <= len(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(exclude_characters="\\"), max_size=80))
def test_escaped_text_reads_as_literal(text):
    escaped = "".join("\\" + char if char in "()[]" else char for char in text)
    pieces = parse_prompt_attention(escaped.replace("BREAK", "break"))
    assert pieces == [(text.replace("BREAK", "break"), 1.0)]
