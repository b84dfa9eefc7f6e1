"""The quick merge you can trust (issue 11, items 3 and 4): `mecha merge --force` keeps every key
of the first model, -o/--hash/--arch, output names that obey the name rule, the recipe stored in
every output is the one that ran (and re-runs with `mecha run --from`), and `mecha show`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mechalang import pipeline
from mechalang.cli import app
from mechalang.commands.merge import NAME_RULE, default_name
from mechalang.graph.nodes import structure

from .cli_util import mecha, runner
from .golden_util import assert_matches_golden

GOLDEN_CLI = Path(__file__).parent / "golden" / "cli"


def meta_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def f32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float32)


@pytest.fixture
def ws(small_models, tmp_path, monkeypatch) -> Path:
    """A working folder with the small models in `models/` (copies: outputs go next to them)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MECHA_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "models").mkdir()
    for name in ("a", "b", "c", "xl"):
        shutil.copy(small_models / f"{name}.safetensors", tmp_path / "models" / f"{name}.safetensors")
    return tmp_path


# ------------------------------------------------------------------------------------------------
# --force keeps every key of A


def test_force_keeps_every_key_of_the_first_model(ws):
    """sd1 + sdxl with --force: all of A's keys; A's values where shapes differ or B lacks the key,
    (1 − α)·A + α·B elsewhere; the kept keys counted in the summary."""
    res = mecha("merge", "models/a.safetensors", "models/xl.safetensors", "--force", "--alpha", "0.25",
                "-o", "out.safetensors")
    assert res.exit_code == 0, res.output
    out = load_file("out.safetensors")
    a, xl = load_file("models/a.safetensors"), load_file("models/xl.safetensors")
    assert list(out) == list(a)  # every key, in A's order
    clash = [k for k in a if k in xl and a[k].shape != xl[k].shape]
    missing = [k for k in a if k not in xl]
    merged = [k for k in a if k in xl and a[k].shape == xl[k].shape and a[k].is_floating_point()]
    assert clash and missing and merged
    for k in clash + missing:
        assert torch.equal(out[k], a[k]), k
    for k in merged:
        expected = (0.75 * f32(a[k]) + 0.25 * f32(xl[k])).to(a[k].dtype)
        torch.testing.assert_close(f32(out[k]), f32(expected), rtol=0, atol=0)
    assert f"{len(clash)} keys with other shapes in another input kept unchanged from `a`" in res.output
    assert f"{len([k for k in missing if a[k].is_floating_point()])} keys kept unchanged from `a`" in res.output


def test_force_in_a_recipe_keeps_the_model_keys_of_model_plus_delta(ws):
    """`mecha run --force` on `a + 0.5 * (xl - b)`: the delta has the keys xl and b share with one
    shape; every key of `a` is written, moved by the delta only where it has one."""
    r = ws / "r.mecha"
    r.write_text('let a = model("models/a.safetensors")\nlet b = model("models/b.safetensors")\n'
                 'let xl = model("models/xl.safetensors")\n'
                 'export a + 0.5 * (xl - b) to "o.safetensors"\n')
    assert mecha("run", str(r)).exit_code == 1  # differing architectures, without --force
    assert mecha("check", str(r)).exit_code == 1
    checked = mecha("check", str(r), "--force")
    n = len(load_file("models/a.safetensors"))
    assert checked.exit_code == 0 and f"{n} output keys" in checked.output
    res = mecha("run", str(r), "--force")
    assert res.exit_code == 0, res.output
    out = load_file("o.safetensors")
    a, b, xl = (load_file(f"models/{n}.safetensors") for n in ("a", "b", "xl"))
    assert list(out) == list(a)
    moved = 0
    for k in a:
        if k in xl and k in b and a[k].shape == xl[k].shape == b[k].shape and a[k].is_floating_point():
            expected = (f32(a[k]) + 0.5 * (f32(xl[k]) - f32(b[k]))).to(a[k].dtype)
            moved += 1
        else:
            expected = a[k]
        torch.testing.assert_close(f32(out[k]), f32(expected), rtol=0, atol=0)
    assert moved


