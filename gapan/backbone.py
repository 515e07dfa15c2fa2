"""The image backbone: a global-pooled timm model that normalises its own input."""

from __future__ import annotations

import difflib

import timm
import timm.models
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from gapan.config import ConfigError, ModelConfig
from gapan.weights import WeightsInfo, backbone_identity, load_pretrained


class Backbone(nn.Module):
    """A timm model without its classifier: images in [0, 1] to pooled features.

    Attributes:
        name: The timm model name.
        num_features: Size of the pooled feature vector.
        weights: What `gapan.weights.load_pretrained` loaded.
        identity: Backbone name and weights identity (a feature-cache key).
        mean, std: Normalisation buffers of shape (1, 3, 1, 1), from the weights or timm's
            pretrained config.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, name: str, pretrained: str = "none"):
        super().__init__()
        check_backbone_name(name)
        self.name = name
        self.model = _create(name)
        self.weights: WeightsInfo = load_pretrained(pretrained, name, self.model)
        config = self.model.pretrained_cfg
        mean = self.weights.mean or config.get("mean") or IMAGENET_DEFAULT_MEAN
        std = self.weights.std or config.get("std") or IMAGENET_DEFAULT_STD
        # Not persistent: they follow from the config, and the state dict stays timm's.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.num_features: int = self.model.num_features
        self.identity = backbone_identity(name, self.weights.identity)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features) of float images (B, 3, H, W) in [0, 1]."""
        return self.model((images - self.mean) / self.std)


def build_backbone(cfg: ModelConfig) -> Backbone:
    """The backbone named by `cfg.backbone` with the weights named by `cfg.pretrained`.

    Raises:
        ConfigError: for an unknown timm name or weights that cannot be loaded.
    """
    return Backbone(cfg.backbone, cfg.pretrained)


def check_backbone_name(name: str) -> None:
    """Raise a ConfigError, with close matches, when timm has no model called `name`."""
    if timm.is_model(name):
        return
    known = timm.list_models()
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    family = name.split("_")[0].rstrip("0123456789") or name
    if not close:
        close = timm.list_models(f"*{family}*")[:5]
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ConfigError(
        f"model.backbone={name!r} is not a timm model.{hint} List names with "
        f"timm.list_models('*{family}*')."
    )


def _create(name: str) -> nn.Module:
    """Create the model headless, letting fixed-size models (ViTs) take any image size."""
    architecture = name.partition(".")[0]
    config = timm.models.get_pretrained_cfg(architecture)
    if config is not None and config.fixed_input_size:
        try:
            return timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
        except TypeError:  # a fixed-size model without position-embedding interpolation
            pass
    return timm.create_model(name, pretrained=False, num_classes=0)


class _Normalise(nn.Module):
    """The backbone's input normalisation, as the first layer of its frozen part."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.clone(), persistent=False)
        self.register_buffer("std", std.clone(), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def stage_layers(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """A timm model's layers in the order its forward runs them, and its stages' last layers.

    The layers are the model's top-level children, with the container of its stages (timm's
    ``blocks``) opened into its children. The stages are timm's `feature_info`: one entry per
    change of resolution, each naming the layer that ends it (``blocks.4``, ``layer3``).
    """
    stage_ends = [info["module"] for info in getattr(model, "feature_info", [])]
    opened = {name.rpartition(".")[0] for name in stage_ends if "." in name}
    layers = []
    for name, child in model.named_children():
        if name in opened:
            layers += [(f"{name}.{inner}", layer) for inner, layer in child.named_children()]
        else:
            layers.append((name, child))
    return layers, stage_ends


class _Opened(nn.ModuleDict):
    """Some of the layers of one of a timm model's containers (``blocks``), under their names."""


class TimmLayers(nn.Module):
    """Layers of a timm model run in sequence, each under its name in the timm model.

    ``[("blocks.5", a), ("blocks.6", b), ("conv_head", c)]`` gives the submodules ``blocks.5``,
    ``blocks.6`` and ``conv_head``, so the state dict holds timm's keys
    (``blocks.6.0.conv_pw.weight``): it loads into ``timm.create_model(name)`` with
    ``strict=False``, and the parameters come in the order the layers run.

    A state dict that names the layers by their position instead (``0.conv_pw.weight``, as an
    ``nn.Sequential`` of the same layers does) loads too: positions are read as the layers' names.

    Args:
        layers: (name, layer) pairs in the order the forward runs them, as `stage_layers` gives
            them: names of one part (``conv_head``) or two (``blocks.6``, a layer of a container),
            the layers of one container side by side.
    """

    def __init__(self, layers: list[tuple[str, nn.Module]]):
        super().__init__()
        opened: dict[str, _Opened] = {}
        for name, layer in layers:
            container, _, inner = name.partition(".")
            if not inner:
                self.add_module(container, layer)
                continue
            if container not in opened:
                opened[container] = _Opened()
                self.add_module(container, opened[container])
            opened[container][inner] = layer
        self.layer_names = [name for name, _ in layers]
        self.register_load_state_dict_pre_hook(_positions_as_names)

    def layers(self) -> list[nn.Module]:
        """The layers in the order the forward runs them."""
        return [
            layer
            for child in self.children()
            for layer in (child.values() if isinstance(child, _Opened) else [child])
        ]

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        for layer in self.layers():
            maps = layer(maps)
        return maps


