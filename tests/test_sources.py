"""Model sources (mechalang/sources): .ckpt/.pt/.bin read without torch and without running the
pickle, Hugging Face folders, scaled fp8; each compared with what torch / transformers /
safetensors themselves read, and merged end to end by `mecha run`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from mechalang.cli import app
from mechalang.sources import Derived, SourceError, Stored, open_source

runner = CliRunner()


def mecha(*args: str, cwd: Path | None = None):
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return runner.invoke(app, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)


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


def test_legacy_torch_file_refused(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(SourceError) as e:
        open_source(tmp_path / "old.pt")
    assert "re-save" in e.value.message


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
