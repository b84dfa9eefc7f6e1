"""How the sd-mecha corpus in this folder was made: every `*.mecha` here (except `v0_*.mecha`, see
README.md) was written by sd-mecha 1.1 itself with `sd_mecha.serialize`, and `expected.json` holds
values of sd-mecha's own merge of the same small models.

sd-mecha lives in its own virtual environment, never in mechalang's:

    python3 -m venv /work/venv-sdmecha
    /work/venv-sdmecha/bin/pip install torch==2.13.0
    /work/venv-sdmecha/bin/pip install 'sd-mecha==1.1.*'
    /work/venv-sdmecha/bin/python tests/sdmecha_corpus/make_corpus.py \
        --mecha-python /work/main/.venv/bin/python

The small models are written by mechalang's python (`--mecha-python`, with this checkout on
PYTHONPATH) with the same function and seeds as the tests' `small_models` fixture
(tests/conftest.py), plus a kohya LoRA of `a` (tests/sdmecha_corpus/models.py), into a temporary
folder. Each recipe is built with sd-mecha's Python API and serialized with its defaults
(`finalize=True`); the only edit to what sd-mecha wrote is that the temporary folder is removed from
the front of model paths, so the recipes name `a.safetensors` and run from any models folder.
Recipes with extension-less model names are serialized with `finalize=False`, which keeps names as
the user wrote them (sd-mecha only checks files when finalizing).

For the recipes marked compared, sd-mecha merges the models (float64 arithmetic, float32 output)
and `expected.json` records, for each, the first values of a few keys (all of them for most: the
models are tiny), the sum and absolute sum over all keys, and the keys sd-mecha found non-finite
(left out of the sums).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import sd_mecha  # noqa: E402
import torch  # noqa: E402
from sd_mecha.extensions import merge_methods  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parent.parent

# Keys whose every value is recorded (conv, linear, norm weights across the UNet's blocks, the text
# encoder and the VAE), for sd1 and sdxl outputs.
PROBE_KEYS = {
    "sd1": [
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.input_blocks.4.0.in_layers.2.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.output_blocks.5.1.transformer_blocks.0.ff.net.2.weight",
        "model.diffusion_model.output_blocks.11.1.norm.bias",
        "model.diffusion_model.out.2.weight",
        "model.diffusion_model.time_embed.0.weight",
        "cond_stage_model.transformer.text_model.encoder.layers.3.self_attn.q_proj.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        "first_stage_model.decoder.conv_in.weight",
    ],
    "sdxl": [
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.output_blocks.2.1.transformer_blocks.0.ff.net.2.weight",
        "model.diffusion_model.out.2.weight",
        "conditioner.embedders.0.transformer.text_model.encoder.layers.3.self_attn.q_proj.weight",
        "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight",
        "first_stage_model.decoder.conv_in.weight",
    ],
}

PROBE_VALUES = 24  # the first values of each probe key (tiny models: most keys have 4 or 16)

SD1_BLOCKS = {"BASE": 0.1, **{f"IN{i:02d}": round(0.05 * i, 2) for i in range(12)}, "M00": 0.5,
              **{f"OUT{i:02d}": round(1 - 0.05 * i, 2) for i in range(12)}}
SDXL_BLOCKS = {"BASE": 0.2, **{f"IN{i:02d}": round(0.1 * i, 2) for i in range(9)}, "M00": 0.5,
               **{f"OUT{i:02d}": round(0.9 - 0.1 * i, 2) for i in range(9)}, "VAE": 0.0}


def recipes(m):
    """name → (a function making the recipe, compared with sd-mecha's output?, arch of the output or None).

    `m(name, config=...)` is a model node; the sd-mecha API is used as its users do."""
    a, b, c, d = (m(n, "sd1-ldm") for n in "abcd")
    xl, xl2 = m("xl", "sdxl-sgm"), m("xl2", "sdxl-sgm")
    sm = sd_mecha
    # the methods themselves, where sd_mecha's module function of that name is a wrapper
    add_delta = merge_methods.resolve("add_difference")  # a + alpha * delta
    rotate, scale = merge_methods.resolve("rotate"), merge_methods.resolve("scale")
    truncate_kronecker = merge_methods.resolve("truncate_kronecker")
    balance_attention = merge_methods.resolve("balance_attention")
    sd1_blocks = sm.convert(sm.literal(SD1_BLOCKS, "sd1-supermerger_blocks"), "sd1-ldm")
    sdxl_blocks = sm.convert(sm.literal(SDXL_BLOCKS, "sdxl-supermerger_blocks"), "sdxl-sgm")
    out = {
        # linear.py
        "weighted_sum": (lambda: sm.weighted_sum(a, b, alpha=0.3), True),
        "weighted_sum_default": (lambda: sm.weighted_sum(a, b), True),
        "weighted_sum_blocks_sd1": (lambda: sm.weighted_sum(a, b, alpha=sd1_blocks), True),
        "weighted_sum_sdxl": (lambda: sm.weighted_sum(xl, xl2, alpha=0.7), True),
        "weighted_sum_blocks_sdxl": (lambda: sm.weighted_sum(xl, xl2, alpha=sdxl_blocks), True),
        "n_average": (lambda: sm.n_average(a, b, c), True),
        "slerp": (lambda: sm.slerp(a, b, alpha=0.4), True),
        "slerp_blocks": (lambda: sm.slerp(a, b, alpha=sd1_blocks), True),
        "add_difference": (lambda: sm.add_difference(a, b, c, alpha=0.5), True),
        "add_difference_delta": (lambda: add_delta(a, sm.subtract(b, c), alpha=0.75), True),
        "add_difference_sdxl_blocks": (lambda: sm.add_difference(xl, xl2, xl, alpha=sdxl_blocks), True),
        "subtract": (lambda: add_delta(a, scale(sm.subtract(b, c), alpha=0.5)), True),
        "scale": (lambda: add_delta(a, scale(sm.subtract(b, a), alpha=0.25)), True),
        "perpendicular_component": (lambda: add_delta(a, sm.perpendicular_component(
            sm.subtract(b, a), sm.subtract(c, a))), True),
        "add_perpendicular": (lambda: sm.add_perpendicular(a, b, c, alpha=0.5), True),
        "geometric_sum": (lambda: sm.geometric_sum(a, b, alpha=0.3), True),
        "train_difference_mask": (lambda: add_delta(a, sm.subtract(b, c),
                                                    alpha=sm.train_difference_mask(a, b, c, alpha=1.0)), False),
        "add_opposite_mask": (lambda: sm.weighted_sum(a, b, alpha=sm.add_opposite_mask(a, b, c, alpha=0.5)), False),
        "add_strict_opposite_mask": (lambda: sm.weighted_sum(
            a, b, alpha=sm.add_strict_opposite_mask(a, b, c, alpha=0.5)), False),
        "multiply_quotient": (lambda: sm.multiply_quotient(a, b, c, alpha=0.5), False),
        # cosine.py, crossover.py, slicing.py
        "add_cosine_a": (lambda: sm.add_cosine_a(a, b, alpha=0.5), True),
        "add_cosine_b": (lambda: sm.add_cosine_b(a, b, alpha=0.5), True),
        "crossover": (lambda: sm.crossover(a, b, alpha=0.5, tilt=0.2), True),
        "tensor_sum": (lambda: sm.tensor_sum(a, b, width=0.5, offset=0.25), True),
        "top_k_tensor_sum": (lambda: sm.top_k_tensor_sum(a, b, width=0.5, offset=0.1), True),
        # ties.py and its wrappers
        "ties_sum": (lambda: add_delta(a, sm.ties_sum(sm.subtract(b, a), sm.subtract(c, a),
                                                      sm.subtract(d, a), k=0.5)), True),
        "ties_sum_keep_all": (lambda: add_delta(a, sm.ties_sum(sm.subtract(b, a), sm.subtract(c, a),
                                                               sm.subtract(d, a), k=1.0)), True),
        "ties_sum_keep_all_vote_sgn": (lambda: add_delta(a, sm.ties_sum(
            sm.subtract(b, a), sm.subtract(c, a), sm.subtract(d, a), k=1.0, vote_sgn=True)), True),
        "ties_sum_vote_sgn": (lambda: add_delta(a, sm.ties_sum(sm.subtract(b, a), sm.subtract(c, a),
                                                               k=0.3, vote_sgn=True)), True),
        "ties_sum_extended": (lambda: add_delta(a, sm.ties_sum_extended(
            sm.subtract(b, a), sm.subtract(c, a), k=0.3, apply_stock=True)), False),
        "ties_sum_with_dropout": (lambda: add_delta(a, sm.ties_sum_with_dropout(
            sm.subtract(b, a), sm.subtract(c, a), probability=0.5, seed=1)), False),
        "add_ties_with_dare": (lambda: sm.add_ties_with_dare(a, b, c, probability=0.5, seed=2), False),
        "dropout": (lambda: sm.dropout(a, b, c, probability=0.5, seed=3), False),
        "model_stock": (lambda: add_delta(a, sm.model_stock(sm.subtract(b, a), sm.subtract(c, a),
                                                            sm.subtract(d, a))), False),
        "n_model_stock": (lambda: sm.n_model_stock(a, b, c, d), False),
        "geometric_median": (lambda: sm.geometric_median(a, b, c, eps=1e-6, maxiter=50), True),
        # svd.py, kronecker.py
        "rotate": (lambda: rotate(a, b, alignment=1.0, alpha=0.5), False),
        "truncate_rank": (lambda: add_delta(a, sm.truncate_rank(sm.subtract(b, a), rank=2)), False),
        "truncate_kronecker": (lambda: add_delta(a, truncate_kronecker(sm.subtract(b, a))), False),
        # limiting.py, logistics.py
        "clamp": (lambda: sm.clamp(sm.add_difference(a, b, c, alpha=2.0), a, b), True),
        "clamp_stiffness": (lambda: sm.clamp(sm.weighted_sum(a, c, alpha=1.5), a, b, stiffness=0.5), True),
        "fallback": (lambda: sm.fallback(sm.pick_component(sm.weighted_sum(a, b), "diffuser"), c), True),
        "pick_component": (lambda: sm.pick_component(sm.weighted_sum(a, b), "clip_l") | a, True),
        "omit_component": (lambda: sm.omit_component(sm.weighted_sum(a, b), "vae") | a, True),
        "cast": (lambda: sm.cast(sm.weighted_sum(a, b), dtype="float32"), False),
        "omit_non_finite": (lambda: sm.omit_non_finite(sm.weighted_sum(a, b)), False),
        "exchange_ema": (lambda: sm.exchange_ema(a), False),
        "stack": (lambda: sm.weighted_sum(a, b, alpha=sm.stack(0.2, 0.4)), False),
        # rebasin, balance_attention: interfaces with sdxl-sgm implementations
        "rebasin_sdxl": (lambda: sm.rebasin(xl, xl2, iters=2), False),
        "randperm_sdxl": (lambda: sm.randperm(xl, seed=4), False),
        # LoRAs: sd-mecha converts a kohya LoRA to its base's config, then adds it as a delta
        "lora": (lambda: add_delta(a, sm.convert(m("lora_a", "sd1-kohya_kohya_lora"), a),
                                           alpha=0.8), True),
        "lora_inferred_config": (lambda: add_delta(a, sm.convert(m("lora_a", None), a)), True),
        # no config: sd-mecha infers it from the file when it finalizes the recipe
        "model_without_config": (lambda: sm.weighted_sum(m("a", None), m("b", None), alpha=0.4), True),
        "balance_attention_sdxl": (lambda: balance_attention(xl), False),
    }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mecha-python", default=str(ROOT / ".venv/bin/python"),
                    help="a python with mechalang's dependencies, to write the small models")
    ap.add_argument("--only", nargs="*", help="make only these recipes")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        subprocess.run([args.mecha_python, "-m", "tests.sdmecha_corpus.models", str(models)],
                       check=True, cwd=ROOT, env=env)
        prefix = str(models.resolve()) + os.sep

        def m(name, config, merge_space="weight"):
            return sd_mecha.model(str(models / f"{name}.safetensors"), config, merge_space)

        expected_path = HERE / "expected.json"
        expected = json.loads(expected_path.read_text()) if expected_path.exists() else {}
        for name, (make, compared) in recipes(m).items():
            if args.only and name not in args.only:
                continue
            try:
                recipe = make()
                text = sd_mecha.serialize(recipe)
            except Exception as e:  # noqa: BLE001 - report and go on: one method's failure is data
                print(f"{name}: sd-mecha cannot serialize it: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            text = text.replace(prefix, "")
            (HERE / f"{name}.mecha").write_text(text + "\n")
            print(f"{name}.mecha")
            if compared:
                try:
                    expected[name] = record(recipe, text)
                except Exception as e:  # noqa: BLE001 - sd-mecha's own bug: the recipe stays, unchecked
                    expected.pop(name, None)
                    print(f"{name}: sd-mecha cannot merge it: {type(e).__name__}: {e}", file=sys.stderr)
        for name, text in extensionless().items():
            if not args.only or name in args.only:
                (HERE / f"{name}.mecha").write_text(text + "\n")
                print(f"{name}.mecha")
        expected_path.write_text(json.dumps(expected, sort_keys=True) + "\n")
    return 0


def extensionless() -> dict[str, str]:
    """Recipes naming models without an extension, as users write them (`model("ghostmix")`):
    serialized without finalizing, which is when sd-mecha would look for the files."""
    sm = sd_mecha
    a, b = sm.model("a", "sd1-ldm"), sm.model("b", "sd1-ldm")
    return {
        "extensionless_weighted_sum": sm.serialize(sm.weighted_sum(a, b, alpha=0.3), finalize=False),
        "extensionless_add_difference": sm.serialize(
            sm.add_difference(a, b, sm.model("c", "sd1-ldm"), alpha=0.5), finalize=False),
    }


def record(recipe, text: str) -> dict:
    """sd-mecha's own output for `recipe`: the probe keys' values and whole-model sums."""
    sd = sd_mecha.merge(recipe, merge_dtype=torch.float64, output_dtype=torch.float32,
                        threads=1)
    arch = "sdxl" if "sdxl-sgm" in text else "sd1"
    tensors = {k: v.double() for k, v in sd.items() if isinstance(v, torch.Tensor)}
    # a key sd-mecha computes as NaN or inf (e.g. a cosine of zero tensors) is listed, not summed
    nonfinite = sorted(k for k, v in tensors.items() if not bool(torch.isfinite(v).all()))
    finite = [v for k, v in tensors.items() if k not in nonfinite]
    return {
        "sum": float(sum(v.sum() for v in finite)), "abs_sum": float(sum(v.abs().sum() for v in finite)),
        "keys": len(tensors), "nonfinite": nonfinite,
        "values": {k: [float(f"{x:.6g}") for x in sd[k].flatten().tolist()[:PROBE_VALUES]]
                   for k in PROBE_KEYS[arch]},
    }


if __name__ == "__main__":
    sys.exit(main())
