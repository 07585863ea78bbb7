"""Draw the MRISynthesis icon: a stylised axial brain slice in four contrasts, the synthetic quadrant marked "+".

Quadrants: T1 (top left), T1 contrast-enhanced (top right, tinted and badged: the synthesised
one), T2 (bottom left), T2-FLAIR (bottom right). The tumour straddles the right quadrants so
its enhancing rim shows on T1c and its oedema on FLAIR.

    python Resources/make_icon.py Resources/MRISynthesis.png MRISynthesis/Resources/Icons/MRISynthesis.png
"""
from __future__ import annotations

import sys

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128
DRAW_SIZE = 512  # drawn large and downsampled, for smooth edges

#: Grey level per tissue: background, skull, white matter, grey matter, CSF, oedema, tumour core, enhancing rim.
CONTRASTS: dict[str, tuple[float, ...]] = {
    "t1": (0.0, 0.75, 0.80, 0.55, 0.12, 0.45, 0.40, 0.42),
    "t1c": (0.0, 0.75, 0.80, 0.55, 0.12, 0.45, 0.35, 1.00),
    "t2": (0.0, 0.30, 0.35, 0.55, 1.00, 0.85, 0.75, 0.60),
    "flair": (0.0, 0.25, 0.40, 0.60, 0.05, 1.00, 0.70, 0.75),
}


def _ellipse(u: np.ndarray, v: np.ndarray, centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    return np.hypot((u - centre[0]) / radii[0], (v - centre[1]) / radii[1]) < 1


def tissue_masks(n: int) -> dict[str, np.ndarray]:
    """Boolean masks of the slice's tissues on an ``n`` x ``n`` canvas."""
    y, x = np.mgrid[0:n, 0:n].astype(float)
    u, v = (x - n / 2) / (n * 0.40), (y - n / 2 - 6) / (n * 0.46)
    radius, angle = np.hypot(u, v), np.arctan2(v, u)
    edge = 1.0 + 0.012 * np.sin(16 * angle) + 0.008 * np.sin(27 * angle + 1.0) - 0.05 * np.cos(2 * angle)
    brain = radius < 0.93 * edge
    tumour = _ellipse(u, v, (0.40, 0.02), (0.19, 0.17))
    return {
        "brain": brain,
        "skull": (radius < edge + 0.06) & ~(radius < 0.95 * edge),
        "cortex": brain & (radius > 0.78 * edge - 0.03 * np.sin(18 * angle)),
        "csf": _ellipse(u, v, (0.10, -0.02), (0.06, 0.26)) | _ellipse(u, v, (-0.10, -0.02), (0.06, 0.26))
        | ((np.abs(u) < 0.012) & (np.abs(v) > 0.55) & brain),
        "oedema": _ellipse(u, v, (0.38, 0.02), (0.34, 0.32)) & brain & ~tumour,
        "tumour": tumour,
        "rim": tumour & ~_ellipse(u, v, (0.40, 0.02), (0.12, 0.10)),
    }


def render(masks: dict[str, np.ndarray], levels: tuple[float, ...]) -> np.ndarray:
    """Grey image of the slice for one sequence's tissue levels."""
    background, skull, white, grey, csf, oedema, core, rim = levels
    image = np.full(masks["brain"].shape, background)
    for name, level in (("skull", skull), ("brain", white), ("cortex", grey), ("csf", csf),
                        ("oedema", oedema), ("tumour", core), ("rim", rim)):
        image[masks[name]] = level
    return image


def draw_icon(n: int = DRAW_SIZE) -> Image.Image:
    """The full-resolution RGBA icon."""
    masks = tissue_masks(n)
    y, x = np.mgrid[0:n, 0:n]
    top, left = y < n / 2, x < n / 2
    t1, t1c, t2, flair = (render(masks, CONTRASTS[k]) for k in ("t1", "t1c", "t2", "flair"))
    grey = np.where(top & left, t1, np.where(top, t1c, np.where(left, t2, flair)))
    rgb = np.repeat(grey[..., None], 3, axis=2)
    synthetic = top & ~left
    rgb[synthetic] = rgb[synthetic] * np.array([1.0, 0.86, 0.62]) + 0.1 * np.array([1.0, 0.5, 0.0]) * (
        grey[synthetic, None] > 0)
    alpha = (masks["brain"] | masks["skull"]).astype(float)
    image = Image.fromarray((np.dstack([np.clip(rgb, 0, 1), alpha]) * 255).astype(np.uint8), "RGBA")
    draw = ImageDraw.Draw(image)
    draw.line([(n / 2, 18), (n / 2, n - 18)], fill=(20, 20, 20, 255), width=8)
    draw.line([(18, n / 2), (n - 18, n / 2)], fill=(20, 20, 20, 255), width=8)
    cx, cy, r = n - 92, 92, 66  # "+" badge on the synthesised quadrant
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(230, 120, 20, 255), outline=(255, 255, 255, 255), width=10)
    draw.rectangle([cx - 38, cy - 10, cx + 38, cy + 10], fill=(255, 255, 255, 255))
    draw.rectangle([cx - 10, cy - 38, cx + 10, cy + 38], fill=(255, 255, 255, 255))
    return image


def main(paths: list[str]) -> None:
    icon = draw_icon().resize((SIZE, SIZE), Image.LANCZOS)
    for path in paths:
        icon.save(path, optimize=True)


if __name__ == "__main__":
    main(sys.argv[1:])
