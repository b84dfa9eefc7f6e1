"""sd-mecha's `version 0.1.0` recipes read as mechalang (`mechalang.compat.sdmecha`).

Golden cases: each `golden/sdmecha/NAME.mecha` is converted with `convert_command` from the
`golden/` folder; `NAME.out` holds the exit code, stdout (the mechalang text) and stderr (the
rendered diagnostics). `MECHA_UPDATE_GOLDEN=1 pytest tests/test_sdmecha.py` rewrites them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mechalang.commands.convert import convert_command
from mechalang.compat.sdmecha import is_sdmecha, read_sdmecha
from mechalang.compat.sdmecha.tables import ARCHES
from mechalang.diagnostics import Severity
from mechalang.syntax import ast
from mechalang.syntax.parser import parse
from mechalang.syntax.printer import print_module

from .conftest import GOLDEN
from .golden_util import assert_matches_golden

CASES = sorted((GOLDEN / "sdmecha").glob("*.mecha"))


def convert(src: str, file: str = "recipe.mecha") -> tuple[str | None, list]:
    module, diags = read_sdmecha(textwrap.dedent(src).lstrip("\n"), file)
    return (print_module(module) if module is not None else None), diags


def ok(src: str, file: str = "recipe.mecha") -> str:
    out, diags = convert(src, file)
    assert out is not None, [d.message for d in diags]
    assert not [d for d in diags if d.is_error]
    return out


def errors(src: str) -> list:
    out, diags = convert(src)
    assert out is None
    return [d for d in diags if d.is_error]


def codes(diags) -> list[str]:
    return [d.code for d in diags]


# ------------------------------------------------------------------------------------------------
# Conversions


def test_weighted_sum_of_two_models():
    out = ok('''
        version 0.1.0
        model "ghostmix_v20Bakedvae.safetensors" model_config="sd1-ldm" merge_space="weight"
        model "dreamshaper_8.safetensors" model_config="sd1-ldm" merge_space="weight"
        merge "weighted_sum" &0 &1 alpha=0.5
    ''', "ghost_dream.mecha")
    assert out == textwrap.dedent('''\
        param out: str = "ghost_dream_merged.safetensors"
        let ghostmix_v20Bakedvae = model("ghostmix_v20Bakedvae.safetensors", arch=sd1)
        let dreamshaper_8 = model("dreamshaper_8.safetensors", arch=sd1)
        export weighted_sum(ghostmix_v20Bakedvae, dreamshaper_8, alpha=0.5) to out
    ''')


def test_positional_hyperparameter_and_literal_line_become_a_keyword():
    # sd-mecha writes every positional parameter, alpha included, often through a literal line
    out = ok('''
        version 0.1.0
        model "a.safetensors" model_config="sd1-ldm" merge_space="weight"
        model "b.safetensors" model_config="sd1-ldm" merge_space="weight"
        literal 0.3 model_config="sd1-ldm" merge_space="param"
        merge "weighted_sum" &0 &1 &2
        merge "geometric_sum" &3 &1 0.25
    ''')
    assert "let weighted_sum_1 = weighted_sum(a, b, alpha=0.3)\n" in out
    assert out.endswith("export geometric_sum(weighted_sum_1, b, alpha=0.25) to out\n")
    assert "literal" not in out and "0.3 " not in out.split("let")[0]


def test_add_difference_with_a_subtraction_used_once_is_fused():
    out = ok('''
        version 0.1.0
        model "base.safetensors" model_config="sd1-ldm" merge_space="weight"
        model "tuned.safetensors" model_config="sd1-ldm" merge_space="weight"
        model "inpainting.safetensors" model_config="sd1-ldm" merge_space="weight"
        merge "subtract" &2 &0
        merge "add_difference" &1 &3 alpha=1.0
        merge "fallback" &4 &1
    ''')
    assert out == textwrap.dedent('''\
        param out: str = "recipe_merged.safetensors"
        let base = model("base.safetensors", arch=sd1)
        let tuned = model("tuned.safetensors", arch=sd1)
        let inpainting = model("inpainting.safetensors", arch=sd1)
        let add_difference_1 = add_difference(tuned, inpainting, base, alpha=1.0)
        export add_difference_1 | tuned to out
    ''')


def test_add_difference_of_a_shared_delta_is_task_arithmetic():
    out = ok('''
        version 0.1.0
        model "a.safetensors"
        model "b.safetensors"
        model "c.safetensors"
        merge "subtract" &1 &2
        merge "add_difference" &0 &3 alpha=0.5
        merge "add_difference" &4 &3 -0.25
        merge "add_difference" &5 &3
    ''')
    assert "let subtract_1 = b - c\n" in out
    assert "let add_difference_1 = a + 0.5 * subtract_1\n" in out
    assert "let add_difference_2 = add_difference_1 - 0.25 * subtract_1\n" in out
    assert out.endswith("export add_difference_2 + subtract_1 to out\n")


def test_ties_over_several_models():
    out = ok('''
        version 0.1.0
        model "base.safetensors" model_config="sd1-ldm" merge_space="weight"
        model "anime.safetensors" model_config="sd1-ldm" merge_space="weight"
        model "photo.safetensors" model_config="sd1-ldm" merge_space="weight"
        model "paint.safetensors" model_config="sd1-ldm" merge_space="weight"
        merge "subtract" &1 &0
        merge "subtract" &2 &0
        merge "subtract" &3 &0
        merge "ties_sum" &4 &5 &6 k=1.0 vote_sgn=true
        merge "add_difference" &0 &7 alpha=1.0
    ''')
    assert out == textwrap.dedent('''\
        param out: str = "recipe_merged.safetensors"
        let base = model("base.safetensors", arch=sd1)
        let anime = model("anime.safetensors", arch=sd1)
        let photo = model("photo.safetensors", arch=sd1)
        let paint = model("paint.safetensors", arch=sd1)
        let subtract_1 = anime - base
        let subtract_2 = photo - base
        let subtract_3 = paint - base
        let ties_1 = ties(subtract_1, subtract_2, subtract_3, density=1.0, consensus="sum")
        export base + ties_1 to out
    ''')


def test_ties_sum_vote_sgn_true_is_the_sum_vote():
    out = ok('''
        version 0.1.0
        model "a.safetensors"
        model "b.safetensors"
        merge "subtract" &0 &1
        merge "ties_sum" &2 &2 vote_sgn=true
    ''')
    # sd-mecha 1.x: vote_sgn=true elects sgn Σ δ ("sum"), false counts signs; k defaults to 1.0
    assert out.endswith('export ties(subtract_1, subtract_1, consensus="sum", density=1.0) to out\n')


def test_ties_sum_trimming_other_than_k_1_is_refused():
    (d,) = errors('''
        version 0.1.0
        model "a.safetensors"
        model "b.safetensors"
        merge "subtract" &0 &1
        merge "ties_sum" &2 &2 k=0.2 vote_sgn=true
    ''')
    assert (d.code, d.message) == ("E0930", "sd-mecha's `ties_sum` with k=0.2 has no exact mechalang equivalent")
    assert (d.span.line, d.span.col) == (5, 24)
    (d,) = errors('''
        version 0.1.0
        model "a.safetensors"
        merge "subtract" &0 &0
        merge "ties_sum" &1 &1
    ''')  # sd-mecha's default vote_sgn=false, the sign count, splits evenly differently
    assert d.message == "sd-mecha's `ties_sum` with vote_sgn=false has no exact mechalang equivalent"


def test_renamed_keywords_and_defaults_mechalang_has_built_in():
    out = ok('''
        version 0.1.0
        model "a.safetensors"
        model "b.safetensors"
        merge "rotate" &0 &1 1.0 0.5 1.0 1e-08 100
        merge "rotate" &0 &1 0.5 0.0 0.9
        merge "geometric_median" &2 &3 &0 eps=1e-06 maxiter=100
    ''')
    assert "let rotate_1 = rotate(a, b, alpha=1.0, beta=0.5)\n" in out
    assert "let rotate_2 = rotate(a, b, alpha=0.5, beta=0.0, centralization=0.9)\n" in out
    assert out.endswith(
        "export geometric_median(rotate_1, rotate_2, a, eps=1e-6, max_iter=100, ftol=1e-20) to out\n")


def test_supermerger_block_dict_becomes_a_block_map():
    out = ok('''
        version 0.1.0
        model "a.safetensors" model_config="sdxl-sgm" merge_space="weight"
        model "b.safetensors" model_config="sdxl-sgm" merge_space="weight"
        dict BASE=0 IN00=0.3 M00=0.5 OUT08=0.7 VAE=0 model.diffusion_model.out.2.weight=1
        literal &2 model_config="sdxl-supermerger_blocks" merge_space="param"
        merge "convert_sdxl_blocks_to_sgm" &3
        merge "weighted_sum" &0 &1 alpha=&4
    ''')
    assert out == textwrap.dedent('''\
        param out: str = "recipe_merged.safetensors"
        let a = model("a.safetensors", arch=sdxl)
        let b = model("b.safetensors", arch=sdxl)
        let alpha_1 = {
            BASE: 0,
            IN00: 0.3,
            M00: 0.5,
            OUT08: 0.7,
            vae: 0,
            key("model.diffusion_model.time_embed.*"): 0,
            key("model.diffusion_model.label_emb.*"): 0,
            key("model.diffusion_model.out.2.weight"): 1,
        }
        export weighted_sum(a, b, alpha=alpha_1) to out
    ''')


def test_old_style_hyper_keys_map_to_components_blocks_and_layers():
    out, diags = convert('''
        version 0.1.0
        model "a.safetensors" model_config="sd1-ldm-base" merge_space="weight"
        model "b.safetensors" model_config="sd1-ldm-base" merge_space="weight"
        dict sd1-ldm-base_unet_block_in3=0.2 sd1-ldm-base_unet_block_mid=0 sd1-ldm-base_unet_block_out11=1 sd1-ldm-base_unet_default=0.5 sd1-ldm-base_txt_block_in2=1 sd1-ldm-base_txt_default=0 foo_bar_block_x=0.1
        merge "weighted_sum" &0 &1 alpha=&2
    ''')
    assert ("let alpha_1 = {\n    diffuser: 0.5,\n    clip_l: 0,\n    IN03: 0.2,\n    M00: 0,\n"
            "    OUT11: 1,\n"
            '    key("cond_stage_model.transformer.text_model.encoder.layers.2.*"): 1,\n'
            '    key("foo_bar_block_x"): 0.1,\n}\n') in out
    assert [(d.code, d.severity) for d in diags] == [("W0925", Severity.WARNING)]
    assert diags[0].span.line == 4


def test_dict_used_twice_is_one_let_named_after_its_first_use():
    out = ok('''
        version 0.1.0
        model "a.safetensors"
        model "b.safetensors"
        dict IN00=0.1 OUT11=0.9
        merge "weighted_sum" &0 &1 alpha=&2
        merge "geometric_sum" &0 &3 &2
    ''')
    assert out.count("{IN00: 0.1, OUT11: 0.9}") == 1
    assert "let alpha_1 = {IN00: 0.1, OUT11: 0.9}\n" in out
    assert out.endswith("export geometric_sum(a, weighted_sum_1, alpha=alpha_1) to out\n")


def test_model_names_are_sanitized_deduplicated_and_avoid_reserved_words():
    out = ok(r'''
        version 0.1.0
        model "E:\\sd\\models\\ghost mix [v2].safetensors"
        model "other/ghost-mix-v2.ckpt"
        model "1girl.safetensors"
        model "weighted_sum.safetensors"
        model "let.safetensors"
        model "out.safetensors"
        model "__.safetensors"
        merge "n_average" &0 &1 &2 &3 &4 &5 &6
    ''')
    assert 'let ghost_mix_v2 = model("E:\\\\sd\\\\models\\\\ghost mix [v2].safetensors")\n' in out
    assert 'let ghost_mix_v2_2 = model("other/ghost-mix-v2.ckpt")\n' in out
    assert 'let m_1girl = model("1girl.safetensors")\n' in out
    assert 'let weighted_sum_model = model("weighted_sum.safetensors")\n' in out
    assert 'let let_model = model("let.safetensors")\n' in out
    assert 'let out_model = model("out.safetensors")\n' in out
    assert 'let model_model = model("__.safetensors")\n' in out


def test_merge_names_count_per_method_and_skip_taken_names():
    out = ok('''
        version 0.1.0
        model "weighted_sum_1.safetensors"
        model "b.safetensors"
        merge "weighted_sum" &0 &1 alpha=0.1
        merge "weighted_sum" &2 &1 alpha=0.2
        merge "weighted_sum" &3 &0 alpha=0.3
    ''')
    assert "let weighted_sum_1_model = model(" not in out  # not reserved: the stem is free
    assert 'let weighted_sum_1 = model("weighted_sum_1.safetensors")\n' in out
    assert "let weighted_sum_2 = weighted_sum(weighted_sum_1, b, alpha=0.1)\n" in out
    assert "let weighted_sum_3 = weighted_sum(weighted_sum_2, b, alpha=0.2)\n" in out


def test_architectures_are_mapped_and_unknown_configs_are_left_to_detection():
    out, diags = convert('''
        version 0.1.0
        model "a.safetensors" model_config="sd3-comfyui" merge_space="weight"
        model "b.safetensors" model_config="flux-flux" merge_space="weight"
        model "c.safetensors" model_config="sd1-diffusers" merge_space="weight"
        model "d.safetensors" model_config=null merge_space=null
        merge "n_average" &0 &1 &2 &3
    ''')
    assert 'let a = model("a.safetensors", arch=sd3)\n' in out
    assert 'let b = model("b.safetensors", arch=flux)\n' in out
    assert 'let c = model("c.safetensors")\n' in out
    assert 'let d = model("d.safetensors")\n' in out
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("W0920", 4, 36)]


def test_every_arch_target_is_a_known_architecture():
    from mechalang.check.builtins import get_arch

    for config, arch in ARCHES.items():
        assert get_arch(arch) is not None, (config, arch)


def test_numbers_strings_and_booleans():
    out = ok('''
        version 0.1.0
        model "a.safetensors"
        model "b.safetensors"
        merge "m" &0 &1 x=1. y=.5 z=1E-03 w=-2 v=+3 u=inf t=-inf s=nan r="s \\"q\\"" q=true p=false o=null n=007
    ''')
    flat = " ".join(out.split()).replace("( ", "(").replace(", )", ")")
    assert flat.endswith('export m(a, b, x=1.0, y=0.5, z=1e-3, w=-2, v=3, u=inf, t=-inf, s=nan, '
                         'r="s \\"q\\"", q=true, p=false, n=7) to out')


def test_comments_blank_lines_and_no_trailing_newline_are_accepted():
    src = ('# saved by sd-mecha\n\nversion 0.1.0  # header\n\nmodel "a.safetensors"  # first\n'
           '# a comment line\nmodel "b.safetensors"\n\n\nmerge "weighted_sum" &0 &1 alpha=0.5 # end')
    module, diags = read_sdmecha(src, "x.mecha")
    assert diags == []
    out = print_module(module)
    assert out == ('# saved by sd-mecha\n\nparam out: str = "x_merged.safetensors"  # header\n\n'
                   'let a = model("a.safetensors")  # first\n# a comment line\n'
                   'let b = model("b.safetensors")\n\n'
                   'export weighted_sum(a, b, alpha=0.5) to out  # end\n')


def test_crlf_line_ends_and_a_bom():
    src = '\ufeffversion 0.1.0\r\nmodel "a.safetensors"\r\nmodel "b.safetensors"\r\nmerge "weighted_sum" &0 &1\r\n'
    assert is_sdmecha(src)
    out, diags = convert(src)
    assert diags == [] and out.endswith("export weighted_sum(a, b) to out\n")


def test_unused_lines_are_kept_with_a_warning():
    out, diags = convert('''
        version 0.1.0
        model "a.safetensors"
        model "b.safetensors"
        model "c.safetensors"
        merge "weighted_sum" &0 &1
    ''')
    assert 'let c = model("c.safetensors")\n' in out
    assert [(d.code, d.span.line) for d in diags] == [("W0924", 4)]


def test_unknown_method_keeps_its_name_and_warns_about_positional_hyperparameters():
    out, diags = convert('''
        version 0.1.0
        model "a.safetensors"
        model "b.safetensors"
        merge "my_crossover" &0 &1 0.5 tilt=0.2
    ''')
    assert out.endswith("export my_crossover(a, b, 0.5, tilt=0.2) to out\n")
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("W0922", 4, 28)]


def test_null_keywords_are_left_out():
    out = ok('''
        version 0.1.0
        model "a.safetensors"
        model "b.safetensors"
        merge "subtract" &0 &1
        merge "my_dropout" &2 &2 probability=0.9 seed=null
        merge "add_difference" &0 &3 alpha=0.5
    ''')
    assert "my_dropout(subtract_1, subtract_1, probability=0.9)" in out
    assert "null" not in out and "seed" not in out


def test_conversion_of_a_model_is_dropped_with_a_warning():
    out, diags = convert('''
        version 0.1.0
        model "base.safetensors" model_config="sd1-ldm" merge_space="weight"
        model "kohya.safetensors" model_config="sd-weird" merge_space="delta"
        merge "convert_'sd-weird'_to_'sd1-ldm'" &1
        merge "add_difference" &0 &2 alpha=0.8
    ''')
    assert out.endswith("export base + 0.8 * kohya to out\n")
    assert codes(diags) == ["W0920", "W0923", "W0921"]


def test_a_lora_config_is_read_with_lora_and_its_conversions_are_silent():
    out, diags = convert('''
        version 0.1.0
        model "base.safetensors" model_config="sd1-ldm" merge_space="weight"
        model "style.safetensors" model_config="sd1-kohya_kohya_lora" merge_space="weight"
        merge "convert_'sd1-kohya_kohya_lora'_to_base" &1
        merge "convert_'sd1-kohya'_to_'sd1-ldm'" &2
        merge "add_difference" &0 &3 alpha=0.8
    ''')
    assert 'let style = lora("style.safetensors", arch=sd1)\n' in out
    assert out.endswith("export base + 0.8 * style to out\n")
    assert diags == []


def test_last_line_that_is_only_a_conversion_exports_what_it_converts():
    out = ok('''
        version 0.1.0
        model "a.safetensors"
        model "b.safetensors"
        merge "weighted_sum" &0 &1
        merge "convert_sd1_ldm_to_kohya" &2
    ''')
    assert out.endswith("export weighted_sum(a, b) to out\n")


def test_last_line_used_before_gets_a_name():
    out = ok('''
        version 0.1.0
        model "a.safetensors"
        model "b.safetensors"
        merge "weighted_sum" &0 &1
        merge "weighted_sum" &2 &1
        merge "convert_x_to_y" &2
    ''')
    assert "let weighted_sum_1 = weighted_sum(a, b)\n" in out
    assert out.endswith("export weighted_sum_1 to out\n")


def test_default_output_name():
    assert ok('version 0.1.0\nmodel "a.safetensors"\n', "dir/My Recipe.mecha").startswith(
        'param out: str = "My Recipe_merged.safetensors"\n')
    assert ok('version 0.1.0\nmodel "a.safetensors"\n', "<stdin>").startswith(
        'param out: str = "merged.safetensors"\n')


# ------------------------------------------------------------------------------------------------
# Round trips: the converted text parses back to the same tree, and is `mecha fmt`'s fixed point


ROUND_TRIP_CASES = [c for c in CASES if not c.stem.startswith(("bad_", "no_", "empty", "last_", "unsupported"))]


@pytest.mark.parametrize("case", ROUND_TRIP_CASES, ids=[c.stem for c in ROUND_TRIP_CASES])
def test_converted_text_round_trips(case: Path):
    module, diags = read_sdmecha(case.read_text(), str(case))
    assert module is not None and not any(d.is_error for d in diags)
    out = print_module(module)
    tree, pdiags = parse(out, "converted.mecha")
    assert pdiags == [] and tree is not None
    assert tree == module
    assert print_module(tree) == out


def test_there_are_round_trip_cases():
    assert len(ROUND_TRIP_CASES) >= 6


def test_converted_tree_points_into_the_sd_mecha_file():
    src = 'version 0.1.0\nmodel "a.safetensors"\nmodel "b.safetensors"\nmerge "weighted_sum" &0 &1 alpha=0.5\n'
    module, _ = read_sdmecha(src, "r.mecha")
    let_b = module.statements[2]
    assert isinstance(let_b, ast.Let) and let_b.span.line == 3 and let_b.span.file == "r.mecha"
    export = module.statements[-1]
    call = export.value
    assert isinstance(call, ast.Call)
    # `b` in the call is the `&1` token of line 4
    assert (call.args[1].span.line, call.args[1].span.col, call.args[1].span.end_col) == (4, 25, 27)
    assert (call.kwargs[0].span.col, call.kwargs[0].span.end_col) == (28, 37)


# ------------------------------------------------------------------------------------------------
# Errors


def test_wrong_version():
    (d,) = errors('version 0.2.0\nmodel "a.safetensors"\n')
    assert (d.code, d.span.line, d.span.col, d.span.end_col) == ("E0902", 1, 9, 14)
    assert "0.2.0" in d.message


def test_malformed_version_header():
    (d,) = errors('version\nmodel "a.safetensors"\n')
    assert d.code == "E0902"


def test_missing_version():
    # 1.x lines without their header: a recipe that lost its first line
    (d,) = errors('model "a.safetensors" model_config="sd1-ldm"\nmerge "weighted_sum" &0 &0\n')
    assert (d.code, d.span.line, d.span.col) == ("E0901", 1, 1)


def test_headerless_pre_1_0_recipes_are_read():
    out = ok('model "a.safetensors"\nmerge "weighted_sum" &0 &0\n')
    assert out.endswith("export weighted_sum(a, a) to out\n")


def test_empty_input_and_header_only():
    assert codes(errors("")) == ["E0901"]
    assert codes(errors("\n\n# nothing\n")) == ["E0901"]
    assert codes(errors("version 0.1.0\n\n")) == ["E0911"]


def test_second_version_line():
    (d,) = errors('version 0.1.0\nmodel "a.safetensors"\nversion 0.1.0\n')
    assert (d.code, d.span.line) == ("E0912", 3)


def test_unknown_line_kind_with_suggestion():
    (d,) = errors('version 0.1.0\nmodle "a.safetensors"\n')
    assert (d.code, d.span.line, d.span.col, d.span.end_col) == ("E0904", 2, 1, 6)
    assert d.help == "did you mean `model`?"
    (d,) = errors('version 0.1.0\n"a.safetensors"\n')
    assert d.code == "E0904"


def test_reference_to_a_later_line():
    (d,) = errors('version 0.1.0\nmodel "a"\nmerge "weighted_sum" &0 &2\nmodel "b"\n')
    assert (d.code, d.span.line, d.span.col, d.span.end_col) == ("E0905", 3, 25, 27)
    assert d.secondary[0].span.line == 4


def test_reference_to_its_own_line():
    (d,) = errors('version 0.1.0\nmodel "a"\nmerge "weighted_sum" &0 &1\n')
    assert (d.code, d.span.col) == ("E0905", 25)


def test_reference_out_of_range():
    (d,) = errors('version 0.1.0\nmodel "a"\nmerge "weighted_sum" &0 &7\n')
    assert (d.code, d.span.line, d.span.col) == ("E0906", 3, 25)
    assert "2 instructions (&0 to &1)" in d.help


def test_references_count_instructions_not_text_lines():
    # comments and blank lines take no index, as in sd-mecha
    out = ok('version 0.1.0\n# c\n\nmodel "a"\n\n# c\nmodel "b"\nmerge "weighted_sum" &0 &1\n')
    assert out.endswith("export weighted_sum(a, b) to out\n")


def test_bad_references():
    assert codes(errors('version 0.1.0\nmodel "a"\nmerge "w" &0 &x\n')) == ["E0907"]
    assert codes(errors('version 0.1.0\nmodel "a"\nmerge "w" &0 &-1\n')) == ["E0907"]


def test_unterminated_string():
    (d,) = errors('version 0.1.0\nmodel "a.safetensors\n')
    assert (d.code, d.span.line, d.span.col, d.span.end_col) == ("E0903", 2, 7, 21)


def test_stray_quote():
    (d,) = errors('version 0.1.0\nmodel "a" model_config=sd1"-ldm"\n')
    assert (d.code, d.span.col) == ("E0913", 27)
    (d,) = errors('version 0.1.0\nmodel "a.safetensors model_config="sd1-ldm"\n')
    assert d.code == "E0913" and "closing quote" in d.help


def test_unquoted_path_and_method():
    (d,) = errors('version 0.1.0\nmodel a.safetensors\n')
    assert (d.code, d.span.col, d.span.end_col) == ("E0908", 7, 20)
    (d,) = errors('version 0.1.0\nmodel "a"\nmerge weighted_sum &0 &0\n')
    assert (d.code, d.span.line) == ("E0908", 3) and 'merge "weighted_sum"' in d.help


def test_line_shapes():
    assert codes(errors('version 0.1.0\nmodel\n')) == ["E0908"]
    assert codes(errors('version 0.1.0\nmodel 1.5\n')) == ["E0908"]
    assert codes(errors('version 0.1.0\nmodel "a" "sd1-ldm" "weight" "x"\n')) == ["E0908"]
    assert codes(errors('version 0.1.0\nmodel "a"\nmerge &0 &0\n')) == ["E0908"]
    assert codes(errors('version 0.1.0\nmodel "a"\nmerge "not a name" &0\n')) == ["E0908"]
    assert codes(errors('version 0.1.0\nmodel "a"\ndict 0.5\nmerge "w" &0 alpha=&1\n')) == ["E0908"]
    assert codes(errors('version 0.1.0\nliteral\nmodel "a"\n')) == ["E0908"]
    assert codes(errors('version 0.1.0\nmodel "a" model_config=1\n')) == ["E0917"]


def test_unknown_and_repeated_keywords():
    assert codes(errors('version 0.1.0\nmodel "a" model_type="sd1-ldm"\n')) == ["E0909"]
    assert codes(errors('version 0.1.0\nmodel "a" "sd1-ldm" model_config="sd1-ldm"\n')) == ["E0910"]
    assert codes(errors('version 0.1.0\nmodel "a"\nmerge "w" &0 &0 alpha=1 alpha=2\n')) == ["E0910"]
    assert codes(errors('version 0.1.0\nmodel "a"\ndict IN00=1 IN00=2\nmerge "w" &0 x=&1\n')) == ["E0910"]
    (d,) = errors('version 0.1.0\nmodel "a"\nmerge "weighted_sum" &0 &0 0.5 alpha=0.3\n')
    assert d.code == "E0910" and d.span.col == 32 and d.secondary[0].span.col == 28


def test_a_renamed_keyword_that_collides():
    (d,) = errors('version 0.1.0\nmodel "a"\nmerge "rotate" &0 &0 alpha=0.5 beta=1\n')
    assert (d.code, d.span.line, d.span.col) == ("E0910", 3, 22)
    assert d.label == "sd-mecha's `alpha` is `beta` in mechalang's `rotate`"


def test_keywords_without_names_or_values():
    assert codes(errors('version 0.1.0\nmodel "a" =1\n')) == ["E0907"]
    assert codes(errors('version 0.1.0\nmodel "a" model_config=\n')) == ["E0907"]
    assert codes(errors('version 0.1.0\nmodel "a" model_config=sd1\n')) == ["E0907"]


def test_null_where_a_value_is_needed():
    assert codes(errors('version 0.1.0\nliteral null\nmodel "a"\n')) == ["E0914"]
    assert codes(errors('version 0.1.0\nmodel "a"\nmerge "w" &0 null\n')) == ["E0914"]
    assert codes(errors('version 0.1.0\nmodel "a"\ndict IN00=null\nmerge "w" &0 x=&1\n')) == ["E0914"]


def test_last_line_must_be_a_model_or_merge():
    assert codes(errors('version 0.1.0\nmodel "a"\ndict IN00=0.5\n')) == ["E0915"]
    assert codes(errors('version 0.1.0\nmodel "a"\nliteral 0.5\n')) == ["E0915"]


def test_too_many_arguments_for_a_known_method():
    (d,) = errors('version 0.1.0\nmodel "a"\nmerge "weighted_sum" &0 &0 0.5 0.1\n')
    assert (d.code, d.span.col) == ("E0916", 32)


def test_dict_value_that_is_not_a_plain_value():
    (d,) = errors('version 0.1.0\nmodel "a"\ndict IN00=&0\nmerge "weighted_sum" &0 &0 alpha=&1\n')
    assert (d.code, d.span.line, d.span.col) == ("E0918", 3, 11)


def test_every_error_is_reported_not_just_the_first():
    ds = errors('version 0.1.0\nmodle "a"\nmodel "b\nmodel "c"\nmerge "w" &0 &9\n')
    assert codes(ds) == ["E0904", "E0903", "E0906"]
    assert [d.span.line for d in ds] == [2, 3, 5]


@pytest.mark.parametrize("src", [
    "version 0.1.0\n\\", "version 0.1.0\nmodel \"\\", "version 0.1.0\n&", "version 0.1.0\nmerge \"\" &0",
    "version 0.1.0\n=", "version 0.1.0\nmodel \"a\" a=\"b", "\x00\x01", "version 0.1.0\nmodel \"a\"\n" * 3,
    "version 0.1.0\ndict a=1\nliteral &0\nmerge \"convert_x\" &1\n",
])
def test_bad_input_never_raises(src):
    module, diags = read_sdmecha(src, "f.mecha")
    assert module is not None or any(d.is_error for d in diags)
    for d in diags:
        assert d.code.startswith(("E09", "W09")) and d.span is not None


# ------------------------------------------------------------------------------------------------
# Detection and the command


@pytest.mark.parametrize("text,expected", [
    ("version 0.1.0\nmodel \"a\"\n", True),
    ("\n  \n# comment\nversion 0.1.0  # x\n", True),
    ("\ufeffversion 0.1.0\r\n", True),
    ("version 0.2.0\n", True),  # an sd-mecha file of another version: the reader says which
    ("let a = model(\"a.safetensors\")\n", False),
    ("# version 0.1.0\nlet a = 1\n", False),
    ("version\n", False),
    ("versions 0.1.0\n", False),
    ("", False),
])
def test_is_sdmecha(text, expected):
    assert is_sdmecha(text) is expected


def test_convert_command_prints_mechalang(tmp_path, capsys):
    f = tmp_path / "r.mecha"
    f.write_text('version 0.1.0\nmodel "a.safetensors"\nmodel "b.safetensors"\nmerge "weighted_sum" &0 &1 alpha=0.5\n')
    assert convert_command(str(f)) == 0
    out, err = capsys.readouterr()
    assert out == ('param out: str = "r_merged.safetensors"\nlet a = model("a.safetensors")\n'
                   'let b = model("b.safetensors")\nexport weighted_sum(a, b, alpha=0.5) to out\n')
    assert err == ""


def test_convert_command_reports_errors(tmp_path, capsys):
    f = tmp_path / "r.mecha"
    f.write_text('version 0.1.0\nmodel "a.safetensors"\nmerge "weighted_sum" &0 &3\n')
    assert convert_command(str(f)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error[E0906]: `&3` is out of range\n")
    assert "3 | merge \"weighted_sum\" &0 &3" in err


def test_convert_command_missing_file(tmp_path, capsys):
    assert convert_command(str(tmp_path / "nope.mecha")) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error[")


def test_mecha_convert_cli(tmp_path):
    from typer.testing import CliRunner

    from mechalang.cli import app

    f = tmp_path / "r.mecha"
    f.write_text('version 0.1.0\nmodel "a.safetensors"\nmodel "b.safetensors"\nmerge "weighted_sum" &0 &1\n')
    res = CliRunner().invoke(app, ["convert", str(f)])
    assert res.exit_code == 0
    assert res.stdout.endswith("export weighted_sum(a, b) to out\n")


def test_mecha_check_accepts_an_sd_mecha_recipe(small_models, tmp_path, capsys):
    from mechalang.commands.check import check_command

    f = tmp_path / "r.mecha"
    f.write_text('version 0.1.0\n'
                 'model "a.safetensors" model_config="sd1-ldm" merge_space="weight"\n'
                 'model "b.safetensors" model_config="sd1-ldm" merge_space="weight"\n'
                 'model "c.safetensors" model_config="sd1-ldm" merge_space="weight"\n'
                 'merge "subtract" &1 &2\n'
                 'merge "add_difference" &0 &3 alpha=0.5\n'
                 'merge "fallback" &4 &0\n'
                 'dict BASE=0 IN00=0.3 M00=0.5 OUT11=0.7\n'
                 'literal &6 model_config="sd1-supermerger_blocks" merge_space="param"\n'
                 'merge "convert_sd1_blocks_to_ldm" &7\n'
                 'merge "weighted_sum" &5 &1 &8\n')
    code = check_command(str(f), models_dir=str(small_models))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "1 export, 3 models (sd1)" in out


# ------------------------------------------------------------------------------------------------
# Golden files


def run_convert(case: Path, capsys, monkeypatch) -> str:
    monkeypatch.chdir(GOLDEN)
    code = convert_command(f"sdmecha/{case.name}")
    out, err = capsys.readouterr()
    return f"exit {code}\n--- stdout\n{out}--- stderr\n{err}"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden(case: Path, capsys, monkeypatch):
    assert_matches_golden(run_convert(case, capsys, monkeypatch), case.with_suffix(".out"))


def test_there_are_enough_goldens():
    good = [c for c in CASES if c.with_suffix(".out").exists()
            and c.with_suffix(".out").read_text().startswith("exit 0")]
    bad = [c for c in CASES if c.with_suffix(".out").exists()
           and c.with_suffix(".out").read_text().startswith("exit 1")]
    assert len(good) >= 6 and len(bad) >= 6


def test_dict_values_may_name_literal_lines():
    out = ok('''
        version 0.1.0
        model "a.safetensors"
        model "b.safetensors"
        literal 0.25
        dict IN00=&2 OUT11=0.75
        merge "weighted_sum" &0 &1 alpha=&3
    ''')
    assert "let alpha_1 = {IN00: 0.25, OUT11: 0.75}\n" in out


_FUZZ_TOKENS = ["\nmodel", "\nmerge", "\ndict", "\nliteral", "\n", "\n#", "version", '"a.safetensors"',
                '"weighted_sum"', '"subtract"', '"add_difference"', '"fallback"', '"ties_sum"',
                '"convert_x"', "&0", "&1", "&2", "&3", "&9", "0.5", "-1e-3", "null", "true",
                "alpha=0.5", "alpha=&2", "k=0.2", "vote_sgn=false", "IN00=0.3", "VAE=1",
                'model_config="sd1-ldm"', 'merge_space="delta"', '"', "\\", "=", "&", "x"]


def test_fuzzed_input_never_raises():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from(_FUZZ_TOKENS), max_size=40))
    def run(parts):
        module, diags = read_sdmecha("version 0.1.0\n" + " ".join(parts), "f.mecha")
        assert module is not None or any(d.is_error for d in diags)

    run()


def test_generated_recipes_convert_and_round_trip():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    values = st.sampled_from(["0.5", "1", "-0.25", "1e-05", "true", "false", '"s"'])
    methods = st.sampled_from(["weighted_sum", "geometric_sum", "subtract", "add_difference", "fallback",
                               "my_sum", "rotate", "n_average", "geometric_median", "my_method"])
    keys = st.sampled_from(["alpha", "vote_sgn", "gamma", "maxiter", "seed"])
    blocks = st.sampled_from(["BASE", "IN00", "M00", "OUT11", "VAE", "model.diffusion_model.out.0.bias",
                              "sd1-ldm_unet_block_in3", "sd1-ldm_unet_default", "sd1-ldm_txt_block_in1"])

    @st.composite
    def recipe(draw):
        lines = []
        kinds = []
        for i in range(draw(st.integers(1, 10))):
            refs_to = lambda want: [j for j, k in enumerate(kinds) if k in want]  # noqa: E731
            models = refs_to({"model", "merge"})
            maps = refs_to({"dict"})
            kind = draw(st.sampled_from(["model", "merge", "dict", "literal"] if models else ["model"]))
            if kind == "model":
                cfg = draw(st.sampled_from(["", ' model_config="sd1-ldm"', ' model_config="sdxl-sgm"',
                                            ' model_config="weird" merge_space="weight"']))
                lines.append(f'model "{draw(st.sampled_from(["a", "b/c.ckpt", "let", "1x"]))}.safetensors"{cfg}')
            elif kind == "dict":
                entries = draw(st.dictionaries(blocks, values, min_size=1, max_size=4))
                lines.append("dict " + " ".join(f"{k}={v}" for k, v in entries.items()))
            elif kind == "literal":
                target = draw(st.sampled_from([f"&{j}" for j in maps] or ["0.5"]))
                lines.append(f'literal {target} model_config="sd1-supermerger_blocks"')
            else:
                method = draw(methods)
                n = 2 if method in ("weighted_sum", "geometric_sum", "subtract", "add_difference", "fallback",
                                    "rotate") else draw(st.integers(1, 3))
                args = [f"&{draw(st.sampled_from(models))}" for _ in range(n)]
                kw = draw(st.dictionaries(keys, values | st.sampled_from([f"&{j}" for j in maps] or ["0"]),
                                          max_size=2))
                lines.append(f'merge "{method}" ' + " ".join(args + [f"{k}={v}" for k, v in kw.items()]))
            kinds.append(kind if kind != "literal" else ("dict" if lines[-1].split()[1].startswith("&") else "lit"))
        if kinds[-1] not in ("model", "merge"):
            lines.append(f'merge "weighted_sum" &{refs_to({"model", "merge"})[0]} &0')
        return "version 0.1.0\n" + "\n".join(lines) + "\n"

    @settings(max_examples=200, deadline=None)
    @given(recipe())
    def run(text):
        module, diags = read_sdmecha(text, "gen.mecha")
        assert module is not None, [d.message for d in diags]
        out = print_module(module)
        tree, pdiags = parse(out, "out.mecha")
        assert pdiags == [] and tree == module
        assert print_module(tree) == out

    run()


def test_model_and_merge_lines_need_a_quoted_first_argument():
    (d,) = errors('version 0.1.0\nmodel\n')
    assert d.message == "a `model` line needs a path in quotes" and d.label == "expected a path"
    assert d.help == 'write `model "path/to/model.safetensors"`'
    (d,) = errors('version 0.1.0\nmodel "a.safetensors"\nmerge &0\n')
    assert d.message == "a `merge` line needs a method name in quotes" and d.label == "not a string"
    assert d.help == 'write `merge "weighted_sum" &0 &1 alpha=0.5`'


# ------------------------------------------------------------------------------------------------
# `mecha fmt` on an sd-mecha file: a pointer to `mecha convert`, not syntax errors (golden)

FMT_CASES = sorted((GOLDEN / "sdmecha_fmt").glob("*.mecha"))


@pytest.mark.parametrize("case", FMT_CASES, ids=[c.stem for c in FMT_CASES])
def test_fmt_on_an_sd_mecha_file_points_to_convert(case: Path, monkeypatch):
    import io

    from mechalang.commands.fmt import fmt_command

    monkeypatch.chdir(GOLDEN)
    before = case.read_bytes()
    out, err = io.StringIO(), io.StringIO()
    code = fmt_command([f"sdmecha_fmt/{case.name}"], check=False, diff=False, format="text",
                       stdout=out, stderr=err)
    assert case.read_bytes() == before  # never rewritten
    got = f"exit {code}\n--- stdout\n{out.getvalue()}--- stderr\n{err.getvalue()}"
    assert_matches_golden(got, case.with_suffix(".out"))
    assert "E0932" in got and f"mecha convert sdmecha_fmt/{case.name}" in got


def test_fmt_json_names_the_code(tmp_path):
    import io
    import json

    from mechalang.commands.fmt import fmt_command

    f = tmp_path / "r.mecha"
    f.write_text('version 0.1.0\nmodel "a.safetensors"\n')
    err = io.StringIO()
    assert fmt_command([str(f)], check=True, diff=False, format="json", stdout=io.StringIO(), stderr=err) == 1
    assert [d["code"] for d in json.loads(err.getvalue())] == ["E0932"]
