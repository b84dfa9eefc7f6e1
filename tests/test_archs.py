"""Architectures: the bundled definitions, key classification, families, user architectures."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from mechalang.archs import registry
from mechalang.archs.arch import Arch, ArchError, KeySpec, PatternSet
from mechalang.archs.info import info_text
from mechalang.archs.registry import all_archs, arch_names, get_arch

STDLIB = {"sd1", "sd2", "sdxl", "sd3", "flux", "sd1-kohya", "sdxl-kohya", "sdxl-diffusers-unet", "llama",
          "bert", "generic"}
INVENTORY_ARCHS = sorted(STDLIB - {"llama", "bert", "generic"})
D = "model.diffusion_model."


@pytest.fixture(autouse=True)
def _no_user_path(monkeypatch):
    # the registry reloads by itself whenever MECHA_PATH changes
    monkeypatch.delenv("MECHA_PATH", raising=False)


def test_every_stdlib_architecture_loads():
    assert set(arch_names()) >= STDLIB
    for a in all_archs():
        assert a.description
        if a.name in INVENTORY_ARCHS:
            assert a.inventory and a.components and a.blocks and a.classes
            assert a.expected_keys() <= set(a.inventory)
        else:
            assert a.inventory is None and a.expected_keys() == set()


def test_aliases_resolve():
    assert get_arch("sd15") is get_arch("sd1")
    assert get_arch("sd1_kohya") is get_arch("sd1-kohya")
    assert get_arch("mistral") is get_arch("llama")
    assert get_arch("nope") is None


@pytest.mark.parametrize("name", INVENTORY_ARCHS)
def test_every_inventory_key_has_its_inventory_component(name):
    import json

    a = get_arch(name)
    doc = json.load(open(registry.STDLIB_DIR / f"{name}.json"))
    for comp, keys in doc["components"].items():
        assert comp in a.components
        for key in keys:
            assert a.classify(key).component == comp, key


@pytest.mark.parametrize("name", INVENTORY_ARCHS)
def test_every_block_and_class_covers_some_inventory_key(name):
    a = get_arch(name)
    infos = [a.classify(k) for k in a.inventory]
    blocks = Counter(i.block for i in infos)
    classes = Counter(c for i in infos for c in i.classes)
    for b in a.blocks:
        if name == "sdxl-diffusers-unet" and b == "BASE":
            continue  # a UNet-only layout keeps BASE for the block-weight convention
        assert blocks[b] > 0, b
    for c in a.classes:
        assert classes[c] > 0, c
    assert None not in blocks  # every key of an inventory is in some block


def test_sd1_blocks_follow_the_block_weight_convention():
    a = get_arch("sd1")
    assert a.blocks == ("BASE", *[f"IN{i:02}" for i in range(12)], "M00",
                        *[f"OUT{i:02}" for i in range(12)])
    assert a.mbw_blocks == a.blocks
    c = a.classify
    assert c(D + "time_embed.0.weight").block == "IN00"
    assert c(D + "input_blocks.0.0.weight").block == "IN00"
    assert "conv" in c(D + "input_blocks.0.0.weight").classes
    assert c(D + "out.2.weight").block == "OUT11"
    assert c(D + "out.0.bias").classes >= {"norm"}
    info = c(D + "middle_block.1.proj_in.weight")
    assert (info.block, info.component) == ("M00", "diffuser") and "proj" in info.classes
    info = c(D + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")
    assert info.block == "IN01" and {"attn2", "attn", "k"} <= info.classes and "attn1" not in info.classes
    info = c(D + "input_blocks.4.1.transformer_blocks.0.attn1.to_out.0.bias")
    assert info.block == "IN04" and {"attn1", "attn", "o"} <= info.classes
    info = c(D + "output_blocks.5.1.transformer_blocks.0.ff.net.0.proj.weight")
    assert info.block == "OUT05" and "ff" in info.classes and "attn" not in info.classes
    assert c(D + "input_blocks.11.0.in_layers.0.weight").block == "IN11"
    assert c(D + "output_blocks.2.1.conv.weight").block == "OUT02"
    info = c("cond_stage_model.transformer.text_model.encoder.layers.3.self_attn.q_proj.weight")
    assert (info.block, info.component) == ("BASE", "clip_l") and {"q", "attn"} <= info.classes
    info = c("first_stage_model.decoder.up.0.block.1.conv2.weight")
    assert (info.block, info.component) == ("BASE", "vae") and "conv" in info.classes
    assert c("model_ema.decay").block == "BASE"
    assert c("alphas_cumprod").component == "scheduler"


def test_sd1_old_key_names_resolve_to_canonical_ones():
    a = get_arch("sd1")
    old = "cond_stage_model.transformer.embeddings.position_embedding.weight"
    new = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
    assert a.canonical(old) == new
    assert a.canonical(new) == new
    assert a.canonical("something.else") == "something.else"
    info = a.classify(old)
    assert info.key == old and info.component == "clip_l" and "embed" in info.classes


def test_sdxl_blocks():
    a = get_arch("sdxl")
    assert a.blocks == ("BASE", *[f"IN{i:02}" for i in range(9)], "M00",
                        *[f"OUT{i:02}" for i in range(9)])
    assert a.classify(D + "label_emb.0.0.weight").block == "IN00"
    assert a.classify(D + "out.2.weight").block == "OUT08"
    assert a.classify(D + "output_blocks.8.0.skip_connection.weight").block == "OUT08"
    assert a.classify("conditioner.embedders.1.model.transformer.resblocks.3.attn.in_proj_weight").component == "clip_g"


def _shapes_per_block(name):
    a = get_arch(name)
    out = defaultdict(Counter)
    for k, s in a.inventory.items():
        i = a.classify(k)
        if i.component == "diffuser" and i.block != "BASE":
            out[i.block][tuple(d for d in s.shape if d != 1)] += 1
    return out


@pytest.mark.parametrize("ldm,other", [("sd1", "sd1-kohya"), ("sdxl", "sdxl-kohya"),
                                       ("sdxl", "sdxl-diffusers-unet")])
def test_diffusers_and_kohya_layouts_put_the_same_tensors_in_the_same_blocks(ldm, other):
    # The same UNet in two namings: every block must hold the same tensors (compared by shape,
    # 1x1 convolutions and linears alike), so block weights mean the same in both.
    assert get_arch(ldm).blocks == get_arch(other).blocks
    assert _shapes_per_block(ldm) == _shapes_per_block(other)


def test_flux_blocks_and_bare_names():
    a = get_arch("flux")
    assert a.blocks[:3] == ("BASE", "IN", "D00") and a.blocks[-1] == "OUT"
    assert "D18" in a.blocks and "S37" in a.blocks and "D19" not in a.blocks
    assert a.classify(D + "double_blocks.3.img_attn.qkv.weight").block == "D03"
    bare = a.classify("double_blocks.3.img_attn.qkv.weight")
    assert bare.block == "D03" and bare.component == "diffuser" and {"img", "attn"} <= bare.classes
    assert a.classify(D + "single_blocks.37.linear2.weight").block == "S37"
    assert a.classify(D + "img_in.weight").block == "IN"
    assert a.classify(D + "final_layer.linear.weight").block == "OUT"
    assert a.classify("text_encoders.t5xxl.transformer.shared.weight").block == "BASE"


def test_sd3_blocks():
    a = get_arch("sd3")
    assert a.classify(D + "joint_blocks.23.x_block.attn.qkv.weight").block == "J23"
    assert {"img", "attn"} <= a.classify(D + "joint_blocks.0.x_block.attn.qkv.weight").classes
    assert "txt" in a.classify(D + "joint_blocks.0.context_block.mlp.fc1.weight").classes


def test_vocabulary_has_no_clashes_and_kinds():
    for a in all_archs():
        v = a.vocabulary()
        assert len(v) == len(set(a.components)) + len(set(a.blocks)) + len(set(a.classes))
    v = get_arch("sd1").vocabulary()
    assert v["clip_l"] == "component" and v["IN04"] == "block" and v["attn2"] == "class"


def test_block_index():
    a = get_arch("sd1")
    assert a.block_index("BASE") == 0 and a.block_index("IN00") == 1 and a.block_index("OUT11") == 25
    assert a.block_index("attn1") is None


# ------------------------------------------------------------------------------------------------
# Families


def llama_keys(layers: int) -> list[str]:
    keys = ["model.embed_tokens.weight"]
    for i in range(layers):
        keys += [f"model.layers.{i}.self_attn.q_proj.weight", f"model.layers.{i}.mlp.up_proj.weight",
                 f"model.layers.{i}.input_layernorm.weight"]
    return keys + ["model.norm.weight", "lm_head.weight"]


def test_llama_blocks_come_from_the_keys_in_numeric_order():
    a = get_arch("llama")
    assert a.is_family and not a.specialized
    keys = llama_keys(12)
    assert a.blocks_for(keys) == ("EMBED", *[f"L{i}" for i in range(12)], "NORM", "HEAD")
    s = a.specialize(keys)
    assert s.name == "llama" and s.specialized and s.block_index("L10") == 11
    assert s.vocabulary()["L11"] == "block" and "L12" not in s.vocabulary()
    assert a.specialize(keys) is s  # cached
    assert a.kind_of("L99") == "block" and s.kind_of("L99") is None
    info = a.classify("model.layers.10.self_attn.q_proj.weight")
    assert info.block == "L10" and {"q", "attn"} <= info.classes
    assert "norm" in a.classify("model.layers.1.input_layernorm.weight").classes
    assert a.block_sort_key("L2") < a.block_sort_key("L10") < a.block_sort_key("NORM")
    assert a.block_sort_key("EMBED") < a.block_sort_key("L0")


def test_bert_blocks():
    a = get_arch("bert")
    keys = ["bert.embeddings.word_embeddings.weight",
            "bert.encoder.layer.0.attention.self.query.weight",
            "bert.encoder.layer.1.output.dense.weight", "bert.pooler.dense.weight"]
    assert a.blocks_for(keys) == ("EMBED", "L0", "L1", "POOLER", "HEAD")
    assert a.classify(keys[2]).classes == frozenset({"mlp"})
    assert a.classify("encoder.layer.0.attention.output.dense.weight").classes == frozenset({"o", "attn"})


def test_generic_blocks_from_numbered_segments():
    a = get_arch("generic")
    keys = ["enc.layers.10.w", "enc.layers.2.w", "enc.layers.2.b", "dec.0.w", "head.w"]
    assert a.blocks_for(keys) == ("enc.layers.2", "enc.layers.10", "dec.0")
    assert a.classify("head.w").block is None
    assert a.classify("a.1b.3.c").block == "a.1b.3"
    assert a.specialize(keys).blocks == ("enc.layers.2", "enc.layers.10", "dec.0")


# ------------------------------------------------------------------------------------------------
# Building architectures


def test_arch_from_python_with_ranges_and_defaults():
    a = Arch("toy", components=[PatternSet("enc", ("enc.*",)), PatternSet("rest", default=True)],
             blocks=[PatternSet("B", default=True), PatternSet("X{n:02}", ("enc.{n}.*",), range=(0, 2))],
             classes=[PatternSet("w", ("*.weight",)), PatternSet("nb", ("*",), exclude=("*.bias",))],
             inventory={"enc.1.weight": KeySpec((2,), "F32", False, ("old.1.weight",))},
             inventory_components={"enc.1.weight": "enc"}, mbw_blocks=True)
    assert a.blocks == ("B", "X00", "X01", "X02") and a.mbw_blocks == a.blocks
    i = a.classify("old.1.weight")
    assert (i.component, i.block, i.classes) == ("enc", "X01", frozenset({"w", "nb"}))
    i = a.classify("enc.7.bias")
    assert (i.component, i.block, i.classes) == ("enc", "B", frozenset())
    assert a.classify("zzz").component == "rest"


def test_register_from_python(monkeypatch, tmp_path):
    toy = Arch("toy-py", aliases=["toypy"], blocks=[PatternSet("A", ("a.*",))])
    monkeypatch.setattr(registry, "_registered", [])
    registry.register(toy)
    assert get_arch("toypy") is toy
    monkeypatch.setenv("MECHA_PATH", str(tmp_path))  # a reload keeps it
    assert get_arch("toy-py") is toy and get_arch("sd1") is not None
    monkeypatch.setattr(registry, "_registered", [])
    registry.reload()
    assert get_arch("toy-py") is None


@pytest.mark.parametrize("kwargs,msg", [
    (dict(blocks=[PatternSet("attn", ("a.*",))], classes=[PatternSet("attn", ("*",))]),
     "`attn` is both a block and a class"),
    (dict(blocks=[PatternSet("X{n}", ("x.{n}.*",), range=(3, 1))]), "range [3, 1] is reversed"),
    (dict(blocks=[PatternSet("X", ())]), "block `X` has no patterns"),
    (dict(blocks=[PatternSet("X", ("x",))], mbw_blocks=["Y"]), "mbw_blocks names `Y`"),
    (dict(classes=[PatternSet("c{n}", ("x.{n}",))]), "only blocks can have numbered names"),
])
def test_arch_definition_errors(kwargs, msg):
    with pytest.raises(ArchError) as ei:
        Arch("bad", **kwargs)
    assert msg in ei.value.message


# ------------------------------------------------------------------------------------------------
# User architectures on MECHA_PATH

USER_TOML = '''
name = "toy"
aliases = ["toy2"]
description = "a toy"
inventory = "toy.json"
mbw_blocks = ["BASE", "L00", "L01"]

[[components]]
name = "net"
patterns = ["net.*"]

[[blocks]]
name = "BASE"
default = true

[[blocks]]
name = "L{n:02}"
range = [0, 1]
patterns = ["net.{n}.*"]

[[classes]]
name = "weight"
patterns = ["*.weight"]
'''

USER_JSON = ('{"name": "toy", "components": {"net": {"net.0.weight": {"shape": [2, 2], '
             '"dtype": "float32"}, "net.1.weight": {"shape": [2], "dtype": "bfloat16"}}}}')


def test_user_architecture_on_mecha_path(tmp_path, monkeypatch):
    d = tmp_path / "lib" / "architectures"
    d.mkdir(parents=True)
    (d / "toy.toml").write_text(USER_TOML)
    (d / "toy.json").write_text(USER_JSON)
    monkeypatch.setenv("MECHA_PATH", str(tmp_path / "nothing") + ":" + str(tmp_path / "lib"))
    a = get_arch("toy2")
    assert a is not None and a.name == "toy" and "toy" in arch_names()
    assert a.blocks == ("BASE", "L00", "L01") and a.mbw_blocks == ("BASE", "L00", "L01")
    assert a.inventory["net.1.weight"] == KeySpec((2,), "BF16", False, ())
    assert a.classify("net.1.weight").block == "L01"
    assert get_arch("sd1") is not None  # bundled ones are still there


def test_user_architecture_directly_in_a_path_folder(tmp_path, monkeypatch):
    (tmp_path / "toy.toml").write_text(USER_TOML)
    (tmp_path / "toy.json").write_text(USER_JSON)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')  # not an architecture
    monkeypatch.setenv("MECHA_PATH", str(tmp_path))
    assert get_arch("toy") is not None


@pytest.mark.parametrize("text,msg", [
    ("name = \n", "not valid TOML"),
    ('name = "x"\nblocksz = []\n', "unknown field `blocksz`"),
    ('description = "no name"\n[[blocks]]\nname="A"\npatterns=["a"]\n', "missing `name`"),
    ('name = "x"\n[[blocks]]\nname = "A"\npattern = ["a.*"]\n', "unknown field `pattern`"),
    ('name = "x"\ninventory = "missing.json"\n[[blocks]]\nname="A"\npatterns=["a"]\n',
     "inventory file does not exist"),
    ('name = "x"\n[[blocks]]\nname = "A"\npatterns = "a.*"\n', "must be a list of strings"),
    ('name = "x"\nmbw_blocks = ["Z"]\n[[blocks]]\nname = "A"\npatterns = ["a.*"]\n',
     "mbw_blocks names `Z`"),
])
def test_broken_user_toml_names_the_file(tmp_path, monkeypatch, text, msg):
    d = tmp_path / "architectures"
    d.mkdir()
    (d / "broken.toml").write_text(text)
    monkeypatch.setenv("MECHA_PATH", str(tmp_path))
    assert get_arch("sd1") is not None  # the broken file is left out; the others load
    (problem,) = registry.load_problems()
    assert isinstance(problem, ArchError)
    assert problem.source == str(d / "broken.toml")
    assert msg in problem.message
    assert str(d / "broken.toml") in str(problem)


# ------------------------------------------------------------------------------------------------
# mecha info


def test_info_table_lists_every_architecture():
    text = info_text(None, False)
    for name in STDLIB:
        assert name in text
    line = next(l for l in text.splitlines() if l.startswith("sd1 "))
    assert "1831" in line and "sd15" in line
    assert "pattern" in next(l for l in text.splitlines() if l.startswith("llama "))


def test_info_one_architecture():
    text = info_text("sd1", False)
    assert "IN00           6 keys" in text
    assert "attn2          80 keys" in text
    assert "clip_l         197 keys" in text
    assert "26 values: BASE, IN00..IN11, M00, OUT00..OUT11" in text
    assert "model.diffusion_model.out.2.weight" not in text
    verbose = info_text("sd15", True)
    line = next(l for l in verbose.splitlines() if "model.diffusion_model.out.2.weight" in l)
    assert "[4, 320, 3, 3] F32" in line and "block=OUT11" in line and "conv" in line


def test_info_family_and_unknown(capsys):
    from mechalang.commands.info import info_command

    text = info_text("llama", False)
    assert "L{n}" in text and "EMBED" in text
    assert info_text("sdxll", False) is None
    assert info_command("sdxll") == 1
    err = capsys.readouterr().err
    assert "error[E0225]: unknown architecture `sdxll`" in err and "did you mean `sdxl`?" in err
    assert info_command("mistrel") == 1
    assert "did you mean `llama`?" in capsys.readouterr().err


def test_front_end_modules_do_not_import_torch_or_numpy():
    import subprocess
    import sys

    code = ("import sys\n"
            "import mechalang.archs.header, mechalang.archs.arch, mechalang.archs.registry\n"
            "import mechalang.archs.detect, mechalang.archs.info, mechalang.check.selectors\n"
            "mechalang.archs.registry.all_archs()\n"
            "bad = [m for m in ('torch', 'numpy', 'safetensors') if m in sys.modules]\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_sd2_inventory_is_what_its_tool_builds():
    """sd2.json is not typed by hand: tools/build_sd2_inventory.py derives it from the reference
    configs through diffusers and transformers (on the meta device) and must reproduce it."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    import importlib.util
    import warnings
    from pathlib import Path

    root = Path(__file__).parent.parent
    spec = importlib.util.spec_from_file_location("build_sd2", root / "tools" / "build_sd2_inventory.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = tool.render(tool.build())
    assert text == (root / "mechalang" / "stdlib" / "architectures" / "sd2.json").read_text()
