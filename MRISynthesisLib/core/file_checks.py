"""Checks on an input *file* before a reader opens its voxels: file type, declared size, stated
geometry and whether the file (or its detached data file) holds the bytes it declares.

A 400-byte header may declare 10^10 voxels, an NRRD header may name ``/dev/zero`` or a FIFO as
its data file, a 2 MB gzip stream may inflate to gigabytes, and a header may state no voxel
size at all: SimpleITK would allocate first, hang, or read 1 mm. Every check here reads only
headers and counts bytes in chunks (constant memory); every refusal is one line naming the file.

Only the raw header is trusted: nibabel's loader "fixes" a zero voxel size to 1 mm, ITK silently
prefers pixdim over an sform, and both substitute defaults for fields a file leaves out.
"""
from __future__ import annotations

import bz2
import gzip
import os
import re
import stat
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .input_checks import InputError

__all__ = [
    "MAX_INPUT_VOXELS", "MAX_INPUT_BYTES", "MAX_AXIS_VOXELS", "SPACING_RANGE_MM",
    "check_input_path", "check_header", "check_size", "check_geometry", "stream_length",
    "check_nifti_voxels_finite", "check_slice_spacing",
]

#: Largest input accepted, in voxels: 2^28. A 0.5 mm whole-head 3D scan (512 x 512 x 400 =
#: 105 M voxels) fits 2.5 times; a BraTS volume (8.9 M) 30 times.
MAX_INPUT_VOXELS = 2 ** 28
#: Largest input accepted, in bytes of voxel data (1 GiB): the 105 M-voxel scan above as float64 fits.
MAX_INPUT_BYTES = 2 ** 30
#: Largest size along one axis; clinical matrices stop at 1024.
MAX_AXIS_VOXELS = 4096
#: Voxel sizes outside this range (mm) are header errors, not scans: 1 micrometre to 10 cm.
SPACING_RANGE_MM = (1e-3, 100.0)
#: Direction cosines must be orthonormal within this tolerance (ITK's own test is 1e-4 after normalising).
ORTHONORMAL_TOLERANCE = 1e-3
#: Relative tolerance between a NIfTI sform's axis lengths and its pixdim voxel size.
SFORM_PIXDIM_TOLERANCE = 1e-3
#: qform and sform must agree within this fraction of a voxel (direction x size) ...
QFORM_SFORM_TOLERANCE = 1e-3
#: ... and their origins within this many mm (converters round the quaternion, not the origin).
QFORM_SFORM_ORIGIN_MM = 1e-2
#: A text header longer than this is not a header (NRRD and MetaIO headers are a few hundred bytes).
MAX_TEXT_HEADER_BYTES = 1 << 16

_READ_CHUNK_BYTES = 1 << 20
_NIFTI_ENDINGS = (".nii", ".nii.gz")
_NRRD_ENDINGS = (".nrrd", ".nhdr")
_META_ENDINGS = (".mha", ".mhd")

#: Bytes per voxel of NRRD type names (the NRRD 5 specification's list).
_NRRD_TYPE_BYTES: Dict[str, int] = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                     "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
                     "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t",
                     "double"), 8),
}
#: Bytes per voxel of MetaIO element types.
_META_TYPE_BYTES: Dict[str, int] = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


# --------------------------------------------------------------------------- the file itself


