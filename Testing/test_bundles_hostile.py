"""Hostile and broken model bundles and checkpoints: refused before harm, with one line naming file and field.

Real files on disk, real torch models, nothing mocked. Each case is something a downloaded
bundle can contain: names that leave the bundle folder, manifests of the wrong shape,
configs that declare networks far bigger than the file's tensors (checked in a subprocess
that reports its peak memory), and weights that are NaN or infinite.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from MRISynthesisLib.core import bundles, checkpoints
from MRISynthesisLib.models.hfgan import HFGANConfig, HFGANGenerator, seeded_reference_state_dict
from MRISynthesisLib.models.refiner import Refiner, RefinerConfig
from MRISynthesisLib.models.segmenter import SegmenterConfig, build_segmenter
from MRISynthesisLib.core.checkpoints import CheckpointError

TINY = HFGANConfig(dim=8, dim_mults=(1, 2, 4), n_layers=1, n_heads=2, image_size=32)

#: Peak-memory rise allowed while refusing a small checkpoint that declares a big network.
MAX_RISE_BYTES = 500 * 1024 * 1024

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32",
                                    reason="symbolic links need a POSIX file system")


def _tiny(kind: str) -> torch.nn.Module:
    """A small real network of ``kind``, seeded."""
    torch.manual_seed(7)
    if kind == "stage1":
        return HFGANGenerator(TINY)
    if kind == "refiner":
        return Refiner(RefinerConfig(channels=4))
    return build_segmenter(SegmenterConfig(init_filters=8))


def _refused(load: Callable[[], Any], *names: str) -> str:
    """The CheckpointError message of ``load()``, checked to be one line containing every one of ``names``."""
    with pytest.raises(CheckpointError) as error:
        load()
    message = str(error.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"
    return message


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A real bundle folder (HF-GAN + Refiner) whose bundle.json the tests rewrite."""
    return bundles.save_bundle(tmp_path / "bundle", "unit", _tiny("stage1"), _tiny("refiner"))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A valid stage-1 checkpoint in a folder next to the bundle (loadable on its own)."""
    (tmp_path / "elsewhere").mkdir()
    return checkpoints.save_checkpoint(tmp_path / "elsewhere" / "stage1.pt", "stage1", _tiny("stage1"))


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "bundle.json").read_text())


def _write_manifest(folder: Path, manifest: Any) -> Path:
    (folder / "bundle.json").write_text(json.dumps(manifest))
    return folder


def _set_file(folder: Path, name: Any, kind: str = "stage1") -> Path:
    manifest = _manifest(folder)
    manifest["files"][kind] = name
    return _write_manifest(folder, manifest)


# --------------------------------------------------------------------------- names that leave the bundle


def test_dot_dot_path_to_a_valid_checkpoint_is_refused(bundle, outside):
    _set_file(bundle, "../elsewhere/stage1.pt")
    _refused(lambda: bundles.load_bundle(bundle), "bundle.json", "files.stage1", "'..'")


def test_absolute_path_to_another_valid_checkpoint_is_refused(bundle, outside):
    assert bundles.load_bundle(outside).stage1 is not None  # loadable when given directly
    _set_file(bundle, str(outside))
    _refused(lambda: bundles.load_bundle(bundle), "bundle.json", "files.stage1", "absolute path")


def test_etc_passwd_is_refused_by_name(bundle):
    _set_file(bundle, "/etc/passwd", kind="refiner")
    _refused(lambda: bundles.load_bundle(bundle), "bundle.json", "files.refiner", "absolute path", "/etc/passwd")


@pytest.mark.parametrize("name, words", [
    ("", "empty"),
    ("stage1.pt\0.txt", "NUL"),
    ("sub/../../elsewhere/stage1.pt", "'..'"),
    ("..\\elsewhere\\stage1.pt", "'..'"),
    ("C:/models/stage1.pt", "absolute path"),
    ("\\\\server\\share\\stage1.pt", "absolute path"),
])
def test_names_that_are_not_plain_relative_names_are_refused(bundle, outside, name, words):
    _set_file(bundle, name)
    _refused(lambda: bundles.load_bundle(bundle), "bundle.json", "files.stage1", words)


@pytest.mark.parametrize("name", [".", "sub"])
def test_names_of_directories_are_refused(bundle, name):
    (bundle / "sub").mkdir()
    _set_file(bundle, name)
    _refused(lambda: bundles.load_bundle(bundle), "bundle.json", "files.stage1", "directory")


def test_missing_file_names_the_manifest_field(bundle):
    _set_file(bundle, "gone.pt", kind="refiner")
    _refused(lambda: bundles.load_bundle(bundle), "bundle.json", "files.refiner", "'gone.pt'")


@needs_symlinks
def test_symlink_inside_the_bundle_pointing_outside_is_refused(bundle, outside):
    (bundle / "stage1.pt").unlink()
    (bundle / "stage1.pt").symlink_to(outside)
    _refused(lambda: bundles.load_bundle(bundle), "bundle.json", "files.stage1", "outside the bundle folder")


@needs_symlinks
def test_symlink_to_etc_passwd_is_refused(bundle):
    (bundle / "passwd.pt").symlink_to("/etc/passwd")
    _set_file(bundle, "passwd.pt")
    _refused(lambda: bundles.load_bundle(bundle), "files.stage1", "outside the bundle folder")


@needs_symlinks
def test_symlinked_sub_folder_pointing_outside_is_refused(bundle, outside):
    (bundle / "weights").symlink_to(outside.parent, target_is_directory=True)
    _set_file(bundle, "weights/stage1.pt")
    _refused(lambda: bundles.load_bundle(bundle), "files.stage1", "outside the bundle folder")


@needs_symlinks
def test_folder_without_manifest_refuses_a_symlink_out(tmp_path, outside):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "stage1.pt").symlink_to(outside)
    _refused(lambda: bundles.load_bundle(folder), str(folder), "stage1.pt", "outside the bundle folder")


@needs_symlinks
def test_manifest_that_is_a_link_out_of_the_folder_is_refused(bundle, tmp_path):
    other = bundles.save_bundle(tmp_path / "other", "other", _tiny("stage1"))
    (bundle / "bundle.json").unlink()
    (bundle / "bundle.json").symlink_to(other / "bundle.json")
    _refused(lambda: bundles.load_bundle(bundle), "bundle.json", "outside the bundle folder")


# kept behaviour: links and sub-folders that stay inside the bundle still load


@needs_symlinks
def test_links_that_stay_inside_the_bundle_still_load(bundle, tmp_path):
    (bundle / "weights").mkdir()
    (bundle / "stage1.pt").rename(bundle / "weights" / "generator.pt")
    (bundle / "stage1.pt").symlink_to(Path("weights") / "generator.pt")
    linked = tmp_path / "linked-bundle"
    linked.symlink_to(bundle, target_is_directory=True)
    assert bundles.load_bundle(linked).stages == "HF-GAN + Refiner"
    _set_file(bundle, "weights/generator.pt")
    assert bundles.load_bundle(bundle).stages == "HF-GAN + Refiner"


# --------------------------------------------------------------------------- manifests of the wrong shape


#: (manifest edit, words the error must contain): each makes ``bundle.json`` unusable.
BROKEN_MANIFESTS = [
    pytest.param(lambda m: {**m, "files": []}, ("field 'files'", "a list"), id="files-list"),
    pytest.param(lambda m: {**m, "files": "stage1.pt"}, ("field 'files'", "a string"), id="files-string"),
    pytest.param(lambda m: {**m, "files": None}, ("field 'files'", "null"), id="files-null"),
    pytest.param(lambda m: {k: v for k, v in m.items() if k != "files"}, ("field 'files'", "missing"),
                 id="files-missing"),
    pytest.param(lambda m: {**m, "files": {"stage1": 5}}, ("files.stage1", "a number"), id="file-number"),
    pytest.param(lambda m: {**m, "files": {"stage1": ["stage1.pt"]}}, ("files.stage1", "a list"), id="file-list"),
    pytest.param(lambda m: {**m, "files": {"stage1": None}}, ("files.stage1", "null"), id="file-null"),
    pytest.param(lambda m: {**m, "files": {**m["files"], "discriminator": "stage1.pt"}},
                 ("files.discriminator", "unknown network kind"), id="unknown-kind"),
    pytest.param(lambda m: [m], ("top level", "a list"), id="top-level-list"),
    pytest.param(lambda m: "bundle", ("top level", "a string"), id="top-level-string"),
    pytest.param(lambda m: None, ("top level", "null"), id="top-level-null"),
    pytest.param(lambda m: {**m, "name": 123}, ("field 'name'", "a number"), id="name-number"),
    pytest.param(lambda m: {**m, "description": ["a"]}, ("field 'description'", "a list"), id="description-list"),
    pytest.param(lambda m: {**m, "metadata": [1, 2]}, ("field 'metadata'", "a list"), id="metadata-list"),
    pytest.param(lambda m: {**m, "metadata": "x"}, ("field 'metadata'", "a string"), id="metadata-string"),
    pytest.param(lambda m: {**m, "files": {"stage1": "../stage1.pt"}}, ("files.stage1", "'..'"), id="dot-dot"),
]


@pytest.mark.parametrize("edit, words", BROKEN_MANIFESTS)
def test_malformed_manifest_gets_one_line_naming_the_field(bundle, edit, words):
    _write_manifest(bundle, edit(_manifest(bundle)))
    _refused(lambda: bundles.load_bundle(bundle), "bundle.json", *words)


@pytest.mark.parametrize("content, words", [
    pytest.param(b"\xff\xfe\x00{", "UnicodeDecodeError", id="not-utf8"),
    pytest.param(b"[" * 100_000, "nested too deeply", id="deeply-nested"),
])
def test_unreadable_manifest_gets_one_line(bundle, content, words):
    (bundle / "bundle.json").write_bytes(content)
    _refused(lambda: bundles.load_bundle(bundle), "bundle.json", "unreadable bundle manifest", words)


def test_oversized_manifest_is_refused_before_it_is_read(bundle):
    manifest = _manifest(bundle)
    manifest["metadata"] = {"padding": "x" * (bundles.MAX_MANIFEST_BYTES + 1)}
    _write_manifest(bundle, manifest)
    _refused(lambda: bundles.load_bundle(bundle), "bundle.json", "MAX_MANIFEST_BYTES")


@pytest.mark.parametrize("edit, words", BROKEN_MANIFESTS)
def test_catalogue_skips_each_broken_entry(tmp_path, edit, words):
    good = bundles.save_bundle(tmp_path / "good", "good", _tiny("stage1"), description="fine")
    broken = bundles.save_bundle(tmp_path / "broken", "broken", _tiny("stage1"))
    _write_manifest(broken, edit(_manifest(broken)))
    assert [info.name for info in bundles.list_bundles(tmp_path)] == ["good"]
    assert bundles.list_bundles(tmp_path)[0].path == good


# --------------------------------------------------------------------------- configs that do not fit the file


def _rewrite(path: Path, **changes: Any) -> Path:
    """Rewrite fields of a saved checkpoint (``config=...`` replaces the whole config)."""
    payload = checkpoints.read_checkpoint(path)
    payload.update(changes)
    torch.save(payload, path)
    return path


def _checkpoint(tmp_path: Path, kind: str, **changes: Any) -> Path:
    """A tiny real ``kind`` checkpoint, with ``changes`` written over its fields."""
    path = checkpoints.save_checkpoint(tmp_path / f"{kind}.pt", kind, _tiny(kind))
    return _rewrite(path, **changes) if changes else path


def _load_checkpoint(path: Path) -> Any:
    """Load a checkpoint of any kind the way bundles do."""
    return checkpoints.build_model(checkpoints.read_checkpoint(path), path)


#: A Python process that loads a tiny bundle (warming imports and allocator), then loads
#: ``argv[2]`` and prints its peak-RSS rise in bytes and the error message.
_PEAK_SCRIPT = textwrap.dedent("""
    import resource, sys
    from MRISynthesisLib.core import bundles, checkpoints
    bundles.load_bundle(sys.argv[1])
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        path = sys.argv[2]
        checkpoints.build_model(checkpoints.read_checkpoint(path), path)
        message = "loaded"
    except checkpoints.CheckpointError as error:
        message = str(error)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * scale)
    print(message)
