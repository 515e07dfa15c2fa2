"""Searches that learn from earlier studies: a warm start from another study's results folder,
and a finished search extended with more trials."""

import json
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import kill_study, resume_study, start_study, trial_results

from gapan import results
from gapan.space import load_space, optuna_distributions, parse_space
from gapan.tune import StudyError, StudyOptions, run_study
from gapan.tune.folder import set_aside
from gapan.tune.options import apply_options
from gapan.tune.resume import extension
from gapan.tune.warm_start import SEEDED_ATTR, seed_study, seeds, startup_trials
from reports import build_report

SEARCH = '''"""Which prior variance, learning rate and anchor count retrieve best?"""
KIND = "search"
METRIC = "val_map_at_r"
MODE = "max"
NUM_SAMPLES = {samples}
FIXED = {{"train.epochs": 2, "data.max_classes": 24, "flow.hidden": 32, "flow.depth": 1,
         "model.embed_dim": 64}}
SEARCH = {{
    "prior.variance": {{"type": "float", "low": 0.05, "high": 5.0, "log": True}},
    "optim.lr": {{"type": "float", "low": 1e-4, "high": 3e-3, "log": True}},
    "anchors.count": {{"type": "int", "values": [4, 8]}},
}}
'''

# An earlier, cheaper search over another space: a wider variance range, no learning rate (it
# fixes one outside this space's range), and anchor counts as a range where this space has two.
EARLIER = '''"""A cheaper search over a wider space."""
KIND = "search"
METRIC = "val_map_at_r"
MODE = "max"
NUM_SAMPLES = 4
FIXED = {"train.epochs": 1, "optim.lr": 0.01}
SEARCH = {
    "prior.variance": {"type": "float", "low": 0.001, "high": 100.0, "log": True},
    "anchors.count": {"type": "int", "low": 1, "high": 64},
}
'''


def search_space(samples: int = 6):
    return parse_space(SEARCH.format(samples=samples), "tiny_search")


def earlier_study(folder: Path, rows: list[tuple], fixed: str = "") -> Path:
    """A finished earlier search, as its study.json and trials.csv (trial, status, variance,
    anchor count, validation MAP@R); `fixed`: more of its FIXED, as Python text."""
    folder.mkdir(parents=True)
    space = EARLIER.replace("FIXED = {", "FIXED = {" + fixed)
    results.write_study(folder, parse_space(space, "earlier"), {})
    table = pd.DataFrame(
        rows,
        columns=[
            "trial_id",
            "status",
            "config/prior.variance",
            "config/anchors.count",
            "val_map_at_r",
        ],
    )
    table.insert(1, "number", range(1, len(table) + 1))
    table.to_csv(folder / results.TRIALS_FILE, index=False)
    return folder


def optuna_trials(study_dir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / "optuna.journal"))
    )
    return optuna.load_study(study_name=name, storage=storage).trials


ROWS = [
    ("a", "completed", 0.5, 4, 0.20),
    ("b", "completed", 50.0, 8, 0.40),  # the best: its variance is clipped to 5.0
    ("c", "completed", 1.0, 16, 0.35),  # an anchor count this space lacks
    ("d", "stopped_early", 2.0, 4, 0.90),  # not finished: never a seed
    ("e", "completed", 0.01, 4, 0.30),  # clipped up to 0.05
]


def test_a_warm_start_takes_the_best_finished_trials_fitted_to_this_space(tmp_path):
    earlier = earlier_study(tmp_path / "earlier", ROWS)
    space = apply_options(search_space(), StudyOptions(name="x", warm_start=(earlier,)))
    chosen, notes = seeds(space, [earlier])

    assert startup_trials(space) == 2
    assert [seed.trial_id for seed in chosen] == ["b", "e"]  # best first, k of them
    assert chosen[0].params == {
        "prior.variance": 5.0,
        "optim.lr": 3e-3,  # the earlier study's fixed 0.01, clipped
        "anchors.count": 8,
    }
    assert chosen[1].params["prior.variance"] == 0.05
    assert chosen[0].value == 0.40 and chosen[0].fidelity["train.epochs"] == 1
    text = "\n".join(notes)
    assert "does not search optim.lr: its seeds take its fixed value 0.01" in text
    assert "trial b: prior.variance=50.0 clipped to 5.0" in text
    assert "trial c left out (anchors.count=16 is not among [4, 8])" in text
    assert "trial d" not in text


