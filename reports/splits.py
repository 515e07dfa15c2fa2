"""A study replicated on several class splits, and the comparisons of any study as one long
table.

A study run with ``--splits K`` writes a top folder whose study.json holds ``"splits": [0, ...,
K - 1]`` and, in ``split_<k>/``, an ordinary study folder of its kind run with
``data.split_seed = k``. Each split's intervals vary seeds and classes on that split; the splits
are compared side by side, one verdict per split, and a result holds on every split when every
split decides it alike (better, worse or equivalent). The splits of one data set share classes,
so they are not independent replications; each page and table says how many they share. With a
few splits there is no formal test across them (docs/statistics.md).
"""

from __future__ import annotations

import datetime
import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gapan.files import write_atomic
from gapan.space import SPLIT_KEY, SPLIT_PREFIX
from reports import figures, page, stats, tables
from reports.load import (
    STUDY_FILE,
    Results,
    ResultsError,
    UnfinishedStudyError,
    study_record,
)
from reports.page import Section, escape, figure_html, paragraph, table_html
from reports.summary import Sentence
from reports.tuned import compared_results

EVERY_SPLIT = "every split"
# What `agree` says of a setting: decided alike on every split ("holds on every split:
# better"); alike undecided ("undecided on every split"), which replicates nothing; tested on
# some splits only ("not tested on split 2"); tested on every split, with different verdicts; or
# tested on none.
HOLDS = "holds on every split"
ON_EVERY_SPLIT = "on every split"
NOT_TESTED_ON = "not tested on split"
DIFFERS = "differs across splits"
UNTESTED = "no test on any split"
DECIDED = (stats.BETTER, stats.WORSE, stats.EQUIVALENT)
# What the intervals over seeds and classes of a metric vary besides the seeds.
CLASSES_OF = {"val": "validation classes", "test": "unseen test classes"}
# A tuned comparison's validation numbers, in the words of every table that shows them.
TUNED_VALIDATION_CAVEAT = (
    "measured on the validation classes each method's configuration was chosen on, so each "
    "method is flattered by its own search (the winner's curse)"
)
# The long table of comparisons (`comparison_rows`): one row per family, metric, split and
# setting, the split empty for a study on one split.
ROW_COLUMNS = [
    "family",
    "holm_family",
    "split",
    "setting",
    "against",
    "metric",
    "seeds",
    "difference",
    "ci_low",
    "ci_high",
    "p_holm",
    "class_ci_low",
    "class_ci_high",
    "class_p_holm",
    "verdict",
    "ci_confidence",
    "every_split",
]


def split_folders(results_dir: Path | str) -> dict[int, Path] | None:
    """The folder of each split of a study replicated on several class splits, by split; None
    for any other folder (its study.json has no ``splits``, or it has no readable study.json:
    `load_results` names that problem).

    Raises:
        UnfinishedStudyError: A split's folder is missing (its run stopped before that split);
            the message names it and says how to resume.
        ResultsError: ``splits`` is not a list of distinct split numbers.
    """
    directory = Path(results_dir)
    study = study_record(directory)
    if "splits" not in study:
        return None
    numbers = study["splits"]
    if (
        not isinstance(numbers, list)
        or not numbers
        or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in numbers)
        or len(set(numbers)) != len(numbers)
    ):
        raise ResultsError(
            f"{directory / STUDY_FILE}: 'splits' must be a list of distinct split numbers "
            f"(0, 1, ...); it is {numbers!r}."
        )
    folders = {}
    for split in sorted(numbers):
        folder = directory / f"{SPLIT_PREFIX}{split}"
        if not folder.is_dir():
            raise UnfinishedStudyError(
                f"{folder} is missing: {directory} is a study replicated on the class splits "
                f"{', '.join(map(str, sorted(numbers)))} (study.json), each in "
                f"{SPLIT_PREFIX}<k>/, and its run stopped before split {split} started. To "
                "finish it, run the same command with --resume: the finished splits are kept."
            )
        folders[split] = folder
    return folders


def study_name(results_dir: Path | str) -> str:
    """The name of a study replicated on several class splits: its study.json's, else its
    folder's."""
    return str(study_record(results_dir).get("name") or Path(results_dir).name)


