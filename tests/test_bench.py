"""The GPU-decode prototype of bench.input_pipeline, run on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from bench.common import write_image_folder
from bench.input_pipeline import EncodedImages, collate_encoded, gpu_decoded_batches
from gapan.config import ExperimentConfig, from_flat
from gapan.data import ImageSet, build_splits
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def folder_set(tmp_path_factory) -> tuple[ExperimentConfig, ImageSet]:
    root = tmp_path_factory.mktemp("jpeg")
    split_file = write_image_folder(root, 4, 4, 2, 4, width=64, height=48, processes=1)
    cfg = from_flat(
        {
            "data.name": "folder",
            "data.root": str(root),
            "data.split_file": str(split_file),
            "data.image_size": 32,
            "data.val_fraction": 0.0,
            "data.classes_per_batch": 4,
            "data.samples_per_class": 2,
        }
    )
    return cfg, build_splits(cfg.data).train


def test_a_batch_of_files_leaves_its_worker_as_one_tensor(folder_set):
    _, images = folder_set
    encoded = EncodedImages(images)
    batches = list(DataLoader(encoded, batch_size=6, num_workers=2, collate_fn=collate_encoded))
    assert len(batches) == 3
    for start, (data, lengths, labels) in zip(range(0, len(images), 6), batches, strict=True):
        indices = list(range(start, min(start + 6, len(images))))
        files = [bytes(file.numpy()) for file in data.split(lengths.tolist())]
        assert files == [Path(images.paths[index]).read_bytes() for index in indices]
        assert labels.tolist() == images.labels[indices].tolist()


def test_the_prototype_decodes_and_augments_sampled_batches(folder_set):
    cfg, images = folder_set
    batches = gpu_decoded_batches(cfg, images, torch.device("cpu"), workers=2)
    for _ in range(2):
        pixels, labels, classes = next(batches)
        assert pixels.shape == (8, 3, 32, 32) and pixels.dtype == torch.float32
        assert 0 <= pixels.min() and pixels.max() <= 1 and pixels.std() > 0.01
        assert labels.bincount().tolist() == [2, 2, 2, 2]  # 4 classes x 2 images
        assert classes.tolist() == [0, 1, 2, 3]


def test_the_loss_bench_compares_the_flow_with_its_nflows_twin():
    from bench.loss_ops import measure, nflows_twin
    from bench.step import SEEN_CLASSES, experiment_config, random_batch
    from gapan.losses import GapanCriterion

    cpu = torch.device("cpu")
    cfg = experiment_config("resnet18", 2, 16, 4, 32, 3, cpu, False)
    criterion = GapanCriterion(cfg, SEEN_CLASSES, cfg.model.embed_dim).train()
    _, labels, classes = random_batch(cfg, cpu)
    embeddings = torch.randn(len(labels), cfg.model.embed_dim)
    criterion(embeddings, labels, classes)  # ActNorm's initialisation, which the twin copies
    twin = nflows_twin(criterion)
    blocks = twin.flow.transform.modules()
    assert not any(type(block).__module__.startswith("gapan") for block in blocks)
    parts = []
    for loss in (criterion, twin):
        torch.manual_seed(5)  # the same anchors
        parts.append(loss(embeddings, labels, classes))
    for name in ("nll", "align", "loss"):
        torch.testing.assert_close(parts[0][name], parts[1][name])

    rows = {
        (row["depth"], row["flow"]): row
        for depth in (0, 2)
        for row in measure(
            experiment_config("resnet18", depth, 16, 4, 32, 3, cpu, False), cpu, 1, False
        )
    }
    assert rows[0, "gapan"]["operations"] == rows[0, "nflows"]["operations"]  # no flow: same
    assert rows[2, "gapan"]["operations"] < 0.85 * rows[2, "nflows"]["operations"]


def test_the_fused_step_compiles_the_loss_after_its_first_call(monkeypatch):
    from bench.step import SEEN_CLASSES, CompiledAfterFirstCall, experiment_config, random_batch
    from gapan.losses import GapanCriterion

    compiled = []

    def compile_spy(function, **options):
        def run(*args):
            compiled.append(options)
            return function(*args)

        return run

    monkeypatch.setattr(torch, "compile", compile_spy)
    cpu = torch.device("cpu")
    cfg = experiment_config("resnet18", 2, 16, 4, 32, 3, cpu, False)
    criterion = GapanCriterion(cfg, SEEN_CLASSES, cfg.model.embed_dim).train()
    loss = CompiledAfterFirstCall(criterion)
    _, labels, classes = random_batch(cfg, cpu)
    embeddings = torch.randn(len(labels), cfg.model.embed_dim)
    with torch.no_grad():  # as GraphedCriterion's first call: eager, ActNorm initialises itself
        loss(embeddings, labels, classes)
    assert compiled == []
    assert {id(p) for p in loss.parameters()} == {id(p) for p in criterion.parameters()}
    for _ in range(2):
        torch.manual_seed(5)
        parts = loss(embeddings, labels, classes)
        torch.manual_seed(5)
        torch.testing.assert_close(parts, criterion(embeddings, labels, classes))
    assert compiled == [{"dynamic": False}] * 2


def test_the_disk_bench_reads_what_a_command_left_in_its_study_folder(tmp_path):
    folder = tmp_path / "study"
    leave = (
        "import json, pathlib; folder = pathlib.Path(__import__('sys').argv[1]); "
        "(folder / 'models').mkdir(parents=True); "
        "(folder / 'models' / 'model.safetensors').write_bytes(bytes(2_000_000)); "
        "(folder / 'environment.json').write_text(json.dumps({'study_wall_s': 1.5, 'trials': 2}))"
    )
    measured = subprocess.run(
        [sys.executable, "-m", "bench.results_disk", str(folder), "--every", "0.1", "--"]
        + [sys.executable, "-c", leave, str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert measured.returncode == 0, measured.stderr
    result = json.loads(measured.stdout.splitlines()[-1])
    assert result["models_mb"] == 2.0 and 2.0 <= result["folder_mb"] < 2.01
    assert result["study_wall_s"] == 1.5 and result["trials"] == 2 and result["wall_s"] > 0
    assert result["disk_written_mb"] >= 0


def test_keep_tables_copies_a_studys_tables_without_its_weights_or_paths(tmp_path):
    from bench.keep_tables import keep_tables
    from tests.fake_results import splits_folder

    study = splits_folder(
        tmp_path / "results" / "replicated",
        [{"a": 0.0, "b": 0.01}, {"a": 0.0, "b": -0.01}],
        kind="compare",
        baseline="a",
    )
    (study / "split_0" / "models" / "t1").mkdir(parents=True)
    (study / "split_0" / "models" / "t1" / "model.safetensors").write_bytes(b"weights")
    kept = keep_tables(study, tmp_path / "kept")
    names = {path.relative_to(tmp_path / "kept" / "replicated").as_posix() for path in kept}
    assert {"study.json", "split_0/trials.csv", "split_1/study.json"} <= names
    assert not any("models" in name for name in names)
    record = json.loads((tmp_path / "kept" / "replicated" / "split_1" / "study.json").read_text())
    assert record["folder"] == "results/replicated/split_1"
