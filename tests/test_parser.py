"""The parser: each construct gives the expected tree; each syntax error its message."""

from __future__ import annotations

import math
import os
import sys

import pytest

from mechalang.diagnostics import Span
from mechalang.syntax import ast
from mechalang.syntax.ast import iter_nodes
from mechalang.syntax.comments import scan_comments
from mechalang.syntax.parser import parse, parse_expression, parse_repl_input
from mechalang.syntax.printer import print_module
from mechalang.syntax.source import read_source

F = "t.mecha"


def stmts(src: str) -> tuple:
    m, diags = parse(src, F)
    assert diags == [], diags
    assert m is not None
    return m.statements


def one(src: str):
    (s,) = stmts(src)
    return s


def expr(src: str):
    e, diags = parse_expression(src, F)
    assert diags == [], diags
    return e


def errors(src: str, parse_fn=parse):
    result, diags = parse_fn(src, F)
    assert result is None
    assert diags, "expected a diagnostic"
    return diags


def first_error(src: str, parse_fn=parse):
    return errors(src, parse_fn)[0]


N = ast.Name


def num(t):
    return ast.Number(t)


# ------------------------------------------------------------------------------------------------
# Statements


def test_import_and_from_import():
    assert one('import "../lib/transplant.mecha" as t') == ast.Import("../lib/transplant.mecha", "t")
    assert one('from "std/presets" import GRAD_V') == ast.FromImport("std/presets", (ast.ImportName("GRAD_V"),))
    assert one('from "p" import a, b as c,') == ast.FromImport(
        "p", (ast.ImportName("a"), ast.ImportName("b", "c")))
    assert ast.ImportName("b", "c").bound == "c"


def test_param_forms():
    assert one("param alpha") == ast.Param("alpha")
    assert one("param alpha: float") == ast.Param("alpha", ast.TypeExpr("float"))
    assert one("param alpha = 0.5") == ast.Param("alpha", None, num("0.5"))
    assert one("param m: Model[sd1] = model(\"x\")") == ast.Param(
        "m", ast.TypeExpr("Model", (ast.TypeExpr("sd1"),)),
        ast.Call(N("model"), (ast.String("x"),)))


def test_let_with_and_without_type():
    assert one("let x = 1") == ast.Let("x", num("1"))
    assert one("let x: int = 1") == ast.Let("x", num("1"), ast.TypeExpr("int"))


@pytest.mark.parametrize("text,expected", [
    ("float", ast.TypeExpr("float")),
    ("int", ast.TypeExpr("int")),
    ("bool", ast.TypeExpr("bool")),
    ("str", ast.TypeExpr("str")),
    ("Arch", ast.TypeExpr("Arch")),
    ("Model", ast.TypeExpr("Model")),
    ("Model[sd1]", ast.TypeExpr("Model", (ast.TypeExpr("sd1"),))),
    ("Delta[sdxl]", ast.TypeExpr("Delta", (ast.TypeExpr("sdxl"),))),
    ("Hyper[sd1]", ast.TypeExpr("Hyper", (ast.TypeExpr("sd1"),))),
    ("list[Model[sd1]]", ast.TypeExpr("list", (ast.TypeExpr("Model", (ast.TypeExpr("sd1"),)),))),
    ("Pair[a, b,]", ast.TypeExpr("Pair", (ast.TypeExpr("a"), ast.TypeExpr("b")))),
])
def test_types(text, expected):
    assert one(f"param p: {text}").type == expected


def test_def_with_expression_body():
    d = one("def transplant(target, tuned, base, strength=1.0) = target + strength * (tuned - base)")
    assert d == ast.Def(
        "transplant",
        (ast.DefParam("target"), ast.DefParam("tuned"), ast.DefParam("base"),
         ast.DefParam("strength", num("1.0"))),
        ast.BinOp("+", N("target"), ast.BinOp("*", N("strength"), ast.BinOp("-", N("tuned"), N("base")))))


def test_def_params_types_defaults_trailing_comma():
    d = one("def f(p, q=2, r: float, s: int = 3,) = p")
    assert d.params == (
        ast.DefParam("p"), ast.DefParam("q", num("2")), ast.DefParam("r", None, ast.TypeExpr("float")),
        ast.DefParam("s", num("3"), ast.TypeExpr("int")))
    assert one("def f() = 1").params == ()


def test_def_with_block_body():
    d = one("def f(p) = { let a = p * 2; let b = a + 1\n b }")
    assert d.body == ast.Block(
        (ast.Let("a", ast.BinOp("*", N("p"), num("2"))), ast.Let("b", ast.BinOp("+", N("a"), num("1")))),
        N("b"))


