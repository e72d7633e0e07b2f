"""`physioserve embed PATH... --out OUT`: per-epoch embeddings of a corpus as Parquet, one file per recording.

    physioserve embed night1.edf records/ --out embeddings                  # local, default bundle
    physioserve embed cohort/ --out embeddings --engine ray --ray-address auto   # on a Ray cluster
    python -c "import pandas as pd; print(pd.read_parquet('embeddings'))"   # OUT reads as one dataset

PATH: as `physioserve score` takes (EDF/BDF files, WFDB records, PhysioNet-layout folders). Each
recording goes through the same reader, preprocessing and ONNX graph as `score` and `/predict`
(`cohort`), and gives `OUT/<record>.parquet` with one row per 30 s epoch:

| column | type | content |
| --- | --- | --- |
| record | string | record name |
| epoch, start_s | int32 | epoch index; its start in seconds from the recording start |
| mask_eeg ... mask_ecg | bool | the modalities the epoch used (absent, or missing data there) |
| modalities | string | the same joined, 'eeg+eog+emg' ('' when none: the epoch is unscorable) |
| p_W ... p_REM, p_arousal, p_age_ge_55 | float32 | window-level probabilities of the heads |
| night_p_W ... night_p_REM | float32 | night-context stage probabilities (bundles with that graph only) |
| embedding | fixed_size_list<float32>[d_model] | the encoder's pooled output, `/predict`'s embedding |

Probabilities and embedding are null for an unscorable epoch. The file metadata, key `physioserve`,
holds JSON: the model (name, version, d_model, night context), the preprocessing config, modality
order, stage names, epoch length, the record, its source path, channels and the reader's notes
(`read_metadata`). A rerun skips the recordings whose file is there (same model; `--no-resume` redoes
them); failures are listed in `OUT/_errors.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .cohort import CohortJob, Prepared, add_engine_arguments, checked_inputs, engine, guarded, run_cohort
from .modalities import EPOCH_SECONDS, MODALITIES, STAGE_NAMES
from .scoring import STAGE_PROB_COLUMNS, modality_sets

HELP = "write per-epoch embeddings and window-level probabilities of EDF/BDF/WFDB recordings as Parquet"

EMBED_FORMAT = 1
METADATA_KEY = b"physioserve"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="EDF/BDF files, WFDB records (.hea or record folder), or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created): <record>.parquet per recording")
    parser.add_argument("--bundle", default=None,
                        help="bundle folder or model-store tag (default: PHYSIOSERVE_BUNDLE, the model store, the packaged bundle)")
    parser.add_argument("--variant", choices=("fp32", "int8"), default=None, help="graph variant of the bundle")
    parser.add_argument("--channel-map", default=None, help="override the channel patterns, e.g. eeg=C4-A1,eog=EOG(L)")
    parser.add_argument("--fill-gaps", action="store_true",
                        help="EDF+D with gaps between data records: embed it, the gaps as missing data (else refused)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_arguments(parser, "default: on")


class EmbedJob(CohortJob):
    """Per recording: `OUT/<record>.parquet` (the module docstring's table). Marker: that file."""

    command, verb = "embed", "embedded"

    def __init__(self, out: Path, bundle, *, channel_map: dict | None = None, fill_gaps: bool = False):
        model = {"name": bundle.name, "version": bundle.version, "d_model": bundle.d_model,
                 "night_context": bundle.context_path is not None}
        super().__init__(out, model, channel_map, fill_gaps)

    def marker(self, record: str) -> str:
        return f"{record}.parquet"

    def made_by(self, marker: Path) -> dict | None:
        try:
            return read_metadata(marker)["model"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def keep(self, recording) -> dict:
        return {"channels": dict(recording.modality_channels), "notes": list(recording.notes)}

    def write(self, prepared: Prepared, probs: dict[str, np.ndarray], folder: Path) -> None:
        import pyarrow.parquet as pq

        pq.write_table(embedding_table(prepared, probs, self.model), folder / self.marker(prepared.record))


def embedding_table(prepared: Prepared, probs: dict[str, np.ndarray], model: dict):
    """The Parquet table of one recording (`scoring.predict_night` outputs), metadata included."""
    import pyarrow as pa

    from .preprocessing import DEFAULT_CONFIG

    mask = np.asarray(prepared.mask, bool)  # [n, 4]
    n = len(mask)
    unscorable = ~mask.any(axis=1)  # [n]
    epoch = np.arange(n, dtype=np.int32)

    def values(column: np.ndarray):  # [n] float32, null where unscorable
        return pa.array(np.nan_to_num(column).astype(np.float32), mask=unscorable)

    columns = {"record": pa.array([prepared.record] * n, pa.string()), "epoch": pa.array(epoch),
               "start_s": pa.array(epoch * np.int32(EPOCH_SECONDS))}
    columns.update({f"mask_{m}": pa.array(mask[:, j]) for j, m in enumerate(MODALITIES)})
    columns["modalities"] = pa.array(modality_sets(mask), pa.string())
    columns.update({name: values(probs["sleep_stage_probs"][:, k]) for k, name in enumerate(STAGE_PROB_COLUMNS)})
    columns["p_arousal"] = values(probs["arousal_probs"][:, 1])
    columns["p_age_ge_55"] = values(probs["age_probs"][:, 1])
    if "sleep_stage_night_probs" in probs:
        columns.update({f"night_{name}": values(probs["sleep_stage_night_probs"][:, k])
                        for k, name in enumerate(STAGE_PROB_COLUMNS)})
    embedding = np.nan_to_num(probs["embedding"]).astype(np.float32)  # [n, D]
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(embedding.reshape(-1)), embedding.shape[1],
                                                             mask=pa.array(unscorable))  # [n] of [D]
    meta = {"format": EMBED_FORMAT, "model": model, "preprocessing": DEFAULT_CONFIG.to_dict(),
            "modalities": list(MODALITIES), "stage_names": list(STAGE_NAMES), "epoch_seconds": EPOCH_SECONDS,
            "record": prepared.record, "source": prepared.path, **(prepared.kept or {})}
    return pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(meta)})