def test_the_form_gets_force_through_the_pipeline(ws):
    from mechalang.commands.quick_form import FormState, check_form

    s = FormState(folder=ws / "models", models=["a.safetensors", "xl.safetensors", None], force=True)
    r = check_form(s)
    assert r.ok, r.lines
    assert r.total_keys == len(load_file(str(ws / "models" / "a.safetensors")))


# ------------------------------------------------------------------------------------------------
# -o, --hash, --arch, names


def test_output_to_a_file_or_into_a_folder(ws):
    res = mecha("merge", "models/a.safetensors", "models/b.safetensors", "-o", "sub/mine.safetensors")
    assert res.exit_code == 0, res.output
    assert (ws / "sub" / "mine.safetensors").exists()
    (ws / "dest").mkdir()
    res = mecha("merge", "models/a.safetensors", "models/b.safetensors", "-o", "dest", "--name", "x.y")
    assert res.exit_code == 0, res.output
    assert (ws / "dest" / "x.y.safetensors").exists()
    res = mecha("merge", "models/a.safetensors", "models/b.safetensors", "-o", "new/")
    assert res.exit_code == 0, res.output
    assert (ws / "new" / "a+b-weighted-sum-0.5.safetensors").exists()
    res = mecha("merge", "models/a.safetensors", "models/b.safetensors", "-o", "f.safetensors", "--name", "x")
    assert res.exit_code == 2 and "E0701" in res.output and not (ws / "f.safetensors").exists()


def test_hash_records_the_inputs_sha256(ws):
    res = mecha("merge", "models/a.safetensors", "models/b.safetensors", "--hash", "-o", "h.safetensors")
    assert res.exit_code == 0, res.output
    meta = meta_of(ws / "h.safetensors")
    shas = [hashlib.sha256((ws / "models" / f"{n}.safetensors").read_bytes()).hexdigest() for n in "ab"]
    assert [i["sha256"] for i in json.loads(meta["mechalang.inputs"])] == shas
    assert set(json.loads(meta["sd_merge_models"])) == set(shas)


def test_arch_is_passed_to_every_model(ws):
    res = mecha("merge", "models/a.safetensors", "models/b.safetensors", "--arch", "sd1", "--print-recipe")
    assert res.exit_code == 0
    assert 'model("models/a.safetensors", arch=sd1)' in res.output
    assert 'model("models/b.safetensors", arch=sd1)' in res.output
    res = mecha("merge", "models/a.safetensors", "models/xl.safetensors", "--arch", "sd1", "-o", "o.safetensors")
    assert res.exit_code == 1 and not (ws / "o.safetensors").exists()  # an sdxl file is not sd1's layout


@pytest.mark.parametrize("name", [".hidden", "a..b", "a b", "a_b", "x/y", ".."])
def test_names_the_rule_refuses(ws, name):
    res = mecha("merge", "models/a.safetensors", "models/b.safetensors", "--name", name)
    assert res.exit_code == 2 and "E0705" in res.output
    assert not NAME_RULE.fullmatch(name)


def test_the_default_name_obeys_the_rule_for_odd_input_names(ws):
    odd = [".hidden model..v2.safetensors", "naïve_b (copy).safetensors", "..x", "my_model.ckpt",
           "folder/", "model.safetensors.index.json", "---"]
    for method in ("weighted_sum", "add_difference", "lora"):
        name = default_name(odd, method, 0.3)
        assert NAME_RULE.fullmatch(name), name
    assert default_name(["sd_xl_base_1.0.safetensors", "café.safetensors"], "weighted_sum", 0.25) == \
        "sd-xl-base-1.0+cafe-weighted-sum-0.25"
    for src, dst in (("a", ".hidden model..v2.safetensors"), ("b", "naïve_b (copy).safetensors")):
        shutil.copy(ws / "models" / f"{src}.safetensors", ws / dst)
    res = mecha("merge", ".hidden model..v2.safetensors", "naïve_b (copy).safetensors")
    assert res.exit_code == 0, res.output
    assert (ws / "hidden-model.v2+naive-b-copy-weighted-sum-0.5.safetensors").exists()


