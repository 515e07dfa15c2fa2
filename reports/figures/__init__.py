"""The report's figures, each split in two as Optuna's visualization module does.

A `*_data` function computes plain tables from the results (tests check these, not pixels) and a
`draw_*` function turns them into a plotly figure. plotly.js reads every label as a small subset
of HTML (``<b>``, ``<br>``, ``<a href>``, a few entities), so every string that comes from the
results (settings, trial ids, config keys, metric names) passes through `page.plot_text` once,
which escapes ``&``, ``<`` and ``>``; quotes stay as they are (plotly.js would show ``&quot;``
literally).

One module per section of the report:

- `metric`: the metric against the knob, per seed and per setting.
- `comparisons`: the Holm families (against the baseline, the contrasts), `comparison_data`,
  the words that name them, and the forest plot.
- `class_differences`: each class's difference, and how few classes carry a setting's effect.
- `validation_test`: validation and test side by side.
- `curves`: learning curves.
- `quality_cost`: the metric against the cost, and the non-dominated points.
- `cost`: wall and GPU time per trial, per setting and for the study.
- `history`: a search's optimisation history.
- `importances`: a search's parameter importances and Optuna's own figures.
- `_common`: plotly, status colours and words, the common look, the setting axis, the
  pretrained reference line.

The names below are the ones the rest of the code uses; the others live in their module.
"""

from reports.figures._common import REFERENCE_LABEL, axis_kind
from reports.figures.class_differences import class_concentration, draw_class_differences
from reports.figures.comparisons import (
    ADAPTIVE_CLASSES_CAVEAT,
    CONTRAST_AGAINST,
    CONTRASTS_TITLE,
    adaptive_test_caveat,
    against_text,
    compared_with,
    comparison_data,
    comparison_families,
    contrast_pairs,
    draw_comparison,
    is_contrasts,
    missing_contrasts,
    per_class_values,
    row_label,
)
from reports.figures.cost import cost_data, draw_cost, study_wall_time
from reports.figures.curves import draw_learning_curves, learning_curve_data
from reports.figures.history import draw_history, history_data
from reports.figures.importances import draw_importances, importance_data, optuna_figures
from reports.figures.metric import draw_metric_by_setting, metric_by_setting_data
from reports.figures.quality_cost import (
    COST_AXES,
    cost_objective,
    draw_quality_cost,
    quality_cost_data,
)
from reports.figures.validation_test import draw_validation_test, validation_test_data

__all__ = [
    "ADAPTIVE_CLASSES_CAVEAT",
    "CONTRASTS_TITLE",
    "CONTRAST_AGAINST",
    "COST_AXES",
    "REFERENCE_LABEL",
    "adaptive_test_caveat",
    "against_text",
    "axis_kind",
    "class_concentration",
    "compared_with",
    "comparison_data",
    "comparison_families",
    "contrast_pairs",
    "cost_data",
    "cost_objective",
    "draw_class_differences",
    "draw_comparison",
    "draw_cost",
    "draw_history",
    "draw_importances",
    "draw_learning_curves",
    "draw_metric_by_setting",
    "draw_quality_cost",
    "draw_validation_test",
    "history_data",
    "importance_data",
    "is_contrasts",
    "learning_curve_data",
    "metric_by_setting_data",
    "missing_contrasts",
    "optuna_figures",
    "per_class_values",
    "quality_cost_data",
    "row_label",
    "study_wall_time",
    "validation_test_data",
]
