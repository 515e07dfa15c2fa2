"""Prior variance ablation: how wide should each class prior be?

Hypothesis: very narrow priors (sigma^2 = 0.01) collapse the anchors to one point and very wide
ones (10) blur classes together; the best MAP@R lies in between.

    python studies/ablate_prior_variance.py                # embedded data set, CPU, a few minutes
    python studies/ablate_prior_variance.py --smoke        # 2 settings x 2 seeds x 2 epochs
    python studies/ablate_prior_variance.py --dataset cub --data-root /data/CUB_200_2011 \\
        --backbone-mode finetune --gpus-per-trial 0.25

The search space is search_spaces/ablate_prior_variance.py;
results and report.html go to results/ablate_prior_variance/.
"""

import sys

from gapan.tune.cli import run_study_script

if __name__ == "__main__":
    sys.exit(run_study_script("ablate_prior_variance", __doc__))