def is_tuned(results_dir: Path | str) -> bool:
    """Whether a folder holds a tuned comparison, or one replicated on several class splits."""
    return study_record(results_dir).get("kind") == "tuned"


def split_margin(
    results_dir: Path | str, folder: Path, equivalence_margin: float | None
) -> float | None:
    """The equivalence margin of one split's study: the one asked for, else the split's own,
    else the one the top folder recorded (None: the split's own rules, `compared_results`)."""
    if equivalence_margin is not None:
        return equivalence_margin
    if study_record(folder).get("equivalence_margin") is not None:
        return None
    return study_record(results_dir).get("equivalence_margin")


@dataclass(frozen=True)
class FamilyComparison:
    """One Holm family on one metric, on each split of a study.

    Attributes:
        family: `stats.BASELINE_FAMILY` or `stats.CONTRASTS_FAMILY`.
        against: What each row is compared with, in words: "gapan", "flow.depth = 0", or
            `figures.CONTRAST_AGAINST`.
        metric: The trials.csv column compared.
        by_split: `figures.comparison_data` per split; the key is None for a study on one split.
        tuned: Whether the study is a tuned comparison's confirmation (each method's
            configuration chosen on the validation classes).
        adaptive: Whether the study chose its seeds adaptively, on its validation metric.
    """

    family: str
    against: str
    metric: str
    by_split: dict[int | None, dict[str, Any]]
    tuned: bool = False
    adaptive: bool = False

    @property
    def name(self) -> str:
        """The family in the long table: "against gapan", or "contrasts"."""
        return stats.CONTRASTS_FAMILY if self.contrasts else f"against {self.against}"

    @property
    def title(self) -> str:
        """The family as a heading: "Against gapan", or `figures.CONTRASTS_TITLE`."""
        return figures.CONTRASTS_TITLE if self.contrasts else f"Against {self.against}"

    @property
    def contrasts(self) -> bool:
        return figures.is_contrasts(self.family)

    @property
    def mode(self) -> str:
        return next(iter(self.by_split.values()))["mode"]

    @property
    def replicated(self) -> bool:
        """Whether the study ran on several class splits (even one: its folder says so)."""
        return None not in self.by_split

    @property
    def holm_family(self) -> str:
        """The family in words, as on the first split (every split has its own, alike)."""
        return next(iter(self.by_split.values()))["holm_family"]

    @property
    def validation(self) -> bool:
        """Whether the metric is measured on the validation classes (else the unseen test
        classes)."""
        return self.metric.startswith("val_")

    @property
    def classes(self) -> str:
        """The classes the metric is measured on, in words."""
        return CLASSES_OF["val" if self.validation else "test"]

    @property
    def sequential(self) -> bool:
        """Whether its interval over seeds is an adaptive design's, at the level Holm tests each
        row at (`ci_confidence`) rather than 95%."""
        return any(data["sequential"] for data in self.by_split.values())


def study_results(
    results_dir: Path | str, equivalence_margin: float | None = None
) -> dict[int | None, Results]:
    """The study each comparison reads, per split (a tuned comparison's confirmation); the key
    is None for a study on one split.

    Raises:
        ResultsError: A folder is not a readable results folder; for a split, the message
            names the split.
    """
    folders = split_folders(results_dir)
    if folders is None:
        return {None: compared_results(results_dir, equivalence_margin)}
    found: dict[int | None, Results] = {}
    for split, folder in folders.items():
        margin = split_margin(results_dir, folder, equivalence_margin)
        try:
            found[split] = compared_results(folder, margin)
        except UnfinishedStudyError as error:
            raise UnfinishedStudyError(f"Split {split} of {results_dir}: {error}") from error
    return found


