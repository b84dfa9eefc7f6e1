"""The printer: canonical layout, minimal parentheses, comments kept, parse∘print round trips."""

from __future__ import annotations

import glob
import os
import sys
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ast_strategies import expressions, modules, selectors, type_exprs  # noqa: E402

from mechalang.syntax import ast
from mechalang.syntax.grammar import _lark
from mechalang.syntax.parser import parse, parse_expression
from mechalang.syntax.printer import WIDTH, print_expr, print_module, print_selector, print_stmt, print_type, quote

F = "p.mecha"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = ast.Name


def fmt(src: str) -> str:
    m, diags = parse(src, F)
    assert diags == [], diags
    return print_module(m)


def assert_stable(src: str) -> str:
    """fmt(src), checking that formatting again changes nothing and keeps every comment."""
    once = fmt(src)
    m0, _ = parse(src, F)
    m1, d = parse(once, F)
    assert d == [] and m1 == m0
    assert Counter(c.text for c in m1.comments) == Counter(c.text for c in m0.comments)
    assert fmt(once) == once
    return once


# ------------------------------------------------------------------------------------------------
# Expressions


@pytest.mark.parametrize("src,canonical", [
    ("a+b*c", "a + b * c"),
    ("(a+b)*c", "(a + b) * c"),
    ("((a))", "a"),
    ("a-(b-c)", "a - (b - c)"),
    ("(a-b)-c", "a - b - c"),
    ("a|(b|c)", "a | (b | c)"),
    ("(a|b)+c", "(a | b) + c"),
    ("-(a*b)", "-(a * b)"),
    ("(-a)*b", "-a * b"),
    ("- - a", "--a"),
    ("a - -b", "a - -b"),
    ("-(a with {})", "-a with {}"),
    ("(-a) with {}", "(-a) with {}"),
    ("(a with {x:1}).b", "(a with {x: 1}).b"),
    ("(a+b).c", "(a + b).c"),
    ("(a + b)(c)", "(a + b)(c)"),
    ("(a |> f())[0]", "(a |> f())[0]"),
    ("x |> (f())", "x |> f()"),
    ("(x |> f()) |> g()", "x |> f() |> g()"),
    ("(a | b) |> f()", "a | b |> f()"),
    ("f( x ,*xs , k = v , )", "f(x, *xs, k=v)"),
    ("[ a , * b , ]", "[a, *b]"),
    ("[ m-b for m in fts ]", "[m - b for m in fts]"),
    ("{ default : 1 , IN00 .. IN05 : 2 , }", "{default: 1, IN00..IN05: 2}"),
    ('{ "OUT*" & !attn2 : 1 }', '{"OUT*" & !attn2: 1}'),
    ("{ !(a & b) : 1, a & (b & c): 2, (a & b) & c: 3, !!a: 4 }",
     "{!(a & b): 1, a & (b & c): 2, a & b & c: 3, !!a: 4}"),
    ('{key( "*.proj_in.*" ):1}', '{key("*.proj_in.*"): 1}'),
    ("a.b[ 1 ].c", "a.b[1].c"),
    ("1_000 + .5 + 1E-3 + inf + nan", "1_000 + .5 + 1E-3 + inf + nan"),
    ("true|false", "true | false"),
])
def test_expression_canonical_text(src, canonical):
    e, d = parse_expression(src, F)
    assert d == []
    assert print_expr(e) == canonical


def test_print_expr_of_built_trees():
    B, U = ast.BinOp, ast.UnaryOp
    assert print_expr(B("*", B("+", N("a"), N("b")), N("c"))) == "(a + b) * c"
    assert print_expr(B("+", N("a"), B("+", N("b"), N("c")))) == "a + (b + c)"
    assert print_expr(U("-", ast.Number("1"))) == "-1"
    assert print_expr(ast.Call(ast.With(N("a"), ast.HyperMap()), (N("x"),))) == "(a with {})(x)"
    assert print_expr(ast.Attribute(ast.Number("1"), "x")) == "1.x"
    assert print_expr(ast.Pipe(N("x"), ast.Call(N("f"), (N("y"),)))) == "x |> f(y)"


def test_print_stmt():
    assert print_stmt(ast.Let("x", ast.Number("1"), ast.TypeExpr("int"))) == "let x: int = 1"
    assert print_stmt(ast.Export(N("m"), ast.String("o"), "fp16")) == 'export m to "o" as fp16'
    assert print_stmt(ast.Param("p")) == "param p"
    assert print_stmt(N("x")) == "x"  # a REPL expression


def test_print_type_and_selector():
    assert print_type(ast.TypeExpr("list", (ast.TypeExpr("Model", (ast.TypeExpr("sd1"),)),))) == "list[Model[sd1]]"
    assert print_type(ast.TypeExpr("float")) == "float"
    assert print_selector(ast.SelNot(ast.SelAnd(ast.SelName("a"), ast.SelGlob("b*")))) == '!(a & "b*")'


