"""`lora(...)` against PEFT itself: real adapters saved by `peft` on tiny `transformers` models,
baked by mecha, compared with `merge_and_unload()` key by key (and, once, by a forward pass).

Everything is built in pytest's tmp_path with the libraries' own `save_pretrained`, so the files
carry exactly the names, shapes and `adapter_config.json` fields that PEFT writes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from mechalang import pipeline

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning:peft"),
    pytest.mark.filterwarnings("ignore::FutureWarning:transformers"),
    pytest.mark.filterwarnings("ignore::UserWarning:transformers"),
]

PEFT_PREFIX = "base_model.model."
LLAMA_TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj"]


# ------------------------------------------------------------------------------------------------
# helpers


def llama_config(hidden: int = 32, layers: int = 2) -> LlamaConfig:
    return LlamaConfig(hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=False)


def fresh_llama(base) -> LlamaForCausalLM:
    """A copy of the base model (merge_and_unload changes the model it is given)."""
    model = LlamaForCausalLM(base.config)
    model.load_state_dict(base.state)
    return model.eval()


def save_adapter(model, folder: Path, config: LoraConfig, *, seed: int = 1, perturb_magnitude: bool = False,
                 **save_kwargs):
    """Wrap `model` with PEFT (non-zero deltas: init_lora_weights=False), save the adapter to
    `folder`; return (adapter file, the merged model, its state dict)."""
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    if perturb_magnitude:  # DoRA's magnitude starts as ‖W + ΔW‖, which would make it plain LoRA
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_magnitude_vector" in name:
                    p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    peft_model.save_pretrained(str(folder), **save_kwargs)
    merged = peft_model.merge_and_unload().eval()
    state = {k: v.detach().clone() for k, v in merged.state_dict().items()}
    return folder / "adapter_model.safetensors", merged, state


def write_recipe(folder: Path, base_file: Path, adapter_file: Path, expr: str = "base + a",
                 name: str = "r") -> tuple[Path, Path]:
    out = folder / f"{name}.out.safetensors"
    recipe = folder / f"{name}.mecha"
    recipe.write_text(f"let base = model({json.dumps(str(base_file))})\n"
                      f"let a = lora({json.dumps(str(adapter_file))}, base=base)\n"
                      f"export {expr} to {json.dumps(str(out))}\n", encoding="utf-8")
    return recipe, out


def bake_adapter(folder: Path, base_file: Path, adapter_file: Path, expr: str = "base + a") -> dict[str, torch.Tensor]:
    """Run the recipe in-process (pipeline.run) and read its output."""
    recipe, out = write_recipe(folder, base_file, adapter_file, expr)
    result = pipeline.run(pipeline.load(recipe))
    assert result.ok, "\n".join(str(d) for d in result.diagnostics)
    return load_file(str(out))


def run_mecha(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mechalang", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def touched_keys(adapter_file: Path) -> set[str]:
    """The base keys an adapter file's tensors name: `<module path>.weight`."""
    with safe_open(str(adapter_file), "pt") as f:
        names = list(f.keys())
    out = set()
    for n in names:
        assert n.startswith(PEFT_PREFIX), n
        if ".base_layer." in n:  # PEFT's saved copy of an adapted embedding's base weight
            continue
        module = n[len(PEFT_PREFIX):].split(".lora_")[0]
        out.add(module + ".weight")
    return out


def assert_like_peft(out: dict, expected: dict, base: dict, touched: set[str]) -> None:
    """Every output key equals `expected` within fp32 rounding; the keys no adapter tensor names
    are byte-identical to the base; the touched keys really changed (the test means something)."""
    assert set(out) == set(base)
    assert touched and touched <= set(out), touched - set(out)
    for key, got in out.items():
        want = expected[key]
        assert got.dtype == base[key].dtype, key
        assert got.shape == want.shape, key
        if key in touched:
            assert not torch.equal(want, base[key]), f"{key}: the reference did not change it"
            atol = 1e-5 * float(want.abs().max())
            torch.testing.assert_close(got, want.to(got.dtype), rtol=0, atol=atol, msg=lambda m, k=key: f"{k}: {m}")
        else:
            assert got.numpy().tobytes() == base[key].numpy().tobytes(), f"{key} is not the base's"


# ------------------------------------------------------------------------------------------------
# fixtures


class Base:
    def __init__(self, folder: Path, config, state: dict):
        self.folder = folder
        self.file = folder / "model.safetensors"
        self.config = config
        self.state = state
        self.tensors = load_file(str(self.file))


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Base:
    folder = tmp_path_factory.mktemp("llama_base")
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config()).to(torch.float32).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Base(folder, model.config, state)


@pytest.fixture(scope="module")
def llama_lora(llama, tmp_path_factory):
    """The plain adapter: r=4, α=8 on q, v, up, down of both layers."""
    folder = tmp_path_factory.mktemp("llama_lora")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS, init_lora_weights=False)
    return save_adapter(fresh_llama(llama), folder, config)


