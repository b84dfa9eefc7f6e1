"""Bad adapters through `mecha check` / `mecha run` as a subprocess: each reports its diagnostic
code, names the adapter file and the module at fault, exits 1 and prints no traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .conftest import close, mecha, write_adapter

Q = "model.layers.0.self_attn.q_proj"
TO_Q = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q"  # [320, 320] in sd1's inventory


def rnd(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed + len(shape)).standard_normal(shape).astype(np.float32)


def lora(module: str, out: int, inn: int, rank: int = 4, alpha: float | None = 2.0, seed: int = 0) -> dict:
    t = {module + ".lora_up.weight": rnd(out, rank, seed=seed), module + ".lora_down.weight": rnd(rank, inn, seed=seed)}
    if alpha is not None:
        t[module + ".alpha"] = np.array(alpha, dtype=np.float32)
    return t


def setup(tmp_path: Path, bases, base: str, tensors: dict | None, call: str = 'lora("a.safetensors", base=base)'
          ) -> list[str]:
    """A recipe `export base + 0.8 * CALL` in tmp_path (with the adapter a.safetensors); returns the
    recipe's command-line arguments (the recipe and --models-dir for the base)."""
    base_path = bases.path(base)
    if tensors is not None:
        write_adapter(tmp_path / "a.safetensors", tensors)
    (tmp_path / "r.mecha").write_text(f'let base = model("{base_path.name}")\n'
                                      f'export base + 0.8 * {call} to "out.safetensors"\n')
    return ["r.mecha", "--models-dir", str(base_path.parent)]


def error_line(res, code: str) -> str:
    """The first line of the diagnostic `code` (its message), after checking the run failed cleanly."""
    assert "Traceback" not in res.text, res.text
    assert res.rc == 1, res.text
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(f"error[{code}]")]
    assert lines, f"no error[{code}] in:\n{res.text}"
    return lines[0]


def check(tmp_path, *args):
    return mecha("check", *args, cwd=tmp_path)


# ------------------------------------------------------------------------------------------------


def test_rank_mismatch(tmp_path, bases):
    t = {Q + ".lora_up.weight": rnd(16, 4), Q + ".lora_down.weight": rnd(3, 16)}
    line = error_line(check(tmp_path, *setup(tmp_path, bases, "llama", t)), "E0271")
    assert "a.safetensors" in line and Q in line and "rank" in line


def test_rank_mismatch_through_the_pipeline(tmp_path, bases):
    from mechalang import pipeline

    t = {Q + ".lora_up.weight": rnd(16, 4), Q + ".lora_down.weight": rnd(3, 16)}
    args = setup(tmp_path, bases, "llama", t)
    program = pipeline.load(tmp_path / args[0], models_dir=args[2])
    errors = [d for d in program.diagnostics if d.is_error]
    assert [d.code for d in errors] == ["E0271"]
    assert "a.safetensors" in errors[0].message and Q in errors[0].message
    result = pipeline.run(program)
    assert not result.ok and not (tmp_path / "out.safetensors").exists()


NOPE = "model.layers.0.self_attn.nope"


def unused_adapter() -> dict:
    return {**lora(Q, 16, 16), **lora(NOPE, 16, 16, seed=1)}


def test_unused_tensors(tmp_path, bases):
    line = error_line(check(tmp_path, *setup(tmp_path, bases, "llama", unused_adapter())), "E0270")
    assert "a.safetensors" in line and NOPE in line


def test_unused_tensors_allowed(tmp_path, bases):
    """--allow-unused: W0270 on check and run, and the run bakes what does map."""
    from safetensors.numpy import load_file

    t = unused_adapter()
    args = setup(tmp_path, bases, "llama", t)
    res = check(tmp_path, "--allow-unused", *args)
    assert res.rc == 0 and "Traceback" not in res.text, res.text
    assert "warning[W0270]" in res.text and NOPE in res.text
    res = mecha("run", "--allow-unused", *args, cwd=tmp_path)
    assert res.rc == 0 and "Traceback" not in res.text, res.text
    assert "warning[W0270]" in res.text
    out, base = load_file(str(tmp_path / "out.safetensors")), bases.tensors("llama")
    assert set(out) == set(base)
    up, down = (t[Q + s].astype(np.float64) for s in (".lora_up.weight", ".lora_down.weight"))
    close(out[Q + ".weight"], base[Q + ".weight"].astype(np.float64) + 0.8 * (2.0 / 4) * up @ down)
    for k in set(base) - {Q + ".weight"}:
        np.testing.assert_array_equal(out[k], base[k])