def family_comparisons(
    by_split: Mapping[int | None, Results], tuned: bool = False
) -> list[FamilyComparison]:
    """Every Holm family of a study (against the baseline, then the contrasts) on its
    validation and its test metric, each on every split. Empty for a search.

    Args:
        by_split: `study_results` of any results folder: a study, a tuned comparison, or a
            study replicated on several class splits.
        tuned: Whether that folder is a tuned comparison (`is_tuned`).
    """
    first = next(iter(by_split.values()))
    metrics = [first.metric] + ([first.test_metric] if first.test_metric else [])
    adaptive = any("sequential" in results.study for results in by_split.values())
    families = list(
        dict.fromkeys(
            family
            for results in by_split.values()
            for family in figures.comparison_families(results)
        )
    )
    found = []
    for family in families:
        for metric in metrics:
            # Every split, even one that compares none of this family: a setting it lacks does
            # not hold on every split.
            per_split = {
                split: figures.comparison_data(results, metric, family)
                for split, results in by_split.items()
                if metric in results.trials.columns
            }
            if not per_split:
                continue
            compared = [data for data in per_split.values() if len(data["comparisons"])]
            data = (compared or list(per_split.values()))[0]
            against = (
                figures.CONTRAST_AGAINST
                if figures.is_contrasts(family)
                else figures.against_text(data)
            )
            found.append(FamilyComparison(family, against, metric, per_split, tuned, adaptive))
    return found


def comparison_rows(comparison: FamilyComparison) -> pd.DataFrame:
    """One family's comparisons as a long table (`ROW_COLUMNS`): one row per setting and split,
    in setting order then split; `every_split` says, for a study on several splits, whether
    the setting's verdict is the same on every one (`agree`)."""
    rows = []
    for split, data in comparison.by_split.items():
        for row in data["comparisons"].itertuples():
            rows.append(
                {
                    "family": comparison.name,
                    "holm_family": data["holm_family"],
                    "split": split,
                    "setting": str(row.setting),
                    "against": str(row.baseline),
                    "metric": comparison.metric,
                    "seeds": int(row.n_pairs),
                    "difference": float(row.mean_difference),
                    "ci_low": float(row.ci_low),
                    "ci_high": float(row.ci_high),
                    "p_holm": float(row.p_holm),
                    "class_ci_low": float(row.class_ci_low),
                    "class_ci_high": float(row.class_ci_high),
                    "class_p_holm": float(row.class_p_holm),
                    "verdict": tables.verdict_text(row, data["mode"]),
                    "ci_confidence": float(row.ci_confidence),
                }
            )
    table = pd.DataFrame(rows, columns=ROW_COLUMNS)
    table["split"] = table["split"].astype("Int64")  # empty, not NaN, for a study on one split
    order = list(dict.fromkeys(table["setting"]))
    table["every_split"] = ""
    if comparison.replicated:
        for setting, agreement in agree(table, list(comparison.by_split)).items():
            table.loc[table["setting"] == setting, "every_split"] = agreement
    table["order"] = table["setting"].map(order.index)
    table = table.sort_values(["order", "split"], kind="stable").drop(columns="order")
    return table.reset_index(drop=True)


def agree(rows: pd.DataFrame, split_numbers: list[Any]) -> dict[str, str]:
    """Per setting of a long table, whether its verdict is the same on every split.

    "holds on every split: <verdict>" only when every split decides it alike (better, worse or
    equivalent); "<verdict> on every split" when every split leaves it alike undecided (a
    replication of nothing); "not tested on split <k>" when some split has no test of it (too
    few seeds, or a split that did not compare it); "no test on any split"; else "differs
    across splits".
    """
    return {
        str(setting): _agreement(own, split_numbers)[1]
        for setting, own in rows.groupby("setting", sort=False)
    }


def _agreement(own: pd.DataFrame, split_numbers: list[Any]) -> tuple[str, str]:
    """One setting's agreement across splits (`agree`): its kind (`HOLDS`, `ON_EVERY_SPLIT`,
    `NOT_TESTED_ON`, `UNTESTED` or `DIFFERS`) and its words."""
    tested = own[own["verdict"] != stats.NO_VERDICT]
    if tested.empty:
        return UNTESTED, UNTESTED
    missing = [split for split in split_numbers if split not in set(tested["split"])]
    if missing:
        listed = ", ".join(str(split) for split in missing)
        return NOT_TESTED_ON, f"{NOT_TESTED_ON}{'s' if len(missing) > 1 else ''} {listed}"
    verdicts = set(tested["verdict"])
    if len(verdicts) > 1:
        return DIFFERS, DIFFERS
    verdict = str(verdicts.pop())
    if verdict.startswith(DECIDED):  # "equivalent within ±m" too
        return HOLDS, f"{HOLDS}: {verdict}"
    return ON_EVERY_SPLIT, f"{verdict} {ON_EVERY_SPLIT}"


