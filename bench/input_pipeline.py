"""Training images per second from real JPEG files against the same step on random tensors.

The real path is the trainer's own: `gapan.inputs.finetune_inputs` (the data set's `ImageSet`, the
m-per-class sampler, `train_transform` and a DataLoader with ``data.num_workers`` processes)
feeding the bare backbone step of `bench.step` (backbone, 512-d head, trivial loss, AdamW; bf16
autocast and channels-last on CUDA). The reference is that step on random images already on the
device. The images are synthetic JPEG photos of CUB's usual 500 x 375, written once into
--data-dir. Each worker count is measured on its own, steady state (after warm-up batches), and
the decode-only rate (the loader with no step) is shown beside it.

The trainer's other input path, ``data.pipeline=device`` (`gapan.inputs.on_device_inputs`: every
image decoded once into device memory, each batch cropped and flipped there), is measured too,
with the seconds its one-time decoding took.

--gpu-decode adds a prototype path: workers only read the files, and the main process decodes
the batch with nvJPEG (`torchvision.io.decode_jpeg` on CUDA) and applies the same
`train_transform` to each image on the GPU.

    python -m bench.input_pipeline                     # GPU: resnet50, batch 128, 224 px
    python -m bench.input_pipeline --gpu-decode --workers 2,8,15
    python -m bench.input_pipeline --device cpu --images 200 --classes 10 --workers 2 --steps 3
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from bench.common import (
    add_data_dir_argument,
    bench_parser,
    emit,
    environment,
    fill_device_defaults,
    print_table,
    rounded,
    synchronize,
    time_device,
    write_image_folder,
)
from bench.step import build_model, make_criterion, random_batch, release, step_config
from gapan.config import ExperimentConfig, from_flat
from gapan.data import ImageSet, build_splits
from gapan.data.sampler import MPerClassBatchSampler
from gapan.data.transforms import train_transform
from gapan.inputs import TrainBatches, finetune_inputs, on_device_inputs
from gapan.train import build_optimizer, train_epoch

# A batch of undecoded files: their bytes end to end, each file's length, the labels.
EncodedBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class EncodedImages(Dataset):
    """The files of an image set as undecoded bytes, with their labels."""

    def __init__(self, images: ImageSet):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return read_file(str(self.images.paths[index])), int(self.images.labels[index])


def collate_encoded(items: list[tuple[torch.Tensor, int]]) -> EncodedBatch:
    """One tensor per batch. A worker hands each tensor over through a shared-memory file
    descriptor: a tensor per file puts a batch's worth of descriptors in flight per worker, and
    with many workers that hand-over fails (``OSError: [Errno 9] Bad file descriptor``)."""
    data = [item for item, _ in items]
    return (
        torch.cat(data),
        torch.tensor([len(item) for item in data]),
        torch.tensor([label for _, label in items]),
    )


def gpu_decoded_batches(
    cfg: ExperimentConfig, images: ImageSet, device: torch.device, workers: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches as the trainer samples them, decoded and augmented on the GPU (the prototype)."""
    sampler = MPerClassBatchSampler(
        images.labels,
        cfg.data.classes_per_batch,
        cfg.data.samples_per_class,
        10**6,
        cfg.train.seed,
    )
    loader = DataLoader(
        EncodedImages(images),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate_encoded,
        persistent_workers=workers > 0,
    )
    transform = train_transform(cfg.data.image_size)
    for data, lengths, labels in loader:
        files = list(data.split(lengths.tolist()))
        decoded = decode_jpeg(files, mode=ImageReadMode.RGB, device=device)
        batch = torch.stack([transform(image) for image in decoded])
        yield batch, labels.to(device, non_blocking=True), torch.unique(labels).to(device)


