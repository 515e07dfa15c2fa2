"""GAPan against Proxy-Anchor and GAPan without a flow, several seeds each.

Hypothesis: GAPan's flow anchors beat both on unseen-class MAP@R at equal backbone and budget.

    python studies/compare_methods.py                # embedded data set, CPU, a few minutes
    python studies/compare_methods.py --smoke        # 2 settings x 2 seeds x 2 epochs
    python studies/compare_methods.py --dataset cub --data-root /data/CUB_200_2011 \\
        --backbone-mode finetune --gpus-per-trial 0.25

The search space is search_spaces/compare_methods.py;
results and report.html go to results/compare_methods/.
"""

import sys

from gapan.tune.cli import run_study_script

if __name__ == "__main__":
    sys.exit(run_study_script("compare_methods", __doc__))