def needs_base_cases():
    dora = {**lora(Q, 16, 16), Q + ".dora_scale": np.abs(rnd(16, 1)) + 0.5}
    return [
        pytest.param("llama", dora, Q, id="dora"),
        pytest.param("sd1", {TO_Q + ".weight": rnd(8), TO_Q + ".on_input": np.array(False)}, TO_Q, id="ia3_sd1"),
        pytest.param("sd1", {TO_Q + ".oft_blocks": rnd(4, 80, 80) * 0.01}, TO_Q, id="oft_sd1"),
        pytest.param("llama", {Q + ".weight": rnd(16), Q + ".on_input": np.array(False)}, Q, id="ia3_llama"),
        pytest.param("llama", {Q + ".oft_blocks": rnd(4, 4, 4)}, Q, id="oft_llama"),
    ]


@pytest.mark.parametrize("base, tensors, module", needs_base_cases())
def test_needs_base(tmp_path, bases, base, tensors, module):
    res = check(tmp_path, *setup(tmp_path, bases, base, tensors, call='lora("a.safetensors")'))
    line = error_line(res, "E0272")
    assert "a.safetensors" in line


def test_needs_base_names_the_module(tmp_path, bases):
    tensors = {**lora(Q, 16, 16), Q + ".dora_scale": np.abs(rnd(16, 1)) + 0.5}
    res = check(tmp_path, *setup(tmp_path, bases, "llama", tensors, call='lora("a.safetensors")'))
    assert Q in error_line(res, "E0272")


def test_not_an_adapter(tmp_path, bases):
    res = check(tmp_path, *setup(tmp_path, bases, "llama", {"foo": rnd(3), "bar.baz": rnd(2, 2)}))
    assert "a.safetensors" in error_line(res, "E0274")


def test_full_model_is_not_an_adapter(tmp_path, bases):
    args = setup(tmp_path, bases, "llama", None, call='lora("llama.safetensors", base=base)')
    assert "llama.safetensors" in error_line(check(tmp_path, *args), "E0274")


def test_shape_does_not_fit_the_base(tmp_path, bases):
    """A LoRA for a [16, 16] weight on a base whose weight is [8, 8]."""
    line = error_line(check(tmp_path, *setup(tmp_path, bases, "llama8", lora(Q, 16, 16))), "E0271")
    assert "a.safetensors" in line and Q in line
    assert "[16, 16]" in line and "[8, 8]" in line


def test_truncated_adapter(tmp_path, bases):
    args = setup(tmp_path, bases, "llama", lora(Q, 16, 16))
    path = tmp_path / "a.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    line = error_line(check(tmp_path, *args), "E0202")
    assert "a.safetensors" in line and Q in line  # the message names the tensor that runs past the end


@pytest.mark.parametrize("flags", [["--check-finite"], []])
def test_nan_in_adapter(tmp_path, bases, flags):
    """NaN in an adapter fails the run naming the key and the module, with or without
    --check-finite (an adapter's delta is always checked), and writes nothing."""
    t = lora(Q, 16, 16)
    t[Q + ".lora_up.weight"][3, 1] = np.nan
    args = setup(tmp_path, bases, "llama", t)
    assert check(tmp_path, *args).rc == 0  # headers only: nothing to see yet
    res = mecha("run", *flags, *args, cwd=tmp_path)
    line = error_line(res, "E0601")
    assert Q + ".weight" in line and "NaN" in line and Q in line.replace(Q + ".weight", "")
    assert "Traceback" not in res.text
    assert not (tmp_path / "out.safetensors").exists()


def test_adapter_for_another_architecture(tmp_path, bases):
    """A llama-named LoRA applied to an sd1 base."""
    line = error_line(check(tmp_path, *setup(tmp_path, bases, "sd1", lora(Q, 16, 16))), "E0270")
    assert "a.safetensors" in line and Q in line
