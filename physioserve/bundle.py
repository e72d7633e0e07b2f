"""The model bundle: `model.onnx` + `bundle.json` + `MODEL_CARD.md`, and where to find one.

A bundle is a plain folder. `bundle.json` carries the same metadata as the ONNX file's
metadata_props (readable without onnx): name, version, model size and d_model, modality order,
class names, channel aliases, the preprocessing config, the export checks and the training
provenance. `read_bundle` refuses a bundle whose modality order, class names or preprocessing
config differ from this code's: its model would see inputs it was not trained on.

Where a bundle comes from (`resolve_bundle`), first match wins:
1. an explicit folder or model-store tag (`--bundle`, or the `PHYSIOSERVE_BUNDLE` environment variable);
2. the BentoML model store: `physioserve:latest` (written by `physioserve export --register`);
3. the default bundle shipped inside the package (`physioserve/assets/default_bundle/`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .modalities import CHANNEL_ALIASES, CLASS_NAMES, DEFAULT_CHANNELS, MODALITIES
from .preprocessing import check_config_matches

BUNDLE_FORMAT = 1
MODEL_FILE = "model.onnx"
CONTEXT_FILE = "context.onnx"  # the night-context graph (optional: bundles without it stage window by window)
WEIGHTS_FILE = "weights.pt"  # torch weights for `physioserve adapt` (training extra); the served path never reads it
META_FILE = "bundle.json"
CARD_FILE = "MODEL_CARD.md"
BUNDLE_FILES = (MODEL_FILE, META_FILE, CARD_FILE)
STORE_NAME = "physioserve"  # name in the BentoML model store
ENV_BUNDLE = "PHYSIOSERVE_BUNDLE"  # a bundle folder or a model-store tag
PACKAGED_BUNDLE = Path(__file__).parent / "assets" / "default_bundle"

# ONNX graph interface (DESIGN "Inference model"): fixed names, dynamic batch.
INPUT_NAMES = ("signals", "modality_mask")
OUTPUT_NAMES = ("embedding", "sleep_stage_logits", "age_logits", "arousal_logits")
# Night-context graph: consecutive epochs' embeddings [batch, epochs, D] + masks [batch, epochs, 4] + spectral
# features [batch, epochs, F] (physioserve.epoch_features) -> stage logits [batch, epochs, 5].
CONTEXT_INPUTS = ("embedding", "modality_mask", "epoch_features")
CONTEXT_OUTPUTS = ("sleep_stage_logits",)


class BundleError(ValueError):
    """A bundle that is missing, incomplete, or made for other code."""


@dataclass(frozen=True)
class Bundle:
    """A checked bundle folder and its metadata."""

    path: Path
    meta: dict
    source: str  # "folder", "store:<tag>" or "packaged"

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def d_model(self) -> int:
        return int(self.meta["d_model"])

    @property
    def context_path(self) -> Path | None:
        """The night-context graph, or None for a bundle exported without `--context`."""
        context = self.meta.get("context")
        return self.path / context["file"] if context else None

    @property
    def card(self) -> str:
        card = self.path / CARD_FILE
        return card.read_text() if card.exists() else ""

    def card_summary(self) -> str:
        """The model card's first paragraph after its title."""
        paragraphs = [p.strip() for p in self.card.split("\n\n") if p.strip() and not p.startswith("#")]
        return paragraphs[0] if paragraphs else ""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def interface_metadata() -> dict:
    """The code-side facts a bundle must agree with (written by export, checked on load)."""
    return {
        "format": BUNDLE_FORMAT,
        "modalities": list(MODALITIES),
        "class_names": {task: list(names) for task, names in CLASS_NAMES.items()},
        "channel_aliases": {m: list(a) for m, a in CHANNEL_ALIASES.items()},
        "default_channels": dict(DEFAULT_CHANNELS),
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "context_inputs": list(CONTEXT_INPUTS),
        "context_outputs": list(CONTEXT_OUTPUTS),
    }


def check_metadata(meta: dict, *, where: str) -> None:
    """Raise BundleError when bundle metadata disagrees with this code."""
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where}: bundle format {meta.get('format')!r}, this code reads {BUNDLE_FORMAT}; re-export it")
    ours = interface_metadata()
    keys = ["modalities", "class_names", "inputs", "outputs"] + (["context_inputs", "context_outputs"] if meta.get("context") else [])
    for key in keys:
        if meta.get(key) != ours[key]:
            raise BundleError(
                f"{where}: bundle {key} {meta.get(key)!r} differ from this code's {ours[key]!r}; "
                "re-export the bundle with this version of physioserve"
            )
    try:
        check_config_matches(meta.get("preprocessing", {}), where=where)
    except ValueError as error:
        raise BundleError(str(error)) from None


