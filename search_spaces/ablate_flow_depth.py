"""Does a deeper flow make better anchors? Retrieval on unseen classes against flow depth.

Depth 0 is the no-flow baseline: the class priors sit directly on the embedding, so anchors are
Gaussian samples around a class mean. Deeper flows can bend each prior around the class's
appearance modes, at a cost in time per step.
"""

KIND = "ablation"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 3
FIXED = {"train.epochs": 8}
SEARCH = {"flow.depth": {"type": "int", "values": [0, 1, 2, 4, 8, 16]}}
BASELINE = 0
