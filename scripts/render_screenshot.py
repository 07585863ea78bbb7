#!/usr/bin/env python
"""Render the Extensions Index screenshot: a montage of one phantom synthesis, made with the project's own code.

The Slicer Extensions Manager shows the picture that ``EXTENSION_SCREENSHOTURLS`` in the
root CMakeLists.txt points to, ``Resources/Screenshots/MRISynthesis.png`` on the main
branch. Rather than a hand-made image, it is what the engine really produces: a small
(96 x 96 x 64, 2.5 mm) phantom case is generated from ``--seed``, T1c is hidden, the bundled
demo model synthesises it from T1n, T2w and T2-FLAIR on the CPU, and ``save_montage`` draws
inputs, synthetic, hidden ground truth, refinement map and tumour-region map in three views
(the montage ``mrisynth demo`` writes). The PNG is then reduced to a 256-colour palette so
the file stays small (well under 300 kB) for the catalogue. Nothing is downloaded; on two
CPU cores it takes well under two minutes.

Usage:  python scripts/render_screenshot.py [--output Resources/Screenshots/MRISynthesis.png] [--seed 90210]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # draw with this checkout's engine, installed or not
DEFAULT_OUTPUT = ROOT / "Resources" / "Screenshots" / "MRISynthesis.png"
DEFAULT_SEED = 90210  # the demo model's demo seed: outside its training seeds
HIDDEN = "t1c"
MODEL = "demo"
#: Pixels per inch of the montage (the CLI's is 100): about 1270 x 860 pixels, and with COLOURS a palette PNG
#: under 300 kB (the 1.5 mm model's images hold more detail than the 2.5 mm one's, which fitted at 90 and 256).
DPI = 80
COLOURS = 128


def render(output: Path, seed: int) -> Path:
    """Generate, hide, synthesise and draw; write the palette PNG to ``output`` and return it."""
    from PIL import Image, PngImagePlugin

    from MRISynthesisLib import phantom
    from MRISynthesisLib.core.pipeline import synthesize
    from MRISynthesisLib.core.result_files import png_metadata
    from MRISynthesisLib.evaluation import montage
    from MRISynthesisLib.sequences import SEQUENCES, parse_sequence

    hidden = parse_sequence(HIDDEN)
    case = phantom.generate_case(seed, small=True)
    inputs = {s: case.images[s] for s in SEQUENCES if s != hidden}
    truth = case.images[hidden]
    result = synthesize(inputs, MODEL, targets=[hidden], device="cpu", ground_truth={hidden: truth},
                        label=case.label)
    target = result.targets[hidden]
    title = (f"{case.case_id}: {hidden.short_name} synthesised from "
             f"{', '.join(s.short_name for s in target.sources)} by model {result.model_name}   "
             f"SSIM {target.metrics['ssim']:.3f}, PSNR {target.metrics['psnr']:.1f} dB")
    output.parent.mkdir(parents=True, exist_ok=True)
    usual_dpi, montage.DPI = montage.DPI, DPI  # same layout in inches, fewer pixels
    try:
        with tempfile.TemporaryDirectory() as folder:
            drawn = montage.save_montage(Path(folder) / "montage.png", inputs, target, ground_truth=truth,
                                         label=case.label, title=title)
            with Image.open(drawn) as image:
                palette = image.convert("RGB").quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT)
    finally:
        montage.DPI = usual_dpi
    text = PngImagePlugin.PngInfo()
    for key, value in png_metadata().items():
        text.add_text(key, value)
    palette.save(output, format="PNG", optimize=True, pnginfo=text)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"PNG to write (default {DEFAULT_OUTPUT.relative_to(ROOT).as_posix()})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"phantom seed (default {DEFAULT_SEED})")
    args = parser.parse_args(argv)
    path = render(args.output, args.seed)
    print(f"wrote {path} ({path.stat().st_size // 1024} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
