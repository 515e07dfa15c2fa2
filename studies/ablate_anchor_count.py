"""Anchor count ablation: how many anchors per class does alignment need?

Hypothesis: a handful of anchors per class beats one (which is a noisy proxy), with little gain
beyond 16.

    python studies/ablate_anchor_count.py                # embedded data set, CPU, a few minutes
    python studies/ablate_anchor_count.py --smoke        # 2 settings x 2 seeds x 2 epochs
    python studies/ablate_anchor_count.py --dataset cub --data-root /data/CUB_200_2011 \\
        --backbone-mode finetune --gpus-per-trial 0.25

The search space is search_spaces/ablate_anchor_count.py;
results and report.html go to results/ablate_anchor_count/.
"""

import sys

from gapan.tune.cli import run_study_script

if __name__ == "__main__":
    sys.exit(run_study_script("ablate_anchor_count", __doc__))