def agreement_sentence(comparison: FamilyComparison, rows: pd.DataFrame) -> Sentence:
    """What holds on every split, for one family and metric, in one sentence; a verdict that
    every split leaves undecided is not presented as a finding."""
    labels = {
        setting: figures.row_label(setting, against, comparison.family)
        for setting, against in zip(rows["setting"], rows["against"], strict=True)
    }
    found: dict[str, list[str]] = {
        kind: [] for kind in (HOLDS, ON_EVERY_SPLIT, DIFFERS, NOT_TESTED_ON, UNTESTED)
    }
    for setting, own in rows.groupby("setting", sort=False):
        kind, words = _agreement(own, list(comparison.by_split))
        each = ", ".join(
            f"split {split} {verdict}"
            for split, verdict in zip(own["split"], own["verdict"], strict=True)
        )
        found[kind].append(
            {
                HOLDS: f"{labels[setting]} {words.removeprefix(HOLDS + ': ')}",
                ON_EVERY_SPLIT: f"{labels[setting]} {words}",
                DIFFERS: f"{labels[setting]} ({each})",
                NOT_TESTED_ON: f"{labels[setting]} ({words}; {each})",
                UNTESTED: labels[setting],
            }[kind]
        )
    parts = []
    if found[HOLDS]:
        parts.append("the same verdict on every split: " + "; ".join(found[HOLDS]))
    if found[ON_EVERY_SPLIT]:
        parts.append(
            "decided on no split (nothing replicated): " + "; ".join(found[ON_EVERY_SPLIT])
        )
    if found[DIFFERS]:
        parts.append(f"{DIFFERS}: " + "; ".join(found[DIFFERS]))
    if found[NOT_TESTED_ON]:
        parts.append("not tested on every split: " + "; ".join(found[NOT_TESTED_ON]))
    if found[UNTESTED]:
        parts.append(f"{UNTESTED} ({stats.TOO_FEW_SEEDS}): " + ", ".join(found[UNTESTED]))
    if not parts:
        parts.append("nothing compared")
    tone = "warn" if any(found[kind] for kind in found if kind != HOLDS) else "plain"
    text = f"{comparison.title}, on {comparison.metric}: " + "; ".join(parts) + "."
    return Sentence(text, tone)


def shared_classes(by_split: Mapping[int | None, Results]) -> str:
    """How many validation and unseen test classes each pair of splits shares (from each
    split's class_scores.csv), with why that matters; empty for a study on fewer than two
    splits.

    The splits of one data set are drawn from the same classes, so two splits' test classes
    overlap, the more so when one family holds many classes.
    """
    numbers = [split for split in by_split if split is not None]
    if len(numbers) < 2:
        return ""
    found = {split: _class_sets(by_split[split]) for split in numbers}
    unknown = [split for split in numbers if found[split] is None]
    lead = "The splits share classes, so agreeing splits are not independent replications."
    if len(unknown) == len(numbers):
        return f"{lead} How many they share is unknown: no split kept class_scores.csv."
    parts = [lead]
    for part in ("test", "val"):
        pairs = []
        for first, second in itertools.combinations(numbers, 2):
            ours, theirs = found[first], found[second]
            text = "unknown"
            if ours is not None and theirs is not None and ours[part] and theirs[part]:
                sizes = dict.fromkeys((len(ours[part]), len(theirs[part])))
                text = f"{len(ours[part] & theirs[part])} of {' and '.join(map(str, sizes))}"
            pairs.append(f"{first} & {second}: {text}")
        parts.append(f"{CLASSES_OF[part].capitalize()} shared: split {'; '.join(pairs)}.")
    if unknown:
        listed = ", ".join(str(split) for split in unknown)
        several = len(unknown) > 1
        parts.append(
            f"Split{'s' if several else ''} {listed} kept no class_scores.csv, so what "
            f"{'they share' if several else 'it shares'} is unknown."
        )
    return " ".join(parts)


def _class_sets(results: Results) -> dict[str, frozenset[str]] | None:
    """A study's validation and test classes, by class_scores.csv's `split`; None without
    per-class scores."""
    classes = results.classes
    if classes is None or classes.empty:
        return None
    return {
        part: frozenset(classes.loc[classes["split"] == part, "class"].astype(str))
        for part in CLASSES_OF
    }


