"""Is GAPan better than the standard baselines at equal backbone, embedding and budget?

GAPan against Proxy-Anchor (the strongest common proxy baseline) and GAPan without a flow, each
at its default settings, over several seeds; validation and unseen-class test metrics.
"""

KIND = "compare"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 3
FIXED = {"train.epochs": 8}
METHODS = {
    "proxy_anchor": {
        "loss.align_weight": 0.0,
        "loss.nll_weight": 0.0,
        "loss.metric": "proxy_anchor",
    },
    "gapan_no_flow": {"flow.depth": 0},
    "gapan": {},
}
SEARCH = {"method": {"type": "categorical", "values": ["proxy_anchor", "gapan_no_flow", "gapan"]}}
BASELINE = "proxy_anchor"
