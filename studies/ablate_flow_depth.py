"""Flow depth ablation: does a deeper normalizing flow give better anchors?

Hypothesis: depth 1-4 beats depth 0 (priors directly on the embedding) on unseen-class MAP@R,
and gains flatten beyond that while time per step keeps growing.

    python studies/ablate_flow_depth.py                # embedded data set, CPU, a few minutes
    python studies/ablate_flow_depth.py --smoke        # 2 settings x 2 seeds x 2 epochs
    python studies/ablate_flow_depth.py --dataset cub --data-root /data/CUB_200_2011 \\
        --backbone-mode finetune --gpus-per-trial 0.25

The search space is search_spaces/ablate_flow_depth.py;
results and report.html go to results/ablate_flow_depth/.
"""

import sys

from gapan.tune.cli import run_study_script

if __name__ == "__main__":
    sys.exit(run_study_script("ablate_flow_depth", __doc__))
