"""How wide should each class prior be? Retrieval on unseen classes against the prior variance.

A narrow prior (small sigma^2) pulls a class's latent codes tightly together and makes its anchors
nearly identical; a wide one lets them spread over the class's appearance variations. The
baseline is the default variance of 1.
"""

KIND = "ablation"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 3
FIXED = {"train.epochs": 8}
SEARCH = {"prior.variance": {"type": "float", "values": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]}}
BASELINE = 1.0
