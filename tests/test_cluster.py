"""A study on a Ray cluster of two worker nodes (all on this machine) with shared results storage:
trials run on both nodes, and losing a node mid-study moves its trial to the other one, where it
continues from its last checkpoint."""

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
from ray.cluster_utils import Cluster

from gapan.space import parse_space
from gapan.tune import StudyOptions, run_study

# Each trial runs for several seconds, so a node can be lost while its trial runs.
SPREAD = '''"""Does a flow help, on two nodes?"""
KIND = "ablation"
METRIC = "val_map_at_r"
MODE = "max"
SEEDS = 2
FIXED = {"train.epochs": 5, "train.steps_per_epoch": 200, "data.max_classes": 24,
         "flow.hidden": 32, "model.embed_dim": 64}
SEARCH = {"flow.depth": {"type": "int", "values": [0, 1]}}
BASELINE = 0
'''


@pytest.fixture
def two_workers():
    """A head without CPUs for trials (as a cluster's head often is) and two one-CPU nodes."""
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


def last_report(result_file: Path) -> dict:
    lines = [line for line in result_file.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def remove_a_busy_node(
    cluster: Cluster, workers: list, study_dir: Path, lost: dict, done: threading.Event
) -> None:
    """Remove the first worker node whose trial has reported its second or third epoch of five,
    so that it has epochs left to run on the other node. It watches until the study ends, not
    for a fixed time: on a busy machine the trials take longer to get there."""
    nodes = {node.node_id: node for node in workers}
    while not done.is_set():
        for result_file in (study_dir / "tune").glob("trial_*/result.json"):
            report = last_report(result_file)
            if (
                report.get("node_id") in nodes
                and 2 <= report.get("epoch", 0) <= 3
                and report.get("status") == "running"
            ):
                cluster.remove_node(nodes[report["node_id"]])
                lost.update(
                    node_id=report["node_id"],
                    epoch=report["epoch"],
                    trial_id=result_file.parent.name.split("_")[-1],
                )
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_study_spreads_over_nodes_and_survives_losing_one(tmp_path, two_workers, monkeypatch):
    cluster, workers = two_workers
    # The watcher reads the trials' reports from the study folder, where Tune copies them every
    # TUNE_GLOBAL_CHECKPOINT_S (seconds, as run_study sets it): longer than some of these epochs.
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0.2")
    shared = tmp_path / "shared"
    study_dir = shared / "spread"
    lost: dict = {}
    done = threading.Event()
    watcher = threading.Thread(
        target=remove_a_busy_node, args=(cluster, workers, study_dir, lost, done), daemon=True
    )
    watcher.start()
    try:
        run_study(
            parse_space(SPREAD, "spread"),
            StudyOptions(
                name="spread",
                results_dir=tmp_path / "unused",
                storage=str(shared),
                address=cluster.address,
                max_failures=1,
            ),
        )
    finally:
        done.set()
    watcher.join(timeout=5)

    assert lost, "no trial reached its second epoch on a worker node"
    (remaining,) = {node.node_id for node in workers} - {lost["node_id"]}
    trials = pd.read_csv(study_dir / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    epochs = pd.read_csv(study_dir / "epochs.csv", dtype={"trial_id": str})
    assert set(epochs["node_id"]) == {lost["node_id"], remaining}

    # The trial on the lost node went on from its checkpoint on the other: each epoch ran once.
    moved = epochs[epochs["trial_id"] == lost["trial_id"]]
    assert list(moved["epoch"]) == [1, 2, 3, 4, 5]
    assert set(moved.loc[moved["epoch"] <= lost["epoch"], "node_id"]) == {lost["node_id"]}
    assert set(moved.loc[moved["epoch"] > lost["epoch"], "node_id"]) == {remaining}
    assert not (tmp_path / "unused").exists()