def test_golden_command_line_diagnostics(ws):
    got = []
    for args in (["merge", "models/a.safetensors", "models/b.safetensors", "--name", ".x"],
                 ["merge", "models/a.safetensors", "models/b.safetensors", "--arch", "sdx"],
                 ["run", "--from", "models/a.safetensors"],
                 ["show", "models/a.safetensors"]):
        res = mecha(*args)
        got.append(f"$ mecha {' '.join(args)}\n[exit {res.exit_code}]\n{res.output}")
    assert_matches_golden("\n".join(got), GOLDEN_CLI / "quick_merge.out")


# ------------------------------------------------------------------------------------------------
# provenance


def _recipes(ws: Path) -> Path:
    """A recipe in its own folder with a param, a list param, a model param, and a model given
    by absolute path; `other.mecha` is a recipe to give as a param."""
    folder = ws / "recipes"
    folder.mkdir()
    (folder / "other.mecha").write_text(
        'param w = 0.25\n'
        'export weighted_sum(model("../models/a.safetensors"), model("../models/c.safetensors"), '
        'alpha={default: w, "OUT*": 0.9}) to "unused.safetensors"\n')
    (folder / "main.mecha").write_text(
        'param base: Model\nparam mix = 0.5\nparam ws: list[float] = [0.1]\n'
        f'let b = model("{ws / "models" / "b.safetensors"}")\n'
        f'export weighted_sum(base, b, alpha=mix) to "{ws / "recipes" / "out" / "main.safetensors"}" as fp16\n')
    return folder


def test_the_stored_recipe_is_the_one_that_ran(ws):
    folder = _recipes(ws)
    res = mecha("run", str(folder / "main.mecha"), "--set", "base=recipes/other.mecha", "--set", "mix=0.3",
                "--set", "ws=0.2,0.4", "-o", "elsewhere/final.safetensors")
    assert res.exit_code == 0, res.output
    meta = meta_of(ws / "elsewhere" / "final.safetensors")
    text = meta["mechalang.recipe"]
    assert str(ws) not in text and '"/' not in text  # never an absolute path
    assert "param mix = 0.3" in text and "param ws: list[float] = [0.2, 0.4]" in text
    assert 'model("../models/a.safetensors", arch=sd1)' in text  # the recipe param, inlined
    assert 'alpha={default: 0.25, "OUT*": 0.9}' in text
    assert 'let b = model("../models/b.safetensors")' in text
    assert 'to "../elsewhere/final.safetensors" as fp16' in text  # -o, relative to the recipe
    assert meta["modelspec.title"] == "final"
    params = json.loads(meta["mechalang.param_recipes"])
    assert params == [{"param": "base", "file": "other.mecha",
                       "sha256": hashlib.sha256((folder / "other.mecha").read_bytes()).hexdigest()}]
    # the stored text, read from the recipe's folder, builds the same graph as the run did
    original = pipeline.load(folder / "main.mecha", params={"base": str(folder / "other.mecha"), "mix": 0.3,
                                                             "ws": "0.2,0.4"})
    again = pipeline.load(text=text, base_dir=folder)
    assert again.ok, again.diagnostics
    assert structure(again.runnable_exports[0].node) == structure(original.runnable_exports[0].node)
    assert again.runnable_exports[0].path == ws / "elsewhere" / "final.safetensors"


def test_input_names_are_unique(ws):
    (ws / "lib.mecha").write_text('let a = model("models/c.safetensors")\n')
    (ws / "r.mecha").write_text('import "lib.mecha" as lib\nlet a = model("models/a.safetensors")\n'
                                'export add_difference(a, model("models/b.safetensors"), lib.a) to "o.safetensors"\n')
    res = mecha("run", "r.mecha")
    assert res.exit_code == 0, res.output
    inputs = json.loads(meta_of(ws / "o.safetensors")["mechalang.inputs"])
    names = [i["name"] for i in inputs]
    assert len(set(names)) == len(names) == 3
    assert {i["file"] for i in inputs} == {"a.safetensors", "b.safetensors", "c.safetensors"}


def test_quick_merge_stores_paths_relative_to_the_models_folder(ws, tmp_path_factory, monkeypatch):
    elsewhere = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(elsewhere)  # the models folder is not below the working folder
    res = runner.invoke(app, ["merge", "a.safetensors", "b.safetensors", "--models-dir", str(ws / "models")])
    assert res.exit_code == 0, res.output
    text = meta_of(ws / "models" / "a+b-weighted-sum-0.5.safetensors")["mechalang.recipe"]
    assert 'model("a.safetensors")' in text and 'to "a+b-weighted-sum-0.5.safetensors"' in text
    assert str(ws) not in text and str(elsewhere) not in text