def test_block_semicolon_separates_a_parenthesised_result():
    d = one("def f(p) = { let a = p; (a) }")
    assert d.body == ast.Block((ast.Let("a", N("p")),), N("a"))
    # Without `;` the parenthesis continues the `let` (newlines never matter).
    m, diags = parse("def f(p) = { let a = p\n (a) }", F)
    assert m is None and diags[0].code == "E0118"


def test_def_body_map_is_not_a_block():
    assert one("def f(p) { let a = p; a }") == one("def f(p) = { let a = p; a }")
    d = one("def f(p) = {default: p}")
    assert d.body == ast.HyperMap((ast.MapEntry(ast.SelDefault(), N("p")),))


def test_export_forms():
    assert one('export m to "o.safetensors"') == ast.Export(N("m"), ast.String("o.safetensors"))
    for dtype in ("fp16", "bf16", "fp32", "fp64", "fp8"):
        assert one(f'export m to "o" as {dtype}').dtype == dtype
    assert one("export m to out as fp16") == ast.Export(N("m"), N("out"), "fp16")


def test_newlines_and_semicolons_do_not_matter():
    a = stmts("let a = 1 let b = a + 2 export b to \"x\"")
    b = stmts("let a =\n 1;\n\nlet b = a\n  + 2;;\nexport b\nto\n\"x\";")
    assert a == b and len(a) == 3


def test_empty_and_comment_only_modules():
    assert stmts("") == ()
    m, d = parse("# nothing here\n\n   # still nothing\n", F)
    assert d == [] and m.statements == () and [c.text for c in m.comments] == ["# nothing here", "# still nothing"]


# ------------------------------------------------------------------------------------------------
# Expressions


@pytest.mark.parametrize("text,value", [
    ("3", 3), ("0.5", 0.5), (".5", 0.5), ("1e-3", 1e-3), ("1_000", 1000), ("1E+10", 1e10),
    ("2.5e3", 2500.0), ("1_0.2_5", 10.25),
])
def test_numbers_keep_their_text(text, value):
    n = expr(text)
    assert n == ast.Number(text)
    assert n.value == value


def test_inf_and_nan():
    assert expr("inf") == num("inf") and expr("inf").value == math.inf
    assert math.isnan(expr("nan").value)
    assert expr("-inf") == ast.UnaryOp("-", num("inf"))
    # A name that merely starts like a keyword is a name.
    assert expr("infinity") == N("infinity")
    assert expr("nano") == N("nano")


def test_strings_and_escapes():
    assert expr(r'"a\\b\"c\nd\te\rf\0g"') == ast.String('a\\b"c\nd\te\rf\0g')
    assert expr(r'"\u{1F600}\u{41}"') == ast.String("\U0001F600A")
    assert expr('"# not a comment"') == ast.String("# not a comment")
    assert expr('"日本"') == ast.String("日本")


def test_bools_names_attributes_indexes():
    assert expr("true") == ast.Bool(True)
    assert expr("false") == ast.Bool(False)
    assert expr("t.transplant") == ast.Attribute(N("t"), "transplant")
    assert expr("fts[0]") == ast.Index(N("fts"), num("0"))
    assert expr("a.b[1].c") == ast.Attribute(ast.Index(ast.Attribute(N("a"), "b"), num("1")), "c")
    assert expr("1.x") == ast.Attribute(num("1"), "x")


def test_calls():
    assert expr("f()") == ast.Call(N("f"))
    assert expr("f(x, *xs, k=v,)") == ast.Call(
        N("f"), (N("x"), ast.Splat(N("xs"))), (ast.Keyword("k", N("v")),))
    assert expr("f(a)(b)") == ast.Call(ast.Call(N("f"), (N("a"),)), (N("b"),))
    assert expr('model("a.safetensors", arch=sd1)') == ast.Call(
        N("model"), (ast.String("a.safetensors"),), (ast.Keyword("arch", N("sd1")),))
    # `default` and `key` are ordinary names outside selectors.
    assert expr('key("x")') == ast.Call(N("key"), (ast.String("x"),))
    assert expr("f(default=default)") == ast.Call(N("f"), (), (ast.Keyword("default", N("default")),))