def read_bundle(path: str | Path, *, source: str = "folder", verify_hash: bool = False) -> Bundle:
    """Open and check a bundle folder (`model.onnx` + `bundle.json`)."""
    path = Path(path)
    where = f"bundle {path}"
    if not path.is_dir():
        raise BundleError(f"{where}: not a folder; give a folder written by `physioserve export`")
    missing = [f for f in (MODEL_FILE, META_FILE) if not (path / f).exists()]
    if missing:
        raise BundleError(f"{where}: missing {', '.join(missing)}; give a folder written by `physioserve export`")
    try:
        meta = json.loads((path / META_FILE).read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{where}: {META_FILE} is not valid JSON ({error}); re-export the bundle") from None
    check_metadata(meta, where=where)
    context = meta.get("context")
    if context and not (path / context["file"]).exists():
        raise BundleError(f"{where}: missing {context['file']} (the night-context graph {META_FILE} names); "
                          "copy the whole bundle folder or re-export it")
    if verify_hash:
        for name, expected in meta.get("files", {}).items():
            if sha256(path / name) != expected:
                raise BundleError(f"{where}: {name} does not match the sha256 in {META_FILE}; re-export the bundle")
    return Bundle(path=path, meta=meta, source=source)


def write_bundle_meta(folder: Path, meta: dict) -> None:
    (Path(folder) / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n")


# ---- the BentoML model store (bentoml is imported only here, when needed) -------------------------


def save_to_store(folder: str | Path, name: str = STORE_NAME) -> str:
    """Copy a bundle folder into the BentoML model store; returns the new tag ('physioserve:<version>')."""
    import bentoml

    bundle = read_bundle(folder)
    labels = {"bundle_version": bundle.version, "model_size": str(bundle.meta.get("model", {}).get("size", ""))}
    metadata = {k: bundle.meta[k] for k in ("name", "version", "created", "d_model") if k in bundle.meta}
    with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
        for file in sorted({*BUNDLE_FILES, *bundle.meta.get("files", {})}):
            if (bundle.path / file).exists():
                shutil.copy2(bundle.path / file, model.path_of(file))
    return str(model.tag)


def store_bundle_path(tag: str = f"{STORE_NAME}:latest") -> Path | None:
    """Folder of a bundle in the BentoML model store, or None when the store has no such model."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    try:
        return Path(bentoml.models.get(tag).path)
    except (BentoMLException, ValueError):  # NotFound, or a malformed tag
        return None


def _looks_like_tag(spec: str) -> bool:
    return not any(sep in spec for sep in ("/", os.sep)) and not spec.startswith(".")


def resolve_bundle(spec: str | Path | None = None, *, packaged: Path = PACKAGED_BUNDLE, use_store: bool = True) -> Bundle:
    """Find the bundle to serve or score with (see the module docstring for the order)."""
    spec = spec if spec not in (None, "") else os.environ.get(ENV_BUNDLE) or None
    if spec is not None:
        path = Path(spec).expanduser()
        if path.is_dir():
            return read_bundle(path)
        if isinstance(spec, str) and _looks_like_tag(spec):
            tag = spec if ":" in spec else f"{spec}:latest"
            found = store_bundle_path(tag)
            if found is None:
                raise BundleError(f"bundle {spec!r}: no such folder and no model {tag!r} in the BentoML model store")
            return read_bundle(found, source=f"store:{tag}")
        raise BundleError(f"bundle {spec}: no such folder; give a folder written by `physioserve export`")
    if use_store:
        found = store_bundle_path()
        if found is not None:
            return read_bundle(found, source=f"store:{STORE_NAME}:latest")
    if (packaged / META_FILE).exists():
        return read_bundle(packaged, source="packaged")
    raise BundleError(
        "no model bundle: none given (--bundle or PHYSIOSERVE_BUNDLE), none in the BentoML model store "
        f"({STORE_NAME}:latest) and no default bundle in this install ({packaged}); "
        "export one with `physioserve export --checkpoint ... --probe ... --out DIR [--register]`"
    )
