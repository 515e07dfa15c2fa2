"""Retrieval metrics of the pretrained backbone as is: the reference every trained model must beat.

python -m gapan.evaluate [key=value ...]     # same keys as gapan.train
"""

from __future__ import annotations

import json
import sys

from gapan.backbone import build_backbone
from gapan.config import ConfigError, ExperimentConfig, from_flat, parse_overrides
from gapan.data import DataError, build_splits
from gapan.features import cached_features
from gapan.metrics import retrieval_metrics
from gapan.train import resolve_device


def pretrained_metrics(cfg: ExperimentConfig) -> dict[str, float]:
    """Validation and test metrics of the backbone's pooled features, with no training."""
    splits = build_splits(cfg.data)
    sets = {"val": splits.val, "test": splits.test}
    if splits.test_gallery is not None:
        sets["gallery"] = splits.test_gallery
    features = cached_features(
        build_backbone(cfg.model),
        sets,
        cfg.data.image_size,
        cfg.train.eval_batch_size,
        resolve_device(cfg.train.device),
    )
    metrics = {}
    for split in ("val", "test"):
        gallery = features.get("gallery") if split == "test" else None
        gallery_labels = splits.test_gallery.labels if gallery is not None else None
        values = retrieval_metrics(
            features[split],
            sets[split].labels,
            gallery,
            gallery_labels,
            recall_ks=splits.recall_ks,
        )
        metrics.update({f"{split}_{name}": value for name, value in values.items()})
    return metrics


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = from_flat(parse_overrides(sys.argv[1:] if argv is None else argv))
        metrics = pretrained_metrics(cfg)
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
