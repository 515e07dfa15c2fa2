"""Every method tuned with the same budget, then compared on unseen classes over fresh seeds.

Hypothesis: tuned on validation with equal budgets, GAPan beats Proxy-Anchor, Normalized
Softmax and GAPan without a flow on unseen-class MAP@R; added to Proxy-Anchor or Normalized
Softmax, GAPan beats that loss alone.

    python studies/compare_tuned.py                            # frozen features, CPU
    python studies/compare_tuned.py --backbone-mode partial    # last stage trained, CPU
    python studies/compare_tuned.py --smoke                    # 2 trials per method, 2 seeds
    python studies/compare_tuned.py --splits 3                 # on 3 family-disjoint splits
    python studies/compare_tuned.py --dataset cub --data-root /data/CUB_200_2011 \\
        --backbone-mode finetune --gpus-per-trial 0.25

The search space is search_spaces/compare_tuned.py; results go to results/compare_tuned/: each
method's search in search_<method>/, the confirmed runs in confirm/, and report.html.
"""

import sys

from gapan.tune.cli import run_study_script

if __name__ == "__main__":
    sys.exit(run_study_script("compare_tuned", __doc__))
