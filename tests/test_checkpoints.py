"""What a study keeps of its trials (gapan/tune/checkpoints.py) and the prune command
(gapan/tune/prune.py), on study folders built by hand: no Ray, no training."""

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import safetensors.torch
import torch

from gapan import results
from gapan.results import KeptModel, chosen, kept_models
from gapan.tune.checkpoints import PruneEndedTrials
from gapan.tune.prune import main as prune_main

SPACE = {
    "name": "tiny",
    "question": "?",
    "kind": "ablation",
    "metric": "val_map_at_r",
    "mode": "max",
    "seeds": 2,
    "fixed": {},
    "search": {"flow.depth": {"type": "int", "values": [0, 2]}},
    "baseline": 0,
    "knob": "flow.depth",
}
# (trial id, setting, final val_map_at_r or None for a trial that diverged)
TRIALS = [("aa", "0", 0.30), ("bb", "2", 0.20), ("cc", "0", 0.35), ("dd", "2", None)]


def fake_trial(tune_dir: Path, number: int, trial_id: str, value: float | None) -> Path:
    """A Tune trial folder with three checkpoints of this trainer, the last one final."""
    trial_dir = tune_dir / f"trial_{number}_{trial_id}"
    for epoch in (1, 2, 3):
        folder = trial_dir / f"checkpoint_{epoch:06d}"
        folder.mkdir(parents=True)
        status = "running" if epoch < 3 else ("completed" if value is not None else "diverged")
        state = {
            "epoch": epoch,
            "model": {
                "head.weight": torch.full((4, 8), float(number)),
                "head.bias": torch.zeros(4),
            },
            "criterion": {"priors": torch.zeros(3, 4)},
            "optimizer": {"state": {}, "param_groups": []},
            "torch_rng": torch.get_rng_state(),
            "metrics": {"epoch": epoch, "status": status, "val_map_at_r": value or 0.0},
        }
        torch.save(state, folder / "checkpoint.pt")
        (folder / "config.json").write_text(json.dumps({"flow.depth": number}))
    return trial_dir


def fake_study(study_dir: Path, statuses: dict[str, str] | None = None) -> Path:
    tune_dir = study_dir / results.TUNE_DIR
    rows = []
    for number, (trial_id, setting, value) in enumerate(TRIALS, start=1):
        fake_trial(tune_dir, number, trial_id, value)
        status = (statuses or {}).get(trial_id, "completed" if value is not None else "diverged")
        rows.append(
            {"trial_id": trial_id, "status": status, "setting": setting, "val_map_at_r": value}
        )
    pd.DataFrame(rows).to_csv(study_dir / results.TRIALS_FILE, index=False)
    (study_dir / results.STUDY_FILE).write_text(json.dumps(SPACE))
    return study_dir


def test_best_keeps_the_best_trial_of_each_setting_and_last_keeps_every_one():
    models = [
        KeptModel("a", Path("a"), "0", 0.2),
        KeptModel("b", Path("b"), "0", 0.3),
        KeptModel("c", Path("c"), "4", 0.1),
    ]
    assert chosen(models, "best", "max") == {"b", "c"}
    assert chosen(models, "best", "min") == {"a", "c"}
    assert chosen(models, "last", "max") == {"a", "b", "c"}
    assert chosen(models, "none", "max") == set()


@pytest.mark.parametrize(
    ("policy", "kept"), [("best", ["bb", "cc"]), ("last", ["aa", "bb", "cc"]), ("none", [])]
)
def test_prune_keeps_what_the_policy_keeps_as_safetensors_and_no_checkpoint(
    tmp_path, capsys, policy, kept
):
    study_dir = fake_study(tmp_path / "study")
    # A trial that Tune lost with its driver, and started again afresh on resume.
    fake_trial(study_dir / "tune", 3, "lost", 0.9)
    assert prune_main([str(study_dir), "--keep-checkpoints", policy]) == 0
    assert not (study_dir / "tune" / "trial_3_lost").exists()
    assert not list(study_dir.rglob("checkpoint_*"))
    assert sorted(model.trial_id for model in kept_models(study_dir)) == kept
    for trial_id in kept:
        folder = study_dir / "models" / trial_id
        assert sorted(p.name for p in folder.iterdir()) == [
            "config.json",
            "metrics.json",
            "model.safetensors",
        ]
        weights = safetensors.torch.load_file(folder / "model.safetensors")
        assert set(weights) == {"head.weight", "head.bias"}  # the model: no optimizer, no flow
    assert json.loads((study_dir / "study.json").read_text())["keep_checkpoints"] == policy
    assert f"weights kept of {len(kept)} trial(s)" in capsys.readouterr().out


def test_prune_refuses_an_unfinished_study_and_leaves_it_as_it_was(tmp_path, capsys):
    study_dir = fake_study(tmp_path / "study", statuses={"cc": "interrupted"})
    assert prune_main([str(study_dir)]) == 2
    error = capsys.readouterr().err
    assert "is unfinished (3 of 4 trials ended)" in error and "--resume" in error
    assert "Traceback" not in error
    assert len(list(study_dir.rglob("checkpoint_*"))) == 12
    (study_dir / "trials.csv").unlink()  # a study still running has written no table yet
    assert prune_main([str(study_dir)]) == 2
    assert "the study is running" in capsys.readouterr().err
    assert prune_main([str(tmp_path / "nothing")]) == 2
    assert "holds no study" in capsys.readouterr().err


def test_an_ended_trial_loses_its_checkpoints_only_after_tune_has_recorded_its_end(tmp_path):
    study_dir = fake_study(tmp_path / "study")
    state = study_dir / "tune" / "experiment_state-2026-12-04.json"
    state.write_text("{}")
    callback = PruneEndedTrials(str(study_dir), "flow.depth", "val_map_at_r", "max")
    trial_dir = study_dir / "tune" / "trial_3_cc"
    # A trial Ctrl-C stopped mid-run is completed by Tune too, but never reported its end.
    stopped = study_dir / "tune" / "trial_9_zz"
    for number in range(3):
        (stopped / f"checkpoint_{number:06d}").mkdir(parents=True)
    callback.on_trial_complete(
        0, [], SimpleNamespace(path=str(stopped), config={}, last_result={"status": "running"})
    )
    callback.on_trial_complete(
        0,
        [],
        SimpleNamespace(
            path=str(trial_dir), config={"flow.depth": 0}, last_result={"status": "completed"}
        ),
    )

    def snapshot(version: int) -> None:  # what Tune's upload of its state does to it
        state.write_text("")  # the upload truncates the file first ...
        callback.on_step_end(0, [])
        state.write_text(json.dumps({"version": version}))  # ... then writes it whole
        callback.on_step_end(0, [])

    callback.on_step_end(0, [])
    # A truncated file between two whole ones is one upload, not two.
    state.write_text("")
    callback.on_step_end(0, [])
    state.write_text('{"vers')
    callback.on_step_end(0, [])
    assert len(list(trial_dir.glob("checkpoint_*"))) == 3
    snapshot(1)  # this upload may have begun before the trial ended
    assert len(list(trial_dir.glob("checkpoint_*"))) == 3
    snapshot(2)
    assert not list(trial_dir.glob("checkpoint_*"))
    assert len(list(stopped.glob("checkpoint_*"))) == 3
    assert [model.trial_id for model in kept_models(study_dir)] == ["cc"]
    # Tune pickles the callback for a resume: it carries no trial in progress.
    assert callback.__getstate__()["_pending"] == {}