""")


def _peak_rise(tmp_path: Path, path: Path) -> tuple[int, str]:
    """(peak memory rise in bytes, CheckpointError message) of loading ``path`` in a fresh Python."""
    pytest.importorskip("resource")
    warm = tmp_path / "warm"
    if not warm.exists():
        bundles.save_bundle(warm, "warm", _tiny("stage1"), _tiny("refiner"), _tiny("segmenter"))
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(warm), str(path)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rise, message = done.stdout.strip().split("\n", 1)
    return int(rise), message


@pytest.mark.parametrize("kind, config", [
    ("stage1", HFGANConfig(dim=152, dim_mults=(1, 2, 4, 8, 10), n_layers=4, n_heads=16, image_size=240)),
    ("refiner", RefinerConfig(channels=448)),
    ("segmenter", SegmenterConfig(init_filters=160)),
], ids=["stage1", "refiner", "segmenter"])
def test_huge_config_in_a_small_checkpoint_is_refused_without_allocating(tmp_path, kind, config):
    path = _checkpoint(tmp_path, kind, config=config.to_dict())
    assert path.stat().st_size < 20 * 1024 * 1024
    rise, message = _peak_rise(tmp_path, path)
    assert rise < MAX_RISE_BYTES, f"peak memory rose by {rise / 2**20:.0f} MiB while refusing: {message}"
    assert "\n" not in message and path.name in message and "MAX_PARAMETERS" in message, message


def test_config_not_matching_the_state_dict_is_refused_without_allocating(tmp_path):
    big = HFGANConfig(dim=96, dim_mults=(1, 2, 4, 8, 10), n_layers=4, n_heads=16, image_size=240)
    path = _checkpoint(tmp_path, "stage1", config=big.to_dict())  # 180 M values declared, under the limit
    rise, message = _peak_rise(tmp_path, path)
    assert rise < MAX_RISE_BYTES, f"peak memory rose by {rise / 2**20:.0f} MiB while refusing: {message}"
    assert "\n" not in message and "stage1.pt: stage1 checkpoint does not match its network" in message, message
    assert "tensor 'encoder." in message and "the config makes [" in message, message


@pytest.mark.parametrize("kind, config", [
    ("stage1", {**TINY.to_dict(), "dim": 16}),
    ("refiner", RefinerConfig(channels=6).to_dict()),
    ("segmenter", SegmenterConfig(init_filters=16).to_dict()),
])
def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path, kind, config):
    path = _checkpoint(tmp_path, kind, config=config)
    _refused(lambda: _load_checkpoint(path), f"{kind}.pt: {kind} checkpoint does not match its network",
                       "wrongly shaped", "in the file, the config makes [")


def test_paper_networks_are_within_the_size_limit():
    for make in (lambda: HFGANGenerator(HFGANConfig.paper()), lambda: Refiner(RefinerConfig.paper()),
                 lambda: build_segmenter(SegmenterConfig.paper())):
        with torch.device("meta"):
            model = make()
        assert sum(t.numel() for t in model.state_dict().values()) < checkpoints.MAX_PARAMETERS


@pytest.mark.parametrize("kind, config, words", [
    ("stage1", {**TINY.to_dict(), "image_size": -32}, "field 'config.image_size'"),
    ("stage1", {**TINY.to_dict(), "image_size": 2 ** 20}, "field 'config.image_size'"),
    ("stage1", {**TINY.to_dict(), "dim": "8"}, "field 'dim'"),
    ("stage1", {**TINY.to_dict(), "dim": 8.5}, "field 'dim'"),
    ("stage1", {**TINY.to_dict(), "dim_mults": [1, "2", 4]}, "field 'dim_mults'"),
    ("stage1", [1, 2, 3], "field 'config'"),
    ("stage1", None, "field 'config'"),
    ("refiner", {"channels": 10 ** 6}, "field 'config.channels'"),
    ("refiner", {"channels": 4, "decoder_layers": -1}, "field 'config.decoder_layers'"),
    ("segmenter", {"init_filters": "16"}, "field 'init_filters'"),
    ("segmenter", {"init_filters": 8, "blocks_down": [1, 2, -1, 4]}, "field 'config.blocks_down'"),
], ids=["negative-image-size", "huge-image-size", "dim-string", "dim-float", "dim-mults-string", "config-list",
        "config-null", "huge-channels", "negative-decoder-layers", "filters-string", "negative-blocks"])
def test_absurd_config_values_name_the_file_and_field(tmp_path, kind, config, words):
    path = _checkpoint(tmp_path, kind, config=config)
    _refused(lambda: _load_checkpoint(path), f"{kind}.pt", words)


def test_version_that_is_not_a_number_is_refused(tmp_path):
    path = _checkpoint(tmp_path, "stage1", version="2")
    _refused(lambda: bundles.load_bundle(path), "stage1.pt", "field 'version'")


# --------------------------------------------------------------------------- weights that are not finite


def _poison(path: Path, values: dict[str, list]) -> Path:
    """Set, in the checkpoint at ``path``, element ``i`` of tensor ``name`` to ``value`` for every (i, value)."""
    payload = checkpoints.read_checkpoint(path)
    for name, changes in values.items():
        flat = payload["state_dict"][name].view(-1)
        for index, value in changes:
            flat[index] = value
    torch.save(payload, path)
    return path


def test_all_nan_weights_are_refused(tmp_path):
    path = checkpoints.save_checkpoint(tmp_path / "stage1.pt", "stage1", _tiny("stage1"))
    payload = checkpoints.read_checkpoint(path)
    first = next(iter(payload["state_dict"]))
    payload["state_dict"] = {k: torch.full_like(v, float("nan")) for k, v in payload["state_dict"].items()}
    torch.save(payload, path)
    total = sum(v.numel() for v in payload["state_dict"].values())
    count = len(payload["state_dict"])
    _refused(lambda: bundles.load_bundle(path), "stage1.pt", "not finite", f"{total:,} NaN/Inf values",
             f"in {count} of {count} tensors", f"first in '{first}'")


@pytest.mark.parametrize("kind", ["stage1", "refiner", "segmenter"])
def test_a_few_inf_and_nan_values_are_counted_and_refused(tmp_path, kind):
    path = checkpoints.save_checkpoint(tmp_path / f"{kind}.pt", kind, _tiny(kind))
    names = [k for k, v in checkpoints.read_checkpoint(path)["state_dict"].items() if v.numel() > 3]
    _poison(path, {names[2]: [(0, float("inf")), (1, float("-inf"))], names[5]: [(3, float("nan"))]})
    _refused(lambda: _load_checkpoint(path), f"{kind}.pt", "3 NaN/Inf values in 2 of", f"first in '{names[2]}'")


def test_nan_weights_in_a_bundle_are_refused(bundle):
    names = list(checkpoints.read_checkpoint(bundle / "refiner.pt")["state_dict"])
    _poison(bundle / "refiner.pt", {names[-1]: [(0, float("nan"))]})
    _refused(lambda: bundles.load_bundle(bundle), "refiner.pt", "1 NaN/Inf values in 1 of", f"'{names[-1]}'")


def test_nan_weights_in_a_reference_layout_state_dict_are_refused(tmp_path):
    state = seeded_reference_state_dict(TINY, seed=5)
    name = "middle.embedding.position_embeddings"
    state[name].view(-1)[:4] = float("nan")
    torch.save({"generator": {f"module.{k}": v for k, v in state.items()}, "epoch": 20}, tmp_path / "ref.pth")
    _refused(lambda: bundles.load_bundle(tmp_path / "ref.pth"), "ref.pth", "4 NaN/Inf values in 1 of",
             f"'module.{name}'")


def test_nan_weights_in_a_reference_layout_bundle_stage1_are_refused(bundle):
    state = seeded_reference_state_dict(TINY, seed=5)
    first = next(iter(state))
    state[first].fill_(float("inf"))
    torch.save(state, bundle / "stage1.pt")
    _refused(lambda: bundles.load_bundle(bundle), "stage1.pt", "not finite", f"first in '{first}'")


def test_non_finite_intensity_priors_are_refused(tmp_path):
    path = _checkpoint(tmp_path, "stage1")
    payload = checkpoints.read_checkpoint(path)
    payload["intensity_priors"]["t1c"] = [float("nan"), 0.06]
    torch.save(payload, path)
    _refused(lambda: bundles.load_bundle(path), "stage1.pt", "field 'intensity_priors.t1c'", "finite")


# --------------------------------------------------------------------------- odd containers


def test_self_referencing_checkpoint_dict_is_refused(tmp_path):
    payload: dict = {"epoch": 1}
    payload["generator"] = payload  # pickle keeps the cycle; a naive search recurses forever
    torch.save(payload, tmp_path / "loop.pth")
    _refused(lambda: bundles.load_bundle(tmp_path / "loop.pth"), "loop.pth",
             "neither an MRISynthesis checkpoint nor an HF-GAN state dict")


# --------------------------------------------------------------------------- zip archives that lie about their size

#: Peak-memory rise allowed while refusing a zip bomb (the bomb inflates to 1 GiB).
MAX_BOMB_RISE_BYTES = 300 * 1024 * 1024
#: Element count of the marker tensor the bomb builder saves, then swaps for the bomb's count.
_MARKER_VALUES = 123_457


def _deflated_bomb(path: Path, values: int, level: int = 1) -> Path:
    """The tiny stage-1 checkpoint plus a float32 tensor 'huge' of ``values`` zeros, its record ZIP_DEFLATED.

    torch.save writes the checkpoint with a marker tensor of :data:`_MARKER_VALUES` elements
    (a 4-byte integer written twice into the pickle: the storage's size and the tensor's
    shape); the builder swaps that count for ``values`` and the marker's record for
    ``4 * values`` zero bytes deflated as they stream, so neither the test nor the file ever
    holds the big tensor: a few MB on disk that torch.load inflates to 4 x ``values`` bytes.
    """
    import io
    import zipfile

    small = checkpoints.save_checkpoint(path.with_name(f"{path.stem}-small.pt"), "stage1", _tiny("stage1"))
    payload = checkpoints.read_checkpoint(small)
    payload["state_dict"]["huge"] = torch.zeros(_MARKER_VALUES)
    saved = io.BytesIO()
    torch.save(payload, saved)
    marker = b"J" + _MARKER_VALUES.to_bytes(4, "little")  # pickle BININT
    with zipfile.ZipFile(saved) as source, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as bomb:
        records = [info for info in source.infolist() if info.file_size == 4 * _MARKER_VALUES]
        assert len(records) == 1, "torch.save layout changed: marker record not found"
        for info in source.infolist():
            if info is records[0]:
                zeros = bytes(1 << 24)
                with bomb.open(info.filename, "w", force_zip64=True) as record:
                    for start in range(0, 4 * values, len(zeros)):
                        record.write(zeros[:min(len(zeros), 4 * values - start)])
                continue
            data = source.read(info)
            if info.filename.endswith("/data.pkl"):
                assert data.count(marker) == 2, "torch.save layout changed: marker count not found twice"
                data = data.replace(marker, b"J" + values.to_bytes(4, "little"))
            bomb.writestr(info, data)  # the other records as torch.save wrote them (STORED)
    return path


def test_bomb_builder_makes_a_file_that_torch_inflates(tmp_path):
    """The builder's file is a genuine checkpoint: a small one loads, holding the swapped-in tensor."""
    path = _deflated_bomb(tmp_path / "small-bomb.pt", values=1 << 20)
    assert path.stat().st_size < 1024 * 1024
    payload = checkpoints.read_checkpoint(path)  # 4 MiB deflated: under the size at which ratios are judged
    assert payload["state_dict"]["huge"].shape == (1 << 20,) and not payload["state_dict"]["huge"].any()
    _refused(lambda: _load_checkpoint(path), "small-bomb.pt", "tensor 'huge' in the file is not in the network")


