"""Model sources (mechalang/sources): .ckpt/.pt/.bin read without torch and without running the
pickle, Hugging Face folders, scaled fp8; each compared with what torch / transformers /
safetensors themselves read, and merged end to end by `mecha run`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mechalang.sources import Derived, SourceError, Stored, open_source

from .cli_util import mecha


def read_tensor(src, t) -> torch.Tensor:
    """An independent reader of a source tensor: plain file reads and torch, no mechalang runtime."""
    if isinstance(t, Stored):
        with open(src.files[t.file].path, "rb") as f:
            f.seek(t.begin)
            raw = bytearray(f.read(t.end - t.begin))
        from mechalang.runtime.reader import torch_dtype

        return torch.frombuffer(raw, dtype=torch.uint8).view(torch_dtype(t.dtype)).reshape(t.shape) \
            if raw else torch.empty(t.shape, dtype=torch_dtype(t.dtype))
    args = [read_tensor(src, a).float() for a in t.args]
    if t.op == "cat":
        return torch.cat(args)
    if t.op == "transpose":
        return args[0].t()
    if t.op == "reshape":
        return args[0].reshape(t.shape)
    if t.op == "mul":
        return args[0] * args[1]
    return args[0]


def sd_like(seed: int, dtype=torch.float16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {f"model.layers.{i}.weight": torch.randn(4, 3, generator=g).to(dtype) for i in range(3)} | {
        "model.norm.bias": torch.randn(5, generator=g).to(dtype),
        "model.steps": torch.tensor([1, 2, 3]),
    }


# ------------------------------------------------------------------------------------------------
# torch.save zip files


def test_ckpt_nested_state_dict_matches_torch_load(tmp_path):
    sd = sd_like(1) | {"t": torch.randn(3, 5).t(), "p": torch.nn.Parameter(torch.ones(2)),
                       "bf": torch.randn(2, 2).bfloat16(), "f8": torch.randn(4).to(torch.float8_e4m3fn)}
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": sd, "global_step": 7, "epoch": 1}, path)
    src = open_source(path)
    assert src.kind == "torch" and "nested" in src.note
    ref = torch.load(path, weights_only=True)["state_dict"]
    assert list(src.tensors) == list(ref)
    assert isinstance(src.tensors["t"], Derived) and src.tensors["t"].op == "transpose"
    for k, v in ref.items():
        got = read_tensor(src, src.tensors[k])
        assert tuple(got.shape) == tuple(v.shape), k
        assert torch.equal(got.to(v.dtype) if isinstance(src.tensors[k], Derived) else got, v.detach()), k


def test_plain_pt_dict_of_tensors(tmp_path):
    sd = sd_like(2, torch.float32)
    torch.save(sd, tmp_path / "m.pt")
    src = open_source(tmp_path / "m.pt")
    for k, v in sd.items():
        assert torch.equal(read_tensor(src, src.tensors[k]), v)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {EVIL_MARK}",))


EVIL_MARK = ""


def test_malicious_pickle_refused_and_not_run(tmp_path):
    global EVIL_MARK
    EVIL_MARK = str(tmp_path / "pwned")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": _Evil()}, tmp_path / "evil.ckpt")
    assert not Path(EVIL_MARK).exists()  # torch.save itself does not run it
    with pytest.raises(SourceError) as e:
        open_source(tmp_path / "evil.ckpt")
    assert "refused" in e.value.message and "system" in e.value.message
    assert not Path(EVIL_MARK).exists()
    # torch's own safe loader refuses it too (the independent reference of "unsafe")
    with pytest.raises(Exception):
        torch.load(tmp_path / "evil.ckpt", weights_only=True)
    # and the CLI says so, without a traceback, writing nothing
    (tmp_path / "r.mecha").write_text('export model("evil.ckpt", arch=sd1) to "out.safetensors"\n')
    r = mecha("run", str(tmp_path / "r.mecha"), cwd=tmp_path)
    assert r.exit_code == 1 and "refused" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out.safetensors").exists() and not Path(EVIL_MARK).exists()


# ------------------------------------------------------------------------------------------------
# Legacy (non-zip) torch.save files: the same restricted unpickler, storages found by their counts


def test_legacy_torch_file_matches_torch_load(tmp_path):
    base = torch.randn(10)
    # (no fp8: torch.load cannot read its own legacy fp8 files back)
    sd = sd_like(5) | {"t": torch.randn(3, 5).t(), "p": torch.nn.Parameter(torch.ones(2)),
                       "bf": torch.randn(2, 2).bfloat16(), "i8": torch.arange(4, dtype=torch.int8),
                       "head": base[:4], "tail": base[6:]}  # two views of one storage, one at an offset
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": sd, "global_step": 7}, path, _use_new_zipfile_serialization=False)
    with open(path, "rb") as f:
        assert f.read(2) != b"PK"  # really the legacy format
    src = open_source(path)
    assert src.kind == "torch" and src.note == "legacy torch.save, nested state_dict"
    ref = torch.load(path, weights_only=True)["state_dict"]
    assert list(src.tensors) == list(ref)
    for k, v in ref.items():
        got = read_tensor(src, src.tensors[k])
        assert tuple(got.shape) == tuple(v.shape), k
        assert torch.equal(got.to(v.dtype) if isinstance(src.tensors[k], Derived) else got, v.detach()), k


def test_legacy_torch_file_merged_by_run(tmp_path):
    a, b = sd_like(6), sd_like(7)
    torch.save(a, tmp_path / "a.pt", _use_new_zipfile_serialization=False)
    save_file(b, str(tmp_path / "b.safetensors"))
    (tmp_path / "r.mecha").write_text('export weighted_sum(model("a.pt", arch=generic), model("b.safetensors", '
                                      'arch=generic), alpha=0.25) to "out.safetensors"\n')
    r = mecha("run", str(tmp_path / "r.mecha"), cwd=tmp_path)
    assert r.exit_code == 0, r.output
    out = load_file(str(tmp_path / "out.safetensors"))
    for k in a:
        want = (a[k].float() * 0.75 + b[k].float() * 0.25).to(a[k].dtype) if a[k].is_floating_point() else a[k]
        assert torch.equal(out[k], want), k


def test_legacy_malicious_pickle_refused_and_not_run(tmp_path):
    global EVIL_MARK
    EVIL_MARK = str(tmp_path / "pwned")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": _Evil()}, tmp_path / "evil.pt",
               _use_new_zipfile_serialization=False)
    assert not Path(EVIL_MARK).exists()
    with pytest.raises(SourceError) as e:
        open_source(tmp_path / "evil.pt")
    assert "refused" in e.value.message and "system" in e.value.message
    assert not Path(EVIL_MARK).exists()
    with pytest.raises(Exception):  # torch's own safe loader refuses it too
        torch.load(tmp_path / "evil.pt", weights_only=True)
    (tmp_path / "r.mecha").write_text('export model("evil.pt", arch=generic) to "out.safetensors"\n')
    r = mecha("check", str(tmp_path / "r.mecha"), cwd=tmp_path)
    assert r.exit_code == 1 and "refused" in r.output and "Traceback" not in r.output
    assert not Path(EVIL_MARK).exists()


def test_broken_legacy_files_are_diagnostics(tmp_path):
    torch.save({"w": torch.randn(64), "v": torch.randn(8)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "old.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:-16])
    with pytest.raises(SourceError, match="truncated|missing"):
        open_source(tmp_path / "cut.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02K\x07.not a torch file")  # a pickle of 7, then junk
    with pytest.raises(SourceError, match="not a torch file"):
        open_source(tmp_path / "junk.pt")
    (tmp_path / "text.bin").write_bytes(b"hello")
    with pytest.raises(SourceError, match="not a torch file"):
        open_source(tmp_path / "text.bin")


def test_ckpt_merged_by_run(tmp_path):
    a, b = sd_like(3), sd_like(4)
    torch.save({"state_dict": a, "global_step": 1}, tmp_path / "a.ckpt")
    save_file(b, str(tmp_path / "b.safetensors"))
    (tmp_path / "r.mecha").write_text(
        'let a = model("a", arch=generic)\nlet b = model("b", arch=generic)\n'
        'export weighted_sum(a, b, alpha=0.25) to "out.safetensors"\n')
    r = mecha("run", str(tmp_path / "r.mecha"), cwd=tmp_path)
    assert r.exit_code == 0, r.output
    out = load_file(str(tmp_path / "out.safetensors"))
    for k in a:
        if a[k].is_floating_point():
            exp = (a[k].float() * 0.75 + b[k].float() * 0.25).to(a[k].dtype)
            torch.testing.assert_close(out[k], exp, rtol=0, atol=0)
        else:
            assert torch.equal(out[k], a[k])


# ------------------------------------------------------------------------------------------------
# scaled fp8


def test_scaled_fp8_dequantised_and_scales_hidden(tmp_path):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(4, 3, generator=g)
    plain = {"blk.0.weight": w.to(torch.bfloat16), "blk.0.bias": torch.randn(4, generator=g).bfloat16()}
    q = (w / 0.05).to(torch.float8_e4m3fn)
    scaled = {"blk.0.weight": q, "blk.0.scale_weight": torch.tensor(0.05),
              "blk.0.scale_input": torch.tensor(1.0), "blk.0.bias": plain["blk.0.bias"],
              "scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    save_file(scaled, str(tmp_path / "s.safetensors"))
    save_file(plain, str(tmp_path / "p.safetensors"))
    src = open_source(tmp_path / "s.safetensors")
    assert set(src.tensors) == set(plain) and "scaled fp8" in src.note
    (tmp_path / "r.mecha").write_text(
        'let s = model("s.safetensors", arch=generic)\nlet p = model("p.safetensors", arch=generic)\n'
        'export weighted_sum(s, p, alpha=0.5) to "out.safetensors"\n'
        'export s to "deq.safetensors" as fp32\n'
        'export p to "p8.safetensors" as fp8\n')
    r = mecha("run", str(tmp_path / "r.mecha"), cwd=tmp_path)
    assert r.exit_code == 0, r.output
    deq = q.float() * torch.tensor(0.05)
    got = load_file(str(tmp_path / "deq.safetensors"))
    assert set(got) == set(plain)
    torch.testing.assert_close(got["blk.0.weight"], deq, rtol=0, atol=0)
    out = load_file(str(tmp_path / "out.safetensors"))
    exp = (deq.to(torch.bfloat16).float() * 0.5 + w.bfloat16().float() * 0.5).bfloat16()
    # the dequantised weight is BF16 in the model's key set; the merge computes from fp32 reads
    torch.testing.assert_close(out["blk.0.weight"].float(), exp.float(), rtol=1e-2, atol=1e-2)
    p8 = load_file(str(tmp_path / "p8.safetensors"))
    assert p8["blk.0.weight"].dtype == torch.float8_e4m3fn
    assert torch.equal(p8["blk.0.weight"].float(), w.bfloat16().float().to(torch.float8_e4m3fn).float())


def test_plain_fp8_input_merges(tmp_path):
    g = torch.Generator().manual_seed(6)
    a = {"x.weight": torch.randn(8, 4, generator=g).to(torch.float8_e5m2)}
    b = {"x.weight": torch.randn(8, 4, generator=g).to(torch.float16)}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    (tmp_path / "r.mecha").write_text(
        'export weighted_sum(model("a.safetensors", arch=generic), model("b.safetensors", arch=generic), '
        'alpha=0.5) to "o.safetensors" as fp16\n')
    r = mecha("run", str(tmp_path / "r.mecha"), cwd=tmp_path)
    assert r.exit_code == 0, r.output
    out = load_file(str(tmp_path / "o.safetensors"))["x.weight"]
    torch.testing.assert_close(out, (a["x.weight"].float() * 0.5 + b["x.weight"].float() * 0.5).half())


# ------------------------------------------------------------------------------------------------
# Hugging Face folders in and out


def tiny_llama(folder: Path, seed: int, shard: str = "4KB"):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    m = LlamaForCausalLM(cfg).to(torch.bfloat16)
    m.save_pretrained(folder, max_shard_size=shard)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def bin_shards(folder: Path, sd: dict[str, torch.Tensor], config_from: Path) -> None:
    """A `pytorch_model.bin` sharded folder, as older transformers wrote it (torch.save shards)."""
    folder.mkdir()
    keys = list(sd)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    wm = {}
    for i, part in enumerate(halves):
        name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: sd[k] for k in part}, folder / name)
        wm.update({k: name for k in part})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (folder / "config.json").write_text((config_from / "config.json").read_text())


def test_hf_folders_merged_to_sharded_hf_loaded_by_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    a = tiny_llama(tmp_path / "la", 0)
    b = tiny_llama(tmp_path / "lb", 1)
    assert len(list((tmp_path / "la").glob("model-*.safetensors"))) > 1  # really sharded
    bin_shards(tmp_path / "lbin", b, tmp_path / "lb")
    src = open_source(tmp_path / "lbin")
    assert src.kind == "hf" and len(src.files) == 2
    (tmp_path / "r.mecha").write_text(
        'let a = model("la")\n'
        'let b = model("lb/model.safetensors.index.json")\n'
        'let c = model("lbin")\n'
        'export weighted_sum(a, b, alpha=0.25) to "out/" as hf(shard_size="10KB")\n'
        'export weighted_sum(a, c, alpha=0.25) to "out_bin/" as hf\n')
    r = mecha("run", str(tmp_path / "r.mecha"), "--shard-size", "1MB", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and set(index["weight_map"]) == set(a)
    assert (out / "config.json").exists() and (out / "generation_config.json").exists()
    assert [p.name for p in (tmp_path / "out_bin").glob("*.safetensors")] == ["model.safetensors"]
    for folder in ("out", "out_bin"):
        m = AutoModelForCausalLM.from_pretrained(tmp_path / folder, torch_dtype=torch.bfloat16)
        got = m.state_dict()
        assert set(got) == set(a)
        for k in a:
            exp = (a[k].float() * 0.75 + b[k].float() * 0.25).to(torch.bfloat16)
            torch.testing.assert_close(got[k], exp, rtol=0, atol=0, msg=k)
    # nothing temporary left beside the outputs
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_show_and_run_from_a_sharded_hf_output(tmp_path):
    """`mecha show` and `mecha run --from` read a merged Hugging Face folder like a single file."""
    a = tiny_llama(tmp_path / "la", 0)
    b = tiny_llama(tmp_path / "lb", 1)
    (tmp_path / "r.mecha").write_text('param t: float = 0.5\nlet a = model("la")\nlet b = model("lb")\n'
                                      'export weighted_sum(a, b, alpha=t) to "out/" as hf(shard_size="10KB")\n')
    assert mecha("run", str(tmp_path / "r.mecha"), "--set", "t=0.25", cwd=tmp_path).exit_code == 0
    shown = mecha("show", str(tmp_path / "out"), cwd=tmp_path)
    assert shown.exit_code == 0, shown.output
    assert "param t: float = 0.25" in shown.output and "files" in shown.output
    r = mecha("run", "--from", "out", "-o", "again/", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    again = open_source(tmp_path / "again")
    for k in a:
        exp = (a[k].float() * 0.75 + b[k].float() * 0.25).to(torch.bfloat16)
        torch.testing.assert_close(read_tensor(again, again.tensors[k]), exp, rtol=0, atol=0, msg=k)


def test_quick_merge_of_hf_folders_writes_an_hf_folder(tmp_path):
    from transformers import AutoModelForCausalLM

    a = tiny_llama(tmp_path / "la", 0)
    b = tiny_llama(tmp_path / "lb", 1)
    r = mecha("merge", "la", "lb", "--alpha", "0.25", "-o", "out", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "config.json").is_file()
    got = AutoModelForCausalLM.from_pretrained(tmp_path / "out", torch_dtype=torch.bfloat16).state_dict()
    for k in a:
        exp = (a[k].float() * 0.75 + b[k].float() * 0.25).to(torch.bfloat16)
        torch.testing.assert_close(got[k], exp, rtol=0, atol=0, msg=k)


def test_hf_output_interrupted_leaves_nothing(tmp_path):
    tiny_llama(tmp_path / "la", 0)
    sd = load_file(str(next((tmp_path / "la").glob("model-00001-*.safetensors"))))
    key = next(iter(sd))
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")
    save_file(sd, str(next((tmp_path / "la").glob("model-00001-*.safetensors"))), metadata={"format": "pt"})
    (tmp_path / "r.mecha").write_text('export model("la") to "out/" as hf(shard_size="4KB")\n')
    r = mecha("run", str(tmp_path / "r.mecha"), "--check-finite", cwd=tmp_path)
    assert r.exit_code != 0 and "non-finite" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["la", "r.mecha"]


BAD_INDEX_CASES = {
    "missing shard": (lambda f: _shard(f, 2).unlink(), "shard `model-00002-of-0000"),
    "named twice": (lambda f: _edit_index(f, twice=True), "names tensor `lm_head.weight` twice"),
    "not in shard": (lambda f: _edit_index(f, ghost=True), "the index says tensor `ghost.weight` is in this shard"),
    "config disagrees": (lambda f: _edit_config(f), "config.json says hidden_size = 32"),
    "no layout": (lambda f: [p.unlink() for p in f.iterdir() if "safetensors" in p.name], "no known model layout"),
}


def _shard(folder: Path, i: int) -> Path:
    return next(folder.glob(f"model-{i:05d}-of-*.safetensors"))


def _edit_index(folder: Path, twice=False, ghost=False):
    p = folder / "model.safetensors.index.json"
    text = p.read_text()
    if twice:
        text = text.replace('"weight_map": {', f'"weight_map": {{\n    "lm_head.weight": "{_shard(folder, 1).name}",', 1)
    if ghost:
        text = text.replace('"weight_map": {', f'"weight_map": {{\n    "ghost.weight": "{_shard(folder, 1).name}",', 1)
    p.write_text(text)


def _edit_config(folder: Path):
    p = folder / "config.json"
    doc = json.loads(p.read_text())
    doc["hidden_size"] = 32
    p.write_text(json.dumps(doc))


@pytest.mark.parametrize("case", list(BAD_INDEX_CASES))
def test_bad_hf_inputs_are_diagnostics(tmp_path, case):
    tiny_llama(tmp_path / "la", 0)
    assert len(list((tmp_path / "la").glob("model-*-of-*.safetensors"))) > 2
    breaker, message = BAD_INDEX_CASES[case]
    breaker(tmp_path / "la")
    (tmp_path / "r.mecha").write_text('export model("la") to "out/" as hf\n')
    for args in (("check", "r.mecha"), ("run", "r.mecha"), ("info", "la")):
        r = mecha(*args, cwd=tmp_path)
        assert r.exit_code == 1, (args, r.output)
        assert "E0202" in r.output and message in r.output, r.output
        assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_output_path_must_fit_the_format(tmp_path):
    tiny_llama(tmp_path / "la", 0)
    cases = {
        'export model("la") to "x.bin"\n': ("E0280", "safetensors only"),
        'export model("la") to "x.safetensors" as hf\n': ("E0280", "`as hf` writes a folder"),
        'export model("la") to "dir/"\n': ("E0242", "as hf"),
        'export model("la") to "la2/" as hf(shard_size="big")\n': ("E0281", "shard_size="),
        'export model("la") to "here/" as hf(rank=3)\n': ("E0218", "no option `rank`"),
        'export model("la") to "la/" as hf\n': ("E0241", "one of this recipe's inputs"),
    }
    for text, (code, msg) in cases.items():
        (tmp_path / "r.mecha").write_text(text)
        r = mecha("run", "r.mecha", cwd=tmp_path)
        assert r.exit_code == 1 and code in r.output and msg in r.output, (text, r.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["la", "r.mecha"]
    (tmp_path / "r.mecha").write_text('export model("la") to "o/" as hf\n')
    assert mecha("run", "r.mecha", "--shard-size", "lots", cwd=tmp_path).exit_code == 1


def test_hf_output_without_hf_input_warns(tmp_path):
    save_file({"w": torch.ones(3)}, str(tmp_path / "m.safetensors"))
    (tmp_path / "r.mecha").write_text('export model("m", arch=generic) to "o/" as hf\n')
    r = mecha("run", "r.mecha", cwd=tmp_path)
    assert r.exit_code == 0 and "W0282" in r.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["model.safetensors"]


def test_bare_model_names_resolve_like_a1111(tmp_path):
    save_file({"w": torch.ones(3)}, str(tmp_path / "ghostmix.safetensors"))
    torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "ghostmix.ckpt")
    torch.save({"state_dict": {"w": torch.full((3,), 2.0)}}, tmp_path / "dreamshaper.ckpt")
    (tmp_path / "models").mkdir()
    save_file({"w": torch.full((3,), 4.0)}, str(tmp_path / "models" / "other.safetensors"))
    (tmp_path / "r.mecha").write_text(
        'export add_difference(model("ghostmix", arch=generic), model("dreamshaper", arch=generic), '
        'model("other", arch=generic), alpha=1.0) to "o.safetensors"\n')
    r = mecha("run", "r.mecha", "--models-dir", "models", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    # ghostmix.safetensors (1) wins over ghostmix.ckpt; 1 + 1·(2 − 4)
    assert torch.equal(load_file(str(tmp_path / "o.safetensors"))["w"], torch.full((3,), -1.0))


def test_per_component_output_dtypes(tmp_path):
    from mechalang.synth import make_model

    make_model("sd1", tmp_path / "a.safetensors", dim_cap=4, dtype="float16", seed=1)
    make_model("sd1", tmp_path / "b.safetensors", dim_cap=4, dtype="float16", seed=2)
    (tmp_path / "r.mecha").write_text(
        'let a = model("a.safetensors")\nlet b = model("b.safetensors")\n'
        'export weighted_sum(a, b, alpha=0.5) to "o.safetensors" as {vae: fp32, IN00: "bf16", default: fp16}\n')
    r = mecha("run", "r.mecha", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    out = load_file(str(tmp_path / "o.safetensors"))
    assert set(out) == set(a)
    for k, v in out.items():
        if not a[k].is_floating_point():
            assert torch.equal(v, a[k])
            continue
        # independent of the arch data: the VAE's keys by prefix; IN00 is the UNet's first conv
        # and (as sd-mecha's blocks have it) the time embedding
        in00 = ("model.diffusion_model.input_blocks.0.", "model.diffusion_model.time_embed.")
        want = torch.float32 if k.startswith("first_stage_model.") else \
            torch.bfloat16 if k.startswith(in00) else torch.float16
        assert v.dtype == want, k
        torch.testing.assert_close(v, ((a[k].float() + b[k].float()) * 0.5).to(want), rtol=0, atol=0)
    (tmp_path / "bad.mecha").write_text('export model("a.safetensors") to "p.safetensors" as {vea: fp32, default: fp17}\n')
    r = mecha("check", "bad.mecha", cwd=tmp_path)
    assert r.exit_code == 1 and "E0243" in r.output and "fp17" in r.output
    (tmp_path / "bad.mecha").write_text('export model("a.safetensors") to "p.safetensors" as {vea: fp32}\n')
    r = mecha("check", "bad.mecha", cwd=tmp_path)
    assert r.exit_code == 1 and "E0311" in r.output and "vae" in r.output
    assert not (tmp_path / "p.safetensors").exists()


def test_sd_ckpt_detected_and_checked_without_torch(tmp_path):
    """An SD1 `.ckpt` (nested state_dict, as the original repository saves it) is detected as sd1,
    and `mecha check` of a recipe on it and on a Hugging Face folder imports no torch."""
    import subprocess
    import sys

    from mechalang.synth import make_model

    make_model("sd1", tmp_path / "a.safetensors", dim_cap=4, dtype="float16", seed=1)
    torch.save({"state_dict": load_file(str(tmp_path / "a.safetensors")), "global_step": 470000},
               tmp_path / "sd.ckpt")
    tiny_llama(tmp_path / "la", 0)
    (tmp_path / "r.mecha").write_text(
        'export weighted_sum(model("sd.ckpt"), model("a.safetensors"), alpha=0.5) to "o.safetensors"\n'
        'export model("la") to "o/" as hf\n')
    code = ("import sys; from mechalang import pipeline; p = pipeline.check(pipeline.load('r.mecha')); "
            "assert not [d for d in p.diagnostics if d.is_error], p.diagnostics; "
            "assert 'torch' not in sys.modules; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    r = mecha("info", "sd.ckpt", cwd=tmp_path)
    assert r.exit_code == 0 and "arch: sd1" in r.output and "kind: torch" in r.output


def test_hash_of_a_sharded_source_is_of_its_files_in_index_order(tmp_path):
    import hashlib

    from safetensors import safe_open

    tiny_llama(tmp_path / "la", 0)
    (tmp_path / "r.mecha").write_text('export model("la") to "o.safetensors"\n')
    r = mecha("run", "r.mecha", "--hash", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    wm = json.loads((tmp_path / "la" / "model.safetensors.index.json").read_text())["weight_map"]
    h = hashlib.sha256()
    for shard in dict.fromkeys(wm.values()):
        h.update((tmp_path / "la" / shard).read_bytes())
    with safe_open(str(tmp_path / "o.safetensors"), "pt") as f:
        inputs = json.loads(f.metadata()["mechalang.inputs"])
    assert inputs[0]["sha256"] == h.hexdigest()


def test_a_registered_source_kind_with_derived_keys(tmp_path):
    """The extension API a new kind (a diffusers folder) uses: a folder of two files whose model
    keys are renamed, concatenated (q/k/v -> in_proj), reshaped (linear -> 1×1 conv) and scaled,
    merged by `mecha run` and compared with the same transforms done by hand in torch."""
    import os

    from mechalang.sources import Source, SourceKind, register
    from mechalang.sources import safetensors as st
    from mechalang.sources.registry import _KINDS

    g = torch.Generator().manual_seed(9)
    one = {f"attn.{p}.weight": torch.randn(4, 6, generator=g).half() for p in "qkv"}
    two = {"proj.weight": torch.randn(5, 3, generator=g).half(), "gain": torch.tensor([2.0]),
           "norm.weight": torch.randn(3, generator=g).half()}

    def claims(path):
        return os.path.isfile(os.path.join(path, "toy_index.json"))

    def open_folder(path):
        f0, t0, _ = st.stored_tensors(os.path.join(path, "one.safetensors"), 0)
        f1, t1, _ = st.stored_tensors(os.path.join(path, "two.safetensors"), 1)
        q, k, v = (t0[f"attn.{p}.weight"] for p in "qkv")
        proj = t1["proj.weight"]
        tensors = {
            "net.in_proj_weight": Derived("F16", (12, 6), "cat", (q, k, v)),
            "net.proj.weight": Derived("F16", (5, 3, 1, 1), "reshape", (proj,)),
            "net.norm.weight": Derived("F16", (3,), "mul", (t1["norm.weight"], t1["gain"])),
            "net.proj_t": Derived("F16", (3, 5), "transpose", (proj,)),
            "net.q": q,
        }
        return Source(os.path.abspath(path), "toy", (f0, f1), tensors, {})

    register(SourceKind("toy", claims, open_folder, "a toy folder", folder=True))
    try:
        for name, seed in (("ta", 0), ("tb", 1)):
            d = tmp_path / name
            d.mkdir()
            (d / "toy_index.json").write_text("{}")
            scale = 1 + seed
            save_file({k: (v.float() * scale).half() for k, v in one.items()}, str(d / "one.safetensors"))
            save_file({k: (v.float() * scale) .to(v.dtype) for k, v in two.items()}, str(d / "two.safetensors"))
        (tmp_path / "r.mecha").write_text(
            'export weighted_sum(model("ta", arch=generic), model("tb", arch=generic), alpha=0.25) to "o.safetensors"\n')
        r = mecha("run", "r.mecha", cwd=tmp_path)
        assert r.exit_code == 0, r.output
        out = load_file(str(tmp_path / "o.safetensors"))

        def model(scale):
            o = {k: (v.float() * scale).half().float() for k, v in one.items()}
            t = {k: (v.float() * scale).to(v.dtype).float() for k, v in two.items()}
            return {"net.in_proj_weight": torch.cat([o["attn.q.weight"], o["attn.k.weight"], o["attn.v.weight"]]),
                    "net.proj.weight": t["proj.weight"].reshape(5, 3, 1, 1),
                    "net.norm.weight": t["norm.weight"] * t["gain"],
                    "net.proj_t": t["proj.weight"].t(),
                    "net.q": o["attn.q.weight"]}

        a, b = model(1), model(2)
        assert set(out) == set(a)
        for k in a:
            torch.testing.assert_close(out[k], (a[k] * 0.75 + b[k] * 0.25).half(), rtol=0, atol=0, msg=k)
    finally:
        _KINDS[:] = [k for k in _KINDS if k.name != "toy"]


def test_torch_files_that_cannot_be_read_in_place_are_refused(tmp_path):
    import zipfile

    torch.save({"w": torch.randn(2, 3, 4).permute(2, 0, 1)}, tmp_path / "view.pt")
    with pytest.raises(SourceError, match="non-contiguous view"):
        open_source(tmp_path / "view.pt")
    torch.save({"w": torch.randn(8)}, tmp_path / "plain.pt")
    with zipfile.ZipFile(tmp_path / "plain.pt") as src, \
            zipfile.ZipFile(tmp_path / "zipped.pt", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with pytest.raises(SourceError, match=r"compressed \(deflate\).*cannot be streamed"):
        open_source(tmp_path / "zipped.pt")
    (tmp_path / "junk.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SourceError, match="zip"):
        open_source(tmp_path / "junk.ckpt")


def test_folder_output_with_subfolders_appears_whole(tmp_path):
    """A folder output whose files lie in subfolders (the layout a diffusers pipeline needs): written
    in a temporary folder, renamed at the end; on failure nothing is left."""
    from mechalang.graph.source_reads import input_files, source_expr
    from mechalang.runtime.executor import execute
    from mechalang.runtime.plan import FolderOutput, OutputPlan, Plan, layout

    save_file({"x": torch.arange(6, dtype=torch.float32).reshape(2, 3), "y": torch.ones(4)},
              str(tmp_path / "in.safetensors"))
    (tmp_path / "cfg.json").write_text('{"a": 1}')
    src = open_source(tmp_path / "in.safetensors")
    folder = str(tmp_path / "pipe")

    def plan():
        outs = (OutputPlan(folder + "/unet/w.safetensors",
                           layout([("x", source_expr(0, src.tensors["x"]), "F16", (2, 3))]), folder=folder),
                OutputPlan(folder + "/vae/w.safetensors",
                           layout([("y", source_expr(0, src.tensors["y"]), "F32", (4,))]), folder=folder))
        return Plan(tuple(input_files(src, "in")), outs, "fp32",
                    (FolderOutput(folder, (("model_index.json", "{}\n"),), ((str(tmp_path / "cfg.json"), "unet/config.json"),)),))

    execute(plan(), threads=2, fsync=False)
    assert sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*")) == [
        "model_index.json", "unet", "unet/config.json", "unet/w.safetensors", "vae", "vae/w.safetensors"]
    assert torch.equal(load_file(folder + "/unet/w.safetensors")["x"], torch.arange(6.0).reshape(2, 3).half())
    import shutil

    shutil.rmtree(folder)
    (tmp_path / "cfg.json").unlink()  # the copy fails at the end: nothing may be left
    with pytest.raises(Exception):
        execute(plan(), threads=1, fsync=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]


def test_hf_folder_with_per_key_dtypes(tmp_path):
    """`as hf(dtype={norm: fp32, default: bf16})`: the map's selectors choose each key's dtype,
    transformers loads the folder, and config.json names the dtype most tensors have."""
    from transformers import AutoModelForCausalLM

    a = tiny_llama(tmp_path / "la", 0)
    b = tiny_llama(tmp_path / "lb", 1)
    (tmp_path / "r.mecha").write_text(
        'export weighted_sum(model("la"), model("lb"), alpha=0.25) to "out/" '
        'as hf(dtype={norm: fp32, default: fp16})\n')
    r = mecha("run", "r.mecha", cwd=tmp_path)
    assert r.exit_code == 0, r.output
    got = {}
    src = open_source(tmp_path / "out")
    for k, t in src.tensors.items():
        got[k] = read_tensor(src, t)
    assert set(got) == set(a)
    for k in a:
        want = torch.float32 if "norm" in k else torch.float16  # by name, not by the arch's data
        exp = (a[k].float() * 0.75 + b[k].float() * 0.25).to(want)
        assert got[k].dtype == want, k
        torch.testing.assert_close(got[k], exp, rtol=0, atol=0, msg=k)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config.get("torch_dtype", config.get("dtype")) == "float16"
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "out", torch_dtype=torch.float32)
    torch.testing.assert_close(m.state_dict()["model.norm.weight"], got["model.norm.weight"])
    (tmp_path / "bad.mecha").write_text(
        'export model("la") to "o/" as hf(dtype={nrom: fp32, default: fp17})\n')
    r = mecha("check", "bad.mecha", cwd=tmp_path)
    assert r.exit_code == 1 and "E0243" in r.output and "fp17" in r.output
    assert not (tmp_path / "o").exists()
