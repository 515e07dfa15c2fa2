"""The pretrained reference: the backbone as it is, with no training (reference.json).

Every trained model must beat it. The report draws it as a dashed line in the figures of the
study's metric, lists it as a row of the settings table and says in the summary what training
adds over it on the unseen classes, for the model the study chose on validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reports import stats
from reports.load import Results, same_setting, setting_order, usable_trials
from reports.tables import best_trial


def reference_data(results: Results) -> dict[str, float] | None:
    """The reference's values of the study's metric.

    Returns:
        ``{"validation": ..., "test": ...}``, NaN where reference.json lacks the column; None
        when the results folder has no usable reference.json.
    """
    reference = results.reference
    if reference is None:
        return None
    test_column = "test_" + results.metric.removeprefix("val_")
    return {
        "validation": reference.metrics.get(results.metric, math.nan),
        "test": reference.metrics.get(test_column, math.nan),
    }


def chosen_test_value(results: Results) -> float:
    """The test metric of what the study chose on validation, NaN when it has none.

    Ablation and compare studies: the mean test value of the setting with the best mean
    validation metric (ties: the first in report order). Search studies: the best completed
    trial's test value.
    """
    test = results.test_metric
    if test is None:
        return math.nan
    if not results.is_ablation:
        trial = best_trial(results)
        return math.nan if trial is None else float(trial[test])
    usable = usable_trials(results)
    means = usable.groupby("setting")[results.metric].mean().reindex(setting_order(results))
    chosen = stats.best_index(means, results.mode)
    if chosen is None:
        return math.nan
    tested = usable_trials(results, test)
    values = tested.loc[tested["setting"] == chosen, test].astype(float)
    return float(values.mean()) if len(values) else math.nan


@dataclass(frozen=True)
class TrainingGain:
    """The test metric of the model chosen on validation against the pretrained reference.

    Attributes:
        metric: The metric without its split, e.g. ``map_at_r``.
        mode: "max" or "min": which direction is better.
        pretrained: The reference's test value (NaN when reference.json lacks it).
        trained: The chosen model's test value (NaN when it has none).
    """

    metric: str
    mode: str
    pretrained: float
    trained: float

    @property
    def difference(self) -> float:
        """Trained minus pretrained."""
        return self.trained - self.pretrained

    @property
    def improves(self) -> bool:
        """Whether training moved the metric in the better direction."""
        return self.difference > 0 if self.mode == "max" else self.difference < 0


def training_gain(results: Results) -> TrainingGain | None:
    """What training adds on the unseen classes over the pretrained backbone; None without one."""
    reference = reference_data(results)
    if reference is None:
        return None
    return TrainingGain(
        metric=results.metric.removeprefix("val_"),
        mode=results.mode,
        pretrained=reference["test"],
        trained=chosen_test_value(results),
    )


def reference_mismatches(results: Results) -> list[str]:
    """Where reference.json's `data` or `model` contradicts study.json's `fixed` settings.

    A reference of another backbone or data set is no reference for this study. Only keys that
    both name are compared (reference `model.backbone` against fixed `model.backbone`, ...).
    """
    reference = results.reference
    if reference is None:
        return []
    fixed = results.study["fixed"]
    problems = []
    for section, values in (("data", reference.data), ("model", reference.model)):
        for key, value in values.items():
            name = f"{section}.{key}"
            if name in fixed and not same_setting(value, fixed[name]):
                problems.append(f"{name} is {value!r} in reference.json but {fixed[name]!r} here")
    return problems
