"""The pretrained reference: the backbone's own features, measured as a trained model is."""

import pytest
import torch

from gapan.backbone import build_backbone
from gapan.config import from_flat
from gapan.data import build_splits
from gapan.evaluate import reference_record
from gapan.features import extract_features
from gapan.metrics import retrieval_metrics


@pytest.mark.slow
def test_the_reference_is_the_untrained_backbone_on_validation_and_test():
    cfg = from_flat({"data.max_classes": 12, "data.classes_per_batch": 8})
    splits = build_splits(cfg.data)
    record = reference_record(cfg, splits)
    assert record["model"] == {"backbone": cfg.model.backbone, "pretrained": cfg.model.pretrained}
    assert record["data"]["image_size"] == cfg.data.image_size

    # Computed here without the feature cache: the backbone run on the images directly.
    backbone = build_backbone(cfg.model)
    for split, images in (("val", splits.val), ("test", splits.test)):
        features = extract_features(backbone, images, cfg.data.image_size, 64, "cpu")
        expected = retrieval_metrics(features, images.labels, recall_ks=splits.recall_ks)
        for name, value in expected.items():
            assert record["metrics"][f"{split}_{name}"] == pytest.approx(value, abs=1e-4), name
    assert record["metrics"]["val_map_at_r"] != record["metrics"]["test_map_at_r"]
    assert torch.isfinite(torch.tensor(list(record["metrics"].values()))).all()