def test_lists_and_comprehensions():
    assert expr("[]") == ast.ListExpr()
    assert expr("[a, *b,]") == ast.ListExpr((N("a"), ast.Splat(N("b"))))
    assert expr("[m - base for m in fts]") == ast.ListComp(ast.BinOp("-", N("m"), N("base")), "m", N("fts"))
    assert expr("ties(*[m - b for m in fts], density=0.2)") == ast.Call(
        N("ties"), (ast.Splat(ast.ListComp(ast.BinOp("-", N("m"), N("b")), "m", N("fts"))),),
        (ast.Keyword("density", num("0.2")),))


def test_hyperparameter_maps_and_selectors():
    m = expr('{default: alpha, IN00..IN05: 0.3, "OUT*": 0.7, attn2: 0.6, "OUT*" & attn2: 0.9, '
             'clip_l: 0.0, key("*.proj_in.*"): 1, !vae: 2, !(a & b): 3, a & !b & c: 4,}')
    sels = [e.selector for e in m.entries]
    assert sels == [
        ast.SelDefault(), ast.SelRange("IN00", "IN05"), ast.SelGlob("OUT*"), ast.SelName("attn2"),
        ast.SelAnd(ast.SelGlob("OUT*"), ast.SelName("attn2")), ast.SelName("clip_l"),
        ast.SelKey("*.proj_in.*"), ast.SelNot(ast.SelName("vae")),
        ast.SelNot(ast.SelAnd(ast.SelName("a"), ast.SelName("b"))),
        ast.SelAnd(ast.SelAnd(ast.SelName("a"), ast.SelNot(ast.SelName("b"))), ast.SelName("c")),
    ]
    assert m.entries[0].value == N("alpha")
    assert expr("{}") == ast.HyperMap()


def test_with():
    w = expr("base with {IN04: 1} with {default: 0}")
    assert w == ast.With(ast.With(N("base"), ast.HyperMap((ast.MapEntry(ast.SelName("IN04"), num("1")),))),
                         ast.HyperMap((ast.MapEntry(ast.SelDefault(), num("0")),)))
    assert expr("f(x).y with {}") == ast.With(ast.Attribute(ast.Call(N("f"), (N("x"),)), "y"), ast.HyperMap())
    assert expr("(a with {}).b") == ast.Attribute(ast.With(N("a"), ast.HyperMap()), "b")


def test_precedence():
    B = ast.BinOp
    assert expr("a + b * c") == B("+", N("a"), B("*", N("b"), N("c")))
    assert expr("(a + b) * c") == B("*", B("+", N("a"), N("b")), N("c"))
    assert expr("a - b - c") == B("-", B("-", N("a"), N("b")), N("c"))
    assert expr("a - (b - c)") == B("-", N("a"), B("-", N("b"), N("c")))
    assert expr("a / b * c") == B("*", B("/", N("a"), N("b")), N("c"))
    assert expr("a | b + c") == B("|", N("a"), B("+", N("b"), N("c")))
    assert expr("-a * b") == B("*", ast.UnaryOp("-", N("a")), N("b"))
    assert expr("--a") == ast.UnaryOp("-", ast.UnaryOp("-", N("a")))
    assert expr("-a with {}") == ast.UnaryOp("-", ast.With(N("a"), ast.HyperMap()))
    assert expr("-f(x)") == ast.UnaryOp("-", ast.Call(N("f"), (N("x"),)))
    assert expr("a - -1") == B("-", N("a"), ast.UnaryOp("-", num("1")))


def test_pipe():
    P = ast.Pipe
    assert expr("x |> f(y)") == P(N("x"), ast.Call(N("f"), (N("y"),)))
    assert expr("a | b |> f()") == P(ast.BinOp("|", N("a"), N("b")), ast.Call(N("f")))
    assert expr("x |> f() |> g(1)") == P(P(N("x"), ast.Call(N("f"))), ast.Call(N("g"), (num("1"),)))
    assert expr("base + GRAD_V * task |> clamp(*fts)") == P(
        ast.BinOp("+", N("base"), ast.BinOp("*", N("GRAD_V"), N("task"))),
        ast.Call(N("clamp"), (ast.Splat(N("fts")),)))


def test_keyword_prefixes_are_names():
    assert expr("letter + tox + within + format + imports + defx + aside + truely") is not None
    assert one("let default = key") == ast.Let("default", N("key"))


# ------------------------------------------------------------------------------------------------
# Spans and comments


