"""The summary at the top of a report, in words: what won, by how much, and can we trust it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from reports import stats
from reports.convergence import flagged_settings
from reports.load import REFERENCE_FILE, Results, usable_trials
from reports.reference import TrainingGain, training_gain
from reports.tables import best_trial, few_seed_settings, status_counts

if TYPE_CHECKING:
    from reports.search import ImportanceCall


@dataclass(frozen=True)
class Sentence:
    """One line of the summary; `tone` ("good", "warn" or "plain") picks its colour."""

    text: str
    tone: str = "plain"


def _value(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "n/a"


def _signed(value: float) -> str:
    return f"{value:+.4f}" if math.isfinite(value) else "n/a"


def _interval(low: float, high: float, signed: bool = False, label: str = "95% CI ") -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "no interval with one seed"
    show = _signed if signed else _value
    return f"{label}{show(low)} to {show(high)}"


def trial_counts(results: Results) -> Sentence:
    """How many trials ran, how they ended, and how many the statistics leave out."""
    counts = status_counts(results)
    total = sum(counts.values())
    parts = [f"{counts['completed']} completed"]
    if counts["stopped_early"]:
        parts.append(f"{counts['stopped_early']} stopped early by the scheduler")
    parts += [f"{counts['failed']} failed", f"{counts['diverged']} diverged"]
    if counts["interrupted"]:
        parts.append(f"{counts['interrupted']} interrupted (the study stopped before them)")
    text = f"{total} trials: {', '.join(parts)}."
    left_out = total - len(usable_trials(results))
    if not left_out:
        return Sentence(text)
    silent = left_out - counts["failed"] - counts["diverged"] - counts["interrupted"]
    reasons = [status for status in ("failed", "diverged", "interrupted") if counts[status]]
    if silent:
        reasons.append(f"without a finite {results.metric}")
    reason = ", ".join(reasons[:-1]) + " or " + reasons[-1] if len(reasons) > 1 else reasons[0]
    text += (
        f" {left_out} {reason} {'trial is' if left_out == 1 else 'trials are'} left out of "
        "the statistics; the table of excluded trials gives each reason."
    )
    return Sentence(text, "warn")


def ablation_summary(
    results: Results,
    metric_data: dict[str, Any],
    comparison: dict[str, Any],
    validation_test: pd.DataFrame,
    still_improving: pd.DataFrame | None = None,
) -> list[Sentence]:
    """The summary of an ablation or compare study.

    Args:
        results: The study.
        metric_data: From `figures.metric_by_setting_data`.
        comparison: From `figures.comparison_data`.
        validation_test: From `figures.validation_test_data`.
        still_improving: From `convergence.still_improving_data`; None says nothing of it.
    """
    knob, metric, mode = results.knob, results.metric, results.mode
    summary = metric_data["summary"].set_index("setting")
    best = stats.best_index(summary["mean"], mode)
    if best is None:
        return [
            Sentence(
                f"No trial finished with a finite {metric}; there is nothing to compare.", "warn"
            ),
            trial_counts(results),
        ]
    row = summary.loc[best]
    seeds = f"{int(row['n'])} seed{'s' if row['n'] != 1 else ''}"
    sentences = [
        Sentence(
            f"Best setting: {knob} = {best}, mean {metric} {_value(row['mean'])} "
            f"({_interval(row['ci_low'], row['ci_high'])}, {seeds}; "
            f"{'higher' if mode == 'max' else 'lower'} is better)."
        )
    ]
    baseline = comparison["baseline"]
    comparisons = comparison["comparisons"].set_index("setting")
    sentences += _baseline_sentences(results, baseline, comparisons, summary, best)
    held = _holds_on_test(validation_test, best, baseline, knob, mode)
    if held is not None:
        sentences.append(held)
    sentences.append(reference_sentence(training_gain(results)))
    if still_improving is not None:
        flagged = still_improving_sentence(flagged_settings(still_improving), knob)
        if flagged is not None:
            sentences.append(flagged)
    sentences += _seed_warnings(results, baseline, comparisons)
    sentences.append(trial_counts(results))
    return sentences


def _baseline_sentences(
    results: Results,
    baseline: str | None,
    comparisons: pd.DataFrame,
    summary: pd.DataFrame,
    best: str,
) -> list[Sentence]:
    """The best setting against the baseline, and all the settings compared with it."""
    knob, metric, mode = results.knob, results.metric, results.mode
    if baseline is None:
        named = results.study.get("baseline")
        return [
            Sentence(
                f"study.json's baseline ({named!r}) names none of the settings, so no setting is "
                "compared with a baseline.",
                "warn",
            )
        ]
    if best == baseline:
        sentences = [Sentence(f"The baseline {knob} = {baseline} is the best setting.")]
    else:
        sentences = [
            _against_baseline(
                comparisons.loc[best], knob, summary, baseline, len(comparisons), mode
            )
        ]
    if len(comparisons):
        family = f"the {len(comparisons)} settings compared with {knob} = {baseline} on {metric}"
        sentences.append(_overall(comparisons, mode, family))
    return sentences


def _seed_warnings(
    results: Results, baseline: str | None, comparisons: pd.DataFrame
) -> list[Sentence]:
    """Warnings of comparisons with too few seeds to be significant or to be tested."""
    sentences = []
    powerless = comparisons[comparisons["note"].str.contains("add seeds", regex=False)]
    if baseline is not None and len(powerless):
        sentences.append(
            Sentence(
                f"{powerless['note'].iloc[0].capitalize()} (the Wilcoxon signed-rank test's "
                f"smallest p-value with n pairs is 2/2^n).",
                "warn",
            )
        )
    few = few_seed_settings(results)
    if few:
        sentences.append(
            Sentence(
                f"Fewer than {stats.MIN_PAIRS_FOR_TEST} usable seeds for {results.knob} = "
                f"{', '.join(few)}: {stats.TOO_FEW_SEEDS}.",
                "warn",
            )
        )
    return sentences


def metric_name(metric: str) -> str:
    """A metric as the retrieval literature writes it: ``map_at_r`` -> ``MAP@R``.

    >>> metric_name("recall_at_1"), metric_name("r_precision"), metric_name("train_loss")
    ('Recall@1', 'R-Precision', 'train_loss')
    """
    if metric.startswith("recall_at_"):
        return "Recall@" + metric.removeprefix("recall_at_")
    return {"map_at_r": "MAP@R", "r_precision": "R-Precision", "nmi": "NMI"}.get(metric, metric)


def reference_sentence(gain: TrainingGain | None) -> Sentence:
    """What training adds on the unseen classes over the pretrained backbone (`training_gain`)."""
    if gain is None:
        return Sentence(
            f"This results folder has no pretrained reference ({REFERENCE_FILE}), so the report "
            "cannot say what training adds over the backbone as it is."
        )
    metric = metric_name(gain.metric)
    if not math.isfinite(gain.pretrained):
        return Sentence(
            f"{REFERENCE_FILE} has no test_{gain.metric}: what training adds over the pretrained "
            "backbone on unseen classes is unknown.",
            "warn",
        )
    if not math.isfinite(gain.trained):
        return Sentence(
            f"The choice on validation has no test_{gain.metric}, so what training adds over the "
            f"pretrained backbone ({_value(gain.pretrained)}) on unseen classes is unknown.",
            "warn",
        )
    change = f"{_value(gain.pretrained)} → {_value(gain.trained)}"
    if gain.difference == 0:
        return Sentence(
            f"Training leaves {metric} on unseen classes (test) exactly where the pretrained "
            f"backbone has it ({change}).",
            "warn",
        )
    size = _value(abs(gain.difference))
    if gain.mode == "min":
        verb = "lowers" if gain.improves else "raises"
        text = (
            f"Training {verb} {metric} on unseen classes (test) by {size} from the pretrained "
            f"backbone ({change}; lower is better)"
        )
    elif gain.improves:
        text = (
            f"Training adds {_signed(gain.difference)} {metric} on unseen classes (test) over "
            f"the pretrained backbone ({change})"
        )
    else:
        text = (
            f"Training loses {size} {metric} on unseen classes (test) against the pretrained "
            f"backbone ({change})"
        )
    if gain.improves:
        return Sentence(f"{text}.", "good")
    return Sentence(f"{text}: the trained model is worse than no training.", "warn")


def still_improving_sentence(flagged: list[str], knob: str) -> Sentence | None:
    """Names the settings still improving at the last epoch (`convergence.flagged_settings`)."""
    if not flagged:
        return None
    names = ", ".join(f"{knob} = {setting}" for setting in flagged)
    whose = "their budgets have" if len(flagged) > 1 else "its budget has"
    return Sentence(
        f"Still improving at the last epoch: {names} — {whose} not converged; compare "
        f"{'them' if len(flagged) > 1 else 'it'} with care or raise train.epochs.",
        "warn",
    )


def _capital(words: str) -> str:
    return words[:1].upper() + words[1:]


def _against_baseline(
    row: pd.Series, knob: str, summary: pd.DataFrame, baseline: str, family_size: int, mode: str
) -> Sentence:
    base_mean = float(summary.loc[baseline, "mean"]) if baseline in summary.index else math.nan
    difference = float(row["mean_difference"])
    relative = ""
    if math.isfinite(base_mean) and base_mean != 0 and math.isfinite(difference):
        relative = f" ({difference / abs(base_mean):+.1%})"
    pairs = int(row["n_pairs"])
    level = float(row.get("ci_confidence", stats.CONFIDENCE))
    seeds_interval = _interval(row["ci_low"], row["ci_high"], signed=True, label="")
    text = (
        f"Against the baseline {knob} = {baseline}: {_signed(difference)}{relative}, paired over "
        f"{pairs} seed{'s' if pairs != 1 else ''} ({level:.1%} interval {stats.OVER_SEEDS}: "
        f"{seeds_interval}"
    )
    classes = int(row.get("classes", 0) or 0)
    if classes:
        classes_interval = _interval(row["class_ci_low"], row["class_ci_high"], True, label="")
        text += (
            f"; 95% interval {stats.OVER_SEEDS_AND_CLASSES}, {classes} classes: {classes_interval}"
        )
    text += ")."
    if row["test"] == stats.NO_TEST:
        return Sentence(
            f"{text} {stats.TOO_FEW_SEEDS.capitalize()}: treat it as unconfirmed.", "warn"
        )
    if not math.isfinite(row["p_holm"]):
        return Sentence(f"{text} {_capital(row['test'])}: {row['note']}.", "warn")
    p_values = (
        f"{_capital(row['test'])} p = {row['p_value']:.3g}, Holm-adjusted p = {row['p_holm']:.3g}"
    )
    if classes:
        p_values += f"; over classes Holm-adjusted p = {row['class_p_holm']:.3g}"
    holm = f"after Holm correction over the {family_size} settings compared with the baseline"
    word = stats.verdict(row, mode)
    explained = {
        stats.BETTER: f"{word}, significant at the {stats.ALPHA} level {holm}"
        + (" by both kinds" if classes else ""),
        stats.WORSE: f"{word}, significant at the {stats.ALPHA} level {holm}"
        + (" by both kinds" if classes else ""),
        stats.EQUIVALENT: f"equivalent within ±{row.get('equivalence_margin', 0):g} (two "
        "one-sided tests: the equivalence interval "
        f"{_interval(row['equivalence_low'], row['equivalence_high'], True, label='')} lies "
        "inside it)",
        stats.SEEDS_ONLY: "significant over seeds but not over classes: other unseen classes "
        "might not show it",
        stats.PRECISE_ENOUGH: f"{word}: the comparison stopped taking seeds for its precision, "
        f"not significant {holm}",
    }
    verdict = explained.get(word, f"not significant at the {stats.ALPHA} level {holm}: {word}")
    good = word in (stats.BETTER, stats.WORSE, stats.EQUIVALENT)
    return Sentence(f"{text} {p_values}: {verdict}.", "good" if good else "warn")


def contrasts_sentence(data: dict[str, Any]) -> Sentence:
    """The verdict of each contrast (`figures.comparison_data` of the contrasts family) in one
    sentence, naming its Holm family."""
    comparisons = data["comparisons"]
    if comparisons.empty:
        return Sentence("None of study.json's contrasts names two settings this study ran.", "warn")
    verdicts = []
    for row in comparisons.itertuples():
        word = stats.verdict(row, data["mode"])
        if word == stats.EQUIVALENT:
            word += f" within ±{row.equivalence_margin:g}"
        verdicts.append(f"{row.setting} − {row.baseline} {word}")
    return Sentence(
        "Each method against the method it is contrasted with, after Holm correction over "
        f"{data['holm_family']}: {'; '.join(verdicts)}."
    )


def _overall(comparisons: pd.DataFrame, mode: str, family: str) -> Sentence:
    tested = comparisons[comparisons["test"] != stats.NO_TEST]
    if tested.empty:
        return Sentence(
            f"No setting has enough paired seeds for a test ({stats.TOO_FEW_SEEDS}).", "warn"
        )
    by_classes = bool((tested.get("classes", pd.Series(dtype=float)).astype(float) > 0).any())
    kinds = (
        f"{stats.OVER_SEEDS}; {stats.OVER_SEEDS_AND_CLASSES}" if by_classes else stats.OVER_SEEDS
    )
    words = pd.Series([stats.verdict(row, mode) for row in tested.itertuples()], tested.index)
    different = words[words.isin([stats.BETTER, stats.WORSE])]
    if different.empty:
        text = (
            f"After Holm correction over {family} ({kinds}), no setting differs from the baseline."
        )
    else:
        text = (
            f"After Holm correction over {family} ({kinds}), {len(different)} of {len(tested)} "
            f"tested settings differ from the baseline: "
            + ", ".join(f"{setting} ({word})" for setting, word in different.items())
            + "."
        )
    margin = float(tested["equivalence_margin"].max()) if "equivalence_margin" in tested else 0.0
    described = {
        stats.EQUIVALENT: f"Equivalent to the baseline within ±{margin:g}",
        stats.SEEDS_ONLY: "Significant over seeds but not over classes (other unseen classes "
        "might not show it)",
        stats.PRECISE_ENOUGH: "Stopped for precision: precise enough, not decided",
        stats.UNDECIDED: "Undecided (neither shown different nor shown equivalent)",
    }
    for word, words_text in described.items():
        own = words[words == word]
        if len(own):
            text += f" {words_text}: {', '.join(map(str, own.index))}."
    return Sentence(text)


def _holds_on_test(
    validation_test: pd.DataFrame, best: str, baseline: str | None, knob: str, mode: str
) -> Sentence | None:
    test = validation_test[validation_test["split"] == "test"].set_index("setting")
    if test.empty or best not in test.index:
        return None
    best_test = float(test.loc[best, "mean"])
    if not math.isfinite(best_test):
        return Sentence(
            f"{knob} = {best} has no test metric (no trial of it ran to the end).", "warn"
        )
    text = f"On the unseen test classes {knob} = {best} scores {_value(best_test)}"
    if baseline is not None and baseline != best and baseline in test.index:
        base_test = float(test.loc[baseline, "mean"])
        text += f" against {_value(base_test)} for the baseline ({_signed(best_test - base_test)})"
    winner = stats.best_index(test["mean"], mode)
    if winner == best:
        return Sentence(f"{text}; it is also the best setting on test.")
    return Sentence(
        f"{text}; on test the best setting is {knob} = {winner} "
        f"({_value(float(test.loc[winner, 'mean']))}), so the choice does not carry over cleanly.",
        "warn",
    )


def search_summary(
    results: Results,
    importances: pd.DataFrame | None,
    importance_problem: str = "",
    call: ImportanceCall | None = None,
) -> list[Sentence]:
    """The summary of a search study: the best value and config, its test score, what mattered.

    A parameter is called the most important only as `call` (`reports.search.most_important`)
    allows; without a call the importances are not summarised.
    """
    metric = results.metric
    best = best_trial(results)
    if best is None:
        return [
            Sentence(
                f"No trial completed with a finite {metric}; there is no best configuration.",
                "warn",
            ),
            trial_counts(results),
        ]
    config = ", ".join(
        f"{column.removeprefix('config/')} = {_config_text(best[column])}"
        for column in results.trials.columns
        if column.startswith("config/")
    )
    sentences = [
        Sentence(
            f"Best {metric} = {_value(float(best[metric]))} in trial #{int(best['number'])} "
            f"({best['trial_id']}): {config or 'no searched keys recorded'}."
        )
    ]
    completed = results.trials[results.trials["status"] == "completed"][metric].astype(float)
    completed = completed[completed.map(math.isfinite)]
    if len(completed) > 1:
        sentences.append(
            Sentence(
                f"The median completed trial scores {_value(float(completed.median()))} "
                f"({len(completed)} completed trials)."
            )
        )
    if results.test_metric is not None:
        test = float(best[results.test_metric])
        if math.isfinite(test):
            sentences.append(
                Sentence(
                    f"On the unseen test classes it scores {results.test_metric} = {_value(test)}."
                )
            )
    sentences.append(reference_sentence(training_gain(results)))
    if importances is not None and len(importances):
        sentences.append(importance_sentence(importances, call))
    elif importance_problem:
        sentences.append(Sentence(f"No parameter importances: {importance_problem}", "warn"))
    sentences.append(trial_counts(results))
    return sentences


def importance_sentence(importances: pd.DataFrame, call: ImportanceCall | None) -> Sentence:
    """What mattered, in words: the parameter the call names and how, or why none is named.

    The importance values are listed only beside a named parameter: listed largest first on
    their own they would read as the ranking the call declined to make.
    """
    if call is None:
        return Sentence("Which parameter matters most was not assessed.", "warn")
    if call.param is None:
        return Sentence(f"No parameter can be called the most important: {call.how}.", "warn")
    first = str(importances["evaluator"].iloc[0])
    own = importances[importances["evaluator"] == first].sort_values(
        "importance", ascending=False, kind="stable"
    )
    values = ", ".join(f"{row.param} {row.importance:.2f}" for row in own.head(3).itertuples())
    return Sentence(
        f"Most important parameter: {call.param}, {call.how}. {first} importances: {values}."
    )


def _config_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