def test_a_study_is_seeded_once_whatever_happens_to_its_driver(tmp_path):
    earlier = earlier_study(tmp_path / "earlier", ROWS)
    space = search_space()
    chosen, _ = seeds(space, [earlier])
    study = optuna.create_study(direction="maximize")
    assert seed_study(study, chosen) == 2
    # A restarted driver finds the seeding in the journal, whatever it would seed now.
    other, _ = seeds(space, [earlier_study(tmp_path / "other", [("z", "completed", 3.0, 4, 0.1)])])
    assert seed_study(study, other) == 0 and len(study.trials) == 2
    asked = [study.ask(optuna_distributions(space)) for _ in range(3)]
    assert [trial.params for trial in asked[:2]] == [seed.params for seed in chosen]
    assert study.trials[0].user_attrs[SEEDED_ATTR]["trial_id"] == "b"
    assert SEEDED_ATTR not in study.trials[2].user_attrs  # then the sampler's own


def test_warm_start_needs_a_search_to_seed(tmp_path):
    earlier = earlier_study(tmp_path / "earlier", ROWS)
    with pytest.raises(StudyError, match="runs a fixed grid of settings"):
        apply_options(
            load_space("ablate_flow_depth"), StudyOptions(name="x", warm_start=(earlier,))
        )
    with pytest.raises(StudyError, match="is the folder of a search study"):
        seeds(search_space(), [tmp_path / "nowhere"])
    with pytest.raises(StudyError, match="this study's own folder"):
        seeds(search_space(), [earlier], study_dir=earlier)
    other_split = earlier_study(tmp_path / "other_split", ROWS, fixed='"data.split_seed": 1, ')
    with pytest.raises(StudyError, match="ran on class split 1, this study on split 0"):
        seeds(search_space(), [other_split])


def test_a_source_without_a_usable_trial_seeds_nothing_and_says_so(tmp_path):
    failed = [("f", "failed", 1.0, 4, float("nan")), ("g", "completed", 1.0, 8, float("nan"))]
    earlier = earlier_study(tmp_path / "earlier", failed)
    chosen, notes = seeds(search_space(), [earlier])
    assert chosen == []
    assert any("no completed trial fits this space; it seeds nothing" in note for note in notes)


def test_seeds_are_distinct_and_no_more_than_the_search_has_trials(tmp_path):
    # Two trials clipped to the same point are one configuration; the same folder twice is one.
    twins = [("a", "completed", 50.0, 8, 0.5), ("b", "completed", 90.0, 8, 0.4)]
    twins += [("c", "completed", 1.0, 4, 0.3), ("d", "completed", 2.0, 4, 0.2)]
    first = earlier_study(tmp_path / "first", twins)
    chosen, _ = seeds(search_space(), [first, first])
    assert [seed.trial_id for seed in chosen] == ["a", "c"]
    # Two sources give k each (the second's best, b, is the first's a once clipped: its next
    # best, e, instead), but never more than the search's trials.
    second = earlier_study(tmp_path / "second", ROWS)
    chosen, notes = seeds(search_space(3), [first, second])
    assert [seed.trial_id for seed in chosen] == ["a", "c", "e"]
    assert any("the first 3 are taken" in note for note in notes)


@pytest.mark.slow
def test_a_warm_started_search_runs_the_seeds_first_and_records_only_its_own_trials(
    tmp_path, ray_instance
):
    earlier = earlier_study(tmp_path / "earlier", ROWS)
    space = search_space(4)
    study_dir = run_study(
        space, StudyOptions(name="warm", results_dir=tmp_path, warm_start=(earlier,))
    )

    every = optuna_trials(study_dir, "tiny_search")
    assert [trial.state.name for trial in every] == ["COMPLETE"] * 4
    seeded = [trial for trial in every if SEEDED_ATTR in trial.user_attrs]
    assert [trial.number for trial in seeded] == [0, 1]  # the sampler ran them first
    assert [trial.user_attrs[SEEDED_ATTR]["trial_id"] for trial in seeded] == ["b", "e"]
    assert seeded[0].params["prior.variance"] == 5.0

    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 4 and set(trials["status"]) <= {"completed"}
    # The seeds ran here, with this study's own scores, not the earlier ones.
    (best_seed,) = trials[trials["config/prior.variance"] == 5.0]["val_map_at_r"]
    assert best_seed == pytest.approx(seeded[0].value)
    assert 0.40 not in set(trials["val_map_at_r"])
    recorded = json.loads((study_dir / "study.json").read_text())["warm_start"]
    assert recorded["studies"] == [str(earlier)]
    assert [seed["trial_id"] for seed in recorded["seeds"]] == ["b", "e"]
    page = build_report(study_dir).read_text()
    assert "This search began with 2 configurations of 1 earlier study" in page