def test_spans_are_filled():
    m, _ = parse('let w = f(a, k=2)\nexport w to "o" as fp16\n', F)
    let, exp = m.statements
    assert let.span == Span(F, 1, 1, 1, 18)
    assert let.name_span == Span(F, 1, 5, 1, 6)
    call = let.value
    assert call.span == Span(F, 1, 9, 1, 18)
    assert call.kwargs[0].span == Span(F, 1, 14, 1, 17)
    assert call.kwargs[0].name_span == Span(F, 1, 14, 1, 15)
    assert exp.span == Span(F, 2, 1, 2, 24)
    assert exp.path.span == Span(F, 2, 13, 2, 16)


def test_every_node_has_a_span_in_the_file():
    src = open(os.path.join(os.path.dirname(__file__), "golden", "syntax", "ok_everything.mecha")).read()
    m, d = parse(src, F)
    assert d == []
    nodes = list(iter_nodes(m))
    assert len(nodes) > 50
    for n in nodes:
        assert n.span is not None and n.span.file == F, n
        assert (n.span.line, n.span.col) <= (n.span.end_line, n.span.end_col)


def test_comments_are_collected():
    m, _ = parse('# head\nlet x = "#no" # tail\n  # indented\n', F)
    assert m.comments == (
        ast.Comment("# head", 1, 1, True), ast.Comment("# tail", 2, 15, False),
        ast.Comment("# indented", 3, 3, True))
    assert scan_comments("let a = 1 #x\r\n") == (ast.Comment("#x", 1, 11, False),)


def test_repl_input():
    assert parse_repl_input("let x = 1", F) == (ast.Let("x", num("1")), [])
    assert parse_repl_input("x.y[0]", F) == (ast.Index(ast.Attribute(N("x"), "y"), num("0")), [])
    assert parse_repl_input("  # just a comment", F) == (None, [])
    assert parse_repl_input("", F) == (None, [])
    assert first_error("let x = ", parse_repl_input).code == "E0104"
    d = first_error("x = 1", parse_repl_input)
    assert d.message == "expected an operator or the end of the expression, found `=`"
    assert d.help == "did you mean `let x = ...`?"


def test_parse_expression_rejects_statements_and_junk():
    assert first_error("let x = 1", parse_expression).message == "expected an expression, found `let`"
    d = first_error("a b", parse_expression)
    assert (d.code, d.message) == ("E0103", "expected an operator or the end of the expression, found name `b`")
    assert first_error("", parse_expression).message == "unexpected end of file: expected an expression"


# ------------------------------------------------------------------------------------------------
# Syntax errors: the messages users see


