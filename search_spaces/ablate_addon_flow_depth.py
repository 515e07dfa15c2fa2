"""Added to the best baseline loss, does a deeper flow give better anchors?

GAPan as a module on Proxy-Anchor: Proxy-Anchor's loss at its defaults plus GAPan's alignment
and likelihood, at each flow depth. The baseline is Proxy-Anchor alone, not depth 0, so every row
answers "does this add-on help the loss it is added to?"; depth 0 is the add-on without a flow
(anchors sampled around each class mean), and each depth is also compared with it (CONTRASTS):
"does the flow help the add-on?". Another baseline loss: --set loss.metric=norm_softmax.
"""

KIND = "compare"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 5
FIXED = {"train.epochs": 8, "loss.metric": "proxy_anchor"}
METHODS = {
    "loss_alone": {"loss.align_weight": 0.0, "loss.nll_weight": 0.0},
    "depth_0": {"flow.depth": 0},
    "depth_1": {"flow.depth": 1},
    "depth_2": {"flow.depth": 2},
    "depth_4": {"flow.depth": 4},
    "depth_8": {"flow.depth": 8},
    "depth_16": {"flow.depth": 16},
}
SEARCH = {
    "method": {
        "type": "categorical",
        "values": ["loss_alone", "depth_0", "depth_1", "depth_2", "depth_4", "depth_8", "depth_16"],
    }
}
BASELINE = "loss_alone"
CONTRASTS = {
    "depth_1": "depth_0",
    "depth_2": "depth_0",
    "depth_4": "depth_0",
    "depth_8": "depth_0",
    "depth_16": "depth_0",
}
