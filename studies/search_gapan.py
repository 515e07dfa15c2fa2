"""Joint search: which GAPan configuration retrieves unseen classes best?

Multivariate TPE over the flow, priors, anchors, alignment and learning rate, with ASHA early
stopping; tuned on validation classes, the best configuration's test metrics reported apart.

    python studies/search_gapan.py                # embedded data set, CPU, a few minutes
    python studies/search_gapan.py --smoke        # 2 settings x 2 seeds x 2 epochs
    python studies/search_gapan.py --dataset cub --data-root /data/CUB_200_2011 \\
        --backbone-mode finetune --gpus-per-trial 0.25

The search space is search_spaces/search_gapan.py;
results and report.html go to results/search_gapan/.
"""

import sys

from gapan.tune.cli import run_study_script

if __name__ == "__main__":
    sys.exit(run_study_script("search_gapan", __doc__))