def test_run_from_reruns_the_stored_recipe(ws, tmp_path_factory):
    res = mecha("merge", "models/a.safetensors", "models/b.safetensors", "models/c.safetensors",
                "--method", "add_difference", "--alpha", "0.7", "-o", "first.safetensors")
    assert res.exit_code == 0, res.output
    (ws / "sub").mkdir()
    shutil.copy(ws / "first.safetensors", ws / "sub" / "first.safetensors")
    res = mecha("run", "--from", "sub/first.safetensors", "-o", "second.safetensors")  # paths from the cwd
    assert res.exit_code == 0, res.output
    first, second = load_file("first.safetensors"), load_file("second.safetensors")
    assert list(first) == list(second) and all(torch.equal(first[k], second[k]) for k in first)
    # without -o: the stored export path, from the working folder, which exists: --overwrite
    res = mecha("run", "--from", "first.safetensors")
    assert res.exit_code == 1 and "--overwrite" in res.output
    # from another folder, models found through --models-dir as usual
    other = tmp_path_factory.mktemp("other")
    shutil.copy(ws / "first.safetensors", other / "first.safetensors")
    res = runner.invoke(app, ["run", "--from", str(other / "first.safetensors"), "--models-dir", str(ws),
                              "-o", str(other / "third.safetensors")])
    assert res.exit_code == 0, res.output
    third = load_file(str(other / "third.safetensors"))
    assert all(torch.equal(first[k], third[k]) for k in first)


def test_run_from_refuses_what_it_cannot_run(ws):
    res = mecha("run", "--from", "models/a.safetensors")
    assert res.exit_code == 1 and "E0710" in res.output
    res = mecha("run", "--from", "models/nope.safetensors")
    assert res.exit_code == 1 and "E0201" in res.output
    (ws / "r.mecha").write_text("")
    res = mecha("run", "r.mecha", "--from", "models/a.safetensors")
    assert res.exit_code == 2
    res = mecha("run")
    assert res.exit_code == 2


def test_run_from_warns_about_another_version(ws):
    from safetensors.torch import save_file

    t = load_file("models/a.safetensors")
    save_file(t, "old.safetensors", metadata={"mechalang.recipe": 'let a = model("models/a.safetensors")\n'
                                                                  'export a to "copy.safetensors"\n',
                                              "mechalang.version": "0.0.1"})
    res = mecha("run", "--from", "old.safetensors")
    assert res.exit_code == 0, res.output
    assert "W0710" in res.output and "0.0.1" in res.output
    assert all(torch.equal(t[k], v) for k, v in load_file("copy.safetensors").items())


def test_show_prints_provenance_and_summary(ws):
    res = mecha("merge", "models/a.safetensors", "models/b.safetensors", "--hash", "--dtype", "fp16",
                "-o", "m.safetensors")
    assert res.exit_code == 0, res.output
    res = mecha("show", "m.safetensors")
    assert res.exit_code == 0, res.output
    n = len(load_file("m.safetensors"))
    assert f"m.safetensors: sd1, {n} tensors" in res.output
    assert "made by mechalang" in res.output and "mecha run --from m.safetensors" in res.output
    sha_a = hashlib.sha256((ws / "models" / "a.safetensors").read_bytes()).hexdigest()
    assert f"a: a.safetensors (sd1)  sha256 {sha_a}" in res.output
    assert "    let merged = weighted_sum(a, b, alpha=0.5)" in res.output
    assert "A1111 merge fields:" in res.output and "interp_method: weighted_sum" in res.output
    assert "title: m" in res.output
    js = json.loads(mecha("show", "m.safetensors", "--format", "json").output)
    assert js["arch"] == "sd1" and js["tensors"] == n and js["recipe"].startswith("let a = ")
    res = mecha("show", "models/a.safetensors")
    assert res.exit_code == 0 and "no mechalang recipe stored in this file" in res.output
    res = mecha("show", "models/none.safetensors")
    assert res.exit_code == 1 and "E0201" in res.output