def interval_words(comparison: FamilyComparison) -> str:
    """What the two intervals of one family's comparisons on one metric vary, and their level,
    in one sentence."""
    level = f"{stats.CONFIDENCE:.0%}"
    if comparison.sequential:
        level = (
            "an adaptive design's repeated confidence interval, at the level Holm tests each "
            f"row at; the table gives it when not {level}"
        )
    return (
        f"Intervals are unadjusted and never vary the split: {stats.OVER_SEEDS} ({level}) says "
        f"what other seeds would show on these classes, {stats.OVER_SEEDS_AND_CLASSES} "
        f"({stats.CONFIDENCE:.0%}) what other seeds and other {comparison.classes} would."
    )


def caveat(comparison: FamilyComparison) -> str:
    """What to keep in mind reading one family's comparisons on one metric: a tuned
    comparison's validation (the winner's curse), an adaptive study's test (descriptive) and
    its interval over classes (fixed-sample); empty when nothing."""
    found = []
    if comparison.tuned and comparison.validation:
        found.append(
            f"These are {TUNED_VALIDATION_CAVEAT}: the test classes, which no search saw, give "
            "the unbiased comparison."
        )
    if comparison.adaptive and not comparison.validation:
        found.append(_sentence(figures.adaptive_test_caveat()) + ".")
    if comparison.sequential:
        found.append(figures.ADAPTIVE_CLASSES_CAVEAT)
    return " ".join(found)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def replication_figure_data(comparison: FamilyComparison) -> dict[str, Any]:
    """One family's comparisons on every split in the shape of `figures.comparison_data`, with
    a `split` column in its comparisons and pairs, for `figures.draw_comparison`."""
    compared = {
        split: data for split, data in comparison.by_split.items() if len(data["comparisons"])
    }
    first = next(iter(compared.values()))
    comparisons = pd.concat(
        [data["comparisons"].assign(split=split) for split, data in compared.items()],
        ignore_index=True,
    )
    order = list(dict.fromkeys(comparisons["setting"]))
    comparisons["order"] = comparisons["setting"].map(order.index)
    comparisons = comparisons.sort_values(["order", "split"], kind="stable")
    comparisons = comparisons.drop(columns="order").reset_index(drop=True)
    pairs = pd.concat(
        [data["pairs"].assign(split=split) for split, data in compared.items()],
        ignore_index=True,
    )
    return {**first, "comparisons": comparisons, "pairs": pairs}


def replication_table(rows: pd.DataFrame, family: str) -> pd.DataFrame:
    """A long table of one family and metric for the page: each row's name, split, seeds, and
    its numbers as `tables.comparison_markdown` writes them."""
    return pd.DataFrame(
        {
            "setting": [
                figures.row_label(setting, against, family)
                for setting, against in zip(rows["setting"], rows["against"], strict=True)
            ],
            "split": rows["split"],
            "seeds": rows["seeds"],
            "difference": rows["difference"].map(tables.difference_text),
            f"95% {stats.OVER_SEEDS}": [
                tables.interval_text(low, high, level)
                for low, high, level in zip(
                    rows["ci_low"], rows["ci_high"], rows["ci_confidence"], strict=True
                )
            ],
            "Holm p": rows["p_holm"].map(tables.p_text),
            f"95% {stats.OVER_SEEDS_AND_CLASSES}": [
                tables.interval_text(low, high)
                for low, high in zip(rows["class_ci_low"], rows["class_ci_high"], strict=True)
            ],
            "Holm p (classes)": rows["class_p_holm"].map(tables.p_text),
            "verdict": rows["verdict"],
            EVERY_SPLIT: rows["every_split"],
        }
    )


