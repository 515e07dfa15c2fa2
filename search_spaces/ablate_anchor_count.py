"""How many anchors per class does alignment need? Retrieval on unseen classes against count.

One anchor per class reduces GAPan's alignment to a noisy proxy loss; more anchors cover more of a
class's appearance modes at the price of a larger similarity matrix per step.
"""

KIND = "ablation"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 3
FIXED = {"train.epochs": 8}
SEARCH = {"anchors.count": {"type": "int", "values": [1, 2, 4, 8, 16, 32, 64]}}
BASELINE = 1
