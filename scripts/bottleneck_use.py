#!/usr/bin/env python
"""How much does a stage-1 generator use its transformer bottleneck, where the condition enters?

The target's one-hot code and the intensity code reach the HF-GAN generator only through
the transformer at the bottleneck; the decoder also gets the encoders' skip features. This
synthesises each target of one case from the other three and reports how far the output
moves (mean absolute change on the [-1, 1] scale, over the brain slices) when the bottleneck
tokens are replaced by zeros, and when only the intensity code moves from the prior mean
- 2 sigma to + 2 sigma. Near zero means the decoder ignores the bottleneck, so the intensity
encoding cannot act.

Usage:  python scripts/bottleneck_use.py CASE_DIR [--model demo]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from MRISynthesisLib.core.io import read_case
from MRISynthesisLib.core.model_grid_inputs import prepare_model_grid_inputs
from MRISynthesisLib.sequences import SEQUENCES
from MRISynthesisLib.core.bundles import load_bundle


def target_sensitivity(generator, channels: torch.Tensor, target_channel: int, mean: float, std: float) -> dict:
    """Mean |change| of the output without the bottleneck and over a 4-sigma intensity range."""
    available = [c for c in range(channels.shape[1]) if c != target_channel]
    with torch.inference_mode():
        fused, skips = generator.encode(channels, [available] * channels.shape[0])
        target = torch.full((channels.shape[0],), target_channel, dtype=torch.long)

        def decode(intensity: float, drop_bottleneck: bool = False) -> torch.Tensor:
            tokens = generator.middle(fused, target, torch.full((channels.shape[0],), intensity))
            return generator.decoder(torch.zeros_like(tokens) if drop_bottleneck else tokens, skips)

        output = decode(mean)
        return {"output": float(output.abs().mean()),
                "without bottleneck": float((output - decode(mean, True)).abs().mean()),
                "intensity -2 to +2 sigma": float((decode(mean - 2 * std) - decode(mean + 2 * std)).abs().mean())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", type=Path, help="a BraTS-style case folder with all four sequences")
    parser.add_argument("--model", default="demo", help="model bundle: name, folder or file (default demo)")
    args = parser.parse_args()
    generator = load_bundle(args.model).stage1.cpu().eval()
    prepared = prepare_model_grid_inputs(read_case(args.case), [], generator)
    order = generator.modality_order
    slices = np.flatnonzero(prepared.brain.any(axis=(1, 2)))
    channels = torch.from_numpy(np.stack([prepared.scaled[s][slices] for s in order], axis=1).astype(np.float32))
    print("| target | mean abs output | change without bottleneck | change over intensity -2..+2 sigma |")
    print("|---|---|---|---|")
    for sequence in SEQUENCES:
        mean, std = generator.intensity_priors[sequence]
        values = target_sensitivity(generator, channels, order.index(sequence), mean, std)
        print(f"| {sequence.value} | {values['output']:.4f} | {values['without bottleneck']:.4f} | "
              f"{values['intensity -2 to +2 sigma']:.5f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
