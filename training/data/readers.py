"""File readers and slice preprocessing for `training.data`.

Each reader turns one file into an `Item`: either a 3-D volume in canonical RAS+ voxel order
(NIfTI/MGZ via nibabel, NRRD via pynrrd, InVesalius .inv3) or a list of 2-D frames already in display orientation
(PNG/JPG/TIFF via Pillow, DICOM via pydicom). A file that cannot be used raises `SkipFile` with a
reason a person can act on; `training.data` reports it and goes on. The ingest helpers at the end
(file listing, per-file slicing, the train/held-out split) are documented in `training.data`.
"""
from __future__ import annotations

import json
import plistlib
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
INV3_SUFFIXES = (".inv3",)
NRRD_SUFFIXES = (".nrrd", ".nhdr")
PYNRRD = "pynrrd==1.1.3"  # as pinned in requirements-test.txt (the training requirements)
# NRRD `space` -> sign flips taking its world axes to RAS+ (pynrrd gives `space directions` in that space)
NRRD_SPACES = {"right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1), "left-anterior-superior": (-1, 1, 1),
               "las": (-1, 1, 1), "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1)}
MAX_INV3_MEMBER = 2 * 1024**3  # refuse absurd members instead of allocating them


class SkipFile(Exception):
    """This file cannot be used; the message is the reason shown in the summary."""


@dataclass
class Item:
    kind: str                                 # "volume" (data [X,Y,Z], RAS+) or "frames" (list of [H,W])
    data: np.ndarray | list[np.ndarray]
    spacing: tuple[float, ...]                # volume: (x, y, z) mm; frames: (row, col) mm
    origin: tuple[float, ...] = (0.0, 0.0, 0.0)  # volume: world mm of voxel 0 (slab split)
    subject: str | None = None                # patient id named by the file itself (DICOM, inv3)
    window: tuple[float, float] | None = None  # (center, width) stored in the file
    invert: bool = False                      # MONOCHROME1: high values are dark
    indices: list[int] = field(default_factory=list)  # frames: index of each frame in its series
    notes: list[str] = field(default_factory=list)
    identifiers: dict[str, str] = field(default_factory=dict)  # DICOM patient fields: kept local (keys file)


def file_kind(path: Path) -> str | None:
    name = path.name.lower()
    for kind, suffixes in (("volume", VOLUME_SUFFIXES), ("image", IMAGE_SUFFIXES), ("dicom", DICOM_SUFFIXES),
                           ("inv3", INV3_SUFFIXES), ("nrrd", NRRD_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    try:  # DICOM files often have no suffix: look for the preamble magic
        with open(path, "rb") as fh:
            fh.seek(128)
            if fh.read(4) == b"DICM":
                return "dicom"
    except OSError:
        pass
    return None


def read_file(path: Path) -> Item:
    kind = file_kind(path)
    if kind is None:
        raise SkipFile(f"unsupported file type {''.join(path.suffixes) or '(no suffix)'!r}")
    return {"volume": read_volume, "image": read_image, "dicom": read_dicom, "inv3": read_inv3,
            "nrrd": read_nrrd}[kind](path)


# ----------------------------------------------------------------------------- volumes
def read_volume(path: Path) -> Item:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt/truncated files
        raise SkipFile(f"unreadable NIfTI/MGZ ({type(exc).__name__}: {str(exc)[:160]})") from None
    return _canonical(img, [], "NIfTI/MGZ")


def _canonical(img, notes: list[str], what: str) -> Item:
    """A nibabel image (3-D, or 4-D: volume 0) -> an Item in canonical RAS+ voxel order, spacing from its zooms."""
    import nibabel as nib

    try:
        if len(img.shape) == 4:
            if img.shape[3] > 1:
                notes.append(f"4-D image: used volume 0 of {img.shape[3]}")
            img = img.slicer[..., 0]
        if len(img.shape) != 3:
            raise SkipFile(f"expected a 3-D volume, got shape {tuple(img.shape)}")
        can = nib.as_closest_canonical(img)  # RAS+: axis 0 = left->right, 1 = post->ant, 2 = inf->sup
        data = np.asanyarray(can.dataobj)    # raw dtype when unscaled: 4x less memory than float32
        if data.dtype == np.float64:
            data = data.astype(np.float32)
    except SkipFile:
        raise
    except Exception as exc:
        raise SkipFile(f"unreadable {what} ({type(exc).__name__}: {str(exc)[:160]})") from None
    zooms = tuple(float(z) for z in can.header.get_zooms()[:3])
    origin = tuple(float(v) for v in can.affine[:3, 3])
    return Item("volume", data, zooms, origin=origin, notes=notes)


def read_nrrd(path: Path) -> Item:
    """NRRD (.nrrd, or a detached .nhdr header) via pynrrd: voxel -> world from `space directions` and
    `space origin` (else `spacings`), turned into an affine so it is reoriented like NIfTI."""
    try:
        import nrrd
    except ImportError:
        raise SkipFile(f"reading NRRD needs the pynrrd package: pip install {PYNRRD}") from None
    try:
        data, header = nrrd.read(str(path))  # index order "F": data[i, j, k] along the header's axes
    except Exception as exc:
        raise SkipFile(f"unreadable NRRD ({type(exc).__name__}: {str(exc)[:160]})") from None
    import nibabel as nib

    try:
        data, affine, notes = _nrrd_geometry(np.asarray(data), header)
        img = nib.Nifti1Image(data, affine)
    except SkipFile:
        raise
    except Exception as exc:  # odd header values (a bad direction, an unsupported dtype)
        raise SkipFile(f"unusable NRRD header ({type(exc).__name__}: {str(exc)[:160]})") from None
    return _canonical(img, notes, "NRRD")


def _nrrd_geometry(data: np.ndarray, header: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(3-D data, RAS+ affine, notes) from a NRRD header; a non-spatial axis (vector, list) keeps element 0."""
    notes: list[str] = []
    dirs = header.get("space directions")
    if dirs is not None:
        dirs = np.array([np.full(3, np.nan) if d is None else np.asarray(d, float) for d in dirs], dtype=object)
        spatial = [i for i, d in enumerate(dirs) if np.all(np.isfinite(np.asarray(d, float)))]
    else:
        spatial = list(range(data.ndim))
    if len(spatial) != 3 or data.ndim not in (3, 4):
        raise SkipFile(f"expected a 3-D NRRD volume, got {data.ndim} axes ({len(spatial)} spatial)")
    if data.ndim == 4:
        extra = next(i for i in range(4) if i not in spatial)
        notes.append(f"NRRD axis {extra} is not spatial ({data.shape[extra]} values): used element 0")
        data = np.take(data, 0, axis=extra)
    affine = np.eye(4)
    if dirs is not None:
        space = str(header.get("space", "")).lower()
        flip = NRRD_SPACES.get(space)
        if flip is None:
            notes.append(f"NRRD space {space or '(none)'!r} taken as RAS")
            flip = (1, 1, 1)
        affine[:3, :3] = np.diag(flip) @ np.stack([np.asarray(dirs[i], float) for i in spatial], axis=1)
        affine[:3, 3] = np.diag(flip) @ np.asarray(header.get("space origin", np.zeros(3)), float)
    elif header.get("spacings") is not None:
        affine[:3, :3] = np.diag([float(v) if np.isfinite(v) else 1.0 for v in header["spacings"][:3]])
    else:
        notes.append("NRRD without space directions or spacings: 1 mm voxels assumed")
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    return data, affine, notes


def read_inv3(path: Path) -> Item:
    """InVesalius project: a gzipped tar with main.plist (shape, dtype, spacing) and a raw matrix.

    Only plistlib/json and np.frombuffer touch its members; nothing is unpickled or extracted to disk.
    """
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            if "main.plist" in members:
                main = plistlib.loads(_member_bytes(tar, members["main.plist"]))
            elif "main.json" in members:
                main = json.loads(_member_bytes(tar, members["main.json"]))
            else:
                raise SkipFile("InVesalius file has no main.plist/main.json")
            matrix = main["matrix"]
            shape = tuple(int(s) for s in matrix["shape"])
            dtype = np.dtype(str(matrix["dtype"])).newbyteorder("<")
            if dtype.kind not in "iuf" or len(shape) != 3:
                raise SkipFile(f"InVesalius matrix has unsupported dtype/shape {dtype}/{shape}")
            member = members.get(Path(str(matrix["filename"])).name)
            if member is None or member.size != int(np.prod(shape)) * dtype.itemsize:
                raise SkipFile("InVesalius matrix member missing or of the wrong size")
            raw = np.frombuffer(_member_bytes(tar, member), dtype=dtype).reshape(shape)
    except SkipFile:
        raise
    except Exception as exc:
        raise SkipFile(f"unreadable InVesalius file ({type(exc).__name__}: {str(exc)[:160]})") from None
    # matrix[z, row, col]: z inferior->superior, rows posterior->anterior (InVesalius stores the
    # DICOM rows flipped), cols patient right->left (DICOM). Checked visually on Cranium.inv3.
    data = raw.transpose(2, 1, 0)[::-1]  # [col, row, z] with col reversed -> RAS+ [x, y, z]
    spacing = tuple(float(s) for s in main.get("spacing", (1.0, 1.0, 1.0)))[:3]
    window = None
    if "window_level" in main and "window_width" in main:
        window = (float(main["window_level"]), float(main["window_width"]))
    subject = str(main.get("name") or "").strip() or None
    return Item("volume", np.ascontiguousarray(data), spacing, subject=subject, window=window,
                identifiers={"InVesalius project name": subject} if subject else {})


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > MAX_INV3_MEMBER:
        raise SkipFile(f"InVesalius member {member.name!r} is too large ({member.size} bytes)")
    fh = tar.extractfile(member)
    if fh is None:
        raise SkipFile(f"InVesalius member {member.name!r} is not a regular file")
    return fh.read()


# ----------------------------------------------------------------------------- 2-D images
def read_image(path: Path) -> Item:
    frames = []
    try:
        with Image.open(path) as im:
            for frame in ImageSequence.Iterator(im):
                frames.append(_gray(frame))
    except Exception as exc:
        raise SkipFile(f"unreadable image ({type(exc).__name__}: {str(exc)[:160]})") from None
    if not frames:
        raise SkipFile("image has no frames")
    return Item("frames", frames, (1.0, 1.0), indices=list(range(len(frames))))


def _gray(frame: Image.Image) -> np.ndarray:
    """Grayscale array keeping the full range of 16-bit and float images."""
    if frame.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return np.asarray(frame).astype(np.float32)
    if frame.mode in ("L", "1"):
        return np.asarray(frame.convert("L"))
    if frame.mode in ("RGBA", "LA", "PA"):  # composite transparent pixels onto black
        bg = Image.new("RGBA", frame.size, (0, 0, 0, 255))
        frame = Image.alpha_composite(bg, frame.convert("RGBA"))
    return np.asarray(frame.convert("L"))


# ----------------------------------------------------------------------------- DICOM
INSTALL_DECODERS = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pyjpegls"


def read_dicom(path: Path) -> Item:
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise SkipFile(f"unreadable DICOM ({type(exc).__name__}: {str(exc)[:160]})") from None
    if "PixelData" not in ds:
        raise SkipFile(f"DICOM without pixel data (SOP class {ds.get('SOPClassUID', '?')})")
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    ts_text = f"{tsyntax.name} ({tsyntax})" if tsyntax is not None else "unknown transfer syntax"
    compressed = bool(tsyntax is not None and tsyntax.is_compressed)
    if compressed:
        try:
            available = get_decoder(tsyntax).is_available
        except Exception:
            available = False
        if not available:
            raise SkipFile(f"compressed transfer syntax {ts_text}: no decoder installed ({INSTALL_DECODERS})")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        what = f"cannot decode transfer syntax {ts_text}" if compressed else "unreadable DICOM pixel data"
        raise SkipFile(f"{what} ({type(exc).__name__}: {str(exc)[:160]})") from None
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    color = arr.ndim == (4 if nframes > 1 else 3)
    if nframes == 1:
        arr = arr[None]
    if color:  # luminance; pydicom already converted YBR to RGB
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        window = None
    else:
        arr = _modality(arr, ds, apply_modality_lut)
        window = _window(ds)
    spacing, notes = _pixel_spacing(ds)
    if nframes > 1:
        indices = list(range(nframes))
    else:
        try:
            indices = [max(0, int(ds.get("InstanceNumber") or 1) - 1)]
        except (TypeError, ValueError):
            indices = [0]
    subject = str(ds.get("PatientID", "") or "").strip() or None
    return Item("frames", list(arr), spacing, subject=subject, window=window, notes=notes,
                invert=photometric == "MONOCHROME1", indices=indices, identifiers=_patient_fields(ds))


def _pixel_spacing(ds) -> tuple[tuple[float, float], list[str]]:
    """(row, col) mm from PixelSpacing, else ImagerPixelSpacing (projection images: CR/DX); square pixels
    where neither holds two positive numbers (some CR files store "0\\0")."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _find(ds, keyword)
        try:
            spacing = tuple(float(v) for v in value)[:2] if value else ()
        except (TypeError, ValueError):
            spacing = ()
        if len(spacing) == 2 and all(v > 0 for v in spacing):
            return spacing, []
    return (1.0, 1.0), ["no usable PixelSpacing/ImagerPixelSpacing: square pixels assumed"]


PATIENT_FIELDS = ("PatientID", "PatientName", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames",
                  "PatientAddress", "AccessionNumber")


def _patient_fields(ds) -> dict[str, str]:
    """The DICOM identifiers a publish check must look for (never stored in the dataset itself)."""
    out = {}
    for keyword in PATIENT_FIELDS:
        try:
            value = str(ds.get(keyword, "") or "").strip()
        except Exception:  # a malformed element must not cost the file
            continue
        if value:
            out[keyword] = value
    return out


def _find(ds, keyword: str):
    """A value at top level, else in the shared / first per-frame functional groups (enhanced MR/CT)."""
    if keyword in ds and ds[keyword].value not in (None, ""):
        return ds[keyword].value
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in (ds.get(groups) or [])[:1]:
            for element in item:
                if element.VR == "SQ" and element.value:
                    sub = element.value[0]
                    if keyword in sub and sub[keyword].value not in (None, ""):
                        return sub[keyword].value
    return None


def _modality(arr: np.ndarray, ds, apply_modality_lut) -> np.ndarray:
    if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    slope, intercept = _find(ds, "RescaleSlope"), _find(ds, "RescaleIntercept")
    out = arr.astype(np.float32)
    if slope is not None:  # enhanced multi-frame keeps rescale in functional groups
        out = out * float(slope) + float(intercept or 0.0)
    return out


def _first(value) -> float:
    """First value of a possibly multi-valued DS element."""
    if isinstance(value, (str, bytes, float, int)):
        return float(value)
    return float(value[0])


def _window(ds) -> tuple[float, float] | None:
    center, width = _find(ds, "WindowCenter"), _find(ds, "WindowWidth")
    if center is None or width is None:
        return None
    try:
        c, w = _first(center), _first(width)
    except (TypeError, ValueError, IndexError):
        return None
    return (c, w) if w > 0 else None


# ----------------------------------------------------------------------------- preprocessing
def intensity_range(data, window: tuple[float, float] | None, percentiles=(0.5, 99.5)) -> tuple[float, float]:
    """(lo, hi) that map to 0 and 1: the window if given, else robust percentiles of the whole file."""
    if window is not None:
        center, width = window
        return center - width / 2.0, center + width / 2.0
    flat = np.concatenate([np.ravel(f) for f in data]) if isinstance(data, list) else np.ravel(data)
    step = max(1, flat.size // 2_000_000)  # a strided sample is plenty for percentiles and cheap
    lo, hi = np.percentile(flat[::step].astype(np.float32), percentiles)
    return float(lo), float(hi)


def normalise(arr: np.ndarray, lo: float, hi: float, invert: bool = False) -> np.ndarray:
    out = np.clip((arr.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return 1.0 - out if invert else out


def display_slice(vol: np.ndarray, axis: int, k: int) -> np.ndarray:
    """Slice k of a RAS+ volume along `axis`, in radiological display orientation.

    For every axis the two remaining axes (a, b) become columns and rows after a transpose and
    both are flipped: axial -> anterior up, patient's right on the image left; coronal -> superior
    up, right on the left; sagittal -> superior up, anterior (face) on the left.
    """
    s = vol[(slice(None),) * axis + (k,)]  # basic indexing: np.take copies the volume slowly
    return s.T[::-1, ::-1]


def slice_spacing(spacing: tuple[float, ...], axis: int) -> tuple[float, float]:
    """(row, col) pixel spacing of `display_slice` along `axis`."""
    a, b = [spacing[i] for i in range(3) if i != axis]
    return b, a


def to_square(img: np.ndarray, size: int, spacing=(1.0, 1.0), mode: str = "pad") -> np.ndarray:
    """[0,1] float slice -> size x size float, isotropic pixels, padded with background or centre-cropped."""
    h, w = img.shape
    ph, pw = h * spacing[0], w * spacing[1]
    side = max(ph, pw) if mode == "pad" else min(ph, pw)
    nh, nw = max(1, round(size * ph / side)), max(1, round(size * pw / side))
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    background = float(np.median(border))
    if (nh, nw) != (h, w):  # Pillow's resize antialiases when shrinking (filter support is scaled)
        img = np.asarray(Image.fromarray(img.astype(np.float32), mode="F")
                         .resize((nw, nh), Image.Resampling.LANCZOS))
        img = np.clip(img, 0.0, 1.0)
    out = np.full((size, size), background, np.float32)
    sy, sx = max(0, (nh - size) // 2), max(0, (nw - size) // 2)  # crop offsets
    dy, dx = max(0, (size - nh) // 2), max(0, (size - nw) // 2)  # pad offsets
    ch, cw = min(size, nh), min(size, nw)
    out[dy:dy + ch, dx:dx + cw] = img[sy:sy + ch, sx:sx + cw]
    return out


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
