"""Flow depth with GAPan added to a baseline loss: does the add-on help, and does depth matter?

Hypothesis: Proxy-Anchor plus GAPan's alignment beats Proxy-Anchor alone on unseen-class MAP@R,
and more so with a flow (depth 1-4) than without (depth 0).

    python studies/ablate_addon_flow_depth.py                  # embedded data set, CPU
    python studies/ablate_addon_flow_depth.py --splits 3       # on 3 family-disjoint splits
    python studies/ablate_addon_flow_depth.py --smoke          # 2 settings x 2 seeds x 2 epochs
    python studies/ablate_addon_flow_depth.py --set loss.metric=norm_softmax

The search space is search_spaces/ablate_addon_flow_depth.py;
results and report.html go to results/ablate_addon_flow_depth/.
"""

import sys

from gapan.tune.cli import run_study_script

if __name__ == "__main__":
    sys.exit(run_study_script("ablate_addon_flow_depth", __doc__))