def test_base_checkpoint_is_what_we_think(llama):
    assert llama.file.is_file()
    assert set(llama.tensors) == set(llama.state)
    assert all(t.dtype == torch.float32 for t in llama.tensors.values())


# ------------------------------------------------------------------------------------------------
# 1. the plain LoRA, through the CLI


def test_plain_lora_cli_matches_merge_and_unload(llama, llama_lora, tmp_path):
    adapter_file, _, merged = llama_lora
    recipe, out = write_recipe(tmp_path, llama.file, adapter_file)
    checked = run_mecha("check", str(recipe), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "peft" in checked.stdout and "rank 4" in checked.stdout, checked.stdout
    assert "8 modules update 8 keys" in checked.stdout, checked.stdout
    ran = run_mecha("run", str(recipe), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    touched = touched_keys(adapter_file)
    assert touched == {f"model.layers.{i}.{m}.weight" for i in range(2)
                       for m in ("self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj", "mlp.down_proj")}
    assert_like_peft(load_file(str(out)), merged, llama.tensors, touched)


# ------------------------------------------------------------------------------------------------
# 2. variants, in-process


VARIANTS = {
    "rslora": {"use_rslora": True},
    "patterns": {"rank_pattern": {"q_proj": 8, "model.layers.1.mlp.down_proj": 2},
                 "alpha_pattern": {"v_proj": 32, "layers.0.mlp.up_proj": 3}},
    "dora": {"use_dora": True},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_matches_merge_and_unload(variant, llama, tmp_path):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS, init_lora_weights=False,
                        **VARIANTS[variant])
    adapter_file, _, merged = save_adapter(fresh_llama(llama), tmp_path / "adapter", config,
                                           perturb_magnitude=variant == "dora")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    with safe_open(str(adapter_file), "pt") as f:
        names = f.keys()
        shapes = {k: f.get_slice(k).get_shape() for k in names}
    if variant == "rslora":
        assert saved["use_rslora"] is True
    if variant == "patterns":
        assert saved["rank_pattern"] and saved["alpha_pattern"]
        a = PEFT_PREFIX + "model.layers.{}.{}.lora_A.weight"
        assert shapes[a.format(0, "self_attn.q_proj")][0] == 8
        assert shapes[a.format(1, "mlp.down_proj")][0] == 2
        assert shapes[a.format(0, "mlp.down_proj")][0] == 4
    if variant == "dora":
        assert saved["use_dora"] is True
        assert any("lora_magnitude_vector" in k for k in shapes)
        # the perturbed magnitude makes DoRA differ from plain LoRA, so the test can tell them apart
        q = "model.layers.0.self_attn.q_proj.weight"
        with safe_open(str(adapter_file), "pt") as f:
            up = f.get_tensor(PEFT_PREFIX + "model.layers.0.self_attn.q_proj.lora_B.weight")
            down = f.get_tensor(PEFT_PREFIX + "model.layers.0.self_attn.q_proj.lora_A.weight")
        plain = llama.tensors[q] + 2.0 * up @ down
        assert not torch.allclose(plain, merged[q], atol=1e-3)
    out = bake_adapter(tmp_path, llama.file, adapter_file)
    assert_like_peft(out, merged, llama.tensors, touched_keys(adapter_file))


def test_embedding_lora_matches_merge_and_unload(llama, tmp_path):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"], init_lora_weights=False)
    # save_embedding_layers=False: without it PEFT also stores the whole embedding table (see the
    # xfail below)
    adapter_file, _, merged = save_adapter(fresh_llama(llama), tmp_path / "adapter", config,
                                           save_embedding_layers=False)
    with safe_open(str(adapter_file), "pt") as f:
        names = set(f.keys())
    assert PEFT_PREFIX + "model.embed_tokens.lora_embedding_A" in names
    assert PEFT_PREFIX + "model.embed_tokens.lora_embedding_B" in names
    touched = touched_keys(adapter_file)
    assert "model.embed_tokens.weight" in touched
    assert_like_peft(bake_adapter(tmp_path, llama.file, adapter_file), merged, llama.tensors, touched)


def test_embedding_lora_default_save(llama, tmp_path):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"], init_lora_weights=False)
    adapter_file, _, merged = save_adapter(fresh_llama(llama), tmp_path / "adapter", config)
    with safe_open(str(adapter_file), "pt") as f:
        assert PEFT_PREFIX + "model.embed_tokens.base_layer.weight" in set(f.keys())
    recipe, _ = write_recipe(tmp_path, llama.file, adapter_file)
    checked = run_mecha("check", str(recipe), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    out = bake_adapter(tmp_path, llama.file, adapter_file)
    touched = touched_keys(adapter_file)
    assert_like_peft(out, merged, llama.tensors, touched)


def test_strength_scales_the_delta(llama, llama_lora, tmp_path):
    adapter_file, _, merged = llama_lora
    out = bake_adapter(tmp_path, llama.file, adapter_file, expr="base + 0.5 * a")
    expected = {k: llama.tensors[k] + 0.5 * (merged[k] - llama.tensors[k]) for k in llama.tensors}
    assert_like_peft(out, expected, llama.tensors, touched_keys(adapter_file))


# ------------------------------------------------------------------------------------------------
# 3. fan_in_fan_out: GPT-2's Conv1D stores weights [in, out]


def test_gpt2_conv1d_fan_in_fan_out(tmp_path):
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=64, bos_token_id=0,
                        eos_token_id=0)
    model = GPT2LMHeadModel(config).to(torch.float32).eval()
    base_dir = tmp_path / "gpt2"
    model.save_pretrained(str(base_dir), safe_serialization=True)
    base = load_file(str(base_dir / "model.safetensors"))
    assert tuple(base["transformer.h.0.attn.c_attn.weight"].shape) == (32, 96)  # [in, out]
    lora_config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False)
    adapter_file, _, merged = save_adapter(model, tmp_path / "adapter", lora_config)
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["fan_in_fan_out"] is True  # PEFT sets it for Conv1D
    recipe, _ = write_recipe(tmp_path, base_dir / "model.safetensors", adapter_file, name="check")
    checked = run_mecha("check", str(recipe), cwd=tmp_path)
    # GPT-2 is no built-in architecture: the file is read as `generic` without arch=
    assert checked.returncode == 0, checked.stderr
    assert "generic" in checked.stdout
    out = bake_adapter(tmp_path, base_dir / "model.safetensors", adapter_file)
    # the tied lm_head is not in the checkpoint; every key that is must match
    assert_like_peft(out, merged, base, touched_keys(adapter_file))


# ------------------------------------------------------------------------------------------------
# 4. bad input: diagnostics, not tracebacks


def check_fails(tmp_path: Path, base_file: Path, adapter_file: Path) -> str:
    recipe, out = write_recipe(tmp_path, base_file, adapter_file)
    r = run_mecha("check", str(recipe), cwd=tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert not out.exists()
    return r.stdout + r.stderr


def test_missing_adapter_config(llama, llama_lora, tmp_path):
    adapter_file, _, _ = llama_lora
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(adapter_file, lonely / "adapter_model.safetensors")
    text = check_fails(tmp_path, llama.file, lonely / "adapter_model.safetensors")
    assert "E0273" in text
    assert "adapter_model.safetensors" in text and "adapter_config.json" in text


def test_unreadable_adapter_config(llama, llama_lora, tmp_path):
    adapter_file, _, _ = llama_lora
    folder = tmp_path / "broken"
    folder.mkdir()
    shutil.copy(adapter_file, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text('{"r": 4, "lora_alpha": ', encoding="utf-8")
    text = check_fails(tmp_path, llama.file, folder / "adapter_model.safetensors")
    assert "E0273" in text and "adapter_config.json" in text


def test_adapter_for_another_base_does_not_fit(llama, tmp_path):
    torch.manual_seed(3)
    other = LlamaForCausalLM(llama_config(hidden=48)).eval()
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS, init_lora_weights=False)
    adapter_file, _, _ = save_adapter(other, tmp_path / "adapter48", config)
    text = check_fails(tmp_path, llama.file, adapter_file)
    assert "E0271" in text
    assert "model.layers.0.self_attn.q_proj" in text
    assert "E0270" not in text


def test_adapter_for_modules_the_base_lacks(llama, tmp_path):
    torch.manual_seed(4)
    deeper = LlamaForCausalLM(llama_config(layers=3)).eval()
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LLAMA_TARGETS, init_lora_weights=False)
    adapter_file, _, _ = save_adapter(deeper, tmp_path / "adapter3", config)
    text = check_fails(tmp_path, llama.file, adapter_file)
    assert "E0270" in text
    assert "model.layers.2." in text
    assert "E0271" not in text


# ------------------------------------------------------------------------------------------------
# 5. the output loads back into transformers and computes what PEFT's merged model computes


def test_output_loads_and_forward_matches(llama, llama_lora, tmp_path):
    adapter_file, merged_model, _ = llama_lora
    out = bake_adapter(tmp_path, llama.file, adapter_file)
    folder = tmp_path / "baked"
    folder.mkdir()
    shutil.copy(llama.folder / "config.json", folder / "config.json")
    from safetensors.torch import save_file

    save_file(out, str(folder / "model.safetensors"), metadata={"format": "pt"})
    baked = LlamaForCausalLM.from_pretrained(str(folder)).to(torch.float32).eval()
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = baked(input_ids=ids).logits
        want = merged_model(input_ids=ids).logits
        plain = fresh_llama(llama)(input_ids=ids).logits
    assert not torch.allclose(plain, want, atol=1e-3)  # the adapter changes the outputs
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_peft_reload_agrees(llama, llama_lora):
    """The saved adapter, loaded back by PEFT itself, merges to the state the tests compare with."""
    adapter_file, _, merged = llama_lora
    reloaded = PeftModel.from_pretrained(fresh_llama(llama), str(adapter_file.parent)).merge_and_unload()
    for k, v in reloaded.state_dict().items():
        torch.testing.assert_close(v, merged[k], rtol=0, atol=0)
