"""Studies replicated on class splits (``--splits``), and the splits they draw."""

import dataclasses
import json

import pandas as pd
import pytest

from gapan.config import DataConfig
from gapan.data import DataError, build_splits, families, wesnoth
from gapan.space import SpaceError, load_space, parse_space
from gapan.tune import StudyError, StudyOptions, run_study

TINY_COMPARISON = '''"""Does the add-on help on a tiny slice?"""
KIND = "compare"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 2
FIXED = {"train.epochs": 2, "data.max_classes": 24, "flow.depth": 0, "loss.metric": "proxy_anchor"}
METHODS = {"loss_alone": {"loss.align_weight": 0.0, "loss.nll_weight": 0.0}, "add_on": {}}
SEARCH = {"method": {"type": "categorical", "values": ["loss_alone", "add_on"]}}
BASELINE = "loss_alone"
'''


def test_split_seed_0_is_the_prepared_split_and_others_are_family_disjoint_and_balanced():
    manifest = wesnoth.read_manifest(wesnoth.prepare())
    family_of = {name: family for family, names in manifest["families"].items() for name in names}
    assert families.split_families(family_of) == (manifest["seen"], manifest["unseen"])
    drawn = set()
    for seed in (1, 2, 3):
        seen, unseen = families.split_families(family_of, seed)
        assert sorted(seen + unseen) == sorted(family_of)
        assert not {family_of[name] for name in seen} & {family_of[name] for name in unseen}
        # One family holds a third of the classes; the sides stay within one class of half.
        assert abs(len(unseen) - len(family_of) / 2) <= 1
        assert families.split_families(family_of, seed) == (seen, unseen)
        drawn.add(tuple(unseen))
    assert len(drawn) == 3 and tuple(manifest["unseen"]) not in drawn


def test_build_splits_draws_the_split_its_seed_names_and_benchmarks_refuse_another():
    first, second = build_splits(DataConfig(split_seed=0)), build_splits(DataConfig(split_seed=2))
    assert set(first.test.class_names) != set(second.test.class_names)
    for splits in (first, second):
        parts = [set(splits.train.class_names), set(splits.val.class_names)]
        assert not parts[0] & parts[1] and not (parts[0] | parts[1]) & set(splits.test.class_names)
    with pytest.raises(DataError, match="keeps its standard class split"):
        build_splits(DataConfig(name="cub", root="/nonexistent", split_seed=1))


def test_contrasts_must_name_two_methods_of_a_comparison():
    space = load_space("compare_tuned")
    assert space.contrasts == {
        "proxy_anchor_gapan": "proxy_anchor",
        "norm_softmax_gapan": "norm_softmax",
    }
    assert space.confirmation({m: {} for m in space.methods}).contrasts == space.contrasts
    for wrong in ('{"add_on": "other"}', '{"add_on": ["loss_alone"]}', '{"add_on": "add_on"}'):
        with pytest.raises(SpaceError, match="CONTRASTS"):
            parse_space(f"{TINY_COMPARISON}CONTRASTS = {wrong}\n", "wrong")
    ablation = load_space("ablate_flow_depth")
    with pytest.raises(SpaceError, match="CONTRASTS belongs to comparisons"):
        from gapan.space import check_space

        check_space(dataclasses.replace(ablation, contrasts={"1": "0"}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"overrides": {"data.split_seed": 2}}, "leave it out of --set"),
        ({"overrides": {"data.name": "cub", "data.root": "/data/cub"}}, "standard split"),
        ({"splits": 0}, "--splits must be"),
        ({"adaptive": True, "min_seeds": 5, "max_seeds": 3}, "--min-seeds and --max-seeds must"),
    ],
)
def test_a_study_on_splits_refuses_what_it_cannot_run_before_starting(tmp_path, change, message):
    space = parse_space(TINY_COMPARISON, "tiny")
    with pytest.raises(StudyError, match=message):
        run_study(
            space, StudyOptions(**{"name": "s", "results_dir": tmp_path, "splits": 2, **change})
        )
    assert not (tmp_path / "s").exists()


def test_adaptive_seeds_refuse_a_comparison_with_contrasts(tmp_path):
    space = parse_space(TINY_COMPARISON + 'CONTRASTS = {"add_on": "loss_alone"}\n', "tiny")
    with pytest.raises(StudyError, match="CONTRASTS"):
        run_study(space, StudyOptions(name="s", results_dir=tmp_path, adaptive=True))


@pytest.mark.slow
def test_a_study_on_two_splits_runs_each_on_its_own_classes_and_resumes_without_rerunning(
    tmp_path, ray_instance
):
    space = parse_space(TINY_COMPARISON + 'CONTRASTS = {"add_on": "loss_alone"}\n', "tiny")
    options = StudyOptions(
        name="replicated", results_dir=tmp_path, splits=2, num_cpus=2, dashboard_port=0
    )
    study_dir = run_study(space, options)
    study = json.loads((study_dir / "study.json").read_text())
    assert study["splits"] == [0, 1] and study["contrasts"] == {"add_on": "loss_alone"}
    assert study["finished_splits"] == [0, 1]
    classes, trial_ids = [], []
    for split in (0, 1):
        split_dir = study_dir / f"split_{split}"
        trials = pd.read_csv(split_dir / "trials.csv", dtype={"trial_id": str})
        assert len(trials) == 4 and set(trials["status"]) == {"completed"}
        for trial_id in trials["trial_id"]:
            config = json.loads((split_dir / "trials" / trial_id / "config.json").read_text())
            assert config["data.split_seed"] == split
        scores = pd.read_csv(split_dir / "class_scores.csv")
        classes.append(set(scores.loc[scores["split"] == "test", "class"]))
        trial_ids.append(list(trials["trial_id"]))
    assert classes[0] != classes[1]

    for other in (1, 3):  # a resume runs on the splits the study started with, or not at all
        with pytest.raises(StudyError, match="resume it with --splits 2"):
            run_study(space, dataclasses.replace(options, resume=True, splits=other))
    again = run_study(space, dataclasses.replace(options, resume=True))
    for split in (0, 1):
        kept = pd.read_csv(again / f"split_{split}" / "trials.csv", dtype={"trial_id": str})
        assert list(kept["trial_id"]) == trial_ids[split]