def _positions_as_names(module: TimmLayers, state_dict: dict, prefix: str, *_) -> None:
    """Rename ``<prefix><position>.<rest>`` keys of `state_dict` to the layer's timm name."""
    for key in [key for key in state_dict if key.startswith(prefix)]:
        position, dot, rest = key.removeprefix(prefix).partition(".")
        if dot and position.isdigit() and int(position) < len(module.layer_names):
            state_dict[f"{prefix}{module.layer_names[int(position)]}.{rest}"] = state_dict.pop(key)


def split_backbone(
    backbone: Backbone, trainable_stages: int, image_size: int = 64
) -> tuple[nn.Module, nn.Module]:
    """The backbone cut before its last `trainable_stages` stages: (frozen part, trained part).

    The frozen part takes images in [0, 1] to feature maps (normalising them first); the trained
    part (`TimmLayers`, its weights under timm's names) takes those maps to pooled features, so
    ``trained(frozen(x))`` is ``backbone(x)``. The cut is checked on images of `image_size`: a
    model whose forward is not its layers in sequence (a transformer with position embeddings,
    a U-Net) is refused.

    Raises:
        ConfigError: the backbone has no stages to cut at, too few stages, or a forward that
            its layers in sequence do not reproduce.
    """
    layers, stage_ends = stage_layers(backbone.model)
    names = [name for name, _ in layers]
    usable = len(stage_ends) - 1  # the first stage (the stem) always stays frozen
    if usable < 1 or any(end not in names for end in stage_ends):
        raise ConfigError(
            f"model.backbone_mode=partial cannot cut {backbone.name}: timm lists no stages it "
            "can cut between. Use model.backbone_mode=frozen or finetune."
        )
    if trainable_stages > usable:
        raise ConfigError(
            f"model.trainable_blocks={trainable_stages}, but {backbone.name} has {usable} stages "
            f"that can train ({', '.join(stage_ends[1:])}); choose 1 to {usable}, or "
            "model.backbone_mode=finetune to train all of it."
        )
    cut = names.index(cut_layer(backbone.model, trainable_stages)) + 1
    frozen = nn.Sequential(_Normalise(backbone.mean, backbone.std), *[m for _, m in layers[:cut]])
    trained = TimmLayers(layers[cut:])
    _check_cut(backbone, frozen, trained, image_size)
    return frozen.eval().requires_grad_(False), trained


def cut_layer(model: nn.Module, trainable_stages: int) -> str:
    """The name of the last frozen layer when the last `trainable_stages` stages train."""
    _, stage_ends = stage_layers(model)
    return stage_ends[-(min(trainable_stages, len(stage_ends) - 1) + 1)]


def _check_cut(backbone: Backbone, frozen: nn.Module, trained: nn.Module, size: int) -> None:
    was_training = backbone.training
    backbone.eval()
    probe = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode():
            whole = backbone(probe)
            parts = trained(frozen(probe))
        same = parts.shape == whole.shape and torch.allclose(parts, whole, atol=1e-4, rtol=1e-3)
    except Exception:  # noqa: BLE001 - layers that do not fit in sequence fail in any way
        same = False
    backbone.train(was_training)
    if not same:
        raise ConfigError(
            f"model.backbone_mode=partial cannot cut {backbone.name}: its layers run in "
            "sequence do not reproduce its forward. Use model.backbone_mode=frozen or finetune."
        )


def trained_stage_parameters(model: nn.Module, trainable_stages: int) -> int:
    """Parameters of the layers `split_backbone` trains, from the structure alone (a model on
    the meta device will do)."""
    layers, _ = stage_layers(model)
    cut = [name for name, _ in layers].index(cut_layer(model, trainable_stages)) + 1
    return sum(p.numel() for _, module in layers[cut:] for p in module.parameters())
