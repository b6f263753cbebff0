"""Numerical parity of tubemask with Hugging Face VideoMAE and with official-layout checkpoints.

For each config: a random `transformers.VideoMAEForPreTraining` whose LayerNorms, biases and mask token are perturbed
(so a converter that dropped one of them would show), converted with `tubemask.interop.from_hf`, run on the same clips
and masks (tube and random, several seeds). Prints max |loss difference| and max |prediction difference| per config,
whether `to_hf(from_hf(m))` reproduces the HF state dict exactly, and the same figures for the official route
(HF weights renamed to official keys -> `load_official`).

Run (CPU, about half a minute):

    .venv/bin/python benchmarks/parity_report.py --seeds 3
"""

import argparse
import sys

import torch

from tubemask.interop import from_hf, load_official, to_hf, tubemask_to_official_state_dict
from tubemask.interop.official import ENCODER_HEADS
from tubemask.masking import RandomMasker, TubeMasker

BASE = dict(
    image_size=32,
    num_frames=4,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    decoder_hidden_size=32,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=4,
    decoder_intermediate_size=128,
)
CONFIGS: dict[str, dict] = {
    "p16 t2 meanpool eps1e-12 qv normpix": dict(patch_size=16, tubelet_size=2),
    "p8 t1 finalnorm eps1e-6 no-qv pixels": dict(
        patch_size=8,
        tubelet_size=1,
        hidden_size=48,
        num_attention_heads=3,
        intermediate_size=96,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=2,
        use_mean_pooling=False,
        layer_norm_eps=1e-6,
        qv_bias=False,
        norm_pix_loss=False,
    ),
    "p16 t1 finalnorm eps1e-6 1ch normpix": dict(
        patch_size=16,
        tubelet_size=1,
        hidden_size=64,
        intermediate_size=256,
        use_mean_pooling=False,
        layer_norm_eps=1e-6,
        num_channels=1,
    ),
    "p8 t2 meanpool eps1e-12 pixels mlp2.5": dict(
        patch_size=8, tubelet_size=2, intermediate_size=80, decoder_intermediate_size=48, norm_pix_loss=False
    ),
    "ViT-S width, 64px x 8f, official eps": dict(
        image_size=64,
        num_frames=8,
        patch_size=16,
        tubelet_size=2,
        hidden_size=384,
        num_attention_heads=6,
        intermediate_size=1536,
        decoder_hidden_size=192,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=3,
        decoder_intermediate_size=768,
        use_mean_pooling=False,
        layer_norm_eps=1e-6,
    ),
}
MASKERS = {"tube": TubeMasker(mask_ratio=0.5), "random": RandomMasker(mask_ratio=0.75)}


def make_hf(kwargs: dict, seed: int):
    import transformers

    torch.manual_seed(seed)
    model = transformers.VideoMAEForPreTraining(transformers.VideoMAEConfig(**{**BASE, **kwargs})).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias") or name.endswith("mask_token"):
                param.add_(0.5 * torch.randn_like(param))
    return model


def diffs(hf_model, model, seed: int) -> dict[str, tuple[float, float]]:
    c = hf_model.config
    side = c.image_size // c.patch_size
    grid = (c.num_frames // c.tubelet_size, side, side)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c.num_frames, c.num_channels, c.image_size, c.image_size, generator=g)
    out = {}
    for name, masker in MASKERS.items():
        mask = masker(2, grid, generator=g)
        with torch.no_grad():
            ref = hf_model(x, bool_masked_pos=mask)
            got = model(x.permute(0, 2, 1, 3, 4), mask)
        out[name] = (abs(ref.loss.item() - got.loss.item()), (ref.logits - got.pred).abs().max().item())
    return out


def record(worst: dict, route: str, found: dict[str, tuple[float, float]]) -> None:
    """Keep the largest differences per (route, mask)."""
    for mask, (dl, dp) in found.items():
        cur = worst.setdefault((route, mask), [0.0, 0.0])
        cur[0], cur[1] = max(cur[0], dl), max(cur[1], dp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="random models per config")
    args = parser.parse_args()
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, float32, CPU\n")
    print("| config | route | mask | max abs d-loss | max abs d-pred | round trip exact |")
    print("|---|---|---|---|---|---|")
    for label, kwargs in CONFIGS.items():
        worst: dict[tuple[str, str], list[float]] = {}
        exact = True
        for seed in range(args.seeds):
            hf_model = make_hf(kwargs, seed)
            model = from_hf(hf_model)
            back = to_hf(model, num_frames=hf_model.config.num_frames, image_size=hf_model.config.image_size)
            a, b = hf_model.state_dict(), back.state_dict()
            exact &= a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
            record(worst, "from_hf", diffs(hf_model, model, seed + 100))
            if kwargs.get("layer_norm_eps") == 1e-6 and not kwargs.get("use_mean_pooling", True):
                hf_model.decoder.norm.eps = 1e-6  # the official decoder norm eps (HF fixes 1e-5)
                ckpt = tubemask_to_official_state_dict(from_hf(hf_model).state_dict())
                if hf_model.config.hidden_size in ENCODER_HEADS:  # a preset width: the model is inferred
                    record(worst, "load_official", diffs(hf_model, load_official(ckpt), seed + 100))
                else:  # fill a model of the same shape holding other weights
                    other = from_hf(make_hf(kwargs, seed + 1000))
                    other.decoder.norm.eps = 1e-6
                    record(
                        worst, "load_official(model=)", diffs(hf_model, load_official(ckpt, model=other), seed + 100)
                    )
        for (route, mask), (dl, dp) in worst.items():
            print(f"| {label} | {route} | {mask} | {dl:.2e} | {dp:.2e} | {'yes' if exact else 'NO'} |")


if __name__ == "__main__":
    main()