def read_metadata(path: str | Path) -> dict:
    """The `physioserve` metadata of an embedding file (model, preprocessing, record...). Raises ValueError
    for a Parquet file that has none, OSError for one that cannot be read."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path}: no {METADATA_KEY.decode()} metadata; not written by `physioserve embed`")
    return json.loads(metadata[METADATA_KEY])


def embedding_matrix(table) -> np.ndarray:
    """[n, d_model] float32 of the `embedding` column of a pyarrow Table or a pandas DataFrame; NaN rows for nulls."""
    import pyarrow as pa

    if not isinstance(table, pa.Table):  # pandas: one float32 array (or None) per row
        rows = list(table["embedding"])
        width = next((len(v) for v in rows if v is not None), 0)
        return np.stack([np.full(width, np.nan, np.float32) if v is None else np.asarray(v, np.float32) for v in rows]) \
            if rows else np.zeros((0, width), np.float32)
    column = table["embedding"].combine_chunks()  # fixed_size_list<float32>[D]
    width = column.type.list_size
    out = np.full((len(column), width), np.nan, np.float32)  # [n, D]
    valid = np.asarray(column.is_valid())
    out[valid] = column.filter(valid).flatten().to_numpy().reshape(-1, width)
    return out


def run(args: argparse.Namespace) -> int:
    from .bundle import resolve_bundle
    from .modalities import parse_channel_map

    code, inputs, problems = checked_inputs("embed", args)
    if code is not None:
        return code

    def embedded():
        bundle = resolve_bundle(args.bundle)
        job = EmbedJob(args.out, bundle, channel_map=parse_channel_map(args.channel_map), fill_gaps=args.fill_gaps)
        return run_cohort(job, inputs, engine(job, args, bundle), resume=args.resume is not False,
                          progress=not args.no_progress)

    result = guarded("embed", embedded)
    if result is None:
        return 1
    planned, outcomes = result
    failed = any(o.error is not None for o in outcomes)
    return 1 if failed or problems or planned.problems else 0