def test_deflated_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    import zipfile

    path = _deflated_bomb(tmp_path / "bomb.pt", values=1 << 28)  # 1 GiB of float32 zeros
    assert path.stat().st_size < 10 * 1024 * 1024
    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda info: info.file_size)
    assert member.file_size == 1 << 30 and member.compress_type == zipfile.ZIP_DEFLATED
    rise, message = _peak_rise(tmp_path, path)
    assert rise < MAX_BOMB_RISE_BYTES, f"peak memory rose by {rise / 2**20:.0f} MiB while refusing: {message}"
    assert "\n" not in message and str(path) in message and repr(member.filename) in message, message
    assert "MAX_COMPRESSION_RATIO" in message, message


def test_archive_larger_than_the_limit_is_refused_naming_the_largest_member(tmp_path, monkeypatch):
    path = checkpoints.save_checkpoint(tmp_path / "stage1.pt", "stage1", _tiny("stage1"))
    monkeypatch.setattr(checkpoints, "MAX_CHECKPOINT_BYTES", path.stat().st_size // 2)
    message = _refused(lambda: checkpoints.read_checkpoint(path), str(path), "MAX_CHECKPOINT_BYTES", "largest member")
    assert "/data/" in message, message


def test_checkpoint_size_limit_has_room_for_a_training_checkpoint():
    assert checkpoints.MAX_CHECKPOINT_BYTES >= 3 * 4 * checkpoints.MAX_PARAMETERS  # weights + two Adam moments
    assert checkpoints.MAX_CHECKPOINT_BYTES < 16 * 1024 ** 3


def test_deflated_checkpoint_with_plausible_ratios_still_loads(tmp_path):
    """Re-zipping a real checkpoint with ZIP_DEFLATED (as archive tools may) is not mistaken for a bomb."""
    import zipfile

    saved = checkpoints.save_checkpoint(tmp_path / "saved.pt", "stage1", _tiny("stage1"))
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    assert _load_checkpoint(path) is not None


def test_legitimate_checkpoints_and_bundles_still_load(tmp_path, bundle):
    for kind in ("stage1", "refiner", "segmenter"):
        path = checkpoints.save_checkpoint(tmp_path / f"{kind}.pt", kind, _tiny(kind))
        assert _load_checkpoint(path) is not None
    assert bundles.load_bundle(bundle).stages == "HF-GAN + Refiner"
    assert bundles.load_bundle(tmp_path / "stage1.pt").stage1 is not None


def test_legacy_non_zip_checkpoint_still_loads(tmp_path):
    import zipfile

    path = tmp_path / "legacy.pt"
    payload = checkpoints.read_checkpoint(checkpoints.save_checkpoint(tmp_path / "stage1.pt", "stage1", _tiny("stage1")))
    torch.save(payload, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    assert _load_checkpoint(path) is not None


def _corrupt_central_directory(path: Path) -> None:
    data = bytearray(path.read_bytes())
    start = data.rindex(b"PK\x01\x02")  # the last central-directory entry
    data[start:start + 4] = b"XX\x01\x02"
    path.write_bytes(bytes(data))


def _oversized_record(path: Path) -> None:
    """Make the central directory claim the pickle member is 1 GiB (STORED, so no ratio to judge)."""
    import struct

    data = bytearray(path.read_bytes())
    start = data.index(b"PK\x01\x02")  # torch writes data.pkl first
    assert data[start + 46:start + 46 + data[start + 28]].endswith(b"/data.pkl")
    data[start + 20:start + 28] = struct.pack("<II", 1 << 30, 1 << 30)  # compressed and uncompressed sizes
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, words", [
    pytest.param(_corrupt_central_directory, "corrupt zip archive", id="central-directory"),
    pytest.param(lambda path: path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2]),
                 "not a readable PyTorch checkpoint", id="truncated"),
    pytest.param(_oversized_record, "corrupt zip archive", id="record-past-end"),
])
def test_corrupt_archive_gets_one_line(tmp_path, damage, words):
    path = checkpoints.save_checkpoint(tmp_path / "stage1.pt", "stage1", _tiny("stage1"))
    damage(path)
    _refused(lambda: checkpoints.read_checkpoint(path), str(path), words)
    _refused(lambda: bundles.load_bundle(path), str(path), words)


def test_an_interrupt_wrapped_by_the_library_is_still_an_interrupt():
    """Ctrl-C during class creation arrives as RuntimeError from __set_name__; it must stay an interrupt."""
    class Descriptor:
        def __set_name__(self, owner, name):
            raise KeyboardInterrupt

    with pytest.raises(RuntimeError) as wrapped:
        type("Built", (), {"field": Descriptor()})
    with pytest.raises(KeyboardInterrupt):
        checkpoints.raise_if_interrupted(wrapped.value)
    checkpoints.raise_if_interrupted(ValueError("an ordinary error"))  # no interrupt: nothing raised