@pytest.mark.slow
def test_a_finished_search_extended_keeps_every_trial_and_the_samplers_history(
    tmp_path, ray_instance
):
    options = StudyOptions(name="grow", results_dir=tmp_path)
    study_dir = run_study(search_space(4), options)
    before = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    journal = optuna_trials(study_dir, "tiny_search")
    journal_before = [(t.number, t.params, t.value) for t in journal]

    with pytest.raises(StudyError, match="search of 4 trials \\(4 ended\\).*--num-samples 3"):
        run_study(search_space(3), StudyOptions(name="grow", results_dir=tmp_path, resume=True))

    run_study(search_space(6), StudyOptions(name="grow", results_dir=tmp_path, resume=True))
    after = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    assert len(after) == 6
    pd.testing.assert_frame_equal(after.iloc[:4], before)  # earlier trials as they were
    assert list(after["number"]) == [1, 2, 3, 4, 5, 6]
    every = optuna_trials(study_dir, "tiny_search")
    assert [(t.number, t.params, t.value) for t in every[:4]] == journal_before
    assert [t.state.name for t in every] == ["COMPLETE"] * 6
    # The new trials were sampled from the whole history: none repeats an earlier point.
    points = [tuple(sorted(t.params.items())) for t in every]
    assert len(set(points)) == 6
    assert (study_dir / "tune_1").is_dir() and (study_dir / "tune").is_dir()


@pytest.mark.slow
def test_a_seeded_search_killed_and_resumed_is_not_seeded_twice(tmp_path):
    earlier = earlier_study(tmp_path / "earlier", ROWS)
    space_file = tmp_path / "tiny_search.py"
    space_file.write_text(SEARCH.format(samples=4))
    results_dir = tmp_path / "results"
    study_dir = results_dir / "tiny_search"
    options = f", warm_start=(Path({str(earlier)!r}),)"
    driver = start_study(space_file, results_dir, "tiny_search", options=options)
    try:
        deadline = time.monotonic() + 240
        while len(trial_results(study_dir, completed_only=True)) < 1:
            assert driver.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.2)
    finally:
        kill_study(driver)

    # Resumed with another source: the journal's seeding stands, nothing is seeded again.
    other = earlier_study(tmp_path / "other", [("z", "completed", 3.0, 4, 0.1)])
    again = f", warm_start=(Path({str(other)!r}),)"
    resumed = resume_study(space_file, results_dir, "tiny_search", options=again)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "keeps the seeding it began with" in resumed.stdout
    every = optuna_trials(study_dir, "tiny_search")
    seeded = [trial for trial in every if SEEDED_ATTR in trial.user_attrs]
    assert [trial.user_attrs[SEEDED_ATTR]["trial_id"] for trial in seeded] == ["b", "e"]
    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert sum(trials["config/prior.variance"] == 5.0) == 1  # the best seed ran once
    assert 3.0 not in set(trials["config/prior.variance"])


def test_an_extension_never_deletes_trials_tune_cannot_restore(tmp_path):
    # A finished search of 4 trials whose Tune experiment lost its state: extending it must
    # refuse, keeping the trials' folders, not start afresh without them.
    space = search_space(4)
    study_dir = tmp_path / "search"
    study_dir.mkdir()
    results.write_study(study_dir, space, {"folder": str(study_dir)})
    rows = [(f"t{n}", "completed", 1.0, 4, 0.3) for n in range(4)]
    pd.DataFrame(
        rows, columns=["trial_id", "status", "prior.variance", "anchors.count", "m"]
    ).to_csv(study_dir / results.TRIALS_FILE, index=False)
    trial = study_dir / "tune" / "trial_1_t0"
    trial.mkdir(parents=True)
    assert extension(study_dir, search_space(6)) == 4
    with pytest.raises(StudyError, match="incomplete.*Restore tune/ from a backup"):
        set_aside(study_dir)
    assert trial.is_dir()
    with pytest.raises(StudyError, match="search of 4 trials \\(4 ended\\)"):
        extension(study_dir, search_space(3))
    # An extension stopped before its experiment recorded a trial starts it again.
    (study_dir / "tune").rename(study_dir / "tune_1")
    (study_dir / "tune").mkdir()
    results.write_study(study_dir, search_space(6), {"folder": str(study_dir)})
    assert extension(study_dir, search_space(6)) == 4
    set_aside(study_dir)
    assert not (study_dir / "tune").exists() and (study_dir / "tune_1" / "trial_1_t0").is_dir()
