"""Write the small synthetic models the example recipes merge, into examples/models/.

They have the real key names of each architecture's reference checkpoint with every dimension
capped (so each file is a few MB), random values, and a fixed seed per model: enough to run every
example end to end on any machine. `python examples/make_models.py --full` writes true-size SD1.5
files instead (2.1 GB each).
"""

import argparse
from pathlib import Path

from mechalang.synth import make_lora, make_model

HERE = Path(__file__).parent
MODELS = {
    # name: (architecture, seed)
    "ghostmix": ("sd1", 1),
    "dreamshaper": ("sd1", 2),
    "v1-5-pruned": ("sd1", 3),
    "anime": ("sd1", 4),
    "photo": ("sd1", 5),
    "paint": ("sd1", 6),
    "xl_base": ("sdxl", 7),
    "xl_tuned": ("sdxl", 8),
}
# Random kohya LoRAs (`lora_unet_…`, `lora_te_…`): name -> (the model whose names and shapes they
# follow, rank, seed).
LORAS = {
    "style": ("ghostmix", 4, 11),
    "detail": ("ghostmix", 2, 12),
    "xl_style": ("xl_base", 4, 13),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true", help="true-size shapes (large files)")
    ap.add_argument("--out", default=str(HERE / "models"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (arch, seed) in MODELS.items():
        path = out / f"{name}.safetensors"
        if path.exists() and not args.full:
            continue
        make_model(arch, path, dim_cap=None if args.full else 8, dtype="float16", seed=seed)
        print(f"wrote {path}")
    for name, (base, rank, seed) in LORAS.items():
        path = out / f"{name}.safetensors"
        if path.exists() and not args.full:
            continue
        make_lora(out / f"{base}.safetensors", path, rank=rank, seed=seed, scale=0.05)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
