"""Which GAPan configuration retrieves unseen classes best, and which knobs matter?

A joint multivariate TPE search over the flow, the priors, the anchors, the alignment and the
learning rate, with ASHA stopping unpromising trials early. Tuned on the validation classes;
the best configuration's test metrics are reported separately.
"""

KIND = "search"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 1
NUM_SAMPLES = 24
SCHEDULER = "asha"
FIXED = {"train.epochs": 8}
SEARCH = {
    "flow.depth": {"type": "int", "low": 0, "high": 8},
    "prior.variance": {"type": "float", "low": 0.01, "high": 10.0, "log": True},
    "anchors.count": {"type": "int", "low": 1, "high": 64, "log": True},
    "anchors.temperature": {"type": "float", "low": 0.1, "high": 1.0},
    "align.temperature": {"type": "float", "low": 0.02, "high": 0.5, "log": True},
    "loss.nll_weight": {"type": "float", "low": 0.001, "high": 1.0, "log": True},
    "optim.lr": {"type": "float", "low": 3e-5, "high": 3e-3, "log": True},
}
