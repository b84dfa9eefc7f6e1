"""Fuzzing: whatever the input, parse / read_source / fmt answer with diagnostics, never raise."""

from __future__ import annotations

import io
import os
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ast_strategies import modules  # noqa: E402

from mechalang.commands.fmt import fmt_command  # noqa: E402
from mechalang.diagnostics import Severity, render_json, render_text  # noqa: E402
from mechalang.syntax import ast  # noqa: E402
from mechalang.syntax.grammar import _lark  # noqa: E402
from mechalang.syntax.parser import parse, parse_expression, parse_repl_input  # noqa: E402
from mechalang.syntax.printer import print_module  # noqa: E402
from mechalang.syntax.source import read_source  # noqa: E402

F = "fuzz.mecha"
HERE = os.path.dirname(os.path.abspath(__file__))
SEED_RECIPE = open(os.path.join(HERE, "golden", "syntax", "ok_everything.mecha"), encoding="utf-8").read()

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

TOKENS = [
    "let", "param", "def", "export", "import", "from", "as", "to", "with", "for", "in", "true", "false",
    "inf", "nan", "default", "key", "x", "y", "f", "IN00", "attn2", "0", "1.5", ".5", "1e-3", "1_000",
    '"s"', '"OUT*"', '"\\q"', "(", ")", "[", "]", "{", "}", ",", ":", ";", "=", "+", "-", "*", "/", "|",
    "|>", "&", "!", "..", ".", "# c\n", "\n", "9" * 5000, "1e400", "\x00", "@", "'", '"open',
]


def check_result(result, diags, text: str) -> None:
    """The contract: a result and no error, or None and at least one error; never an internal error."""
    errors = [d for d in diags if d.severity == Severity.ERROR]
    if result is None:
        assert errors, "no result and no error"
    else:
        assert errors == []
    for d in diags:
        assert d.code != "E0199", d
        assert d.code.startswith("E01"), d
        assert d.span is not None and d.span.file == F
        assert 1 <= d.span.line <= text.count("\n") + 1
        assert "$END" not in d.message and "Token(" not in d.message
    # Rendering never fails either.
    render_text(diags, {F: text})
    render_json(diags)


def check_parse(text: str):
    m, diags = parse(text, F)
    check_result(m, diags, text)
    if m is not None:
        printed = print_module(m)
        again, d2 = parse(printed, F)
        assert d2 == [] and again == m
    return m


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    check_parse(text)
    e, diags = parse_expression(text, F)
    check_result(e, diags, text)
    r, diags = parse_repl_input(text, F)
    if r is not None or diags:
        check_result(r, diags, text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40), st.sampled_from([" ", "", "\n"]))
def test_token_soup(tokens, sep):
    check_parse(sep.join(tokens))


def _token_spans(text: str) -> list[tuple[int, int]]:
    return [(t.start_pos, t.end_pos) for t in _lark().parse_interactive(text, start="module").iter_parse()]


SEED_TOKENS = _token_spans(SEED_RECIPE)


@st.composite
def mutations(draw, text: str = SEED_RECIPE, spans=None):
    spans = spans if spans is not None else SEED_TOKENS
    out = text
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "duplicate", "insert", "truncate", "swap"]))
        i = draw(st.integers(0, len(spans) - 1))
        a, b = spans[i]
        if b > len(out):
            continue
        if kind == "delete":
            out = out[:a] + out[b:]
        elif kind == "duplicate":
            out = out[:b] + " " + out[a:b] + out[b:]
        elif kind == "insert":
            out = out[:a] + draw(st.sampled_from(TOKENS)) + " " + out[a:]
        elif kind == "truncate":
            out = out[:a]
        else:
            j = draw(st.integers(0, len(spans) - 1))
            c, d = spans[j]
            if a < b <= c < d <= len(out):
                out = out[:a] + out[c:d] + out[b:c] + out[a:b] + out[d:]
    return out


@FUZZ
@given(mutations())
def test_mutated_recipe(text):
    check_parse(text)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(modules(3), st.data())
def test_mutated_generated_recipes(m, data):
    text = print_module(m)
    spans = _token_spans(text)
    if spans:
        text = data.draw(mutations(text, spans))
    check_parse(text)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(["(", "[", "{", "-", "f(", "!", "{a: ", "a with {x: ", "[x for y in "]),
       st.integers(150, 3000), st.booleans())
def test_deep_nesting(opener, depth, close):
    closer = {"(": ")", "[": "]", "{": "}", "-": "", "f(": ")", "!": "", "{a: ": "}",
              "a with {x: ": "}", "[x for y in ": "]"}[opener]
    if opener == "!":
        text = "let x = {" + "!" * depth + "a: 1}"
    else:
        text = "let x = " + opener * depth + "1" + (closer * depth if close else "")
    m = check_parse(text)
    if depth > 400:
        assert m is None


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(4000, 20000), st.sampled_from(["", ".5", "e5", "e99999", "_1"]))
def test_huge_numbers(digits, tail):
    check_parse("let x = " + "7" * digits + tail)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=120) | st.builds(lambda t, b, i: t.encode()[:i] + b + t.encode()[i:],
                                           st.sampled_from([SEED_RECIPE[:300]]),
                                           st.sampled_from([b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf"]),
                                           st.integers(0, 300)))
def test_bytes_files_through_read_source_and_fmt(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "x.mecha"
    path.write_bytes(data)
    text, diags = read_source(str(path))
    if text is None:
        assert diags and diags[0].code in {"E0004", "E0005"}
    else:
        assert diags == []
        m, pd = parse(text, F)
        check_result(m, pd, text)
    out, err = io.StringIO(), io.StringIO()
    code = fmt_command([str(path)], check=False, diff=False, format="text", stdout=out, stderr=err)
    assert code in (0, 1)
    if code == 1:
        assert path.read_bytes() == data  # an error never touches the file
        assert "error[" in err.getvalue()
    else:
        new = path.read_text(encoding="utf-8")
        again = fmt_command([str(path)], check=True, diff=False, format="text", stdout=out, stderr=err)
        assert again == 0, new


def test_directory_missing_and_odd_paths(tmp_path):
    for p in [tmp_path, tmp_path / "missing.mecha", tmp_path / "missing" / "x.mecha", "", "bad\x00path"]:
        text, diags = read_source(str(p))
        assert text is None and diags and diags[0].code.startswith("E000")
        out, err = io.StringIO(), io.StringIO()
        assert fmt_command([str(p)], check=False, diff=False, format="json", stdout=out, stderr=err) == 1
        assert err.getvalue().lstrip().startswith("[")


def test_check_parse_accepts_a_valid_recipe_and_rejects_a_broken_one():
    m = check_parse("let a = (f(x, *y, k=[1, .5, 1e-3, 1_000, inf, nan]) |> g()) with {default: 0}")
    assert isinstance(m, ast.Module) and len(m.statements) == 1
    # With binds tighter than `|>`: the right side is `g() with {...}`, not a call.
    assert check_parse("let a = x |> g() with {default: 0}") is None
