"""Build the report of a results folder: the HTML page and the CSV tables behind it."""

from __future__ import annotations

import csv
import datetime
import logging
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from gapan.files import write_atomic
from reports import convergence, figures, page, search, splits, stats, tables
from reports.load import REFERENCE_FILE, Results
from reports.page import Section, figure_html, pairs_html, paragraph, table_html
from reports.reference import reference_data, reference_mismatches
from reports.sequential import sequential_data, sequential_method_note
from reports.summary import (
    Sentence,
    ablation_summary,
    contrasts_sentence,
    importance_sentence,
    search_summary,
)
from reports.tuned import TunedParts, budget_table, compared_results, tuned_parts

logger = logging.getLogger(__name__)


def build_report(
    results_dir: Path | str,
    out: Path | str | None = None,
    *,
    on_note: Callable[[str], None] | None = None,
    equivalence_margin: float | None = None,
) -> Path:
    """Write the study's report and the tables behind its figures.

    Every file is written atomically (`gapan.files.write_atomic`): a build stopped half-way
    leaves the previous report as it was. Text cells of the tables that a spreadsheet would run
    as a formula are defused (`tables.spreadsheet_safe`).

    A study replicated on several class splits (`splits.split_folders`) gets each split's own
    report in its folder, and a page of the splits side by side (`splits.write_replication`).

    Args:
        results_dir: The study's results folder (docs/results-folder.md).
        out: The HTML file to write; `RESULTS_DIR/report.html` by default. The tables go beside
            it as `<stem>_*.csv` (`report_trials.csv`, `report_settings.csv`, ...).
        on_note: Called with each note the page shows (a malformed row, a missing file, a part
            that could not be drawn), e.g. to print it as a warning.
        equivalence_margin: Replaces the study's own margin (study.json's, or a tuned
            comparison's) for the equivalence tests.

    Returns:
        The path of the HTML file.

    Raises:
        ResultsError: The folder is not a readable results folder (`UnfinishedStudyError`: its
            study has not written its tables yet).
    """
    out = Path(out) if out is not None else Path(results_dir) / "report.html"
    folders = splits.split_folders(results_dir)
    if folders is not None:
        for split, folder in folders.items():
            build_report(
                folder,
                on_note=None if on_note is None else _prefixed(on_note, f"split {split}: "),
                equivalence_margin=splits.split_margin(results_dir, folder, equivalence_margin),
            )
        return splits.write_replication(results_dir, folders, out, equivalence_margin)
    tuned = tuned_parts(results_dir)
    if tuned is not None:
        for part in tuned.searches.values():
            build_report(part.directory, on_note=on_note)
    results = compared_results(results_dir, equivalence_margin, tuned)
    report = _Report(results)
    if results.is_ablation:
        report.ablation()
    else:
        report.search()
    if tuned is not None:
        report.tuned(tuned)
    report.common()
    _write(report, out, on_note)
    return out


def _write(report: _Report, out: Path, on_note: Callable[[str], None] | None) -> None:
    """Write the report's tables beside `out`, then its page at `out`; pass on its notes."""
    for name, table in report.tables.items():
        # Every text cell quoted: a bare carriage return in one would split its row.
        text = tables.spreadsheet_safe(table).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC)
        write_atomic(out.with_name(f"{out.stem}_{name}.csv"), text)
    write_atomic(out, report.html())
    if on_note is not None:
        for note in report.notes:
            on_note(note)