@pytest.mark.parametrize("src,code,message,line,col", [
    ("let = 5", "E0109", "`let` needs a name", 1, 5),
    ("param = 5", "E0109", "`param` needs a name", 1, 7),
    ("def (x) = x", "E0109", "`def` needs a name", 1, 5),
    ("let with = 1", "E0109", "`let` needs a name, but `with` is a reserved word", 1, 5),
    ("let x = a.to", "E0109", "expected a name after `.`, but `to` is a reserved word", 1, 11),
    ("let x = [a for 1 in b]", "E0109", "expected a variable name after `for`, found number `1`", 1, 16),
    ("def f(1) = 2", "E0109", "expected a parameter name, found number `1`", 1, 7),
    ("let x =", "E0104", "unexpected end of file: expected an expression after `=`", 1, 8),
    ("let x = 1 +\nlet y = 2", "E0108", "expected an expression after `+`, found `let`", 2, 1),
    ("let x = )", "E0108", "expected an expression after `=`, found `)`", 1, 9),
    ("let x = 1 +* 2", "E0108", "expected an expression after `+`, found `*`", 1, 12),
    ("let w = {a: 1 b: 2}", "E0107", "missing `,` between map entries", 1, 15),
    ('let w = {a: 1 "OUT*": 2}', "E0107", "missing `,` between map entries", 1, 15),
    ("let l = [a b]", "E0107", "missing `,` between list items", 1, 12),
    ("let c = f(a b)", "E0107", "missing `,` between arguments", 1, 13),
    ("let c = f(a=1 b=2)", "E0107", "missing `,` between arguments", 1, 15),
    ("def f(a b) = 1", "E0107", "missing `,` between parameters", 1, 9),
    ("param p: Model[a b]", "E0107", "missing `,` between type arguments", 1, 18),
    ('from "x" import a b', "E0107", "missing `,` between imported names", 1, 19),
    ("let w = {\n  a: 1,\n\nlet y = 2", "E0105", "unclosed `{` opened at 1:9", 4, 1),
    ("let c = f(a, {x: 1)", "E0105", "unclosed `{` opened at 1:14", 1, 19),
    ("let x = [1, 2)", "E0105", "unclosed `[` opened at 1:9", 1, 14),
    ("export f(a,\n", "E0104", "unexpected end of file: unclosed `(` opened at 1:9", 1, 12),
    ("let x = [a, b", "E0104", "unexpected end of file: unclosed `[` opened at 1:9", 1, 14),
    ("let x = 1)", "E0106", "unmatched `)`", 1, 10),
    ("let x = 1 }", "E0106", "unmatched `}`", 1, 11),
    ("let x = (a b)", "E0103", "expected `)` to close `(` opened at 1:9, found name `b`", 1, 12),
    ("let x = a[1 2]", "E0103", "expected `]` to close `[` opened at 1:10, found number `2`", 1, 13),
    ("let x = 1 2", "E0103", "expected an operator or a new statement, found number `2`", 1, 11),
    ("x = 1", "E0103", "expected a statement, found name `x`", 1, 1),
    ("let w = {a 1}", "E0103", "expected `:` after the selector, found number `1`", 1, 12),
    ('export x "p"', "E0103", 'expected `to` after the exported value, found string `"p"`', 1, 10),
    ("let x 5", "E0103", "expected `=` after `let x`, found number `5`", 1, 7),
    ("import x as y", "E0103", "expected a path string after `import`, found name `x`", 1, 8),
    ("let w = {1: 2}", "E0119", "expected a selector, found number `1`", 1, 10),
    ("let w = {a: 1,, }", "E0119", "expected a selector, found `,`", 1, 15),
    ("def f(x) = { let a = 1 }", "E0118", "a block needs a result expression after its `let`s", 1, 24),
    ("let c = f(a=1, b)", "E0116", "positional argument after keyword argument", 1, 16),
    ("let c = f(a=1, *bs)", "E0116", "positional argument after keyword argument", 1, 16),
    ("let x = a |> 5", "E0117", "the right side of `|>` must be a call", 1, 14),
    ("let x = a |> f", "E0117", "the right side of `|>` must be a call", 1, 14),
    (r'let s = "\q"', "E0111", r"unknown escape `\q` in string", 1, 10),
    (r'let s = "ab\u{110000}"', "E0112", r"invalid unicode escape `\u{110000}`: U+110000 is beyond U+10FFFF", 1, 12),
    (r'let s = "\u{D800}"', "E0112", r"invalid unicode escape `\u{D800}`: U+D800 is a surrogate", 1, 10),
    (r'let s = "\u{zz}"', "E0112", r"invalid unicode escape `\u{zz}`", 1, 10),
    (r'let s = "\u41"', "E0112", r"invalid unicode escape `\u`", 1, 10),
    ('let s = "abc', "E0102", "unterminated string", 1, 9),
    ("let x = 1 @ 2", "E0101", "unexpected character `@`", 1, 11),
    ("let x = 'a'", "E0101", "unexpected character `'`", 1, 9),
    ("let x = 1\x00", "E0101", "unexpected character `U+0000`", 1, 10),
    ("let x = 1e999", "E0113", "number `1e999` is too large for a float", 1, 9),
    ("let x = 1abc", "E0115", "invalid number `1abc`", 1, 9),
    ("let x = 1_", "E0115", "invalid number `1_`", 1, 9),
    ("let x = 1.", "E0115", "invalid number `1.`", 1, 9),
])
def test_syntax_error_messages(src, code, message, line, col):
    d = first_error(src)
    assert (d.code, d.message) == (code, message)
    assert (d.span.line, d.span.col) == (line, col)
    assert d.span.file == F
    # Never a Lark terminal name in what the user reads.
    for text in [d.message, d.label, d.help or ""] + [l.message for l in d.secondary]:
        for lark_word in ("_LPAR", "RBRACE", "NAME", "$END", "__ANON", "Token(", "COMMA"):
            assert lark_word not in text


def test_unclosed_bracket_has_a_secondary_label_on_the_opener():
    d = first_error("let w = {\n  a: 1,\n\nlet y = 2")
    assert d.secondary[0].span == Span(F, 1, 9, 1, 10)
    assert d.secondary[0].message == "unclosed `{`"
    d = first_error("export f(a,\n")
    assert d.secondary[0].span == Span(F, 1, 9, 1, 10)


def test_positional_after_keyword_points_at_both():
    d = first_error("let c = f(k=1, b)")
    assert d.span == Span(F, 1, 16, 1, 17)
    assert d.secondary[0].span == Span(F, 1, 11, 1, 14)


