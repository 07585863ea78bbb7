"""Cost of the training SSIM loss: ``python benchmarks/training_ssim.py --output-dir out/bench``.

Times forward + backward of the SSIM loss as the trainers use it, with the separable
Gaussian of ``training.losses.ssim_map`` against MONAI's ``compute_ssim_and_cs`` (the full
11^n kernel it replaces), on a stage-1 batch (8 slices of 96 x 96) and a stage-2 crop
(64^3), and a whole stage-2 step (small Refiner + small segmenter, SSIM + Dice) with each.
Real phantom intensities; the best of ``--repeat`` runs. Prints a table, writes
``training_ssim.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing


def best_seconds(run: Callable[[], None], repeat: int) -> float:
    """Fastest of ``repeat`` timed calls, after one warm-up call."""
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def phantom_unit(seed: int):
    """T1n and T1c of a small phantom on [0, 1] as float32 tensors [D, H, W]."""
    import numpy as np
    import SimpleITK as sitk
    import torch

    from MRISynthesisLib import phantom
    from MRISynthesisLib.sequences import Sequence

    case = phantom.generate_case(seed, small=True)
    out = []
    for sequence in (Sequence.T1N, Sequence.T1C):
        array = sitk.GetArrayFromImage(case.images[sequence]).astype(np.float32)
        out.append(torch.from_numpy(array / np.percentile(array[array > 0], 99.5)).clamp(0, 1))
    return out


def monai_ssim_map(prediction, target):
    """The map the trainers used before: MONAI's full-kernel SSIM."""
    from monai.metrics.regression import compute_ssim_and_cs

    from MRISynthesisLib.training.losses import SSIM_KERNEL, SSIM_SIGMA

    dims = prediction.ndim - 2
    return compute_ssim_and_cs(prediction, target, dims, [SSIM_KERNEL] * dims, [SSIM_SIGMA] * dims)[0]


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path("out/bench"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the demo trains)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import torch
    from monai.losses import DiceLoss

    from MRISynthesisLib.models.refiner import Refiner, RefinerConfig
    from MRISynthesisLib.models.segmenter import SegmenterConfig, build_segmenter
    from MRISynthesisLib.training import losses

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t1n, t1c = phantom_unit(1)
    cases = {
        "stage-1 batch 8 x 96^2": (t1n[28:36, None], t1c[28:36, None]),
        "stage-2 crop 64^3": (t1n[None, None, :64, 16:80, 16:80], t1c[None, None, :64, 16:80, 16:80]),
    }
    maps = {"separable": losses.ssim_map, "monai": monai_ssim_map}
    rows = []
    for name, (prediction, target) in cases.items():
        seconds = {}
        for method, ssim_map in maps.items():
            def run(ssim_map=ssim_map) -> None:
                leaf = prediction.clone().requires_grad_(True)
                (1 - ssim_map(leaf, target).mean()).backward()
            seconds[method] = best_seconds(run, args.repeat)
        rows.append({"task": f"SSIM loss fwd+bwd, {name}", **seconds})

    refiner = Refiner(RefinerConfig.small())
    segmenter = build_segmenter(SegmenterConfig.small()).eval()
    for parameter in segmenter.parameters():
        parameter.requires_grad_(False)
    stage1, truth = cases["stage-2 crop 64^3"]
    inputs = torch.cat([truth, truth, truth, truth], dim=1)
    regions = (torch.rand(1, 3, 64, 64, 64) > 0.95).float()
    dice = DiceLoss(sigmoid=True)
    seconds = {}
    for method, ssim_map in maps.items():
        def step(ssim_map=ssim_map) -> None:
            refined = refiner(stage1, inputs, 1, [0, 2, 3])
            prediction, target = losses.scale_by_target(refined, truth)
            loss = 1 - ssim_map(prediction, target).mean()
            completed = torch.cat([inputs[:, :1], refined, inputs[:, 2:]], dim=1)
            (loss + dice(segmenter(completed), regions)).backward()
        seconds[method] = best_seconds(step, args.repeat)
    rows.append({"task": "stage-2 step (Refiner + segmenter, 64^3)", **seconds})

    print(f"{'task':<48}{'separable s':>13}{'MONAI s':>10}{'speed-up':>10}")
    for row in rows:
        row["speedup"] = row["monai"] / row["separable"]
        print(f"{row['task']:<48}{row['separable']:>13.3f}{row['monai']:>10.3f}{row['speedup']:>9.2f}x")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    result = {"threads": args.threads, "repeat": args.repeat, "torch": torch.__version__, "rows": rows}
    (args.output_dir / "training_ssim.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