def _prefixed(on_note: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda note: on_note(prefix + note)


def comparison_tables(
    results_dir: Path | str, equivalence_margin: float | None = None
) -> list[tuple[str, str]]:
    """Each comparison of a study (a tuned comparison's confirmation) as a title and a Markdown
    table: against the baseline, validation then test, then the contrasts likewise. A study
    replicated on several class splits gives each split's tables, the split in their titles.
    Empty for a search."""
    folders = splits.split_folders(results_dir)
    if folders is None:
        results = compared_results(results_dir, equivalence_margin)
        return _comparison_tables(results, results.name)
    found = []
    name = splits.study_name(results_dir)
    for split, folder in folders.items():
        margin = splits.split_margin(results_dir, folder, equivalence_margin)
        found += _comparison_tables(compared_results(folder, margin), f"{name}, split {split}")
    return found


def _comparison_tables(results: Results, name: str) -> list[tuple[str, str]]:
    if not results.is_ablation:
        return []
    columns = [results.metric] + ([results.test_metric] if results.test_metric else [])
    found = []
    for family in figures.comparison_families(results):
        for column in columns:
            data = figures.comparison_data(results, column, family)
            if figures.is_contrasts(family):
                title = f"{name}: {column}, each method minus {figures.CONTRAST_AGAINST}"
            else:
                title = f"{name}: {column} minus {results.knob} = {data['baseline']}"
            found.append((title, tables.comparison_markdown(data)))
    return found


class _Report:
    """Collects the sections, summary and tables of one report."""

    def __init__(self, results: Results) -> None:
        self.results = results
        self.sections: list[Section] = []
        self.summary: list[Sentence] = []
        self.notes: list[str] = list(results.notes)
        self.notes += [
            f"The pretrained reference may not fit this study: {problem}."
            for problem in reference_mismatches(results)
        ]
        self.tables: dict[str, pd.DataFrame] = {}
        self.reference = reference_data(results)
        self.title = results.name
        self.question = str(results.study.get("question") or "")
        self.kind = results.kind

    def guarded(self, part: str, make: Callable[[], None]) -> None:
        """Run one part; a failure becomes a visible note rather than no report at all."""
        try:
            make()
        except Exception as error:  # noqa: BLE001 - any failure of one part must not lose the rest
            logger.exception("The %s part of the report failed", part)
            self.notes.append(
                f"The {part} part could not be drawn: {type(error).__name__}: {error}"
            )

    def add(self, anchor: str, title: str, *parts: str) -> None:
        self.sections.append(Section(anchor, title, "".join(parts)))

    # Ablation and compare studies.

    def ablation(self) -> None:
        results = self.results
        metric_data = figures.metric_by_setting_data(results)
        comparison = figures.comparison_data(results)
        validation_test = figures.validation_test_data(results)
        still_improving = convergence.still_improving_data(results)
        self.summary = ablation_summary(
            results, metric_data, comparison, validation_test, still_improving
        )
        settings = tables.settings_table(
            validation_test, reference=self.reference, still_improving=still_improving
        )
        quality_cost = figures.quality_cost_data(results)
        if len(quality_cost):
            cost = quality_cost.set_index("label")["cost"] * 1000
            settings[tables.STEP_COST] = settings["setting"].map(cost)
        self.tables["seeds"] = metric_data["points"]
        self.tables["settings"] = settings
        self.tables["quality_cost"] = quality_cost
        self.tables["comparisons"] = comparison["comparisons"]
        test_comparison = None
        if results.test_metric is not None:
            test_comparison = figures.comparison_data(results, results.test_metric)
            self.tables["test_comparisons"] = test_comparison["comparisons"]
        self.tables["still_improving"] = still_improving
        contrasts = test_contrasts = None
        if results.study.get("contrasts"):
            contrasts = figures.comparison_data(results, family=stats.CONTRASTS_FAMILY)
            self.tables["contrasts"] = contrasts["comparisons"]
            if results.test_metric is not None:
                test_contrasts = figures.comparison_data(
                    results, results.test_metric, stats.CONTRASTS_FAMILY
                )
                self.tables["test_contrasts"] = test_contrasts["comparisons"]
            self.notes += [
                f"study.json's contrast {missing} names a setting this study did not run: it "
                "is left out."
                for missing in figures.missing_contrasts(results)
            ]
            self.summary += [
                contrasts_sentence(data) for data in (contrasts, test_contrasts) if data
            ]
        self.guarded("metric", lambda: self._metric_section(metric_data, settings))
        self.guarded(
            "baseline comparison", lambda: self._comparison_section(comparison, test_comparison)
        )
        if contrasts is not None:
            self.guarded("contrasts", lambda: self._comparison_section(contrasts, test_contrasts))
        if results.sequential is not None:
            self.guarded("adaptive seeds", self._sequential_section)
        self.guarded("validation and test", lambda: self._validation_test_section(validation_test))
        self.guarded("learning curves", lambda: self._curves_section(still_improving))
        self.guarded("quality against cost", lambda: self._quality_cost_section(quality_cost))

    def _metric_section(self, metric_data: dict, settings: pd.DataFrame) -> None:
        results = self.results
        axis = {"log": "a log axis", "linear": "a linear axis", "category": "categories"}
        caption = (
            f"Each faint marker is one seed (× = stopped early); the line joins the setting means "
            f"with their 95% t-intervals. {results.knob} is drawn on {axis[metric_data['axis']]}; "
            "the grey dashed line is the baseline's mean"
        )
        table_caption = "Per setting: usable seeds, mean and 95% t-interval, validation and test"
        if self.reference is not None:
            caption += ", the purple one the pretrained backbone with no training"
            table_caption += f"; the first row is the pretrained backbone ({REFERENCE_FILE})"
        table_caption += f"; {tables.STILL_IMPROVING}: {convergence.RULE}"
        self.add(
            "effect",
            f"Effect of {results.knob}",
            figure_html(
                figures.draw_metric_by_setting(metric_data), "figure-metric", caption + "."
            ),
            table_html(settings, caption=table_caption),
        )

    def _comparison_section(self, comparison: dict, test_comparison: dict | None) -> None:
        """The section of one Holm family: against the baseline, or the contrasts."""
        contrasts = figures.is_contrasts(comparison["family"])
        anchor = "contrasts" if contrasts else "baseline"
        if contrasts and comparison["comparisons"].empty:
            self.add(
                anchor,
                figures.CONTRASTS_TITLE,
                paragraph(
                    "None of study.json's contrasts names two settings this study ran: nothing "
                    "to compare."
                ),
            )
            return
        if not contrasts and comparison["baseline"] is None:
            self.add(
                anchor,
                "Against the baseline",
                paragraph("study.json names no baseline among the settings: nothing to compare."),
            )
            return
        against = figures.compared_with(comparison["family"])
        rows = "contrasts" if contrasts else "settings"
        caption = (
            f"Diamonds: the mean paired difference (setting − {against} over the seeds both ran) "
            "with its 95% t-interval over seeds; circles: single seeds. Right: Holm-adjusted "
            f"p-value across all {rows} (* below 0.05). Wilcoxon signed-rank with 6 or more "
            "pairs, the paired t-test with 3 to 5; fewer than 3 pairs get no test."
        )
        if comparison["sequential"]:
            caption = (
                "Diamonds: the mean paired difference (setting − baseline over the seeds both "
                "ran) with its repeated confidence interval over seeds at the level Holm tests it "
                "at (the table's level column: from 1 − 0.05/m down to 95%); circles: single "
                "seeds. Right: "
                "the repeated p-value, Holm-adjusted across all settings (* at most 0.05). Both "
                "stay valid however many seeds each setting took (see How the answer was "
                "reached)."
            )
        caption += " " + self._class_caption(comparison)
        title = f"Against the baseline {self.results.knob} = {comparison['baseline']}"
        if contrasts:
            title = figures.CONTRASTS_TITLE
        self.add(
            anchor,
            title,
            paragraph(self._family_note(comparison), "lead"),
            figure_html(
                figures.draw_comparison(comparison),
                "figure-contrasts" if contrasts else "figure-comparison",
                caption,
            ),
            table_html(
                tables.comparisons_table(comparison["comparisons"], against=contrasts),
                caption="Paired comparisons; d_z is the mean difference over the standard "
                "deviation of the differences over seeds.",
            ),
            *self._test_comparison_parts(test_comparison),
            *self._class_parts(test_comparison or comparison),
        )

    def _class_caption(self, comparison: dict) -> str:
        if comparison["classes"].empty:
            return (
                "This study kept no per-class scores, so every interval here is over seeds "
                "only: it says what other seeds would do on these same classes, not on other "
                "classes."
            )
        text = (
            "Purple bars: the 95% interval over seeds and classes (the per-class differences "
            "read as a crossed design of seeds and classes, paired by seed and class): what "
            "other unseen classes would show. Both kinds of interval are drawn unadjusted; a "
            "setting counts as better or worse only when both kinds' Holm-adjusted p-values "
            "are at most 0.05."
        )
        if comparison["sequential"]:
            text += " " + figures.ADAPTIVE_CLASSES_CAVEAT
        return text

    def _family_note(self, comparison: dict) -> str:
        """Which interval the verdicts use, the Holm family, and the equivalence test."""
        contrasts = figures.is_contrasts(comparison["family"])
        count = len(comparison["comparisons"])
        family = f"Holm family: {comparison['holm_family']}"
        if contrasts:
            family += (
                ", a family of its own: the comparisons with the baseline are corrected separately"
            )
        if comparison["classes"].empty:
            text = f"Verdicts use the test over seeds. {family}."
        else:
            text = (
                "Verdicts need both kinds (over seeds; over seeds and classes) to find a "
                "difference after Holm; the table's 'decided by' names the kind with the larger "
                f"Holm p, the one that decides. {family}, for each kind of p-value."
            )
        margin = comparison["margin"]
        if margin > 0:
            text += (
                f" Equivalent within ±{margin:g}: the (1 − 2α/{count}) interval of every kind "
                f"lies inside ±{margin:g} (two one-sided tests, α = {stats.ALPHA:g}, Bonferroni "
                f"over the {count} {'contrasts' if contrasts else 'settings'}). Not "
                "significant is not equivalent: a setting "
                "neither better, worse nor equivalent is undecided."
            )
        else:
            text += (
                " No equivalence margin was set (--equivalence-margin), so no setting is "
                "called equivalent: not significant only means undecided."
            )
        return text

    def _class_parts(self, comparison: dict) -> list[str]:
        if comparison["classes"].empty:
            return []
        concentration = figures.class_concentration(comparison)
        contrasts = figures.is_contrasts(comparison["family"])
        prefix = "contrast_" if contrasts else ""
        self.tables[f"{prefix}class_differences"] = comparison["classes"]
        self.tables[f"{prefix}class_concentration"] = concentration
        split = "unseen test" if comparison["metric"].startswith("test_") else "validation"
        against = figures.compared_with(comparison["family"], "the baseline")
        caption = (
            f"Each point is one {split} class: its difference in {comparison['metric']} from "
            f"{against}, averaged over the seeds both ran, sized by its queries; the black "
            "tick is the mean over queries. When a few far points carry the mean, a few "
            "classes carry the effect."
        )
        return [
            figure_html(
                figures.draw_class_differences(comparison),
                f"figure-{prefix.replace('_', '-')}class-differences",
                caption,
            ),
            table_html(
                concentration,
                caption="How concentrated each difference is: the three classes that move the "
                "mean most (query-weighted absolute difference), their share of all classes' "
                "movement, and the share three classes would carry if every class moved alike.",
            ),
        ]

    def _test_comparison_parts(self, test_comparison: dict | None) -> list[str]:
        if test_comparison is None or test_comparison["comparisons"].empty:
            return []
        caption = (
            f"The same comparisons on the unseen test classes ({test_comparison['metric']}): "
            "reported beside the validation ones, never used to choose anything. Tests and "
            "intervals as above for a fixed number of seeds"
        )
        if "sequential" in self.results.study:
            caption += "; " + figures.adaptive_test_caveat()
        contrasts = figures.is_contrasts(test_comparison["family"])
        table = tables.comparisons_table(test_comparison["comparisons"], against=contrasts)
        return [table_html(table, caption=caption)]

    def _quality_cost_section(self, data: pd.DataFrame) -> None:
        if data.empty:
            return  # a study from before trials recorded their time per step
        results = self.results
        cost = figures.cost_objective(results)
        figure = figures.draw_quality_cost(data, results.metric, results.knob, cost)
        best = ", ".join(data.loc[data["non_dominated"], "label"].astype(str))
        parts = [
            figure_html(
                figure,
                "figure-quality-cost",
                f"Mean validation metric against the mean {figures.COST_AXES[cost][0]} "
                "(training only, evaluation excluded). Stars: no other point is both better "
                "and cheaper.",
            ),
            paragraph(f"Non-dominated: {best}.", "lead"),
        ]
        if not results.is_ablation:
            front = tables.pareto_trials(results, data)
            self.tables["pareto_front"] = front
            parts.append(table_html(front, caption="The trials on the front, best metric first"))
        title = "Pareto front" if results.study.get("objectives") else "Quality against cost"
        self.add("quality-cost", title, *parts)

    def _sequential_section(self) -> None:
        data = sequential_data(self.results)
        self.tables["sequential"] = data["settings"]
        self.tables["rounds"] = data["rounds"]
        self.summary.append(Sentence(data["summary"]))
        warning = data["skewness_warning"]
        if warning is not None:
            self.summary.append(
                Sentence(
                    "The paired differences are skewed: the adaptive design's error rate may "
                    "exceed its level (see How the answer was reached).",
                    "warn",
                )
            )
        self.add(
            "adaptive",
            "How the answer was reached",
            paragraph(data["summary"], "lead"),
            *([paragraph(warning, "notes")] if warning is not None else []),
            table_html(
                data["settings"],
                caption="Per setting: the seeds its comparison used, the round that decided it "
                "and how, with the repeated confidence interval and p-value of that look.",
            ),
            table_html(
                data["rounds"], caption="The rounds: seeds run and the settings given them."
            ),
            paragraph(f"Method: {data['method']}. {sequential_method_note(data['alpha'])}"),
        )

    def _validation_test_section(self, validation_test: pd.DataFrame) -> None:
        results = self.results
        if results.test_metric is None:
            self.add(
                "test",
                "Validation and test",
                paragraph(f"trials.csv has no test column for {results.metric}."),
            )
            return
        caption = (
            "Validation is the class-disjoint split held out of the training classes (what the "
            "study chose on); test is the unseen classes. A setting that wins on validation but "
            "not on test did not generalise. Trials stopped early have no test score."
        )
        if self.reference is not None:
            caption += " Dashed lines: the pretrained backbone with no training, in each colour."
        figure = figures.draw_validation_test(
            validation_test, results.metric, results.knob, self.reference
        )
        self.add(
            "test", "Validation and test", figure_html(figure, "figure-validation-test", caption)
        )

    def _curves_section(self, still_improving: pd.DataFrame) -> None:
        data = figures.learning_curve_data(self.results)
        self.tables["curves"] = data["curves"]
        if data["curves"].empty:
            self.add("curves", "Learning curves", paragraph("epochs.csv has no usable epochs."))
            return
        flagged = convergence.flagged_settings(still_improving)
        caption = (
            "Mean over the usable seeds of each setting per epoch; the band spans the lowest to "
            "the highest seed; × marks the last epoch of a trial stopped early."
        )
        verdict = "No setting is still improving at the last epoch."
        if flagged:
            caption += ' "(still improving)" marks a setting still improving at its last epoch.'
            names = ", ".join(f"{self.results.knob} = {setting}" for setting in flagged)
            verdict = f"Still improving at the last epoch: {names}."
        figure = figures.draw_learning_curves(data, flagged)
        self.add(
            "curves",
            "Learning curves",
            figure_html(figure, "figure-curves", caption),
            paragraph(verdict, "lead"),
            table_html(
                tables.still_improving_table(still_improving),
                caption=f"Still improving: {convergence.RULE}",
            ),
        )

    # Search studies.

    def search(self) -> None:
        results = self.results
        history = figures.history_data(results)
        self.tables["history"] = history
        importances: pd.DataFrame | None = None
        call: search.ImportanceCall | None = None
        problem = ""
        study = search.optuna_study(results)
        try:
            found = search.param_importances(study)
            importances = figures.importance_data(found)
            self.tables["importances"] = importances
            call = search.most_important(study, found)
            self.tables["importance_call"] = call.table()
        except ValueError as error:
            problem = str(error)
        self.summary = search_summary(results, importances, problem, call)
        self.guarded("history", lambda: self._history_section(history))
        self.guarded("best configuration", self._best_section)
        seeded = tables.warm_start_table(results)
        if seeded is not None:
            self.tables["warm_start"] = seeded
            self.guarded("warm start", lambda: self._warm_start_section(seeded))
        self.guarded("importances", lambda: self._importance_section(importances, call, problem))
        quality_cost = figures.quality_cost_data(results)
        self.tables["quality_cost"] = quality_cost
        self.guarded("quality against cost", lambda: self._quality_cost_section(quality_cost))

    def _history_section(self, history: pd.DataFrame) -> None:
        caption = (
            "Each completed trial's final validation metric, the value at the stop for trials "
            "the scheduler stopped early, and the best completed value so far."
        )
        reference = None if self.reference is None else self.reference["validation"]
        if reference is not None:
            caption += " Dashed: the pretrained backbone with no training."
        figure = figures.draw_history(history, self.results.metric, reference)
        self.add("history", "Optimisation history", figure_html(figure, "figure-history", caption))

    def _warm_start_section(self, seeded: pd.DataFrame) -> None:
        studies = sorted(set(seeded["earlier study"]))
        self.add(
            "warm-start",
            "Warm start",
            paragraph(
                f"This search began with {len(seeded)} configurations of "
                f"{len(studies)} earlier stud{'y' if len(studies) == 1 else 'ies'} "
                f"({', '.join(studies)}): the best there, run again here as this search's "
                "first trials, in place of random start-up trials. They count among its trials "
                "with what they scored here; their earlier scores, at the fidelity shown, "
                "only chose them and entered no statistic."
            ),
            table_html(seeded, caption="The configurations the search began with"),
        )

    def _best_section(self) -> None:
        results = self.results
        best = tables.best_trial(results)
        if best is None:
            self.add("best", "Best configuration", paragraph("No trial completed."))
            return
        self.add(
            "best",
            "Best configuration",
            '<div class="columns">',
            pairs_html(tables.best_trial_config(results, best), caption="Searched values"),
            table_html(
                tables.best_trial_metrics(results, best),
                caption="Metrics: validation (chosen on) and test (unseen classes)",
            ),
            "</div>",
        )

    def _importance_section(
        self,
        importances: pd.DataFrame | None,
        call: search.ImportanceCall | None,
        problem: str,
    ) -> None:
        results = self.results
        parts = []
        top: list[str] = []
        if importances is not None and len(importances) and call is not None:
            parts.append(paragraph(importance_sentence(importances, call).text))
            caption = (
                "optuna.importance over the completed trials, ordered by PED-ANOVA. PED-ANOVA: "
                "how much each key separates the best 10% of trials from the rest; fANOVA "
                "(shown while the study is small enough for it to be quick): the share of the "
                "metric's variance each key explains. The order ranks the keys only as far as "
                "the call above does."
            )
            figure = figures.draw_importances(importances, results.metric)
            parts.append(figure_html(figure, "figure-importances", caption))
            parts.append(
                table_html(
                    call.table(),
                    caption="The call: the evaluators that rank each key first over all the "
                    "trials, and the share of bootstrap resamples of the trials in which "
                    "PED-ANOVA does",
                )
            )
            params = list(dict.fromkeys(importances["param"]))
            if call.param is not None:
                params = [call.param, *(param for param in params if param != call.param)]
            top = [page.plot_text(param) for param in params[:4]]
        else:
            parts.append(paragraph(f"No parameter importances: {problem}"))
            top = [page.plot_text(key) for key in list(results.study["search"])[:4]]
        display = search.optuna_study(results, escaped=True)
        captions = {
            "parallel coordinate": "Each line is a completed trial across the searched keys, "
            "coloured by the metric.",
            "slice": "The metric against up to four of the searched keys, one point per "
            "completed trial.",
            "intermediate values": "The validation metric per epoch of every trial, as the "
            "scheduler saw it.",
        }
        for name, figure in figures.optuna_figures(display, results.metric, top):
            div_id = "figure-" + name.replace(" ", "-")
            parts.append(figure_html(figure, div_id, captions[name]))
        self.add("importances", "What mattered", *parts)

    # Tuned comparisons: the confirmation above, each method's search here.

    def tuned(self, parts: TunedParts) -> None:
        self.title, self.question = parts.name, parts.question
        self.kind = "tuned: each method searched, then compared"
        budgets = budget_table(parts)
        self.tables["searches"] = budgets
        sections = [
            paragraph(
                "Every method was searched on the validation classes with the same budget; the "
                "comparisons above ran each method's best configuration with fresh seeds (the "
                "searches ran seed 0). Each search's full report is in its folder.",
                "lead",
            ),
            table_html(budgets, caption="Each method's search: trials, time, best validation"),
        ]
        for method, results in parts.searches.items():
            self.guarded(
                f"search of {method}",
                lambda m=method, r=results: sections.extend(self._search_parts(m, r)),
            )
        self.add("searches", "The searches behind each method's configuration", *sections)

    def _search_parts(self, method: str, results: Results) -> list[str]:
        history = figures.history_data(results)
        reference = None if self.reference is None else self.reference["validation"]
        figure = figures.draw_history(history, results.metric, reference)
        parts = [f"<h3>{page.escape(method)}</h3>"]
        parts.append(
            figure_html(
                figure,
                f"figure-history-{method}",
                f"{method}: each trial's final validation metric and the best so far.",
            )
        )
        best = tables.best_trial(results)
        columns = ['<div class="columns">']
        if best is not None:
            config = tables.best_trial_config(results, best)
            columns.append(pairs_html(config, caption="Best searched values (confirmed above)"))
        try:
            study = search.optuna_study(results)
            found = search.param_importances(study)
            importances = figures.importance_data(found)
            self.tables[f"importances_{method}"] = importances
            call = search.most_important(study, found)
            self.tables[f"importance_call_{method}"] = call.table()
            columns.append(
                table_html(
                    importances,
                    caption="Parameter importances (optuna.importance), ordered by PED-ANOVA; "
                    "a ranking only as far as the call above makes one",
                )
            )
            parts.append(paragraph(f"{method}: {importance_sentence(importances, call).text}"))
        except ValueError as error:
            columns.append(paragraph(f"No parameter importances: {error}"))
        return [*parts, *columns, "</div>"]

    # Every report.

    def common(self) -> None:
        results = self.results
        self.guarded("cost", self._cost_section)
        excluded = tables.excluded_table(results)
        self.tables["excluded"] = excluded
        if len(excluded):
            self.add(
                "excluded",
                f"Excluded trials ({len(excluded)})",
                paragraph(
                    "These trials failed, diverged or reported no finite metric; they are left "
                    "out of every statistic and figure above except the cost.",
                    "lead",
                ),
                table_html(excluded),
            )
        trials = tables.trials_table(results)
        self.tables["trials"] = trials
        self.add(
            "trials",
            f"All trials ({len(trials)})",
            paragraph("Click a column header to sort.", "lead"),
            table_html(trials, sortable=True, wide=True),
        )
        space = tables.search_space_table(results.study)
        parts = [
            '<div class="columns"><div>',
            "<h3>How the study ran</h3>",
            pairs_html(tables.study_settings(results.study)),
            "</div><div>",
            "<h3>Fixed settings</h3>",
            pairs_html(tables.fixed_settings(results.study))
            if results.study["fixed"]
            else paragraph("none"),
            "</div></div>",
            "<h3>Searched dimensions</h3>",
            table_html(space) if len(space) else paragraph("none"),
        ]
        if results.reference is not None:
            parts += [
                f"<h3>Pretrained reference ({REFERENCE_FILE})</h3>",
                pairs_html(tables.reference_settings(results.reference)),
            ]
        self.add("space", "Search space and fixed settings", *parts)
        environment = tables.flatten(results.environment)
        self.add(
            "environment",
            "Environment",
            pairs_html(environment) if environment else paragraph("environment.json is missing."),
        )

    def _cost_section(self) -> None:
        data = figures.cost_data(self.results)
        self.tables["cost"] = data["trials"]
        totals = data["totals"]
        rows = [
            ("trials", str(totals["trials"])),
            ("trial time, summed", _duration(totals["trial_time_s"])),
            ("GPU time, summed (GPUs held × time)", _duration(totals["gpu_time_s"])),
            ("mean time per trial", _duration(totals["mean_trial_time_s"])),
            ("study wall time (environment.json start to end)", _duration(totals["wall_time_s"])),
        ]
        caption = "Wall time of every trial by status" + (
            " and the summed trial and GPU time of each setting." if len(data["settings"]) else "."
        )
        self.add(
            "cost",
            "Cost",
            figure_html(figures.draw_cost(data), "figure-cost", caption),
            pairs_html(rows, caption="The whole study"),
        )

    def html(self) -> str:
        results = self.results
        study = results.study
        facts = [("kind", self.kind), ("metric", f"{results.metric} ({results.mode})")]
        if results.is_ablation:
            facts += [("knob", results.knob), ("baseline", str(study.get("baseline")))]
            facts.append(("seeds", str(study.get("seeds", ""))))
        facts.append(("scheduler", str(study.get("scheduler") or "none")))
        facts.append(("trials", str(len(results.trials))))
        generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return page.render_page(
            title=self.title,
            question=self.question,
            facts=facts,
            notes=self.notes,
            summary=self.summary,
            sections=self.sections,
            footer=f"Built {generated} by python -m reports from {results.directory}.",
        )


def _duration(seconds: float) -> str:
    """Seconds as a short human duration."""
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
