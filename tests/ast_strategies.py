"""Hypothesis strategies that generate mechalang syntax trees (without spans or comments).

Every tree generated here is one the parser can produce: names are identifiers that are not
reserved words, number texts are valid literals, and a `Pipe`'s right side is a call. Use
`modules()`, `statements()`, `expressions()`, `selectors()` and `type_exprs()` in any test.
"""

from __future__ import annotations

from hypothesis import strategies as st

from mechalang.syntax import ast
from mechalang.syntax.grammar import RESERVED_WORDS, SELECTOR_WORDS

_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_REST = _FIRST + "0123456789"

identifiers = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_FIRST),
    st.text(alphabet=_REST, max_size=7),
).filter(lambda s: s not in RESERVED_WORDS) | st.sampled_from(
    ["x", "ghost", "alpha", "IN04", "clip_l", "attn2", "letter", "inflate", "tox", "within", "default", "key"])
# Map selectors: `default` and `key` are keywords where a selector starts.
selector_names = identifiers.filter(lambda s: s not in SELECTOR_WORDS)


def _digit_groups(n_min: int = 1):
    """Digits with single `_` between some of them (`1_000`)."""
    return st.lists(st.text(alphabet="0123456789", min_size=1, max_size=3), min_size=n_min, max_size=3).map("_".join)


_exponent = st.builds(lambda e, sign, d: f"{e}{sign}{d}", st.sampled_from("eE"), st.sampled_from(["", "+", "-"]),
                      st.integers(0, 99))

number_texts = st.one_of(
    st.integers(min_value=0, max_value=10**30).map(str),
    st.floats(min_value=0, max_value=1e30, allow_nan=False, allow_infinity=False).map(repr),
    st.builds(lambda a, b: f"{a}.{b}", _digit_groups(), _digit_groups()),
    st.builds(lambda b: f".{b}", _digit_groups()),
    st.builds(lambda a, e: f"{a}{e}", _digit_groups(), _exponent),
    st.builds(lambda a, b, e: f"{a}.{b}{e}", _digit_groups(), _digit_groups(), _exponent),
    st.sampled_from(["0", "3", "0.5", ".5", "1e-3", "1_000", "inf", "nan", "1E+10"]),
)

string_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8),
    st.sampled_from(["OUT*", "*.proj_in.*", "a\\b", 'q"q', "tab\there", "nl\n", "\0", "😀", "\u2028"]),
)


def numbers():
    return st.builds(ast.Number, number_texts)


def type_exprs(max_leaves: int = 5):
    return st.recursive(
        st.builds(ast.TypeExpr, identifiers),
        lambda inner: st.builds(ast.TypeExpr, identifiers, st.lists(inner, min_size=1, max_size=3).map(tuple)),
        max_leaves=max_leaves,
    )


def selectors(max_leaves: int = 4):
    atoms = st.one_of(
        st.just(ast.SelDefault()),
        st.builds(ast.SelName, selector_names),
        st.builds(ast.SelRange, selector_names, selector_names),
        st.builds(ast.SelGlob, string_values),
        st.builds(ast.SelKey, string_values),
    )
    return st.recursive(
        atoms,
        lambda inner: st.one_of(st.builds(ast.SelAnd, inner, inner), st.builds(ast.SelNot, inner)),
        max_leaves=max_leaves,
    )


def _tuples(s, max_size: int = 3, min_size: int = 0):
    return st.lists(s, min_size=min_size, max_size=max_size).map(tuple)


def expressions(max_leaves: int = 8):
    leaves = st.one_of(
        numbers(),
        st.builds(ast.String, string_values),
        st.builds(ast.Bool, st.booleans()),
        st.builds(ast.Name, identifiers),
    )

    def extend(inner):
        items = st.one_of(inner, st.builds(ast.Splat, inner))
        keywords = st.builds(ast.Keyword, identifiers, inner)
        calls = st.builds(ast.Call, inner, _tuples(items), _tuples(keywords, 2))
        maps = st.builds(ast.HyperMap, _tuples(st.builds(ast.MapEntry, selectors(), inner)))
        return st.one_of(
            st.builds(ast.Attribute, inner, identifiers),
            st.builds(ast.Index, inner, inner),
            calls,
            st.builds(ast.ListExpr, _tuples(items)),
            st.builds(ast.ListComp, inner, identifiers, inner),
            st.builds(ast.UnaryOp, st.just("-"), inner),
            st.builds(ast.BinOp, st.sampled_from(["+", "-", "*", "/", "|"]), inner, inner),
            st.builds(ast.Pipe, inner, calls),
            maps,
            st.builds(ast.With, inner, maps),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def blocks(exprs=None):
    exprs = exprs if exprs is not None else expressions(6)
    lets = st.builds(ast.Let, identifiers, exprs, st.none() | type_exprs(3))
    return st.builds(ast.Block, _tuples(lets, 3, 1), exprs)


def statements(exprs=None):
    exprs = exprs if exprs is not None else expressions()
    types = st.none() | type_exprs()
    def_params = st.builds(ast.DefParam, identifiers, st.none() | exprs, types)
    return st.one_of(
        st.builds(ast.Import, string_values, identifiers),
        st.builds(ast.FromImport, string_values,
                  _tuples(st.builds(ast.ImportName, identifiers, st.none() | identifiers), 3, 1)),
        st.builds(ast.Param, identifiers, types, st.none() | exprs),
        st.builds(ast.Let, identifiers, exprs, types),
        st.builds(ast.Def, identifiers, _tuples(def_params, 3), st.one_of(exprs, blocks())),
        st.builds(ast.Export, exprs, exprs,
                  st.none() | st.sampled_from(["fp16", "bf16", "fp32", "fp64", "fp8"]) | identifiers),
    )


def modules(max_statements: int = 4):
    return st.builds(ast.Module, _tuples(statements(), max_statements))
