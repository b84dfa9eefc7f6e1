"""Every input ends in a diagnostic: fuzzing each class of bad input the hardening issue found.

For every generated recipe, `mecha check` and `mecha run` exit 0 or 1 (never 70, an internal
error), `check` refuses whatever `run` would refuse before reading a tensor, every error about a
recipe has a FILE:LINE:COL location, every error about a model file names the file, nothing is
left in the output folder by a failed run, and the inputs are byte-identical afterwards. Model
files are fuzzed with the safetensors library as the oracle: whatever it refuses, `mecha` refuses.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from mechalang import pipeline
from mechalang.archs.header import HeaderError, clear_cache, read_header
from mechalang.cli import app

runner = CliRunner()
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, small_models):
    """A folder with two SD1 models (a, b) and an output folder."""
    d = tmp_path_factory.mktemp("hard")
    for n in "ab":
        (d / f"{n}.safetensors").write_bytes((small_models / f"{n}.safetensors").read_bytes())
    (d / "out").mkdir()
    return d


INPUTS = ("a.safetensors", "b.safetensors")


def digest(folder: Path) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in INPUTS}


BASE = 'let a = model("a.safetensors")\nlet b = model("b.safetensors")\n'


def mutations():
    """Recipe texts, each with one of the classes of bad input (and some good ones)."""
    long = "x" * 300
    chars = st.sampled_from(["\\0", "\\u{0}", "/", "..", long, "é", " ", "out/", ".", ""])
    out_paths = st.lists(chars, min_size=1, max_size=3).map("".join)
    digits = st.integers(300, 400).map(lambda n: "9" * n)
    annotations = st.sampled_from(["float[int]", "int[sd1]", "Model[sd1, sdxl]", "list[float, int]", "Hyper[nope]",
                                   "Model[sd1]", "list[float]", "Hyper[sd15]", "bool"])
    return st.one_of(
        out_paths.map(lambda p: BASE + f'export weighted_sum(a, b) to "{p}.safetensors"\n'),
        out_paths.map(lambda p: BASE + f'export weighted_sum(a, b) to "{p}"\n'),
        out_paths.map(lambda p: f'let a = model("{p}.safetensors")\nexport a to "out/o.safetensors"\n'),
        out_paths.map(lambda p: f'import "{p}" as lib\n' + BASE + 'export a to "out/o.safetensors"\n'),
        digits.map(lambda n: BASE + f'export a + {n} * (b - a) to "out/o.safetensors"\n'),
        digits.map(lambda n: BASE + f'export ties(b - a, lambda={n}) + a to "out/o.safetensors"\n'),
        digits.map(lambda n: BASE + f'export dare_linear(b - a, seed={n}) + a to "out/o.safetensors"\n'),
        st.integers(20, 40).map(lambda k: "let v0 = [1, 2]\n" + "".join(f"let v{i} = [*v{i - 1}, *v{i - 1}]\n"
                                                                       for i in range(1, k))),
        st.integers(20, 40).map(lambda k: "def f0(x) = x\n" + "".join(
            f"def f{i}(x) = weighted_sum(f{i - 1}(x), f{i - 1}(x))\n" for i in range(1, k))
            + BASE + f'export f{k - 1}(a) to "out/o.safetensors"\n'),
        annotations.map(lambda t: BASE + f'let w: {t} = 0.5\nexport a to "out/o.safetensors"\n'),
        st.integers(1, 3000).map(lambda k: "def f0(x) = x\n" + "".join(f"def f{i}(x) = f{i - 1}(x)\n" for i in range(1, k))
                                 + BASE + f'export f{k - 1}(a) to "out/o.safetensors"\n'),
    )


def run_cli(args: list[str]) -> tuple[int, list[dict]]:
    res = runner.invoke(app, args + ["--format", "json"])
    try:
        diags = json.loads(res.stdout if args[0] == "check" else (res.stderr or "[]"))
    except (json.JSONDecodeError, ValueError):
        diags = []
    return res.exit_code, diags


@FUZZ
@given(text=mutations())
def test_generated_recipes_end_in_diagnostics(ws, text):
    recipe = ws / "fuzz.mecha"
    recipe.write_text(text, encoding="utf-8")
    before = digest(ws)
    code, diags = run_cli(["check", str(recipe)])
    assert code in (0, 1), (text[:300], code)
    for d in diags:
        if d["severity"] == "error":
            assert d["span"] is not None and d["span"]["line"] >= 1 and d["span"]["col"] >= 1, d
    run_code = runner.invoke(app, ["run", str(recipe), "--overwrite", "--threads", "1"]).exit_code
    assert run_code in (0, 1)
    assert run_code == code, f"check said {code}, run said {run_code}:\n{text[:300]}"
    assert digest(ws) == before  # inputs untouched
    if run_code != 0:  # a failed run leaves nothing behind, temporary files included
        assert not [p for p in (ws / "out").iterdir()], list((ws / "out").iterdir())
    for folder in (ws, ws / "out"):
        for p in folder.iterdir():
            if p.is_file() and p.name not in INPUTS and p.name != "fuzz.mecha":
                p.unlink()


def test_a_chain_of_10000_merges_checks_and_runs(tmp_path):
    tensors = {"w.weight": torch.randn(4, 4), "w.bias": torch.randn(4)}
    save_file(tensors, str(tmp_path / "t0.safetensors"))
    save_file({k: torch.randn_like(v) for k, v in tensors.items()}, str(tmp_path / "t1.safetensors"))
    lines = ['let b = model("t1.safetensors")', 'let v0 = model("t0.safetensors")']
    lines += [f"let v{i} = weighted_sum(v{i - 1}, b, alpha=0.0001)" for i in range(1, 10_001)]
    lines.append('export v10000 to "deep.safetensors"')
    (tmp_path / "chain.mecha").write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    checked = pipeline.check(pipeline.load(tmp_path / "chain.mecha"))
    assert checked.ok and checked.total_keys == 2
    assert time.perf_counter() - started < 60  # seconds on a slow machine; bench/bench_check.py --deep measures it
    result = pipeline.run(pipeline.load(tmp_path / "chain.mecha"), threads=1)
    assert result.ok, result.diagnostics
    out = load_file(str(tmp_path / "deep.safetensors"))
    t0, t1 = load_file(str(tmp_path / "t0.safetensors")), load_file(str(tmp_path / "t1.safetensors"))
    for k in tensors:  # v_n = b + (1 - α)^n (v_0 - b)
        expected = t1[k].double() + (1 - 0.0001) ** 10_000 * (t0[k].double() - t1[k].double())
        torch.testing.assert_close(out[k].double(), expected, rtol=1e-4, atol=1e-5)


def test_deep_template_nesting_has_a_stated_limit(tmp_path, small_models):
    lines = ["def f0(x) = x"] + [f"def f{i}(x) = f{i - 1}(x)" for i in range(1, 10_050)]
    lines += [f'let a = model("{small_models / "a.safetensors"}")', 'export f10049(a) to "o.safetensors"']
    (tmp_path / "nest.mecha").write_text("\n".join(lines) + "\n")
    program = pipeline.load(tmp_path / "nest.mecha")
    (d,) = [d for d in program.diagnostics if d.is_error]
    assert d.code == "E0406" and "10,000 levels" in d.message and d.span is not None


# ------------------------------------------------------------------------------------------------
# Model files: the safetensors library is the oracle


def library_accepts(path: Path) -> bool:
    try:
        with safe_open(str(path), "pt") as f:
            list(f.keys())
        return True
    except Exception:  # noqa: BLE001 - any refusal
        return False


def valid_file(seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    tensors = {f"t{i}": torch.randn(2, 3, generator=g).to(torch.float16 if i % 2 else torch.float32)
               for i in range(3)}
    tensors["z"] = torch.zeros(0)
    from safetensors.torch import save

    return save(tensors, metadata={"k": "v"})


def corrupt(data: bytes, rng: random.Random) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    kind = rng.randrange(12)
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    if kind == 0:
        return data + bytes(rng.randrange(1, 9))  # trailing bytes
    if kind == 1:
        return data[:rng.randrange(len(data))]  # truncated
    if kind == 2:
        b, e = header[name]["data_offsets"]
        header[name]["data_offsets"] = [b + 2, e + 2]  # a hole, an overlap, or past the end
    elif kind == 3:
        header = {"__metadata__": {"k": "v"}}  # `{}`-like header over data
    elif kind == 4:
        header[name]["dtype"] = rng.choice(["F16", "BF16", "F64", "I8", "F8_E4M3", "X9", "F4"])
    elif kind == 5:
        header[name]["shape"] = [rng.randrange(0, 5), rng.randrange(0, 5)]
    elif kind == 6:
        raw = json.dumps(header).replace(f'"{name}"', '"\\ud800x"', 1).encode()
        return struct.pack("<Q", len(raw)) + raw + body
    elif kind == 7:
        header["__metadata__"] = {"k": rng.choice([1, None, "v", ["x"]])}
    elif kind == 8:
        return struct.pack("<Q", n + rng.choice([-3, -1, 1, 5, 1 << 40])) + data[8:]
    elif kind == 9:
        i = rng.randrange(8, 8 + n)
        return data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]  # a byte of the header changed
    elif kind == 10:
        b, e = header[name]["data_offsets"]
        header[name]["data_offsets"] = [e, b]
    else:
        del header[name]  # its bytes are no longer covered
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(seed=st.integers(0, 2**32 - 1))
def test_every_file_the_library_refuses_is_refused(tmp_path_factory, seed):
    rng = random.Random(seed)
    data = corrupt(valid_file(seed % 5), rng)
    path = tmp_path_factory.mktemp("st") / "m.safetensors"
    path.write_bytes(data)
    clear_cache()
    try:
        read_header(str(path))
        ours = True
    except HeaderError as e:
        ours = False
        assert str(path) in str(e)  # the file is named
    if not library_accepts(path):
        assert not ours, f"mecha accepts a file the safetensors library refuses (seed {seed})"


def test_a_refused_model_file_is_named_by_check(tmp_path):
    data = valid_file(1) + b"\0\0\0\0"
    (tmp_path / "trailing.safetensors").write_bytes(data)
    (tmp_path / "r.mecha").write_text('export model("trailing.safetensors") to "o.safetensors"\n')
    code, diags = run_cli(["check", str(tmp_path / "r.mecha")])
    assert code == 1 and diags[0]["code"] == "E0202" and "trailing.safetensors" in diags[0]["message"]
    assert "no tensor covers" in diags[0]["message"]