def test_integer_too_long():
    d = first_error("let x = " + "7" * 5000)
    assert d.code == "E0114" and "5000 digits" in d.message
    # 4300 digits is still fine, and Number.value converts it.
    (s,) = stmts("let x = " + "7" * 4300)
    assert s.value.value == int("7" * 4300)


def test_several_errors_are_reported_after_resynchronising():
    diags = errors("let a = 1 +\nlet b = (2\nlet c = 3\nexport a to\n")
    assert [d.code for d in diags] == ["E0108", "E0105", "E0104"]
    assert [d.span.line for d in diags] == [2, 3, 4]


def test_errors_from_the_builder_are_all_reported():
    diags = errors(r'let a = "\q" let b = 1e999 let c = f(k=1, 2)')
    assert [d.code for d in diags] == ["E0111", "E0113", "E0116"]


# ------------------------------------------------------------------------------------------------
# Nesting


@pytest.mark.parametrize("src", [
    "let x = " + "(" * 10_000,
    "let x = " + "(" * 10_000 + "1" + ")" * 10_000,
    "let x = " + "[" * 10_000 + "]" * 10_000,
    "let x = " + "f(" * 10_000,
    "let x = " + "-" * 10_000 + "x",
    "let x = " + "+".join(["1"] * 5_000),
    "let x = " + "a |> f()" + " |> f()" * 5_000,
    "let x = {" + "!" * 10_000 + "a: 1}",
    "let x = a" + " with {}" * 5_000,
], ids=["open-parens", "balanced-parens", "lists", "calls", "unary-minus", "long-sum", "pipes",
        "selector-not", "with-chain"])
def test_deep_nesting_is_a_diagnostic_not_a_crash(src):
    d = first_error(src)
    assert d.code == "E0110" and "nesting too deep" in d.message


@pytest.mark.parametrize("src", [
    "let x = " + "f(" * 95 + "1" + ")" * 95,
    "let x = " + "[" * 190 + "]" * 190,
    "let x = " + "-" * 190 + "1",
    "let x = " + "(" * 199 + "1" + ")" * 199,
    "let x = {" + "!" * 190 + "a: 1}",
    "let x = " + " + ".join(["a"] * 190),
], ids=["calls", "lists", "unary-minus", "parens", "selector-not", "long-sum"])
def test_deep_but_allowed_nesting_parses_and_prints(src):
    m, d = parse(src, F)
    assert d == [], d
    text = print_module(m)
    m2, d2 = parse(text, F)
    assert d2 == [] and m2 == m
    assert print_module(m2) == text


# ------------------------------------------------------------------------------------------------
# read_source


def test_read_source_ok_and_bom(tmp_path):
    p = tmp_path / "a.mecha"
    p.write_bytes("\ufefflet x = 1\n".encode("utf-8"))
    assert read_source(str(p)) == ("let x = 1\n", [])


def test_read_source_missing_and_directory(tmp_path):
    text, d = read_source(str(tmp_path / "nope.mecha"))
    assert text is None and d[0].code == "E0001" and "nope.mecha" in d[0].message
    text, d = read_source(str(tmp_path / "nope" / "deeper.mecha"))
    assert text is None and d[0].code == "E0001"
    text, d = read_source(str(tmp_path))
    assert text is None and d[0].code == "E0002"


def test_read_source_invalid_utf8_says_where(tmp_path):
    p = tmp_path / "bad.mecha"
    p.write_bytes(b"let a = 1\nlet \xc3\xa9t\xe9 = 2\n")
    text, d = read_source(str(p))
    assert text is None and d[0].code == "E0004"
    assert "0xe9 at 2:7" in d[0].message
    assert (d[0].span.line, d[0].span.col) == (2, 7)


def test_read_source_nul_byte(tmp_path):
    p = tmp_path / "nul.mecha"
    p.write_bytes(b"let a = 1\nlet b\x00 = 2\n")
    text, d = read_source(str(p))
    assert text is None and d[0].code == "E0005" and "2:6" in d[0].message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_read_source_not_a_regular_file(tmp_path):
    p = tmp_path / "fifo.mecha"
    os.mkfifo(p)
    text, d = read_source(str(p))
    assert text is None and d[0].code == "E0006"


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads everything")
def test_read_source_permission_denied(tmp_path):
    p = tmp_path / "secret.mecha"
    p.write_text("let a = 1\n")
    p.chmod(0)
    text, d = read_source(str(p))
    assert text is None and d[0].code == "E0003"