def write_replication(
    results_dir: Path | str,
    folders: Mapping[int, Path],
    out: Path,
    equivalence_margin: float | None = None,
) -> Path:
    """Write the page of a study replicated on several class splits, and its table.

    The page holds, per Holm family and metric, every split's comparisons side by side, the
    settings whose verdict is the same on every split, and a link to each split's own report
    (`<split folder>/report.html`, which `build_report` writes first). Its table,
    `<stem>_replication.csv` beside it, is `comparison_rows` of every family and metric.

    Returns:
        The path of the HTML file.
    """
    directory = Path(results_dir)
    study = study_record(directory)
    by_split = study_results(directory, equivalence_margin)
    comparisons = family_comparisons(by_split, is_tuned(directory))
    sections, summary, frames = [], [], []
    shared = shared_classes(by_split)
    if shared:
        summary.append(Sentence(shared))
    for comparison in comparisons:
        rows = comparison_rows(comparison)
        frames.append(rows)
        summary.append(agreement_sentence(comparison, rows))
    for family in dict.fromkeys(comparison.family for comparison in comparisons):
        own = [
            (comparison, frame)
            for comparison, frame in zip(comparisons, frames, strict=True)
            if comparison.family == family
        ]
        sections.append(_family_section(own))
    sections.append(_links_section(directory, folders, out))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ROW_COLUMNS)
    csv_text = tables.spreadsheet_safe(table).to_csv(index=False, lineterminator="\n")
    write_atomic(out.with_name(f"{out.stem}_replication.csv"), csv_text)
    name = study_name(directory)
    kind = str(study.get("kind", "study"))
    facts = [
        ("kind", f"{kind}, replicated on {len(folders)} class splits"),
        ("metric", f"{study.get('metric', '')} ({study.get('mode', '')})"),
        ("splits", ", ".join(str(split) for split in folders)),
    ]
    if not comparisons:
        summary.append(Sentence("No split compares any settings (a search): nothing to replicate."))
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = page.render_page(
        title=name,
        question=str(study.get("question") or ""),
        facts=facts,
        notes=[],
        summary=summary,
        sections=sections,
        footer=f"Built {generated} by python -m reports from {directory}.",
    )
    write_atomic(out, text)
    return out


def _family_section(own: list[tuple[FamilyComparison, pd.DataFrame]]) -> Section:
    first = own[0][0]
    anchor = "contrasts" if first.contrasts else "baseline"
    lead = (
        "Each split is a study of its own: its comparisons are paired by seed (and by class) on "
        "that split, and Holm-corrected over "
        + ("its contrasts" if first.contrasts else "its settings compared with the baseline")
        + " on one metric, each kind of p-value separately, as in its own report. A verdict "
        "holds on every split when every split decides it alike (better, worse or equivalent); "
        "the splits share classes (above), and with a few splits there is no test across them."
    )
    parts = [paragraph(lead, "lead")]
    for comparison, rows in own:
        parts.append(f"<h3>{escape(comparison.metric)} ({comparison.classes})</h3>")
        notes = f"Holm family on each split: {comparison.holm_family}. " + interval_words(
            comparison
        )
        parts.append(paragraph(" ".join(filter(None, (notes, caveat(comparison))))))
        if rows.empty:
            parts.append(paragraph("Nothing compared."))
            continue
        figure = figures.draw_comparison(replication_figure_data(comparison))
        level = (
            "at the level Holm tests it at" if comparison.sequential else f"{stats.CONFIDENCE:.0%}"
        )
        caption = (
            f"Each split's mean paired difference with its interval over seeds ({level}; "
            "diamonds, coloured by the split's verdict) and its "
            f"{stats.CONFIDENCE:.0%} interval over seeds and {comparison.classes} (purple); "
            "circles: single seeds; right: the split's Holm-adjusted p-values."
        )
        parts.append(figure_html(figure, f"figure-{anchor}-{comparison.metric}", caption))
        parts.append(
            table_html(
                replication_table(rows, comparison.family),
                caption="Every split's comparison; the last column says whether every split "
                "decides the setting alike.",
            )
        )
    return Section(anchor, first.title + ", on each class split", "".join(parts))


def _links_section(directory: Path, folders: Mapping[int, Path], out: Path) -> Section:
    items = []
    for split, folder in folders.items():
        report = folder / "report.html"
        href = Path(os.path.relpath(report, out.parent)).as_posix()
        seed = study_record(folder).get("fixed", {}).get(SPLIT_KEY, split)
        items.append(
            f'<li><a href="{escape(href)}">split {escape(split)}</a>: the study of '
            f"{SPLIT_KEY} = {escape(seed)}, its own report</li>"
        )
    body = paragraph(
        "Each split's full report: its settings, learning curves, every comparison's figures and "
        "the per-class differences.",
        "lead",
    )
    return Section("splits", "Each split's report", body + f"<ul>{''.join(items)}</ul>")
