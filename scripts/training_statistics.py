"""Add training statistics to a model bundle: what its training cases look like to the model.

Measures every case folder of ``--data`` (BraTS layout) the way a synthesis measures its inputs
(:mod:`MRISynthesisLib.core.ood_statistics`: normalised brain-intensity quantiles on the bundle's
model grid, voxel size, brain volume, non-zero voxels outside the brain, rank correlations between
sequences) and stores their ranges in the bundle's ``bundle.json`` under
``metadata.training_statistics``; from then on every synthesis with the bundle warns when a case is
outside them (:mod:`MRISynthesisLib.core.ood_check`).

    python scripts/training_statistics.py --data TRAIN_DIR --bundle BUNDLE_DIR

For the bundled demo model (trained on ``mrisynth phantom --cases 40 --seed 1000 --small``):

    mrisynth phantom -o /tmp/demo-train --cases 40 --seed 1000 --small
    python scripts/training_statistics.py --data /tmp/demo-train --bundle MRISynthesisLib/data/models/demo
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from MRISynthesisLib.core.bundles import load_bundle_folder, set_bundle_metadata  # noqa: E402
from MRISynthesisLib.core.io import is_image_file, read_case  # noqa: E402
from MRISynthesisLib.core.model_grid_inputs import model_grid_for  # noqa: E402
from MRISynthesisLib.core.ood_statistics import METADATA_KEY, measure_training_case, summarise  # noqa: E402


def case_folders(data: Path) -> list:
    """Sub-folders of ``data`` that hold images, sorted by name (one case each)."""
    return sorted(entry for entry in data.iterdir()
                  if entry.is_dir() and any(is_image_file(child.name) for child in entry.iterdir()))


def training_statistics(data: Path, generator, say=print) -> dict:
    """The summary over every case folder of ``data`` for ``generator``'s model grid."""
    folders = case_folders(data)
    if not folders:
        raise SystemExit(f"{data}: no case folders with images")
    cases = []
    for index, folder in enumerate(folders):
        cases.append(measure_training_case(read_case(folder), generator))
        say(f"measured {folder.name} ({index + 1}/{len(folders)})")
    shape, spacing = model_grid_for(generator)
    summary = summarise(cases, grid={"image_size": shape[0], "spacing_mm": spacing})
    summary["source"] = {"data": str(data), "case_folders": [folder.name for folder in folders]}
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of training case folders (BraTS layout)")
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder whose bundle.json gets the summary")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    bundle = load_bundle_folder(args.bundle)
    summary = training_statistics(args.data, bundle.stage1)
    set_bundle_metadata(args.bundle, METADATA_KEY, summary)
    print(f"{args.bundle / 'bundle.json'}: metadata.{METADATA_KEY} from {summary['cases']} cases "
          f"({time.perf_counter() - started:.0f} s)")
    for key, entry in summary["sequences"].items():
        median = entry.get("intensity_encoding", {})
        print(f"  {key}: median {median.get('min', float('nan')):.2f}-{median.get('max', float('nan')):.2f}, "
              f"brain {entry['brain_ml']['min']:.0f}-{entry['brain_ml']['max']:.0f} ml, voxel "
              f"{entry['spacing_mm']['min']:g}-{entry['spacing_mm']['max']:g} mm, outside the brain at most "
              f"{100 * entry['outside_fraction']['max']:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
