"""The binary body of `/predict`: 30 s windows as one `.npz` file (numpy's documented zip of `.npy` arrays).

A request carries windows of ONE rate and ONE modality set (send other rates or sets in another
request, or as JSON):

    fs       float, 0-d or shape [1]: the sampling rate in Hz of every array below
    eeg      [n, 30 * fs] µV  (any subset of eeg, eog, emg, ecg; each [n, 30 * fs], the same n)
    eog      ...

float32 (8 windows of four modalities at 200 Hz: 768 KB, against ~1.5 MB of JSON text that costs
as much to parse as the model) or float64; integers are taken as µV too. `write_windows_npz` writes
it (`physioserve.client` uses it); `read_windows_npz` reads it back for the service, refusing
without unpacking what is not a plain, size-bounded, pickle-free npz. The values are checked like
JSON windows (api_requests.py), with the same fields: `windows[i].eeg`.
"""

from __future__ import annotations

import io
import threading
import zipfile

import numpy as np

from .modalities import MODALITIES

FIELD = "windows_npz"  # the form field of /predict that carries the file
# numpy parses each .npy header with ast.literal_eval. CPython 3.11's compile() can fail with
# "SystemError: AST constructor recursion depth mismatch" when threads run it at once (reported from
# threaded applications in python/cpython#106905; seen here once under 16 concurrent /predict
# requests): one header parse at a time in this process; the data are read outside the lock.
_HEADER_LOCK = threading.Lock()
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _read_npy(member) -> np.ndarray:
    """One `.npy` member of the zip (binary file object) -> its array, as numpy.lib.format.read_array
    reads it; ValueError when it is not a pickle-free version 1.0 / 2.0 `.npy` (numpy's format, NEP 1)."""
    version = np.lib.format.read_magic(member)
    if version not in _HEADER_READERS:
        raise ValueError(f".npy format version {version[0]}.{version[1]}; write it with numpy.savez")
    with _HEADER_LOCK:
        shape, fortran_order, dtype = _HEADER_READERS[version](member)
    if dtype.hasobject:
        raise ValueError("object arrays (pickles) are not accepted")
    count = int(np.prod(shape, dtype=np.int64))
    flat = np.empty(count, dtype)  # [count]
    view, done = flat.view(np.uint8), 0
    while done < flat.nbytes:  # a zip member may return fewer bytes than asked
        got = member.readinto(view[done:])
        if not got:
            raise ValueError(f"truncated: {done} of {flat.nbytes} data bytes")
        done += got
    return flat.reshape(shape, order="F" if fortran_order else "C")  # [shape]


class NpzError(ValueError):
    """The npz is not what /predict takes: `field` (windows_npz or windows_npz.<array>), problem, fix."""

    def __init__(self, field: str, problem: str, fix: str):
        super().__init__(f"{field}: {problem}; {fix}")
        self.field, self.problem, self.fix = field, problem, fix


def write_windows_npz(fs: float, arrays: dict[str, np.ndarray], dtype=np.float32) -> bytes:
    """{modality: [n, 30 * fs] µV} at one rate -> the npz bytes of /predict's `windows_npz` (uncompressed)."""
    unknown = sorted(set(arrays) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r}; accepted: {', '.join(MODALITIES)}")
    if not arrays:
        raise ValueError(f"no modality given; give at least one of {', '.join(MODALITIES)}")
    out = io.BytesIO()
    np.savez(out, fs=np.float64(fs), **{m: np.atleast_2d(np.asarray(x, dtype)) for m, x in arrays.items()})
    return out.getvalue()


def _bad(field: str, problem: str) -> NpzError:
    return NpzError(field, problem, "write the file with physioserve.client.write_windows_npz (numpy.savez: fs and "
                    f"[n, 30 x fs] float32 arrays named {', '.join(MODALITIES)})")


def read_windows_npz(file, max_bytes: int) -> tuple[float, dict[str, np.ndarray]]:
    """An npz file (path or binary file object) -> (fs, {modality: [n, L] float64}); NpzError when malformed.

    Refused before anything is unpacked: not a zip, members other than `fs` and the four modalities
    (`.npy` only), more than `max_bytes` once unpacked (a zip bomb). Then: object arrays (pickles are
    never loaded), non-numeric dtypes, arrays that are not [n, L] with one n.
    """
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise _bad(FIELD, "not an .npz file (a zip of .npy arrays)") from None
    with archive:
        infos = archive.infolist()
        names = [info.filename.removesuffix(".npy") for info in infos]
        for info, name in zip(infos, names):
            if not info.filename.endswith(".npy") or name not in ("fs", *MODALITIES):
                raise _bad(f"{FIELD}.{info.filename}", f"unknown array {info.filename!r}")
        if len(set(names)) != len(names):
            raise _bad(FIELD, "an array appears twice")
        unpacked = sum(info.file_size for info in infos)
        if unpacked > max_bytes:
            raise NpzError(FIELD, f"{unpacked} bytes once unpacked, over the {max_bytes} byte limit",
                           "send fewer windows per request (see /metadata limits)")
        if "fs" not in names:
            raise _bad(f"{FIELD}.fs", "missing: the sampling rate of the windows")
        data = {}
        for name in names:
            try:
                with archive.open(f"{name}.npy") as member:
                    data[name] = _read_npy(member)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
                raise _bad(f"{FIELD}.{name}", f"not a readable .npy array ({error})") from None
    for name, value in data.items():
        if value.dtype.kind not in "iuf":
            raise _bad(f"{FIELD}.{name}", f"dtype {value.dtype}, not a real number type")
    fs = data.pop("fs")
    if fs.size != 1:
        raise _bad(f"{FIELD}.fs", f"shape {fs.shape}: one rate per request (send other rates in another request)")
    arrays = {m: data[m] for m in MODALITIES if m in data}
    rows = set()
    for m, x in arrays.items():
        if x.ndim != 2:
            raise _bad(f"{FIELD}.{m}", f"shape {x.shape}, expected [n windows, 30 x fs samples]")
        rows.add(x.shape[0])
    if len(rows) > 1:
        raise _bad(FIELD, f"the modalities hold different numbers of windows ({sorted(rows)})")
    return float(fs.reshape(())), {m: np.asarray(x, np.float64) for m, x in arrays.items()}