@pytest.mark.parametrize("value,text", [
    ("plain", '"plain"'),
    ('a"b\\c', r'"a\"b\\c"'),
    ("\n\t\r\0", r'"\n\t\r\0"'),
    ("\x07\x7f", r'"\u{7}\u{7F}"'),
    ("\u2028", r'"\u{2028}"'),
    ("é😀 日本", '"é😀 日本"'),
])
def test_strings_are_escaped_canonically(value, text):
    assert quote(value) == text
    assert parse_expression(text, F)[0] == ast.String(value)


def test_escapes_are_normalised():
    assert fmt(r'let s = "\u{41}\u{1F600}"') == 'let s = "A😀"\n'


# ------------------------------------------------------------------------------------------------
# Layout


def test_statements_spacing():
    assert fmt("let x:int=f( a,k = 1 )") == "let x: int = f(a, k=1)\n"
    assert fmt("param a : Model [ sd1 ] = 1") == "param a: Model[sd1] = 1\n"
    assert fmt('import "x" as y from "z" import a,b as c,') == 'import "x" as y\nfrom "z" import a, b as c\n'
    assert fmt("def f(p,q = 1,r : float,s : int=2,)=p") == "def f(p, q=1, r: float, s: int = 2) = p\n"
    assert fmt('export m to "o" as fp16') == 'export m to "o" as fp16\n'


def test_one_statement_per_line_and_blank_lines():
    src = "\n\n\nlet a = 1; let b = 2\n\n\n\nlet c = 3\nlet d = 4\n\n\n"
    assert fmt(src) == "let a = 1\nlet b = 2\n\nlet c = 3\nlet d = 4\n"
    assert fmt("") == ""
    assert fmt("\n\n  \n") == ""


def test_crlf_input_prints_lf():
    assert fmt("let a = 1\r\n\r\n\r\nlet b = 2\r\n") == "let a = 1\n\nlet b = 2\n"


def test_width_limit():
    head = "let x = f("
    # Exactly WIDTH columns: stays on one line.
    arg_len = WIDTH - len(head) - 1
    fits = head + "a" * arg_len + ")"
    assert len(fits) == WIDTH
    assert fmt(fits) == fits + "\n"
    # One more column: one argument per line, with a trailing comma.
    too_long = head + "a" * (arg_len + 1) + ")"
    assert fmt(too_long) == f"let x = f(\n    {'a' * (arg_len + 1)},\n)\n"


def test_long_map_breaks_but_inner_groups_stay_flat_when_they_fit():
    src = ("let w = {default: alpha, IN00..IN05: 0.3, \"OUT*\": 0.7, attn2: 0.6, \"OUT*\" & attn2: 0.9, "
           "clip_l: f(a, b)}")
    assert fmt(src) == (
        "let w = {\n"
        "    default: alpha,\n"
        "    IN00..IN05: 0.3,\n"
        '    "OUT*": 0.7,\n'
        "    attn2: 0.6,\n"
        '    "OUT*" & attn2: 0.9,\n'
        "    clip_l: f(a, b),\n"
        "}\n")


def test_nested_breaking():
    inner = ", ".join(f"model(\"m{i}.safetensors\")" for i in range(6))
    out = fmt(f"export ties(base, [{inner}], density=0.2) to \"out.safetensors\" as fp16")
    assert out == (
        "export ties(\n"
        "    base,\n"
        "    [\n"
        + "".join(f'        model("m{i}.safetensors"),\n' for i in range(6))
        + "    ],\n"
        "    density=0.2,\n"
        ') to "out.safetensors" as fp16\n')
    assert max(len(line) for line in out.splitlines()) <= WIDTH


def test_long_comprehension_breaks():
    src = "let x = [" + "a" * 60 + " for m in " + "b" * 40 + "]"
    assert fmt(src) == f"let x = [\n    {'a' * 60}\n    for m in {'b' * 40}\n]\n"


def test_blank_lines_between_entries_kept_when_broken():
    src = "let w = {\n  a: 1,\n\n\n  b: 2, # c\n}"
    assert fmt(src) == "let w = {\n    a: 1,\n\n    b: 2,  # c\n}\n"
    # When the map fits and has no comment it is flat, blank lines or not.
    assert fmt("let w = {\n  a: 1,\n\n  b: 2,\n}") == "let w = {a: 1, b: 2}\n"


def test_block_layout_and_semicolons():
    assert fmt("def f(p) = { let a = p * 2; let b = a + 1; b }") == (
        "def f(p) {\n    let a = p * 2\n    let b = a + 1\n    b\n}\n")
    # the form without `=` reads the same and prints the same
    assert fmt("def f(p) { let a = p * 2; let b = a + 1; b }") == fmt("def f(p) = { let a = p * 2; let b = a + 1; b }")
    # A result that would continue the last `let` keeps its `;`.
    for result in ("(a + 1) * 2", "[a]", "-a", ".5"):
        out = assert_stable(f"def f(p) = {{ let a = p; {result} }}")
        assert "let a = p;\n" in out
    assert "let a = p\n" in assert_stable("def f(p) = { let a = p; a }")


# ------------------------------------------------------------------------------------------------
# Comments


