"""Whether a setting was still improving when its training budget ran out.

A setting is still improving when its validation metric rose over the last quarter of epochs by
more than the seed-to-seed spread of its final value: a larger budget could change the ranking,
so comparing it with settings that have converged is unfair to one side.

Per trial with E >= 4 epochs, the rise is the metric at epoch E minus the metric at epoch
E - ceil(E / 4); a setting's rise is the mean over its seeds and its spread the sample standard
deviation of their final values. Only ablation and compare studies have seeds to measure a
spread; a search trial is one seed, so searches are not flagged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from reports.load import Results, setting_order, usable_trials

MIN_EPOCHS = 4
YES = "yes"
NO = "no"
ONE_SEED = "(one seed: cannot tell)"
TOO_SHORT = f"fewer than {MIN_EPOCHS} epochs"
COLUMNS = ["setting", "seeds", "rise", "spread", "still_improving", "verdict"]
RULE = (
    "the validation metric improved over the last quarter of epochs (the mean change over the "
    f"completed seeds with at least {MIN_EPOCHS} epochs) by more than the seeds' spread (the "
    "sample standard deviation of their final values); one seed cannot tell."
)


def late_rises(epochs: pd.DataFrame, column: str) -> pd.DataFrame:
    """Each trial's rise of `column` over its last quarter of epochs.

    Args:
        epochs: epochs.csv (`trial_id`, `epoch`, `column`).
        column: The metric, e.g. ``val_map_at_r``.

    Returns:
        trial_id, epochs (the last epoch E with a finite value), final (the value at E) and rise
        (the value at E minus the value at E - ceil(E / 4)); rise is NaN when E < `MIN_EPOCHS`
        or that earlier epoch has no finite value.
    """
    finite = epochs[np.isfinite(epochs[column].astype(float))]
    rows = []
    for trial_id, curve in finite.groupby("trial_id", sort=False):
        # A resumed trial may report an epoch twice; its latest report stands.
        values = curve.drop_duplicates("epoch", keep="last").set_index("epoch")[column]
        last = int(values.index.max())
        earlier = last - math.ceil(last / 4)
        rise = math.nan
        if last >= MIN_EPOCHS and earlier in values.index:
            rise = float(values[last] - values[earlier])
        rows.append((trial_id, last, float(values[last]), rise))
    return pd.DataFrame(rows, columns=["trial_id", "epochs", "final", "rise"])


def still_improving(rises: pd.DataFrame, settings: Sequence[str], mode: str) -> pd.DataFrame:
    """Which settings were still improving at the last epoch.

    Args:
        rises: setting, final, rise; one row per trial (`late_rises` with each trial's setting).
        settings: The settings in report order.
        mode: "max" (a rise improves) or "min" (a fall improves).

    Returns:
        `COLUMNS`, one row per setting: seeds (trials with a rise), rise (their mean), spread (the
        sample standard deviation of their final values; NaN with one), still_improving (the mean
        rise, in the better direction, exceeds the spread; never with one seed) and verdict:
        "yes", "no", `ONE_SEED`, `TOO_SHORT`, or empty when the setting has no trial.
    """
    sign = 1.0 if mode == "max" else -1.0
    rows = []
    for setting in settings:
        own = rises[rises["setting"] == setting]
        measured = own[np.isfinite(own["rise"].astype(float))]
        seeds = len(measured)
        rise = float(measured["rise"].mean()) if seeds else math.nan
        spread = float(measured["final"].std(ddof=1)) if seeds > 1 else math.nan
        flagged = seeds > 1 and sign * rise > spread
        if seeds > 1:
            verdict = YES if flagged else NO
        elif seeds == 1:
            verdict = ONE_SEED
        else:
            verdict = TOO_SHORT if len(own) else ""
        rows.append((setting, seeds, rise, spread, flagged, verdict))
    return pd.DataFrame(rows, columns=COLUMNS)


def still_improving_data(results: Results) -> pd.DataFrame:
    """`still_improving` of an ablation or compare study's validation metric.

    Only completed trials count: a trial the scheduler stopped did not reach its budget.
    """
    settings = setting_order(results)
    if results.metric not in results.epochs.columns:
        return still_improving(pd.DataFrame(columns=["setting", "final", "rise"]), settings, "max")
    usable = usable_trials(results)
    completed = usable.loc[usable["status"] == "completed", ["trial_id", "setting"]]
    rises = late_rises(results.epochs, results.metric)
    rises = rises.merge(completed.astype({"trial_id": str}), on="trial_id", how="inner")
    return still_improving(rises, settings, results.mode)


def flagged_settings(table: pd.DataFrame) -> list[str]:
    """The settings `still_improving` flags, in report order."""
    return list(table.loc[table["still_improving"].astype(bool), "setting"])
