"""The pretrained backbone as it is, with no training: the reference every trained model must beat.

A study writes it beside its results (reference.json) so its report can show what training
bought on the unseen classes. The backbone's pooled features come from the feature cache, so the
reference costs one evaluation once the features of a data set, backbone, weights and image size
are cached.

python -m gapan.evaluate [key=value ...]     # same keys as gapan.train
"""

from __future__ import annotations

import json
import sys
from typing import Any

from gapan.config import ConfigError, ExperimentConfig, from_flat, parse_overrides
from gapan.data import DataError, Splits, build_splits
from gapan.inputs import frozen_features, resolve_device
from gapan.metrics import retrieval_metrics

DESCRIPTION = "the pretrained backbone as it is (no training): its pooled features"


def pretrained_metrics(cfg: ExperimentConfig, splits: Splits | None = None) -> dict[str, float]:
    """Validation and test metrics of the backbone's pooled features, with no training.

    Args:
        cfg: The study's config: data set, backbone, weights and image size matter.
        splits: `build_splits(cfg.data)`, when the caller has it already.

    Returns:
        ``val_<metric>`` and ``test_<metric>`` values, named as a trial reports them.
    """
    splits = splits if splits is not None else build_splits(cfg.data)
    features = frozen_features(cfg, splits, resolve_device(cfg.train.device))
    metrics = {}
    for split, images in (("val", splits.val), ("test", splits.test)):
        if len(images) == 0:
            continue
        gallery = features.get("gallery") if split == "test" else None
        values = retrieval_metrics(
            features[split],
            images.labels,
            gallery,
            splits.test_gallery.labels if gallery is not None else None,
            recall_ks=splits.recall_ks,
        )
        metrics.update({f"{split}_{name}": value for name, value in values.items()})
    return metrics


def reference_record(cfg: ExperimentConfig, splits: Splits | None = None) -> dict[str, Any]:
    """What a study stores as its reference.json: the metrics and what they were measured on."""
    return {
        "description": DESCRIPTION,
        "data": {"name": cfg.data.name, "root": cfg.data.root, "image_size": cfg.data.image_size},
        "model": {"backbone": cfg.model.backbone, "pretrained": cfg.model.pretrained},
        "metrics": pretrained_metrics(cfg, splits),
    }


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