COMMENTED = """\
# header


let x = f( # a
  1, # b
  # c
  g(2, # d
  3) # e
  , k= # f
  4
  # g
) # h
let y = a + # i
  b # j
# k
def f(p, # l
  q) = # m
 { let a = # n
 1 ; # o
 -a # p
 # q
 } # r

export # s
x to # t
"p" # u
let z = {a: # v
 1, b: [ # w
 ], c: d with { # x
 }}
# the end
"""

COMMENTED_FORMATTED = """\
# header

let x = f(  # a
    1,  # b
    # c
    g(
        2,  # d
        3,
    ),  # e
    # f
    k=4,
    # g
)  # h
let y = a + b  # j
# i
# k
def f(
    p,  # l
    q,  # m
) {
    let a = 1;  # o
    # n
    -a  # p
    # q
}  # r

export x to "p"  # u
# s
# t
let z = {
    # v
    a: 1,
    b: [  # w
    ],
    c: d with {  # x
    },
}
# the end
"""


def test_comments_are_placed_and_never_lost():
    assert assert_stable(COMMENTED) == COMMENTED_FORMATTED


def test_own_line_and_end_of_line_comments_around_statements():
    src = "# a\nlet x = 1 # b\n\n# c\n\n# d\nlet y = 2\n# e"
    assert assert_stable(src) == "# a\nlet x = 1  # b\n\n# c\n\n# d\nlet y = 2\n# e\n"


def test_comment_inside_a_small_map_breaks_it():
    assert assert_stable("let w = {a: 1, # one\n b: 2}") == "let w = {\n    a: 1,  # one\n    b: 2,\n}\n"


def test_comment_inside_an_entry_goes_before_the_entry():
    assert assert_stable("let w = {a: # why\n 1}") == "let w = {\n    # why\n    a: 1,\n}\n"


def test_comments_without_spans_are_kept_at_the_end():
    m = ast.Module((ast.Let("x", ast.Number("1")),), comments=(ast.Comment("# orphan", 9, 1, True),))
    assert print_module(m) == "let x = 1\n# orphan\n"


# ------------------------------------------------------------------------------------------------
# Properties


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


@SETTINGS
@given(modules())
def test_parse_print_round_trip(m):
    text = print_module(m)
    m2, diags = parse(text, F)
    assert diags == [], (text, diags)
    assert m2 == m
    assert print_module(m2) == text


@SETTINGS
@given(expressions(12))
def test_expression_round_trip(e):
    text = print_expr(e)
    e2, diags = parse_expression(text, F)
    assert diags == [], (text, diags)
    assert e2 == e
    assert print_expr(e2) == text


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(type_exprs(), selectors())
def test_type_and_selector_round_trip(t, s):
    m, d = parse(f"param p: {print_type(t)} = {{{print_selector(s)}: 1}}", F)
    assert d == []
    assert m.statements[0].type == t
    assert m.statements[0].default.entries[0].selector == s


def _token_ends(text: str) -> list[int]:
    return [t.end_pos for t in _lark().parse_interactive(text, start="module").iter_parse()]


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(modules(3), st.data())
def test_comments_anywhere_survive_and_formatting_is_stable(m, data):
    """Comments inserted between any tokens: none is lost and formatting twice changes nothing."""
    text = print_module(m)
    ends = _token_ends(text)
    if not ends:
        return
    picks = data.draw(st.lists(st.tuples(st.sampled_from(ends), st.booleans(), st.booleans()), max_size=8))
    for k, (pos, own_line, blank) in enumerate(sorted(picks, reverse=True)):
        c = f"# c{k}"
        ins = ("\n\n" if blank else "\n") + c + "\n" if own_line else " " + c + "\n" + ("\n" if blank else "")
        text = text[:pos] + ins + text[pos:]
    m1, d = parse(text, F)
    assert d == [] and m1 == m
    once = print_module(m1)
    m2, d2 = parse(once, F)
    assert d2 == [] and m2 == m
    assert Counter(c.text for c in m2.comments) == Counter(c.text for c in m1.comments)
    assert print_module(m2) == once, text


def _recipe_files() -> list[str]:
    files = sorted(glob.glob(os.path.join(ROOT, "examples", "**", "*.mecha"), recursive=True))
    files += sorted(glob.glob(os.path.join(ROOT, "mechalang", "stdlib", "**", "*.mecha"), recursive=True))
    files += sorted(glob.glob(os.path.join(ROOT, "tests", "golden", "syntax", "ok_*.mecha")))
    out = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            if fh.readline().strip().startswith("version "):  # sd-mecha's flat format
                continue
        out.append(f)
    return out


@pytest.mark.parametrize("path", _recipe_files() or [None],
                         ids=lambda p: os.path.relpath(p, ROOT) if p else "none")
def test_recipe_files_round_trip(path):
    if path is None:
        pytest.skip("no recipe files yet")
    with open(path, encoding="utf-8") as f:
        src = f.read()
    m, diags = parse(src, path)
    assert diags == [], diags
    text = print_module(m)
    m2, d2 = parse(text, path)
    assert d2 == [] and m2 == m
    assert print_module(m2) == text
    assert Counter(c.text for c in m2.comments) == Counter(c.text for c in m.comments)
