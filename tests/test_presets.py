"""`std/presets`: supermerger's block-weight presets for sd1, and their derived sdxl versions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mechalang.syntax import ast
from mechalang.syntax.parser import parse
from mechalang.syntax.printer import print_module

PRESETS = Path(__file__).resolve().parent.parent / "mechalang" / "stdlib" / "presets.mecha"

SD1_BLOCKS = ["BASE"] + [f"IN{i:02d}" for i in range(12)] + ["M00"] + [f"OUT{i:02d}" for i in range(12)]
XL_BLOCKS = ["BASE"] + [f"IN{i:02d}" for i in range(9)] + ["M00"] + [f"OUT{i:02d}" for i in range(9)]

# supermerger's name → the mechalang name
NAMES = {
    "GRAD_V": "GRAD_V", "GRAD_A": "GRAD_A", "FLAT_25": "FLAT_25", "FLAT_75": "FLAT_75",
    "WRAP08": "WRAP08", "WRAP12": "WRAP12", "WRAP14": "WRAP14", "WRAP16": "WRAP16",
    "MID12_50": "MID12_50", "OUT07": "OUT07", "OUT12": "OUT12", "OUT12_5": "OUT12_5",
    "RING08_SOFT": "RING08_SOFT", "RING08_5": "RING08_5", "RING10_5": "RING10_5",
    "RING10_3": "RING10_3", "SMOOTHSTEP": "SMOOTHSTEP", "REVERSE-SMOOTHSTEP": "REVERSE_SMOOTHSTEP",
    "SMOOTHSTEP*2": "SMOOTHSTEP_2", "R_SMOOTHSTEP*2": "R_SMOOTHSTEP_2",
    "SMOOTHSTEP*3": "SMOOTHSTEP_3", "R_SMOOTHSTEP*3": "R_SMOOTHSTEP_3",
    "SMOOTHSTEP*4": "SMOOTHSTEP_4", "R_SMOOTHSTEP*4": "R_SMOOTHSTEP_4",
    "SMOOTHSTEP/2": "SMOOTHSTEP_DIV_2", "R_SMOOTHSTEP/2": "R_SMOOTHSTEP_DIV_2",
    "SMOOTHSTEP/3": "SMOOTHSTEP_DIV_3", "R_SMOOTHSTEP/3": "R_SMOOTHSTEP_DIV_3",
    "SMOOTHSTEP/4": "SMOOTHSTEP_DIV_4", "R_SMOOTHSTEP/4": "R_SMOOTHSTEP_DIV_4",
    "COSINE": "COSINE", "REVERSE_COSINE": "REVERSE_COSINE",
    "TRUE_CUBIC_HERMITE": "TRUE_CUBIC_HERMITE", "TRUE_REVERSE_CUBIC_HERMITE": "TRUE_REVERSE_CUBIC_HERMITE",
    "FAKE_CUBIC_HERMITE": "FAKE_CUBIC_HERMITE", "FAKE_REVERSE_CUBIC_HERMITE": "FAKE_REVERSE_CUBIC_HERMITE",
    "ALL_A": "ALL_A", "ALL_B": "ALL_B",
}
ALIASES = {"CUBIC_HERMITE": "FAKE_CUBIC_HERMITE", "REVERSE_CUBIC_HERMITE": "FAKE_REVERSE_CUBIC_HERMITE"}

# Lines of supermerger's published list (scripts/mbwpresets.txt), copied as they are.
PUBLISHED_SD1 = {
    "GRAD_V": "0,1,0.9166666667,0.8333333333,0.75,0.6666666667,0.5833333333,0.5,0.4166666667,0.3333333333,0.25,0.1666666667,0.0833333333,0,0.0833333333,0.1666666667,0.25,0.3333333333,0.4166666667,0.5,0.5833333333,0.6666666667,0.75,0.8333333333,0.9166666667,1.0",
    "WRAP14": "0,1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1,1,1",
    "MID12_50": "0,0,0,0,0,0,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0,0,0,0,0,0",
    "OUT12_5": "0,0,0,0,0,0,0,0,0,0,0,0,0,0.5,1,1,1,1,1,1,1,1,1,1,1,1",
    "RING08_SOFT": "0,0,0,0,0,0,0.5,1,1,1,0.5,0,0,0,0,0,0.5,1,1,1,0.5,0,0,0,0,0",
    "RING10_3": "0,0,0,0,0,0,0,1,1,1,1,1,0,0,0,1,1,1,1,1,0,0,0,0,0,0",
    "REVERSE-SMOOTHSTEP": "0,1,0.994936342592593,0.980324074074074,0.95703125,0.925925925925926,0.887876157407407,0.84375,0.794415509259259,0.740740740740741,0.68359375,0.623842592592593,0.562355324074074,0.5,0.437644675925926,0.376157407407408,0.31640625,0.259259259259259,0.205584490740741,0.15625,0.112123842592592,0.0740740740740742,0.0429687499999996,0.0196759259259258,0.00506365740740744,0",
    "SMOOTHSTEP*3": "0,0,0.0151909722222222,0.0590277777777778,0.12890625,0.222222222222222,0.336371527777778,0.46875,0.616753472222222,0.777777777777778,0.94921875,0.871527777777778,0.687065972222222,0.5,0.312934027777778,0.128472222222222,0.0507812500000004,0.222222222222222,0.383246527777778,0.53125,0.663628472222223,0.777777777777778,0.87109375,0.940972222222222,0.984809027777777,1",
    "R_SMOOTHSTEP/4": "0,1,0.925925925925926,0.740740740740741,0.5,0.259259259259259,0.0740740740740742,0.,0.0740740740740742,0.259259259259259,0.5,0.740740740740741,0.925925925925926,1.,0.925925925925926,0.740740740740741,0.5,0.259259259259259,0.0740740740740742,0.,0.0740740740740742,0.259259259259259,0.5,0.740740740740741,0.925925925925926,1",
    "COSINE": "0,1,0.995722430686905,0.982962913144534,0.961939766255643,0.933012701892219,0.896676670145617,0.853553390593274,0.80438071450436,0.75,0.691341716182545,0.62940952255126,0.565263096110026,0.5,0.434736903889974,0.37059047744874,0.308658283817455,0.25,0.195619285495639,0.146446609406726,0.103323329854382,0.0669872981077805,0.0380602337443566,0.0170370868554658,0.00427756931309475,0",
    "TRUE_CUBIC_HERMITE": "0,0,0.199031876929012,0.325761959876543,0.424641927083333,0.498456790123457,0.549991560570988,0.58203125,0.597360869984568,0.598765432098765,0.589029947916667,0.570939429012346,0.547278886959876,0.520833333333333,0.49438777970679,0.470727237654321,0.45263671875,0.442901234567901,0.444305796682099,0.459635416666667,0.491675106095678,0.543209876543211,0.617024739583333,0.715904706790124,0.842634789737655,1",
    "FAKE_REVERSE_CUBIC_HERMITE": "0,1,0.842423804012346,0.71508487654321,0.615234375,0.540123456790123,0.487003279320988,0.453125,0.435739776234568,0.432098765432099,0.439453125,0.455054012345679,0.476152584876543,0.5,0.523847415123457,0.544945987654321,0.560546875,0.567901234567901,0.564260223765432,0.546875,0.512996720679013,0.459876543209876,0.384765625,0.28491512345679,0.157576195987653,0",
    "ALL_A": "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "ALL_B": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
}

# SDXL versions published by sd-webui-model-mixer (scripts/mbwpresets.tsv.in), an independent
# derivation; the ones that follow the SD1 curves and block counts must agree with ours.
MODEL_MIXER_XL = {
    "GRAD_V": "0,1,0.8888888888888888,0.7777777777777778,0.6666666666666667,0.5555555555555556,0.4444444444444444,0.33333333333333337,0.22222222222222232,0.11111111111111116,0,0.11111111111111116,0.22222222222222232,0.33333333333333337,0.4444444444444444,0.5555555555555556,0.6666666666666667,0.7777777777777778,0.8888888888888888,1",
    "WRAP12": "0,1,1,1,1,1,1,0,0,0,0,0,0,0,1,1,1,1,1,1",
    "OUT07": "0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1,1,1",
    "OUT12": "0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",  # model-mixer's OUT09
    "RING08_SOFT": "0,0,0,0.5,1,1,1,0.5,0,0,0,0,0,0.5,1,1,1,0.5,0,0",
    "RING10_5": "0,0,0,1,1,1,1,1,0,0,0,0,0,1,1,1,1,1,0,0",
    "RING10_3": "0,0,0,0,1,1,1,1,1,0,0,0,1,1,1,1,1,0,0,0",
    "SMOOTHSTEP": "0,0,0.008916323731138546,0.03429355281207133,0.07407407407407407,0.1262002743484225,0.18861454046639234,0.25925925925925924,0.33607681755829893,0.41700960219478733,0.5,0.5829903978052127,0.6639231824417009,0.7407407407407407,0.8113854595336077,0.8737997256515774,0.925925925925926,0.9657064471879286,0.9910836762688613,1",
    "SMOOTHSTEP*3": "0,0,0.026748971193415638,0.102880658436214,0.2222222222222222,0.37860082304526743,0.565843621399177,0.7777777777777777,0.9917695473251031,0.748971193415638,0.5,0.251028806584362,0.008230452674897304,0.22222222222222232,0.43415637860082334,0.621399176954732,0.7777777777777781,0.8971193415637861,0.9732510288065841,1",
    "SMOOTHSTEP/3": "0,0,0.07407407407407407,0.25925925925925924,0.5,0.7407407407407407,0.925925925925926,1,0.9259259259259258,0.7407407407407407,0.5,0.2592592592592593,0.07407407407407404,0,0.07407407407407407,0.2592592592592593,0.5,0.7407407407407407,0.9259259259259258,1",
}


# The curves behind the published numbers (x = position along the U-Net, M00 at 1/2).
def _s(x):
    return 3 * x * x - 2 * x ** 3


def _tri(v):
    v = v % 2.0
    return 2.0 - v if v > 1.0 else v


def _fake(x):
    return (19 / 3) * x ** 3 - (19 / 2) * x ** 2 + (25 / 6) * x


def _true(x):
    return 0.0 if x == 0 else (77 / 12) * x ** 3 - (77 / 8) * x ** 2 + (25 / 6) * x + 1 / 24


CURVES = {
    "GRAD_V": lambda x: abs(2 * x - 1),
    "GRAD_A": lambda x: 1 - abs(2 * x - 1),
    "SMOOTHSTEP": _s,
    "REVERSE-SMOOTHSTEP": lambda x: 1 - _s(x),
    "COSINE": lambda x: (1 + math.cos(math.pi * x)) / 2,
    "REVERSE_COSINE": lambda x: (1 - math.cos(math.pi * x)) / 2,
    "TRUE_CUBIC_HERMITE": _true,
    "TRUE_REVERSE_CUBIC_HERMITE": lambda x: 1 - _true(x),
    "FAKE_CUBIC_HERMITE": _fake,
    "FAKE_REVERSE_CUBIC_HERMITE": lambda x: 1 - _fake(x),
}
for _n in (2, 3, 4):
    CURVES[f"SMOOTHSTEP*{_n}"] = (lambda n: lambda x: _tri(n * _s(x)))(_n)
    CURVES[f"R_SMOOTHSTEP*{_n}"] = (lambda n: lambda x: 1 - _tri(n * _s(x)))(_n)
    CURVES[f"SMOOTHSTEP/{_n}"] = (lambda n: lambda x: _s(_tri(n * x)))(_n)
    CURVES[f"R_SMOOTHSTEP/{_n}"] = (lambda n: lambda x: 1 - _s(_tri(n * x)))(_n)

EDGE_ANCHORED = {"FLAT_25", "FLAT_75", "WRAP08", "WRAP12", "WRAP14", "WRAP16", "OUT07", "OUT12",
                 "OUT12_5", "ALL_A", "ALL_B"}
MID_ANCHORED = {"MID12_50", "RING08_SOFT", "RING08_5", "RING10_5", "RING10_3"}


@pytest.fixture(scope="module")
def module() -> ast.Module:
    tree, diags = parse(PRESETS.read_text(encoding="utf-8"), str(PRESETS))
    assert diags == [] and tree is not None
    return tree


@pytest.fixture(scope="module")
def lets(module) -> dict[str, ast.Expr]:
    out = {}
    for s in module.statements:
        if isinstance(s, ast.Def) and s.name == "_sd1_sd2":  # SD1's weights for both (see mbw_strings)
            continue
        assert isinstance(s, ast.Let), "presets.mecha holds only `let`s (and `_sd1_sd2`)"
        out[s.name] = s.value
    return out


def mbw_strings(value: ast.Expr) -> dict[str, str]:
    """{"sd1": "...", "sdxl": "..."} from `_sd1_sd2("...") | mbw(sdxl, "...")`, where `_sd1_sd2(w)`
    is `mbw(sd1, w) | mbw(sd2, w)`: SD2 has SD1's blocks, and test_sd2_takes_sd1s_weights checks
    the values the checker gives each."""
    parts = []
    while isinstance(value, ast.BinOp) and value.op == "|":
        parts.insert(0, value.right)
        value = value.left
    parts.insert(0, value)
    out = {}
    for side in parts:
        assert isinstance(side, ast.Call) and not side.kwargs
        if side.func == ast.Name("_sd1_sd2"):
            (text,) = side.args
            assert isinstance(text, ast.String)
            out["sd1"] = text.value
            continue
        assert side.func == ast.Name("mbw")
        arch, text = side.args
        assert isinstance(arch, ast.Name) and isinstance(text, ast.String)
        out[arch.id] = text.value
    assert list(out) == ["sd1", "sdxl"]
    return out


@pytest.fixture(scope="module")
def weights(lets) -> dict[str, dict[str, list[float]]]:
    """supermerger name → {"sd1": 26 floats, "sdxl": 20 floats}."""
    out = {}
    for sm_name, name in NAMES.items():
        strings = mbw_strings(lets[name])
        out[sm_name] = {arch: [float(t) for t in s.split(",")] for arch, s in strings.items()}
    return out


def test_every_preset_is_defined(lets):
    assert set(NAMES.values()) | set(ALIASES) == set(lets)
    for name in NAMES.values():
        mbw_strings(lets[name])
    for alias, target in ALIASES.items():
        assert lets[alias] == ast.Name(target)


def test_names_the_brief_asks_for_exist(lets):
    for name in ["GRAD_V", "GRAD_A", "FLAT_25", "FLAT_75", "WRAP08", "WRAP12", "WRAP14", "WRAP16",
                 "MID12_50", "OUT07", "OUT12", "RING08_SOFT", "SMOOTHSTEP", "REVERSE_SMOOTHSTEP",
                 "SMOOTHSTEP_2", "R_SMOOTHSTEP_2", "COSINE", "REVERSE_COSINE", "CUBIC_HERMITE",
                 "REVERSE_CUBIC_HERMITE", "TRUE_CUBIC_HERMITE", "ALL_A", "ALL_B"]:
        assert name in lets


def test_lengths_and_range(lets):
    for name in NAMES.values():
        s = mbw_strings(lets[name])
        sd1 = [float(t) for t in s["sd1"].split(",")]
        xl = [float(t) for t in s["sdxl"].split(",")]
        assert len(sd1) == 26, name
        assert len(xl) == 20, name
        assert all(0.0 <= v <= 1.0 for v in sd1 + xl), name


def test_all_a_and_all_b(weights):
    # supermerger's weight is the share of model B: 0 keeps A (weighted_sum's alpha too)
    assert weights["ALL_A"]["sd1"] == [0.0] * 26 and weights["ALL_A"]["sdxl"] == [0.0] * 20
    assert weights["ALL_B"]["sd1"] == [1.0] * 26 and weights["ALL_B"]["sdxl"] == [1.0] * 20


@pytest.mark.parametrize("arch,mid", [("sd1", 13), ("sdxl", 10)])
def test_grad_v_falls_to_the_middle_and_rises_again(weights, arch, mid):
    w = weights["GRAD_V"][arch]
    assert w[0] == 0.0  # BASE
    assert w[1] == 1.0 and w[mid] == 0.0 and w[-1] == 1.0
    assert all(a > b for a, b in zip(w[1:mid], w[2:mid + 1]))
    assert all(a < b for a, b in zip(w[mid:-1], w[mid + 1:]))
    g = weights["GRAD_A"][arch]
    assert all(math.isclose(a, 1 - b, abs_tol=1e-9) for a, b in zip(g[1:], w[1:]))


def test_sd1_strings_are_supermergers_number_for_number(lets):
    for sm_name, published in PUBLISHED_SD1.items():
        assert mbw_strings(lets[NAMES[sm_name]])["sd1"] == published, sm_name


def test_spot_values_against_the_published_list(weights):
    assert weights["GRAD_V"]["sd1"][SD1_BLOCKS.index("IN05")] == 0.5833333333
    assert weights["SMOOTHSTEP"]["sd1"][SD1_BLOCKS.index("OUT03")] == 0.740740740740741
    assert weights["COSINE"]["sd1"][SD1_BLOCKS.index("IN08")] == 0.75
    assert weights["SMOOTHSTEP*4"]["sd1"][SD1_BLOCKS.index("M00")] == 0.0
    assert weights["R_SMOOTHSTEP*4"]["sd1"][SD1_BLOCKS.index("M00")] == 1.0
    assert weights["TRUE_CUBIC_HERMITE"]["sd1"][SD1_BLOCKS.index("M00")] == 0.520833333333333
    assert weights["FAKE_CUBIC_HERMITE"]["sd1"][SD1_BLOCKS.index("IN06")] == 0.546875
    assert weights["WRAP08"]["sd1"][SD1_BLOCKS.index("OUT08")] == 1.0
    assert weights["WRAP08"]["sd1"][SD1_BLOCKS.index("OUT07")] == 0.0
    assert weights["OUT07"]["sd1"][SD1_BLOCKS.index("OUT05")] == 1.0
    assert weights["OUT07"]["sd1"][SD1_BLOCKS.index("OUT04")] == 0.0
    assert weights["OUT12_5"]["sd1"][SD1_BLOCKS.index("M00")] == 0.5
    assert weights["RING08_5"]["sd1"][SD1_BLOCKS.index("IN06")] == 1.0
    assert weights["RING08_5"]["sd1"][SD1_BLOCKS.index("OUT06")] == 0.0


@pytest.mark.parametrize("sm_name", sorted(CURVES))
def test_curves_match_their_formula_on_both_grids(weights, sm_name):
    f = CURVES[sm_name]
    sd1, xl = weights[sm_name]["sd1"], weights[sm_name]["sdxl"]
    assert sd1[0] == 0.0 and xl[0] == 0.0
    for k in range(25):
        assert math.isclose(sd1[k + 1], f(k / 24), abs_tol=1e-9), (sm_name, "sd1", k)
    for k in range(19):
        assert math.isclose(xl[k + 1], f(k / 18), abs_tol=1e-9), (sm_name, "sdxl", k)


@pytest.mark.parametrize("sm_name", sorted(EDGE_ANCHORED | MID_ANCHORED))
def test_block_sets_keep_their_blocks(weights, sm_name):
    sd1 = dict(zip(SD1_BLOCKS, weights[sm_name]["sd1"]))
    xl = dict(zip(XL_BLOCKS, weights[sm_name]["sdxl"]))
    for b in XL_BLOCKS:
        if sm_name in EDGE_ANCHORED:
            src = f"OUT{int(b[3:]) + 3:02d}" if b.startswith("OUT") else b
        else:
            src = f"IN{int(b[2:]) + 3:02d}" if b.startswith("IN") else b
        assert xl[b] == sd1[src], (sm_name, b)


@pytest.mark.parametrize("name,count", [("WRAP08", 8), ("WRAP12", 12), ("WRAP14", 14), ("WRAP16", 16),
                                        ("OUT07", 7), ("RING08_5", 8), ("RING10_5", 10), ("RING10_3", 10)])
def test_sdxl_versions_keep_the_block_count_in_their_name(weights, name, count):
    assert sum(v == 1.0 for v in weights[name]["sd1"]) == count
    assert sum(v == 1.0 for v in weights[name]["sdxl"]) == count


def test_sdxl_versions_agree_with_model_mixer(weights):
    for sm_name, text in MODEL_MIXER_XL.items():
        theirs = [float(t) for t in text.split(",")]
        ours = weights[sm_name]["sdxl"]
        assert all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(ours, theirs)), sm_name


def test_the_checker_reads_every_string(lets):
    from mechalang.check.builtins import get_arch
    from mechalang.check.selectors import parse_mbw

    for name in NAMES.values():
        for arch, text in mbw_strings(lets[name]).items():
            rules, diags = parse_mbw(get_arch(arch), text, None)
            assert diags == [] and len(rules) == (26 if arch == "sd1" else 20), (name, arch)


def test_presets_file_is_formatted():
    text = PRESETS.read_text(encoding="utf-8")
    tree, _ = parse(text, "presets.mecha")
    assert print_module(tree) == text


def test_import_from_std_presets(small_models, tmp_path, capsys):
    from mechalang.commands.check import check_command

    recipe = tmp_path / "r.mecha"
    recipe.write_text(
        'from "std/presets" import GRAD_V, SMOOTHSTEP_DIV_2, CUBIC_HERMITE, ALL_B\n'
        'let a = model("a.safetensors")\nlet b = model("b.safetensors")\n'
        'let x = model("xl.safetensors")\nlet y = model("xl2.safetensors")\n'
        'export weighted_sum(a, b, alpha=GRAD_V) to "o1.safetensors"\n'
        'export weighted_sum(x, y, alpha=GRAD_V) to "o2.safetensors"\n'
        'export weighted_sum(a, b, alpha=CUBIC_HERMITE) to "o3.safetensors"\n'
        'export weighted_sum(x, y, alpha=SMOOTHSTEP_DIV_2 with {M00: 0.5}) to "o4.safetensors"\n'
        'export weighted_sum(x, y, alpha=ALL_B) to "o5.safetensors"\n'
        'let v = model("v2.safetensors")\n'
        'export weighted_sum(v, v, alpha=GRAD_V) to "o6.safetensors"\n')
    code = check_command(str(recipe), models_dir=str(small_models))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "6 exports" in out


def test_sd2_takes_sd1s_weights(tmp_path):
    """A preset applied to SD2 models merges each block with SD1's weight for it (GRAD_V: 1 at IN00,
    0 at M00, 0.5 at OUT05), computed here from the key names alone."""
    import torch
    from safetensors.torch import load_file

    from mechalang.synth import make_model

    from .cli_util import mecha

    make_model("sd2", tmp_path / "a.safetensors", dim_cap=4, dtype="float32", seed=1)
    make_model("sd2", tmp_path / "b.safetensors", dim_cap=4, dtype="float32", seed=2)
    (tmp_path / "r.mecha").write_text(
        'from "std/presets" import GRAD_V\n'
        'export weighted_sum(model("a.safetensors"), model("b.safetensors"), alpha=GRAD_V) to "o.safetensors"\n')
    r = mecha("run", "r.mecha", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    a, b, out = (load_file(str(tmp_path / f)) for f in ("a.safetensors", "b.safetensors", "o.safetensors"))
    alphas = {"model.diffusion_model.input_blocks.0.": 1.0, "model.diffusion_model.middle_block.": 0.0,
              "model.diffusion_model.output_blocks.5.": 0.5}
    for prefix, alpha in alphas.items():
        keys = [k for k in a if k.startswith(prefix)]
        assert keys, prefix
        for k in keys:
            torch.testing.assert_close(out[k], a[k] + alpha * (b[k] - a[k]), msg=k)


def test_forms_read_every_preset_for_each_arch(weights, lets):
    """The block-weight forms (web page, TUI) list every preset for sd1, sd2 and sdxl, with the
    file's numbers, aliases included."""
    from mechalang.commands.quick_form import preset_weights

    for arch in ("sd1", "sd2", "sdxl"):
        got = preset_weights(arch)
        assert set(got) == set(lets), arch
        for sm_name, name in NAMES.items():
            assert got[name] == weights[sm_name]["sd1" if arch == "sd2" else arch], (arch, name)