def check_input_path(path: Path, role: str = "") -> None:
    """Refuse what is not a regular file or a folder before anything opens it.

    A FIFO or a device would block ``open`` or never end; a broken link and an empty file get
    their own message instead of a reader's. ``role`` names where the path came from
    (e.g. "data file of x.nhdr").
    """
    where = f" ({role})" if role else ""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        broken = os.path.islink(path)
        raise InputError(f"{path}{where}: {'broken link' if broken else 'no such file or folder'}") from None
    except OSError as error:
        raise InputError(f"{path}{where}: cannot be opened ({error.strerror})") from None
    if stat.S_ISDIR(mode):
        if role:
            raise InputError(f"{path}{where}: is a folder, not a data file")
        return
    if not stat.S_ISREG(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise InputError(f"{path}{where}: is {kind}, not an image file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}{where}: empty file (0 bytes)")


# --------------------------------------------------------------------------- counting bytes


def _count_stream(read: Callable[[int], bytes], limit: int) -> int:
    total = 0
    while total < limit:
        chunk = read(min(_READ_CHUNK_BYTES, limit - total))
        if not chunk:
            break
        total += len(chunk)
    return total


def _count_zlib(stream, limit: int) -> int:
    """Bytes a zlib stream inflates to, counted with bounded output per step (no bomb can blow up)."""
    inflater = zlib.decompressobj()
    total, pending = 0, b""
    while total < limit:
        if not pending:
            pending = stream.read(_READ_CHUNK_BYTES)
            if not pending:
                break
        out = inflater.decompress(pending, min(_READ_CHUNK_BYTES, limit - total))
        pending = inflater.unconsumed_tail
        total += len(out)
        if inflater.eof:
            break
    return total


def stream_length(path: Path, limit: int, offset: int = 0, encoding: str = "") -> int:
    """Length of the data from ``offset`` on, decompressed per ``encoding`` ("gzip", "bzip2", "zlib",
    or "" for raw; ``.gz`` files are gzip), counted in chunks and stopped at ``limit``: constant memory."""
    encoding = encoding or ("gzip" if path.name.lower().endswith(".gz") else "raw")
    if encoding == "raw":
        return max(0, min(os.path.getsize(path) - offset, limit))
    try:
        with open(path, "rb") as raw:
            raw.seek(offset)
            if encoding == "zlib":
                return _count_zlib(raw, limit)
            opener = gzip.GzipFile if encoding == "gzip" else bz2.BZ2File
            with opener(fileobj=raw) as stream:
                return _count_stream(stream.read, limit)
    except EOFError:
        return 0  # a stream cut short before its first block; callers then report the shortfall
    except (OSError, ValueError, zlib.error) as error:
        raise InputError(f"{path}: unreadable or corrupt image file ({' '.join(str(error).split())})") from None


def _check_length(path: Path, expected: int, offset: int = 0, encoding: str = "", shown: Optional[Path] = None
                  ) -> None:
    """Refuse a file (or detached data file) that holds fewer bytes than its header declares."""
    found = stream_length(path, expected, offset, encoding)
    if found < expected:
        where = "" if shown is None or shown == path else f" in its data file {path}"
        raise InputError(f"{shown or path}: truncated image file ({found} of {expected} bytes of header and "
                         f"voxels{where})")


# --------------------------------------------------------------------------- sizes and geometry


def check_size(path, shape: Tuple[int, ...], item_bytes: int = 1) -> None:
    """Refuse sizes that are not positive or that exceed the memory limits, before any allocation."""
    text = "x".join(str(s) for s in shape)
    if any(s < 1 for s in shape):
        raise InputError(f"{path}: invalid size {text} in the header")
    if any(s > MAX_AXIS_VOXELS for s in shape):
        raise InputError(f"{path}: size {text} in the header exceeds {MAX_AXIS_VOXELS} voxels along an axis")
    count = int(np.prod(shape, dtype=np.int64))
    if count > MAX_INPUT_VOXELS:
        raise InputError(f"{path}: size {text} ({count:.3g} voxels) in the header exceeds the limit of "
                         f"{MAX_INPUT_VOXELS:.3g} voxels")
    if count * item_bytes > MAX_INPUT_BYTES:
        raise InputError(f"{path}: size {text} at {item_bytes} bytes per voxel ({count * item_bytes / 2 ** 30:.2f} "
                         f"GiB) in the header exceeds the limit of {MAX_INPUT_BYTES / 2 ** 30:g} GiB")


def check_axes(path, axes: np.ndarray, where: str) -> None:
    """The voxel axes (columns, with their lengths) must be finite, non-zero and perpendicular."""
    if not np.all(np.isfinite(axes)):
        raise InputError(f"{path}: {where} holds a NaN or infinite value")
    lengths = np.linalg.norm(axes, axis=0)
    for axis, length in enumerate(lengths):
        if length <= 0:
            raise InputError(f"{path}: {where} axis {axis + 1} has zero length (no voxel size)")
    unit = axes / lengths
    count = axes.shape[1]
    for first in range(count):
        for second in range(first + 1, count):
            cosine = abs(float(unit[:, first] @ unit[:, second]))
            if cosine > 1 - ORTHONORMAL_TOLERANCE:
                raise InputError(f"{path}: degenerate orientation: {where} axes {first + 1} and {second + 1} "
                                 "are parallel")
            if cosine > ORTHONORMAL_TOLERANCE:
                angle = float(np.degrees(np.arccos(min(1.0, cosine))))
                raise InputError(f"{path}: sheared orientation: {where} axes {first + 1} and {second + 1} are at "
                                 f"{angle:.1f} degrees, not 90")


def check_geometry(name, spacing, origin, direction) -> None:
    """Voxel size in range, finite origin, orthonormal direction: what a resampler needs."""
    low, high = SPACING_RANGE_MM
    for axis, value in enumerate(spacing):
        if not np.isfinite(value) or not low <= value <= high:
            raise InputError(f"{name}: voxel size {value:g} mm along axis {axis + 1} is outside "
                             f"[{low:g}, {high:g}] mm")
    if not np.all(np.isfinite(origin)):
        raise InputError(f"{name}: origin is not finite")
    dimension = len(spacing)
    if dimension == 3:
        check_axes(name, np.asarray(direction, dtype=float).reshape(3, 3), "direction")


# --------------------------------------------------------------------------- NIfTI


def _raw_nifti_header(path: Path):
    """The NIfTI-1 or -2 header block exactly as stored (no repairs, no extensions)."""
    import nibabel as nib

    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as stream:
            block = stream.read(540)
    except (OSError, EOFError) as error:
        raise InputError(f"{path}: unreadable or corrupt image file ({' '.join(str(error).split())})") from None
    sizes = {int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")} if len(block) >= 4 else set()
    if not sizes & {348, 540}:
        raise InputError(f"{path}: unreadable or corrupt image file (no NIfTI header: sizeof_hdr is not 348 or 540)")
    header_class = nib.Nifti2Header if 540 in sizes else nib.Nifti1Header
    if len(block) < header_class.sizeof_hdr:
        raise InputError(f"{path}: truncated image file ({len(block)} bytes, shorter than a NIfTI header)")
    try:
        return header_class(block[:header_class.sizeof_hdr], check=False)
    except Exception as error:  # nibabel raises several kinds for a broken header block
        raise InputError(f"{path}: unreadable or corrupt image file (not a valid NIfTI header: "
                         f"{' '.join(str(error).split())})") from None


def _check_nifti_orientation(path: Path, header, zooms: List[float]) -> None:
    """The qform must be finite; an sform must be orthonormal and state the same voxel size as pixdim
    (ITK takes the size from pixdim and would silently drop an sform that disagrees)."""
    qform_code, sform_code = int(header["qform_code"]), int(header["sform_code"])
    if qform_code <= 0 and sform_code <= 0:
        raise InputError(f"{path}: states no orientation or position (qform_code and sform_code are 0): the file "
                         "does not state its geometry")
    if qform_code > 0:
        fields = [float(header[key]) for key in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y",
                                                   "qoffset_z")]
        if not np.all(np.isfinite(fields)):
            raise InputError(f"{path}: qform (quatern/qoffset) holds a NaN or infinite value")
    if int(header["sform_code"]) > 0:
        sform = np.asarray(header.get_sform(), dtype=float)
        check_axes(path, sform[:3, :3], "sform")
        if not np.all(np.isfinite(sform[:3, 3])):
            raise InputError(f"{path}: sform origin holds a NaN or infinite value")
        lengths = np.linalg.norm(sform[:3, :3], axis=0)
        if not np.allclose(lengths, zooms, rtol=SFORM_PIXDIM_TOLERANCE, atol=0):
            raise InputError(f"{path}: the sform states voxel size ({', '.join(f'{v:g}' for v in lengths)}) mm but "
                             f"pixdim states ({', '.join(f'{v:g}' for v in zooms)}) mm")
        if qform_code > 0:
            qform = np.asarray(header.get_qform(), dtype=float)
            if not (np.allclose(qform[:3, :3], sform[:3, :3], atol=QFORM_SFORM_TOLERANCE * max(zooms))
                    and np.allclose(qform[:3, 3], sform[:3, 3], atol=QFORM_SFORM_ORIGIN_MM)):
                raise InputError(f"{path}: the qform and the sform state different orientations or positions: the "
                                 "file states two geometries")


def _check_nifti(path: Path) -> None:
    """Sizes, voxel size, orientation, data offset and file length from the raw NIfTI header."""
    header = _raw_nifti_header(path)
    dims = [int(d) for d in header["dim"]]
    if not 1 <= dims[0] <= 7:
        raise InputError(f"{path}: corrupt NIfTI header (invalid number of dimensions, {dims[0]})")
    check_size(path, tuple(dims[1:1 + dims[0]]), header.get_data_dtype().itemsize)
    zooms = [float(z) for z in header["pixdim"][1:4]]
    for axis, zoom in enumerate(zooms[:min(3, dims[0])]):
        if not np.isfinite(zoom) or zoom <= 0:
            raise InputError(f"{path}: voxel size along axis {axis + 1} is {zoom:g} in the header (pixdim); "
                             "the file does not state its geometry")
    _check_nifti_orientation(path, header, zooms)
    offset = int(header.get_data_offset())
    if offset < header.sizeof_hdr + 4:
        raise InputError(f"{path}: corrupt NIfTI header (vox_offset {offset} lies inside the header)")
    voxel_bytes = int(np.prod(header.get_data_shape(), dtype=np.int64)) * header.get_data_dtype().itemsize
    _check_length(path, offset + voxel_bytes)  # a .nii.gz is one gzip stream: header, extensions, voxels


def check_nifti_voxels_finite(path: Path) -> None:
    """Refuse stored NaN or Inf voxels, which ITK's NIfTI reader silently reads as 0.

    Runs after :func:`check_header`, so the voxel bytes read here are within the size limits.
    """
    header = _raw_nifti_header(path)
    dtype = header.get_data_dtype()
    if not np.issubdtype(dtype, np.inexact):
        return
    count = int(np.prod(header.get_data_shape(), dtype=np.int64))
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            stream.seek(int(header.get_data_offset()))
            voxels = np.frombuffer(stream.read(count * dtype.itemsize), dtype=dtype, count=count)
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise InputError(f"{path}: unreadable or corrupt image file ({' '.join(str(error).split())})") from None
    bad = int(voxels.size - np.count_nonzero(np.isfinite(voxels)))
    if bad:
        raise InputError(f"{path}: contains {bad} NaN or Inf voxels")


# --------------------------------------------------------------------------- NRRD and MetaIO (text headers)


def _text_header(path: Path, ends: Callable[[str], bool]) -> Tuple[List[str], int]:
    """Header lines of a text-headed format up to the line where ``ends`` is true (or a blank line),
    and the byte offset where the attached data starts."""
    lines, offset = [], 0
    with open(path, "rb") as stream:
        while offset < MAX_TEXT_HEADER_BYTES:
            raw = stream.readline(MAX_TEXT_HEADER_BYTES)
            if not raw:
                break
            offset += len(raw)
            line = raw.decode("latin-1").rstrip("\r\n")
            if not line.strip():
                return lines, offset
            lines.append(line)
            if ends(line):
                return lines, offset
    if offset >= MAX_TEXT_HEADER_BYTES:
        raise InputError(f"{path}: corrupt header (no end within {MAX_TEXT_HEADER_BYTES} bytes)")
    return lines, offset


def _numbers(path: Path, field: str, text: str) -> List[float]:
    try:
        return [float(value) for value in re.split(r"[\s,()]+", text.strip()) if value]
    except ValueError:
        raise InputError(f"{path}: header field '{field}' is not a list of numbers ({text.strip()[:40]!r})") from None


def _data_file(header: Path, name: str) -> Path:
    """The detached data file a header names, checked like an input file (no FIFO, no device)."""
    if name.strip().upper() == "LIST" or "%" in name:
        raise InputError(f"{header}: data split over several files is not supported; convert it to one file")
    data = Path(name.strip())
    data = data if data.is_absolute() else header.parent / data
    check_input_path(data, role=f"data file of {header}")
    return data


def _nrrd_fields(path: Path) -> Tuple[Dict[str, str], int]:
    lines, offset = _text_header(path, lambda line: False)
    if not lines or not lines[0].startswith("NRRD"):
        raise InputError(f"{path}: unreadable or corrupt image file (no NRRD magic line)")
    fields = {}
    for line in lines[1:]:
        if line.startswith("#") or ":=" in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    return fields, offset


def _nrrd_spacing(path: Path, fields: Dict[str, str], dimension: int) -> None:
    """An NRRD must state a voxel size for each of its axes: space directions or spacings."""
    if "space directions" in fields:
        vectors = re.findall(r"\(([^)]*)\)|none", fields["space directions"])
        columns = [_numbers(path, "space directions", vector) for vector in vectors if vector]
        if len(columns) < min(dimension, 3):
            raise InputError(f"{path}: 'space directions' states a direction for {len(columns)} of {dimension} axes "
                             "('none' for a spatial axis): the file does not state its geometry")
        check_axes(path, np.asarray(columns, dtype=float).T, "space directions")
        return
    spacings = _numbers(path, "spacings", fields["spacings"]) if "spacings" in fields else []
    if len(spacings) < dimension or not all(np.isfinite(v) and v > 0 for v in spacings[:dimension]):
        raise InputError(f"{path}: states no valid voxel size (neither 'space directions' nor positive "
                         "'spacings'): the file does not state its geometry")


def _check_nrrd(path: Path) -> None:
    fields, offset = _nrrd_fields(path)
    kind = fields.get("type", "").lower()
    if kind not in _NRRD_TYPE_BYTES:
        raise InputError(f"{path}: NRRD voxel type {kind!r} is not supported")
    sizes = [int(v) for v in _numbers(path, "sizes", fields.get("sizes", ""))]
    dimension = len(sizes)
    check_size(path, tuple(sizes), _NRRD_TYPE_BYTES[kind])
    _nrrd_spacing(path, fields, dimension)
    text_encoding = fields.get("encoding", "raw").lower()
    encoding = {"gz": "gzip", "gzip": "gzip", "bz2": "bzip2", "bzip2": "bzip2", "raw": "raw"}.get(text_encoding)
    count = int(np.prod(sizes, dtype=np.int64))
    if encoding is None:  # text: at least one character per value (ascii), two per byte (hex)
        expected = 2 * count * _NRRD_TYPE_BYTES[kind] if text_encoding == "hex" else count
        encoding = "raw"
    else:
        expected = count * _NRRD_TYPE_BYTES[kind]
    detached = fields.get("data file") or fields.get("datafile")
    data, start = (_data_file(path, detached), 0) if detached else (path, offset)
    _check_length(data, expected, start, encoding, shown=path)


def _check_metaio(path: Path) -> None:
    lines, offset = _text_header(path, lambda line: line.split("=")[0].strip() == "ElementDataFile")
    fields = {key.strip(): value.strip() for key, _, value in (line.partition("=") for line in lines)}
    kind = fields.get("ElementType", "")
    if kind not in _META_TYPE_BYTES:
        raise InputError(f"{path}: MetaImage ElementType {kind!r} is missing or not supported")
    sizes = [int(v) for v in _numbers(path, "DimSize", fields.get("DimSize", ""))]
    channels = int((_numbers(path, "ElementNumberOfChannels", fields.get("ElementNumberOfChannels", "1")) or [1])[0])
    item = _META_TYPE_BYTES[kind] * max(1, channels)
    check_size(path, tuple(sizes), item)
    spacing = _numbers(path, "ElementSpacing", fields.get("ElementSpacing", fields.get("ElementSize", "")))
    if len(spacing) < len(sizes) or not all(np.isfinite(v) and v > 0 for v in spacing[:len(sizes)]):
        raise InputError(f"{path}: states no valid voxel size (ElementSpacing): the file does not state its geometry")
    name = fields.get("ElementDataFile", "")
    if not name:
        raise InputError(f"{path}: MetaImage header names no ElementDataFile")
    data, start = (path, offset) if name.upper() == "LOCAL" else (_data_file(path, name), 0)
    compressed = fields.get("CompressedData", "False").lower() == "true"
    _check_length(data, int(np.prod(sizes, dtype=np.int64)) * item, start, "zlib" if compressed else "raw",
                  shown=path)


# --------------------------------------------------------------------------- DICOM series


#: Slice gaps may differ from the series' median gap by this fraction before the series is refused
#: (missing or duplicated slices; ITK would otherwise average them into one wrong spacing).
SLICE_GAP_TOLERANCE = 0.1


def check_slice_spacing(folder: Path, files: list) -> None:
    """Refuse a single-frame series whose slices are missing or unevenly spaced along their normal."""
    reader = sitk.ImageFileReader()
    positions = []
    normal = None
    for name in files:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
            position = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
            if normal is None:
                cosines = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
                normal = np.cross(cosines[:3], cosines[3:6])
        except (RuntimeError, ValueError, IndexError):
            return  # no usable positions: ITK's reader decides (and says) how it stacks the files
        positions.append(float(np.dot(position, normal)))
    gaps = np.diff(np.sort(positions))
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if median <= 0 or abs(gaps[worst] - median) > SLICE_GAP_TOLERANCE * median:
        raise InputError(f"{folder}: DICOM slices are missing or unevenly spaced (gap of {gaps[worst]:.3g} mm after "
                         f"slice {worst + 1} of {len(files)}, usually {median:.3g} mm); the series has no single grid")


# --------------------------------------------------------------------------- any single-file image


def _header_information(path: Path) -> sitk.ImageFileReader:
    """ITK's header reader (reads no voxels); its errors become one line naming the file."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        if "orthonormal" in detail:
            raise InputError(f"{path}: degenerate orientation in the header (direction cosines are not "
                             "orthonormal)") from None
        reason = "format not recognised" if ("ImageIO" in detail or "IO object" in detail) else "corrupt header"
        raise InputError(f"{path}: unreadable or corrupt image file ({reason})") from None
    return reader


def check_header(path: Path) -> None:
    """Check a single-file image's header and data length without reading its voxels.

    NIfTI, NRRD and MetaImage headers are parsed here (they can name other files, declare
    sizes and leave geometry out); every format then gets ITK's own header reading.
    """
    name = path.name.lower()
    if name.endswith(_NIFTI_ENDINGS):
        _check_nifti(path)
    elif name.endswith(_NRRD_ENDINGS):
        _check_nrrd(path)
    elif name.endswith(_META_ENDINGS):
        _check_metaio(path)
    reader = _header_information(path)
    check_size(path, tuple(reader.GetSize()))
    check_geometry(path, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
