"""Hyperparameter-map selectors: checks, matching, resolution (with a property test against a
naive reference) and block-weight strings."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechalang.archs import registry
from mechalang.archs.arch import Arch, PatternSet
from mechalang.archs.selectors import Rule, resolve, selector_matches, summarize_blocks
from mechalang.check.selectors import check_selector, parse_mbw, rule_diagnostics
from mechalang.diagnostics import Severity, Span
from mechalang.syntax.ast import SelAnd, SelDefault, SelGlob, SelKey, SelName, SelNot, SelRange
from mechalang.syntax.printer import print_selector as selector_text

D = "model.diffusion_model."


@pytest.fixture(autouse=True, scope="module")
def _stdlib_only():
    import os

    old = os.environ.pop("MECHA_PATH", None)
    registry.reload()
    yield
    if old is not None:
        os.environ["MECHA_PATH"] = old
    registry.reload()


def sd1():
    return registry.get_arch("sd1")


def span(line: int) -> Span:
    return Span("r.mecha", line, 5, line, 9)


def codes(diags):
    return [d.code for d in diags]


# ------------------------------------------------------------------------------------------------
# check_selector


def test_valid_selectors_have_no_diagnostics():
    a = sd1()
    for sel in (SelDefault(), SelName("clip_l"), SelName("IN04"), SelName("attn2"),
                SelRange("IN00", "IN05"), SelGlob("OUT*"), SelKey("*.proj_in.*"),
                SelAnd(SelGlob("OUT*"), SelName("attn2")), SelNot(SelName("vae"))):
        assert check_selector(sel, a) == [], sel


def test_unknown_name_suggests_the_closest():
    [d] = check_selector(SelName("atn2", span=span(1)), sd1())
    assert d.code == "E0311" and d.severity == Severity.ERROR
    assert d.message == "sd1 has no component, block or class `atn2`"
    assert d.help == "did you mean `attn2` (a class)?"
    assert d.span == span(1)
    [d] = check_selector(SelName("in04"), sd1())
    assert d.help == "did you mean `IN04` (a block)?"


def test_unknown_name_without_suggestion_lists_the_vocabulary():
    [d] = check_selector(SelName("zzzzzz"), sd1())
    assert "blocks: BASE, IN00..IN11, M00, OUT00..OUT11" in d.help
    assert "components: clip_l, vae, diffuser, ema, scheduler" in d.help


def test_range_ends_must_be_blocks():
    [d] = check_selector(SelRange("IN00", "attn1"), sd1())
    assert d.code == "E0312"
    assert d.message == "the end of a range must be a block; `attn1` is a class of sd1"
    [d] = check_selector(SelRange("IN4", "IN05"), sd1())
    assert d.message == "`IN4` is not a block of sd1" and d.help == "did you mean `IN04`?"


def test_reversed_range():
    [d] = check_selector(SelRange("OUT03", "IN05"), sd1())
    assert d.code == "E0313"
    assert d.message == "range `OUT03..IN05` is reversed: `OUT03` comes after `IN05`"
    assert d.help == "write `IN05..OUT03`"


def test_glob_matching_no_block():
    [d] = check_selector(SelGlob("OUTPUT*"), sd1())
    assert d.code == "E0314" and d.message == 'the glob "OUTPUT*" matches no block of sd1'
    [d] = check_selector(SelGlob("attn*"), sd1())
    assert "`attn` is a class, write it without quotes" in d.help


def test_default_cannot_be_combined():
    [d] = check_selector(SelAnd(SelDefault(), SelName("IN00")), sd1())
    assert d.code == "E0315"
    assert codes(check_selector(SelNot(SelDefault()), sd1())) == ["E0315"]


def test_nested_errors_are_all_reported():
    sel = SelAnd(SelName("nope1"), SelNot(SelRange("M00", "IN00")))
    assert codes(check_selector(sel, sd1())) == ["E0311", "E0313"]


def test_families_before_and_after_specialization():
    llama = registry.get_arch("llama")
    assert check_selector(SelName("L30"), llama) == []
    assert check_selector(SelRange("L0", "L30"), llama) == []
    assert check_selector(SelGlob("L1*"), llama) == []
    keys = ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight",
            "model.layers.1.mlp.up_proj.weight", "model.norm.weight"]
    small = llama.specialize(keys)
    assert codes(check_selector(SelName("L30"), small)) == ["E0311"]
    assert check_selector(SelRange("EMBED", "L1"), small) == []


# ------------------------------------------------------------------------------------------------
# selector_matches, resolve


def test_selector_matches_each_kind():
    a = sd1()
    info = a.classify(D + "output_blocks.4.1.transformer_blocks.0.attn2.to_v.weight")
    yes = [SelName("diffuser"), SelName("OUT04"), SelName("attn2"), SelName("attn"), SelName("v"),
           SelRange("M00", "OUT05"), SelRange("OUT04", "OUT04"), SelGlob("OUT*"), SelGlob("OUT0?"),
           SelKey("*.attn2.*"), SelAnd(SelGlob("OUT*"), SelName("attn2")), SelNot(SelName("vae"))]
    no = [SelDefault(), SelName("clip_l"), SelName("OUT05"), SelName("attn1"),
          SelRange("IN00", "M00"), SelGlob("IN*"), SelKey("*.attn1.*"),
          SelNot(SelName("attn2")), SelAnd(SelName("attn2"), SelName("IN04"))]
    for s in yes:
        assert selector_matches(s, info, a), selector_text(s)
    for s in no:
        assert not selector_matches(s, info, a), selector_text(s)


def test_key_glob_also_matches_the_canonical_name():
    a = sd1()
    info = a.classify("cond_stage_model.transformer.embeddings.token_embedding.weight")
    assert selector_matches(SelKey("*.text_model.embeddings.*"), info, a)
    assert selector_matches(SelKey("*.transformer.embeddings.*"), info, a)


def test_resolve_last_rule_wins_and_default_only_where_nothing_matches():
    a = sd1()
    rules = [Rule(SelDefault(), 0.5), Rule(SelRange("IN00", "IN05"), 0.3), Rule(SelGlob("OUT*"), 0.7),
             Rule(SelName("attn2"), 0.6), Rule(SelAnd(SelGlob("OUT*"), SelName("attn2")), 0.9),
             Rule(SelName("clip_l"), 0.0), Rule(SelDefault(), 0.1)]
    c = a.classify
    assert resolve(rules, c(D + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"), a) == (0.6, 3)
    assert resolve(rules, c(D + "input_blocks.1.0.in_layers.2.weight"), a) == (0.3, 1)
    assert resolve(rules, c(D + "output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight"), a) == (0.9, 4)
    assert resolve(rules, c(D + "output_blocks.3.0.in_layers.2.weight"), a) == (0.7, 2)
    assert resolve(rules, c("cond_stage_model.transformer.text_model.final_layer_norm.weight"), a) == (0.0, 5)
    assert resolve(rules, c(D + "middle_block.0.in_layers.2.weight"), a) == (0.1, 6)  # last default
    assert resolve(rules[1:6], c(D + "middle_block.0.in_layers.2.weight"), a) is None


# ------------------------------------------------------------------------------------------------
# Property: resolve against a naive reference built from the keys' known structure

COMPS = ("enc", "dec", "misc")
NUMS = ("0", "1", "2", "3", "x")
CLASSES = ("attn", "mlp", "norm")
BLOCK_ORDER = ("BASE", "B00", "B01", "B02", "B03")


def toy_arch() -> Arch:
    return Arch(
        "toy",
        components=[PatternSet(c, (f"{c}.*",)) for c in COMPS],
        blocks=[PatternSet("BASE", default=True), PatternSet("B{n:02}", ("*.{n}.*",), range=(0, 3))],
        classes=[PatternSet(c, (f"*.{c}.*",)) for c in CLASSES] + [PatternSet("w", ("*.weight",))],
    )


TOY = toy_arch()
ALL_KEYS = [f"{c}.{n}.{k}.{p}" for c in COMPS for n in NUMS for k in CLASSES for p in ("weight", "bias")]


def ref_parts(key: str):
    comp, num, cls, param = key.split(".")
    block = "BASE" if num == "x" else f"B0{num}"
    classes = {cls} | ({"w"} if param == "weight" else set())
    return comp, block, classes


def ref_select(sel, keys: list[str]) -> set[str]:
    if isinstance(sel, SelName):
        if sel.name in COMPS:
            return {k for k in keys if ref_parts(k)[0] == sel.name}
        if sel.name in BLOCK_ORDER:
            return {k for k in keys if ref_parts(k)[1] == sel.name}
        return {k for k in keys if sel.name in ref_parts(k)[2]}
    if isinstance(sel, SelRange):
        lo, hi = BLOCK_ORDER.index(sel.start), BLOCK_ORDER.index(sel.end)
        return {k for k in keys if lo <= BLOCK_ORDER.index(ref_parts(k)[1]) <= hi}
    if isinstance(sel, SelGlob):
        blocks = {b for b in BLOCK_ORDER if fnmatchcase(b, sel.pattern)}
        return {k for k in keys if ref_parts(k)[1] in blocks}
    if isinstance(sel, SelKey):
        return {k for k in keys if fnmatchcase(k, sel.pattern)}
    if isinstance(sel, SelAnd):
        return ref_select(sel.left, keys) & ref_select(sel.right, keys)
    if isinstance(sel, SelNot):
        return set(keys) - ref_select(sel.operand, keys)
    raise AssertionError(sel)


def ref_resolve(rules, key, keys, skip=()):
    winner = None
    for i, r in enumerate(rules):
        if i in skip:
            continue
        if not isinstance(r.selector, SelDefault) and key in ref_select(r.selector, keys):
            winner = i
    if winner is None:
        defaults = [i for i, r in enumerate(rules) if isinstance(r.selector, SelDefault)]
        winner = defaults[-1] if defaults else None
    return None if winner is None else (rules[winner].value, winner)


names = st.sampled_from(COMPS + BLOCK_ORDER + CLASSES + ("w",))
leaf = st.one_of(
    names.map(SelName),
    st.tuples(st.sampled_from(BLOCK_ORDER), st.sampled_from(BLOCK_ORDER)).map(lambda t: SelRange(*t)),
    st.sampled_from(["B0*", "*", "B?1", "BASE", "B0[12]", "Q*"]).map(SelGlob),
    st.sampled_from(["enc.*", "*.weight", "*.1.*", "*.attn.*", "nomatch", "dec.[02].*"]).map(SelKey),
)
selectors = st.recursive(leaf, lambda inner: st.one_of(
    st.tuples(inner, inner).map(lambda t: SelAnd(*t)), inner.map(SelNot)), max_leaves=4)
rule_lists = st.lists(st.one_of(selectors, st.just(SelDefault())), max_size=7).map(
    lambda sels: [Rule(s, float(i), span(i + 1)) for i, s in enumerate(sels)])
key_sets = st.lists(st.sampled_from(ALL_KEYS), min_size=1, max_size=25, unique=True)


@settings(max_examples=300, deadline=None)
@given(rule_lists, key_sets)
def test_resolve_agrees_with_a_naive_reference(rules, keys):
    for k in keys:
        assert resolve(rules, TOY.classify(k), TOY) == ref_resolve(rules, k, keys), k


@settings(max_examples=200, deadline=None)
@given(rule_lists, key_sets)
def test_rule_diagnostics_agree_with_a_naive_reference(rules, keys):
    diags = rule_diagnostics(rules, TOY, keys)
    # rules with invalid selectors (a reversed range) are reported by check_selector and left out
    valid = [not any(d.is_error for d in check_selector(r.selector, TOY)) for r in rules]
    skip = {i for i, ok in enumerate(valid) if not ok}
    resolved = [ref_resolve(rules, k, keys, skip) for k in keys]
    winners = {r[1] for r in resolved if r is not None}
    expect_none, expect_shadowed = set(), set()
    for i, r in enumerate(rules):
        if isinstance(r.selector, SelDefault) or not valid[i]:
            continue
        if not ref_select(r.selector, keys):
            expect_none.add(i)
        elif i not in winners:
            expect_shadowed.add(i)
    assert {d.span.line - 1 for d in diags if d.code == "E0316"} == expect_none
    assert {d.span.line - 1 for d in diags if d.code == "W0311"} == expect_shadowed
    defaults = [i for i, r in enumerate(rules) if isinstance(r.selector, SelDefault)]
    unused_defaults = set(defaults[:-1])
    if defaults and defaults[-1] not in winners:
        unused_defaults.add(defaults[-1])
    assert {d.span.line - 1 for d in diags if d.code == "W0312"} == unused_defaults


# ------------------------------------------------------------------------------------------------
# rule_diagnostics on a real architecture


def test_rule_matching_no_key_is_an_error():
    a = sd1()
    keys = [k for k in a.expected_keys() if k.startswith(D)]  # a UNet-only file
    rules = [Rule(SelName("clip_l"), 0.0, span(1)), Rule(SelName("IN04"), 0.3, span(2))]
    [d] = rule_diagnostics(rules, a, keys)
    assert d.code == "E0316" and d.span == span(1)
    assert d.message == "`clip_l` matches no key of this sd1 model"


def test_overridden_rule_is_a_warning_pointing_at_the_winner():
    a = sd1()
    rules = [Rule(SelName("attn2"), 0.6, span(1)), Rule(SelName("attn"), 0.5, span(2)),
             Rule(SelDefault(), 1.0, span(3))]
    [d] = rule_diagnostics(rules, a, a.expected_keys())
    assert d.code == "W0311" and d.severity == Severity.WARNING and d.span == span(1)
    assert d.message == "`attn2` never applies: later rules win on every key it matches"
    assert [l.span for l in d.secondary] == [span(2)]
    assert d.help.startswith("overridden by `attn`")


def test_unused_defaults_are_warnings():
    a = sd1()
    rules = [Rule(SelDefault(), 1.0, span(1)), Rule(SelGlob("*"), 0.5, span(2)),
             Rule(SelDefault(), 2.0, span(3))]
    ds = rule_diagnostics(rules, a, a.expected_keys())
    assert [(d.code, d.span.line) for d in ds] == [("W0312", 1), ("W0312", 3)]
    assert ds[1].message == "`default` never applies: other rules match every key"


def test_rules_from_one_block_weight_string_are_judged_together():
    xl = registry.get_arch("sdxl-diffusers-unet")
    keys = sorted(xl.inventory)  # a UNet-only file: BASE has no key
    rules, _ = parse_mbw(xl, ",".join(["0.5"] * 20), span(1))
    assert rule_diagnostics(rules, xl, keys) == []
    # overriding one block of a preset is fine; overriding all of it is reported once
    rules2 = rules + [Rule(SelName("IN04"), 1.0, span(2))]
    assert rule_diagnostics(rules2, xl, keys) == []
    rules3 = rules + [Rule(SelGlob("*"), 1.0, span(2))]
    [d] = rule_diagnostics(rules3, xl, keys)
    assert d.code == "W0311" and d.span == span(1)
    assert d.message == "these 20 rules never apply: later rules win on every key they match"
    clip = [k for k in registry.get_arch("sd1").expected_keys() if k.startswith("cond_stage")]
    rules4, _ = parse_mbw(sd1(), SD1_26, span(3))
    [d] = rule_diagnostics(rules4[1:], sd1(), clip)  # BASE left out: nothing else matches
    assert d.code == "E0316" and d.message == "none of these 25 rules matches a key of this sd1 model"


def test_invalid_selectors_are_left_to_check_selector():
    a = sd1()
    assert rule_diagnostics([Rule(SelName("nope"), 1.0, span(1))], a, a.expected_keys()) == []


# ------------------------------------------------------------------------------------------------
# parse_mbw


SD1_26 = ",".join(str(i / 100) for i in range(26))


def test_mbw_sd1_26_values():
    rules, diags = parse_mbw(sd1(), SD1_26, span(1))
    assert diags == []
    assert [r.selector.name for r in rules] == list(sd1().blocks)
    assert [r.value for r in rules] == [i / 100 for i in range(26)]
    a = sd1()
    info = a.classify(D + "middle_block.1.proj_in.weight")
    assert resolve(rules, info, a) == (0.13, 13)
    assert resolve(rules, a.classify("first_stage_model.quant_conv.weight"), a) == (0.0, 0)


def test_mbw_sdxl_20_values_with_spaces_and_trailing_comma():
    xl = registry.get_arch("sdxl")
    text = " , ".join(["1"] * 19 + ["0.5"]) + ","
    rules, diags = parse_mbw(xl, text, None)
    assert diags == [] and len(rules) == 20
    assert rules[-1].selector == SelName("OUT08") and rules[-1].value == 0.5


def test_mbw_wrong_count():
    rules, [d] = parse_mbw(sd1(), ",".join(["0.5"] * 27), span(1))
    assert rules == [] and d.code == "E0318"
    assert d.message == "a block-weight string for sd1 has 26 values, this one has 27"
    assert d.help == "one value per block: BASE, IN00..IN11, M00, OUT00..OUT11"
    _, [d] = parse_mbw(sd1(), ",".join(["0.5"] * 25), span(1))
    assert "without the BASE weight" in d.help
    _, [d] = parse_mbw(registry.get_arch("sdxl"), "0.5", span(1))
    assert d.message == "a block-weight string for sdxl has 20 values, this one has 1"
    assert d.help == "one value per block: BASE, IN00..IN08, M00, OUT00..OUT08"


def test_mbw_bad_numbers_point_into_the_string():
    text = ",".join(["0.5"] * 3 + ["abc"] + ["0.5"] * 20 + [" ", "0.5"])
    s = Span("r.mecha", 2, 10, 2, 10 + len(text) + 2)
    rules, diags = parse_mbw(sd1(), text, s)
    assert rules == [] and codes(diags) == ["E0319", "E0319"]
    assert diags[0].message == "block-weight value 4 (block IN02) is not a number: `abc`"
    assert diags[0].span == Span("r.mecha", 2, 10 + 1 + 12, 2, 10 + 1 + 15)
    assert diags[1].message == "block-weight value 25 (block OUT10) is empty"
    _, diags = parse_mbw(sd1(), ",".join(["nan"] + ["1"] * 25), s)
    assert codes(diags) == ["E0319"]


def test_mbw_needs_a_convention():
    rules, [d] = parse_mbw(registry.get_arch("flux"), "1,2", None)
    assert rules == [] and d.code == "E0317"


def test_summarize_blocks():
    assert summarize_blocks(["BASE", "IN", "D00", "D01", "D02", "S00", "OUT"]) == "BASE, IN, D00..D02, S00, OUT"
    assert summarize_blocks(["L0", "L1"]) == "L0, L1"