def for_seconds(
    batches: TrainBatches, steps: int, seconds: float, counter: list[int]
) -> TrainBatches:
    """At most `steps` batches, fewer if `seconds` run out; `counter[0]` counts those yielded."""
    started = time.perf_counter()
    for batch in itertools.islice(batches, steps):
        counter[0] += 1
        yield batch
        if time.perf_counter() - started > seconds:
            return


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser("input_pipeline", __doc__)
    parser.add_argument(
        "--backbone", help="timm name (default resnet50 on CUDA, mobilenetv2_100 on the CPU)"
    )
    parser.add_argument(
        "--images", type=int, default=2000, help="training images to write (default 2,000)"
    )
    parser.add_argument("--classes", type=int, default=50, help="training classes (default 50)")
    parser.add_argument("--batch", type=int, help="default 128 on CUDA, 32 on the CPU")
    parser.add_argument("--samples-per-class", type=int, default=4)
    parser.add_argument("--image-size", type=int, help="default 224 on CUDA, 64 on the CPU")
    parser.add_argument(
        "--workers",
        help="DataLoader worker counts to measure, comma-separated "
        "(default: 2, the config default, and all CPUs but one)",
    )
    parser.add_argument(
        "--decode-workers",
        type=int,
        default=max(1, (os.cpu_count() or 1) - 1),
        help="workers decoding the images once for data.pipeline=device (default: CPUs - 1)",
    )
    parser.add_argument(
        "--steps", type=int, help="timed steps per measurement (default 30 on CUDA, 3 on the CPU)"
    )
    parser.add_argument(
        "--warmup", type=int, help="untimed batches first (default 5 on CUDA, 1 on the CPU)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="stop a measurement early after this long (default 20)",
    )
    parser.add_argument(
        "--gpu-decode", action="store_true", help="also measure nvJPEG decoding (CUDA)"
    )
    add_data_dir_argument(parser)
    args = fill_device_defaults(
        parser.parse_args(argv),
        backbone=("resnet50", "mobilenetv2_100"),
        batch=(128, 32),
        image_size=(224, 64),
        steps=(30, 3),
        warmup=(5, 1),
    )
    args.workers = args.workers or ",".join(sorted({"2", str(max(1, (os.cpu_count() or 2) - 1))}))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    per_class = max(args.samples_per_class, args.images // args.classes)
    root = args.data_dir / f"{args.classes}x{per_class}"
    split_file = write_image_folder(root, args.classes, per_class, 2, 5)
    write_seconds = time.perf_counter() - started

    def config(workers: int) -> ExperimentConfig:
        return from_flat(
            {
                "data.name": "folder",
                "data.root": str(root),
                "data.split_file": str(split_file),
                "data.val_fraction": 0.0,
                "data.image_size": args.image_size,
                "data.classes_per_batch": args.batch // args.samples_per_class,
                "data.samples_per_class": args.samples_per_class,
                "data.num_workers": workers,
                "model.backbone": args.backbone,
                "model.pretrained": "none",
                "model.backbone_mode": "finetune",
                "train.device": device.type,
                "train.steps_per_epoch": 10**6,
            }
        )

    cfg = config(0)
    started = time.perf_counter()
    splits = build_splits(cfg.data)
    scan_seconds = time.perf_counter() - started
    model, forward = build_model(cfg, device)
    step_cfg = step_config("bare", cfg)
    criterion = make_criterion("bare", step_cfg, device)
    optimizer = build_optimizer(step_cfg, model, criterion)
    batch_size = args.batch

    def run_steps(batches: TrainBatches) -> None:
        train_epoch(forward, criterion, optimizer, batches, step_cfg, device)

    def measure(name: str, workers: int | None, make_batches) -> dict[str, Any]:
        """Steady-state img/s of the step fed by `make_batches()`, and of the feed alone.

        Each timing starts after the loader's prefetch queue (two batches per worker) has been
        used up, so it counts batches as fast as they are made, not a backlog made earlier.
        """
        batches = make_batches()
        backlog = 2 * (workers or 0)
        run_steps(itertools.islice(batches, args.warmup + backlog))
        counter = [0]
        seconds, _ = time_device(
            device, lambda: run_steps(for_seconds(batches, args.steps, args.seconds, counter))
        )
        row = {
            "input": name,
            "workers": workers,
            "steps": counter[0],
            "img_per_s": rounded(counter[0] * batch_size / seconds),
        }
        if workers is not None:
            for _ in itertools.islice(batches, backlog):
                pass
            loaded = [0]
            begun = time.perf_counter()
            for _ in for_seconds(batches, args.steps, args.seconds / 2, loaded):
                pass
            synchronize(device)
            row["decode_only_img_per_s"] = rounded(
                loaded[0] * batch_size / (time.perf_counter() - begun)
            )
        print(f"  {name} ({workers} workers): {row['img_per_s']} img/s", flush=True)
        return row

    batch = random_batch(cfg, device)
    rows = [measure("random tensors", None, lambda: itertools.repeat(batch))]
    for workers in [int(value) for value in args.workers.split(",")]:
        inputs = finetune_inputs(config(workers), splits, device)
        rows.append(
            measure("JPEG files (trainer)", workers, functools.partial(inputs.train_batches, 1))
        )
        del inputs  # its DataLoader's workers end with it
        release(device)
    started = time.perf_counter()
    inputs = on_device_inputs(config(args.decode_workers), splits, device)
    decode_seconds = time.perf_counter() - started
    row = measure("decoded once, on the device", None, functools.partial(inputs.train_batches, 1))
    rows.append({**row, "setup_s": rounded(decode_seconds)})
    del inputs
    release(device)
    if args.gpu_decode and device.type == "cuda":
        workers = min(4, os.cpu_count() or 1)
        rows.append(
            measure(
                "JPEG files, nvJPEG (prototype)",
                workers,
                lambda: gpu_decoded_batches(cfg, splits.train, device, workers),
            )
        )
    reference = rows[0]["img_per_s"]
    for row in rows:
        row["ratio"] = rounded(row["img_per_s"] / reference)
    print_table(
        f"training step fed by each input, {args.backbone}, batch {batch_size}, "
        f"{args.image_size} px, {device.type}",
        rows,
        ["input", "workers", "steps", "img_per_s", "ratio", "decode_only_img_per_s", "setup_s"],
    )
    emit(
        {
            "bench": "input_pipeline",
            "environment": environment(device),
            "backbone": args.backbone,
            "batch": batch_size,
            "image_size": args.image_size,
            "train_images": len(splits.train),
            "write_images_s": rounded(write_seconds),
            "build_splits_s": rounded(scan_seconds),
            "rows": rows,
        },
        args.json_out,
    )


if __name__ == "__main__":
    main()
