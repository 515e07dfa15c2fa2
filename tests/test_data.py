"""The data package: loaders on tiny trees in each benchmark's real format, the common split
steps, the bad-image scan, the sampler, the transforms and the Wesnoth preparation."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from gapan.config import DATASETS, DataConfig
from gapan.data import (
    BadImageError,
    DataError,
    Splits,
    benchmarks,
    build_splits,
    families,
    find_bad_images,
    read_image,
    select_classes,
    wesnoth,
)
from gapan.data.imageset import make_imageset
from gapan.data.sampler import MPerClassBatchSampler
from gapan.data.transforms import eval_transform, train_transform

pytestmark = pytest.mark.usefixtures("private_caches")


def write_image(path: Path, seed: int, size: tuple[int, int] = (8, 8)) -> Path:
    """A small image whose pixels depend on `seed`; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(
        path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    )
    return path


def config(name: str, root: Path | str = "", **changes) -> DataConfig:
    small = {"classes_per_batch": 2, "samples_per_class": 2, "val_fraction": 0.4}
    return dataclasses.replace(DataConfig(name=name, root=str(root)), **{**small, **changes})


# ----------------------------------------------------------------------------- synthetic benchmarks
# Each tree: 5 seen classes and 3 unseen classes with 3 images each (In-Shop: its own shape).


def make_cub(parent: Path) -> Path:
    folder = parent / "CUB_200_2011"
    class_ids = [1, 2, 3, 4, 5, 101, 102, 103]
    images, labels = [], []
    for class_id in class_ids:
        for k in range(3):
            relative = f"{class_id:03d}.Bird_{class_id}/Bird_{class_id}_{k}.jpg"
            write_image(folder / "images" / relative, class_id * 10 + k)
            images.append(relative)
            labels.append(class_id)
    (folder / "images.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(images)))
    (folder / "image_class_labels.txt").write_text(
        "".join(f"{i + 1} {c}\n" for i, c in enumerate(labels))
    )
    (folder / "classes.txt").write_text("".join(f"{c} {c:03d}.Bird_{c}\n" for c in class_ids))
    return folder


def make_cars(parent: Path, class_names: bool = True) -> Path:
    folder = parent / "cars196"
    class_ids = [1, 2, 3, 4, 5, 99, 100, 101]
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annotations = np.zeros((1, len(class_ids) * 3), dtype=[(field, "O") for field in fields])
    for index in range(len(class_ids) * 3):
        class_id = class_ids[index // 3]
        relative = f"car_ims/{index + 1:06d}.jpg"
        write_image(folder / relative, index)
        annotations[0, index] = (relative, 1, 1, 7, 7, np.uint8(class_id), np.uint8(index % 2))
    names = np.empty((1, 196), dtype=object)
    names[0, :] = [f"Car model {c}" for c in range(1, 197)]
    content = {"annotations": annotations, **({"class_names": names} if class_names else {})}
    scipy.io.savemat(folder / "cars_annos.mat", content)
    return folder


def make_sop(parent: Path) -> Path:
    folder = parent / "Stanford_Online_Products"
    rows = {"Ebay_train.txt": [1, 2, 3, 4, 5], "Ebay_test.txt": [11319, 11320, 11321]}
    image_id = 1
    for file, class_ids in rows.items():
        lines = ["image_id class_id super_class_id path"]
        for class_id in class_ids:
            for k in range(3):
                relative = f"bicycle_final/{class_id}_{k}.JPG"
                write_image(folder / relative, image_id)
                lines.append(f"{image_id} {class_id} 1 {relative}")
                image_id += 1
        (folder / file).write_text("\n".join(lines) + "\n")
    return folder


def make_inshop(parent: Path) -> Path:
    folder = parent / "Inshop_Clothes"
    rows = []
    for item in range(1, 6):  # seen items
        rows += [
            (f"img/WOMEN/Dresses/id_{item:08d}/0{k}_1_front.jpg", f"id_{item:08d}", "train")
            for k in range(3)
        ]
    # Unseen items: queries and gallery images of the same items; item 9 is only in the gallery.
    for item in (7, 8, 6):
        rows += [
            (f"img/MEN/Tees/id_{item:08d}/01_1_front.jpg", f"id_{item:08d}", "query"),
            (f"img/MEN/Tees/id_{item:08d}/02_2_side.jpg", f"id_{item:08d}", "gallery"),
            (f"img/MEN/Tees/id_{item:08d}/03_4_full.jpg", f"id_{item:08d}", "gallery"),
        ]
    rows.append(("img/MEN/Tees/id_00000009/01_1_front.jpg", "id_00000009", "gallery"))
    for index, (name, _, _) in enumerate(rows):
        write_image(folder / "Img" / name, index)
    lines = [str(len(rows)), "image_name item_id evaluation_status"] + [
        " ".join(row) for row in rows
    ]
    (folder / "Eval").mkdir()
    (folder / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return folder


def make_folder(parent: Path, split: bool = True) -> Path:
    folder = parent / "my_set"
    names = ["cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay"]
    for index, name in enumerate(names):
        for k in range(3):
            write_image(folder / name / f"{k}.png", index * 10 + k)
    if split:
        spec = {"train": ["jay", "cat", "eel", "gnu", "hen"], "test": ["fox", "dog", "ibis"]}
        (parent / "split.json").write_text(json.dumps(spec))
    return folder


MAKERS = {
    "cub": make_cub,
    "cars": make_cars,
    "sop": make_sop,
    "inshop": make_inshop,
    "folder": make_folder,
}
RECALL_KS = {
    "cub": (1, 2, 4, 8),
    "cars": (1, 2, 4, 8),
    "sop": (1, 10, 100, 1000),
    "inshop": (1, 10, 20, 30, 40),
    "folder": (1, 2, 4, 8),
}


def build(name: str, root: Path, **changes) -> Splits:
    if name == "folder" and "split_file" not in changes and (root.parent / "split.json").exists():
        changes["split_file"] = str(root.parent / "split.json")
    return build_splits(config(name, root, **changes))


def class_sets(splits: Splits) -> list[set[str]]:
    return [set(part.class_names) for part in (splits.train, splits.val, splits.test)]


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("give_parent", [False, True])
def test_loader_splits_are_class_disjoint_and_labelled(
    name: str, give_parent: bool, tmp_path: Path
) -> None:
    folder = MAKERS[name](tmp_path)
    splits = build(name, tmp_path if give_parent and name != "folder" else folder)

    train, val, test = class_sets(splits)
    assert not (train & val) and not (train & test) and not (val & test)
    # 5 seen classes, val_fraction 0.4: the last ceil(2.0) = 2 seen classes are validation.
    assert (splits.train.num_classes, splits.val.num_classes) == (3, 2)
    if name != "folder":
        source = DATASETS.get(name)(config(name, folder))
        assert splits.train.class_names + splits.val.class_names == source.seen.class_names
    for part in (splits.train, splits.val, splits.test, splits.test_gallery):
        if part is not None:
            assert all(path.is_file() for path in part.paths)
            assert set(part.labels.tolist()) <= set(range(part.num_classes))
    for part in (splits.train, splits.val, splits.test_gallery or splits.test):
        assert sorted(set(part.labels.tolist())) == list(range(part.num_classes))
    assert torch.bincount(splits.train.labels).tolist() == [3, 3, 3]
    assert len(splits.train) == 9 and len(splits.val) == 6
    assert splits.recall_ks == RECALL_KS[name]
    assert splits.name == name


def test_standard_class_ranges(tmp_path: Path) -> None:
    cub = build("cub", make_cub(tmp_path / "a"))
    assert set(cub.test.class_names) == {"101.Bird_101", "102.Bird_102", "103.Bird_103"}
    cars = build("cars", make_cars(tmp_path / "b"))
    assert set(cars.test.class_names) == {"Car model 99", "Car model 100", "Car model 101"}
    # Without class_names in the .mat the class ids name the classes.
    cars_ids = build("cars", make_cars(tmp_path / "c", class_names=False))
    assert cars_ids.test.class_names == ("99", "100", "101")
    sop = build("sop", make_sop(tmp_path / "d"))
    assert sop.test.class_names == ("11319", "11320", "11321")
    assert len(sop.test) == 9


def test_inshop_query_and_gallery_share_labels(tmp_path: Path) -> None:
    splits = build("inshop", make_inshop(tmp_path))
    assert splits.test_gallery is not None
    assert splits.test.class_names == splits.test_gallery.class_names
    assert splits.test.class_names == ("id_00000006", "id_00000007", "id_00000008", "id_00000009")
    for part in (splits.test, splits.test_gallery):
        for path, label in zip(part.paths, part.labels.tolist(), strict=True):
            assert path.parent.name == part.class_names[label]
    assert (len(splits.test), len(splits.test_gallery)) == (3, 7)
    assert not set(splits.train.class_names) & set(splits.test.class_names)


def test_folder_without_split_file_halves_sorted_classes(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, split=False)
    (folder / "zebra").mkdir()  # a folder without images is no class
    source = benchmarks.load_folder(config("folder", folder))
    assert source.seen.class_names == ("cat", "dog", "eel", "fox")
    assert source.unseen.class_names == ("gnu", "hen", "ibis", "jay")


def test_max_classes_slices_every_split(tmp_path: Path) -> None:
    splits = build("folder", make_folder(tmp_path), max_classes=2, val_fraction=0.4)
    assert (splits.train.num_classes, splits.val.num_classes, splits.test.num_classes) == (2, 2, 2)
    assert splits.train.class_names == ("jay", "cat")
    assert splits.test.class_names == ("fox", "dog")


def test_zero_val_fraction_gives_empty_validation(tmp_path: Path) -> None:
    splits = build("folder", make_folder(tmp_path), val_fraction=0.0)
    assert splits.train.num_classes == 5
    assert len(splits.val) == 0 and splits.val.num_classes == 0


def test_one_validation_class_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="val_fraction"):
        build("folder", make_folder(tmp_path), val_fraction=0.1)


def test_too_few_images_names_the_class(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    (folder / "cat" / "2.png").unlink()
    with pytest.raises(DataError, match=r"cat \(2\).*data\.samples_per_class"):
        build("folder", folder, samples_per_class=3)


def test_too_few_classes_for_a_batch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.classes_per_batch=4"):
        build("folder", make_folder(tmp_path), classes_per_batch=4)


# ----------------------------------------------------------------------------- errors name the path


def test_missing_root_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for name in MAKERS:
        with pytest.raises(DataError, match=str(missing)):
            build_splits(config(name, missing))


def test_empty_root_for_a_benchmark_says_what_to_set() -> None:
    with pytest.raises(DataError, match="data.root is empty"):
        build_splits(config("cub"))


def test_wrong_layout_names_the_expected_file(tmp_path: Path) -> None:
    (tmp_path / "something_else").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'images.txt'}.*CUB_200_2011"):
        build("cub", tmp_path)
    with pytest.raises(DataError, match=f"{tmp_path / 'Eval/list_eval_partition.txt'}"):
        build("inshop", tmp_path)


def test_missing_index_file_is_named(tmp_path: Path) -> None:
    folder = make_cub(tmp_path)
    (folder / "image_class_labels.txt").unlink()
    with pytest.raises(DataError, match=str(folder / "image_class_labels.txt")):
        build("cub", folder)
    sop = make_sop(tmp_path / "sop")
    (sop / "Ebay_test.txt").unlink()
    with pytest.raises(DataError, match=str(sop / "Ebay_test.txt")):
        build("sop", sop)


def test_missing_image_folder_is_named(tmp_path: Path) -> None:
    folder = make_cars(tmp_path)
    shutil.rmtree(folder / "car_ims")
    with pytest.raises(DataError, match=str(folder / "car_ims")):
        build("cars", folder)


def test_malformed_rows_and_files_are_named(tmp_path: Path) -> None:
    folder = make_sop(tmp_path)
    with (folder / "Ebay_train.txt").open("a") as file:
        file.write("99 7\n")
    with pytest.raises(DataError, match=r"Ebay_train.txt line 17"):
        build("sop", folder)
    cars = make_cars(tmp_path / "cars")
    (cars / "cars_annos.mat").write_text("not a MAT file")
    with pytest.raises(DataError, match=str(cars / "cars_annos.mat")):
        build("cars", cars)
    scipy.io.savemat(cars / "cars_annos.mat", {"something": np.zeros(3)})
    with pytest.raises(DataError, match="annotations"):
        build("cars", cars)
    inshop = make_inshop(tmp_path / "inshop")
    partition = inshop / "Eval" / "list_eval_partition.txt"
    partition.write_text(partition.read_text().replace("gallery", "galery", 1))
    with pytest.raises(DataError, match="evaluation_status"):
        build("inshop", inshop)


def test_split_file_errors(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["cat", "dog"], "test": ["dog"]}))
    with pytest.raises(DataError, match="both train and test"):
        build("folder", folder)
    split.write_text(json.dumps({"train": ["cat", "owl"], "test": ["dog"]}))
    with pytest.raises(DataError, match=str(folder / "owl")):
        build("folder", folder)
    split.write_text("{train: oops")
    with pytest.raises(DataError, match=str(split)):
        build("folder", folder)
    with pytest.raises(DataError, match=str(tmp_path / "absent.json")):
        build("folder", folder, split_file=str(tmp_path / "absent.json"))


# ----------------------------------------------------------------------------- bad images


def break_images(folder: Path) -> tuple[Path, Path, Path]:
    corrupt = folder / "cat" / "0.png"
    corrupt.write_bytes(b"this is no image")
    truncated = folder / "fox" / "1.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    empty = folder / "hen" / "2.png"
    empty.write_bytes(b"")
    return corrupt, truncated, empty


def test_bad_images_fail_with_their_paths(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    broken = break_images(folder)
    with pytest.raises(BadImageError) as error:
        build("folder", folder)
    for path in broken:
        assert str(path) in str(error.value)
    assert "data.bad_images=skip" in str(error.value)


def test_bad_images_skip_with_one_warning(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    broken = break_images(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = build("folder", folder, bad_images="skip")
    assert len(caught) == 1 and all(str(path) in str(caught[0].message) for path in broken)
    kept = {path for part in (splits.train, splits.val, splits.test) for path in part.paths}
    assert not kept & set(broken)
    assert len(kept) == 24 - 3
    for part in (splits.train, splits.val, splits.test):
        for path in part.paths:
            assert read_image(path).shape == (3, 8, 8)


def test_truncated_jpeg_is_found(tmp_path: Path) -> None:
    image = write_image(tmp_path / "a.jpg", 0, size=(32, 32))
    good = write_image(tmp_path / "b.jpg", 1, size=(32, 32))
    image.write_bytes(image.read_bytes()[:-200])
    assert find_bad_images([image, good]) == {image: "truncated JPEG (no end-of-image marker)"}


def test_scan_results_are_remembered(tmp_path: Path) -> None:
    first, second = write_image(tmp_path / "a.png", 0), write_image(tmp_path / "b.png", 1)
    assert find_bad_images([first, second]) == {}
    records = list((Path(os.environ["GAPAN_CACHE"]) / "image-checks").glob("*.json"))
    assert len(records) == 1
    # Edit the record (keeping the file's size and time): the next scan must answer from it.
    record = json.loads(records[0].read_text())
    record[str(first)][2] = "remembered"
    records[0].write_text(json.dumps(record))
    assert find_bad_images([first, second]) == {first: "remembered"}
    # A changed file is checked again.
    write_image(first, 2, size=(9, 9))
    assert find_bad_images([first, second]) == {}


def test_select_classes_relabels_in_the_given_order(tmp_path: Path) -> None:
    items = [(tmp_path / f"{name}{k}.png", name) for name in "abc" for k in range(2)]
    images = make_imageset(items, ["a", "b", "c"])
    chosen = select_classes(images, ["c", "a"])
    assert chosen.class_names == ("c", "a")
    assert chosen.labels.tolist() == [1, 1, 0, 0]
    assert [path.name for path in chosen.paths] == ["a0.png", "a1.png", "c0.png", "c1.png"]


# ----------------------------------------------------------------------------- sampler


def test_sampler_batch_structure() -> None:
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 1 + [3] * 6 + [4] * 4)
    sampler = MPerClassBatchSampler(
        labels, classes_per_batch=3, samples_per_class=4, num_batches=20, seed=1
    )
    batches = list(sampler)
    assert len(batches) == len(sampler) == 20
    appearances = torch.zeros(5, dtype=torch.long)
    for batch in batches:
        assert len(batch) == 12
        batch_labels = labels[batch].tolist()
        classes = sorted(set(batch_labels))
        assert len(classes) == 3
        for label in classes:
            members = [
                index for index, value in zip(batch, batch_labels, strict=True) if value == label
            ]
            assert len(members) == 4
            if label != 2:  # enough images: drawn without replacement
                assert len(set(members)) == 4
        appearances[classes] += 1
    # Classes are visited in a cycle: 60 class slots over 5 classes, 12 each (up to the wrap).
    assert appearances.max() - appearances.min() <= 2


def test_sampler_is_deterministic_and_reshuffles_per_epoch() -> None:
    labels = list(range(10)) * 3
    first = MPerClassBatchSampler(labels, 4, 2, num_batches=5, seed=7)
    second = MPerClassBatchSampler(labels, 4, 2, num_batches=5, seed=7)
    assert list(first) == list(second)
    assert list(first) == list(first)  # iterating again repeats the epoch
    epoch_zero = list(first)
    first.set_epoch(1)
    assert list(first) != epoch_zero
    assert list(MPerClassBatchSampler(labels, 4, 2, num_batches=5, seed=8)) != epoch_zero


def test_sampler_feeds_a_dataloader() -> None:
    labels = torch.arange(6).repeat_interleave(3)
    dataset = torch.utils.data.TensorDataset(torch.arange(18), labels)
    sampler = MPerClassBatchSampler(labels, 3, 2, num_batches=4, seed=0)
    batches = list(torch.utils.data.DataLoader(dataset, batch_sampler=sampler))
    assert len(batches) == 4
    assert all(batch[1].shape == (6,) and batch[1].unique().numel() == 3 for batch in batches)


def test_sampler_rejects_too_many_classes() -> None:
    with pytest.raises(ValueError, match="exceeds the 2 classes"):
        MPerClassBatchSampler([0, 0, 1, 1], 3, 2, num_batches=1)


# ----------------------------------------------------------------------------- transforms


def test_eval_transform_resizes_shorter_side_and_centre_crops() -> None:
    image = torch.zeros(3, 20, 40, dtype=torch.uint8)
    image[:, :, 6:34] = 255  # only the edges are black; a centre crop never reaches them
    out = eval_transform(10)(image)
    assert out.shape == (3, 10, 10) and out.dtype == torch.float32
    assert torch.allclose(out, torch.ones_like(out))  # the crop holds only the white centre
    assert eval_transform(16)(torch.full((3, 30, 20), 51, dtype=torch.uint8)).allclose(
        torch.tensor(0.2)
    )


def test_train_transform_shape_range_and_randomness() -> None:
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    transform = train_transform(24)
    torch.manual_seed(0)
    first = transform(image)
    second = transform(image)
    assert first.shape == (3, 24, 24) and first.dtype == torch.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert not torch.equal(first, second)
    torch.manual_seed(0)
    assert torch.equal(transform(image), first)


# ----------------------------------------------------------------------------- Wesnoth: parsing


def test_expand_brackets_ranges_and_lists() -> None:
    assert wesnoth.expand_brackets("units/a.png") == ["units/a.png"]
    assert wesnoth.expand_brackets("units/a-[3~1].png") == [
        "units/a-3.png",
        "units/a-2.png",
        "units/a-1.png",
    ]
    assert wesnoth.expand_brackets("units/a[1~2,5].png") == [
        "units/a1.png",
        "units/a2.png",
        "units/a5.png",
    ]
    assert wesnoth.expand_brackets("units/a-[08~10].png") == [
        "units/a-08.png",
        "units/a-09.png",
        "units/a-10.png",
    ]


def test_expand_macros_and_image_functions() -> None:
    text = """#define PATH_TEMP
units/x/#enddef
#define GRAPHICS BASE
    image="units/y/{BASE}.png"
#enddef
# image="units/commented-out.png"
image="{PATH_TEMP}a.png~RC(magenta>red)~BLIT(units/x/overlay.png,1,2):100"
{GRAPHICS zombie-rat}
{GLOBAL_MACRO "units/z/arg.png"}
"""
    expanded = wesnoth.strip_image_functions(wesnoth.expand_macros(text))
    assert 'image="units/x/a.png:100"' in expanded
    assert 'image="units/y/zombie-rat.png"' in expanded
    assert "commented-out" not in expanded and "overlay" not in expanded
    assert '{GLOBAL_MACRO "units/z/arg.png"}' in expanded


FAKE_CONFIGS = {
    "drakes/Burner.cfg": """#textdomain wesnoth-units
[unit_type]
    id=Drake Burner
    image="units/drakes/burner.png"
    {DEFENSE_ANIM "units/drakes/burner-defend-2.png" "units/drakes/burner-defend-1.png" {SOUND} }
    {DRAKE_FLY_ANIM burner}
    [attack_anim]
        [missile_frame]
            image="units/drakes/burner-fireball.png"
        [/missile_frame]
        [frame]
            image="units/drakes/burner-melee-[1~3].png:100,units/drakes/fighter.png:50"
        [/frame]
    [/attack_anim]
[/unit_type]
""",
    "drakes/Fighter.cfg": """[unit_type]
    id=Drake Fighter
    image="units/drakes/fighter.png"
    [variation]
        variation_id=old
        image="units/drakes/fighter-old.png"
    [/variation]
[/unit_type]
""",
}
FAKE_IMAGES = [
    "units/drakes/burner.png",
    "units/drakes/burner-defend-1.png",
    "units/drakes/burner-defend-2.png",
    "units/drakes/burner-melee-1.png",
    "units/drakes/burner-melee-2.png",
    "units/drakes/burner-melee-3.png",
    "units/drakes/burner-fly-1.png",
    "units/drakes/burner-fly-2-upstroke.png",  # only in global macros
    "units/drakes/burner-fireball.png",  # a projectile
    "units/drakes/fighter.png",
    "units/drakes/fighter-old.png",
    "units/drakes/fighter-takeoff-1.png",
    "units/drakes/glider.png",  # named by no unit, and no unit's image is a prefix of it
]


def test_assign_images_follows_references_then_name_prefixes() -> None:
    assigned = wesnoth.assign_images(FAKE_CONFIGS, FAKE_IMAGES)
    assert assigned == {
        # fighter.png is named by the Burner's attack first (file order), so the Burner keeps it.
        "Drake Burner": sorted(
            [
                "units/drakes/burner.png",
                "units/drakes/burner-defend-1.png",
                "units/drakes/burner-defend-2.png",
                "units/drakes/burner-melee-1.png",
                "units/drakes/burner-melee-2.png",
                "units/drakes/burner-melee-3.png",
                "units/drakes/burner-fly-1.png",
                "units/drakes/burner-fly-2-upstroke.png",
                "units/drakes/fighter.png",
                "units/drakes/fighter-takeoff-1.png",
            ]
        ),
        "Drake Fighter": ["units/drakes/fighter-old.png"],
    }


def test_unit_relations_follow_advancements_bases_and_shared_sprites() -> None:
    configs = {
        "a.cfg": "[unit_type]\n    id=Squire # a comment\n    advances_to=Knight,Lancer\n"
        '    image="units/squire.png"\n[/unit_type]\n'
        '[unit_type]\n    id=Knight\n    advances_to=null\n    image="units/knight.png"\n'
        "[/unit_type]\n",
        "b.cfg": "[unit_type]\n    id=Dark Knight\n    [base_unit]\n        id=Knight\n"
        '    [/base_unit]\n    image="units/dark.png"\n[/unit_type]\n'
        '[unit_type]\n    id=Zombie\n    image="units/zombie.png"\n'
        '    [variation]\n        image="units/knight.png"\n    [/variation]\n[/unit_type]\n',
    }
    images = ["units/squire.png", "units/knight.png", "units/dark.png", "units/zombie.png"]
    relations = {frozenset(pair) for pair in wesnoth.unit_relations(configs, images)}
    assert relations == {
        frozenset({"Squire", "Knight"}),
        frozenset({"Squire", "Lancer"}),
        frozenset({"Dark Knight", "Knight"}),
        frozenset({"Knight", "Zombie"}),
    }


def brute_force_pairs(points: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    distances = np.abs(points[:, None, :] - points[None, :, :]).mean(axis=2)
    return [
        (i, j)
        for i in range(len(points))
        for j in range(i + 1, len(points))
        if distances[i, j] < threshold
    ]


@pytest.mark.parametrize("side", [16, 6])
def test_near_pairs_equal_brute_force(side: int) -> None:
    rng = np.random.default_rng(side)
    base = rng.random((40, side * side * 3), dtype=np.float32)
    # Near-copies at several distances around the threshold, and far images.
    noise = rng.choice([-1.0, 1.0], base.shape).astype(np.float32)
    near = np.clip(base + noise * rng.choice([0.005, 0.015, 0.025, 0.3], (40, 1)), 0, 1)
    points = np.concatenate([base, near])
    found = families.near_pairs(points, 0.02)
    assert [(i, j) for i, j, _ in found] == brute_force_pairs(points, 0.02)
    assert len(found) >= 10
    for i, j, distance in found:
        assert distance == pytest.approx(np.abs(points[i] - points[j]).mean(), abs=1e-6)


def test_drop_near_copies_keeps_the_first_of_each_group() -> None:
    labels = ["a", "a", "a", "b", "b"]
    # 1 copies 0; 2 copies 1 only (1 is dropped, so 2 stays); 3 copies 0 across classes.
    pairs = [(0, 1, 0.001), (1, 2, 0.005), (0, 3, 0.0), (2, 4, 0.015)]
    assert families.drop_near_copies(len(labels), pairs, 0.01) == [0, 2, 4]


def test_split_families_keeps_every_family_on_one_side() -> None:
    family_of = {f"unit{index}": f"unit{index - index % 3}" for index in range(30)}
    seen, unseen = families.split_families(family_of)
    assert sorted(seen + unseen) == sorted(family_of)
    assert len(unseen) >= 15 and len(seen) >= 12
    assert not {family_of[name] for name in seen} & {family_of[name] for name in unseen}
    reordered = dict(reversed(list(family_of.items())))
    assert families.split_families(reordered) == (seen, unseen)


def test_validation_is_cut_at_a_family_boundary() -> None:
    names = ["a1", "a2", "a3", "b1", "b2", "c1", "d1", "d2", "d3"]
    family_of = {name: name[0] for name in names}
    # 2 wanted: the boundary before d (3 classes) and the one before c1 (4) are nearest.
    assert families.validation_cut(names, family_of, 2) == 6
    assert families.validation_cut(names, family_of, 4) == 5
    assert families.validation_cut(names, {}, 2) == 7
    assert families.validation_cut(names, family_of, 0) == 9
    # A last family of one class is never the whole validation split: retrieval needs two.
    single = ["a1", "a2", "b1", "b2", "c1"]
    assert families.validation_cut(single, {name: name[0] for name in single}, 1) == 2


# ----------------------------------------------------------------------------- Wesnoth: preparing


def write_package(directory: Path, configs: dict[str, str], sprites: dict[str, np.ndarray]) -> Path:
    """A .deb laid out like wesnoth-1.16-data, with these unit .cfg texts and RGBA sprites."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    tree = directory / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: wesnoth-1.16-data\nVersion: 1:1.16.0-test\nArchitecture: all\n"
        "Maintainer: Test <test@example.org>\nDescription: test package\n"
    )
    for name, text in configs.items():
        (tree / wesnoth.UNIT_CONFIGS / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / wesnoth.UNIT_CONFIGS / name).write_text(text)
    for name, pixels in sprites.items():
        (tree / wesnoth.UNIT_IMAGES / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "RGBA").save(tree / wesnoth.UNIT_IMAGES / name)
    deb = directory / "wesnoth-1.16-data_1%3a1.16.0-test_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def unit_config(unit: str, images: list[str], advances_to: str = "null") -> str:
    frames = "".join(f'    [frame]\n        image="{image}"\n    [/frame]\n' for image in images)
    return f"[unit_type]\n    id={unit}\n    advances_to={advances_to}\n{frames}[/unit_type]\n"


def sprite(red: int, green: int, blue: int = 255) -> np.ndarray:
    """A 16x16 sprite of one colour with one transparent pixel, which must come out white."""
    pixels = np.full((16, 16, 4), 255, dtype=np.uint8)
    pixels[..., :3] = (red, green, blue)
    pixels[0, 0, 3] = 0
    return pixels


def fake_package(directory: Path, units: int = 8, frames: int = 10) -> Path:
    """A tiny package: `units` unrelated units with `frames` distinct sprites each."""
    configs, sprites = {}, {}
    for unit in range(units):
        names = [f"units/monsters/beast{unit}-{frame}.png" for frame in range(frames)]
        configs[f"monsters/Beast{unit}.cfg"] = unit_config(f"Beast {unit}", names)
        sprites |= {name: sprite(unit * 20, frame * 20) for frame, name in enumerate(names)}
    return write_package(directory, configs, sprites)


def related_units_package(directory: Path) -> Path:
    """Units that a hash split would scatter: an advancement chain (Squire -> Knight ->
    Paladin), a recolour (Ghast is Ghoul a shade greener), two sprites shared pixel for pixel
    under two names (Zombie and Bat), near-copy frames in every class, and unrelated fillers."""
    colours = ["Squire", "Knight", "Paladin", "Ghoul", "Bat", "Zombie"]
    colours += [f"Beast{index}" for index in range(6)]
    configs, sprites = {}, {}
    for number, unit in enumerate(colours):
        frames = {
            f"units/{unit}-{frame}.png": sprite(number * 20, frame * 20) for frame in range(10)
        }
        for copy in range(2):  # frames four pixels apart from frame `copy`
            pixels = sprite(number * 20, copy * 20)
            pixels[5, 5 + copy : 9 + copy, 1] ^= 255
            frames[f"units/{unit}-copy-{copy}.png"] = pixels
        sprites |= frames
        advances = {"Squire": "Knight", "Knight": "Paladin"}.get(unit, "null")
        configs[f"{unit}.cfg"] = unit_config(unit, list(frames), advances)
    ghast = {
        name.replace("Ghoul", "Ghast"): np.dstack(
            [pixels[..., :1], pixels[..., 1:2] + 11, pixels[..., 2:]]
        )
        for name, pixels in sprites.items()
        if name.startswith("units/Ghoul")
    }
    sprites |= ghast
    configs["Ghast.cfg"] = unit_config("Ghast", list(ghast))
    shared = {
        f"units/Zombie-bat-{index}.png": sprites[f"units/Bat-{index}.png"] for index in range(2)
    }
    sprites |= shared
    configs["Zombie.cfg"] = unit_config(
        "Zombie", [name for name in sprites if name.startswith("units/Zombie-")]
    )
    return write_package(directory, configs, sprites)


def test_prepared_splits_keep_families_together_and_drop_near_copies(tmp_path: Path) -> None:
    root = wesnoth.prepare(tmp_path / "cache", deb=related_units_package(tmp_path / "package"))
    manifest = wesnoth.read_manifest(root)
    classes = manifest["classes"]
    assert len(classes) == 13 and all(len(files) == 10 for files in classes.values())
    assert not any(
        "copy" in file or "Zombie-bat" in file for files in classes.values() for file in files
    )
    assert manifest["counts"]["near-copies of a sprite of the same class, removed"] == 26
    assert manifest["counts"]["near-copies of a sprite of another class, removed"] == 2

    family = {name: family for family, names in manifest["families"].items() for name in names}
    assert family["squire"] == family["knight"] == family["paladin"]
    assert family["ghoul"] == family["ghast"] != family["squire"]
    assert family["bat"] == family["zombie"]
    assert len(manifest["families"]) == 13 - 2 - 1 - 1

    splits = build_splits(config("wesnoth", root, val_fraction=0.3))
    sides = [splits.train.class_names, splits.val.class_names, splits.test.class_names]
    assert sorted(name for side in sides for name in side) == sorted(classes)
    families_by_side = [{family[name] for name in side} for side in sides]
    for first in range(3):
        for second in range(first + 1, 3):
            assert not families_by_side[first] & families_by_side[second]
    assert all(families_by_side)

    # The same package prepares to the same split, images and families.
    again = wesnoth.prepare(
        tmp_path / "again", deb=tmp_path / "package" / "wesnoth-1.16-data_1%3a1.16.0-test_all.deb"
    )
    assert wesnoth.read_manifest(again) == manifest
    readme = (root / "README.md").read_text()
    assert "| squire | " in readme or "| knight | " in readme
    assert "near-copies of a sprite of the same class, removed | 26" in readme


def test_an_older_format_is_refused_with_advice(tmp_path: Path) -> None:
    root = wesnoth.prepare(tmp_path / "cache", deb=fake_package(tmp_path, units=4))
    manifest = json.loads((root / "classes.json").read_text())
    (root / "classes.json").write_text(json.dumps({**manifest, "format": 1}))
    with pytest.raises(DataError, match=f"format 1.*delete {root}"):
        build_splits(config("wesnoth", root))


def test_prepare_builds_a_complete_cache_from_a_package(tmp_path: Path) -> None:
    deb = fake_package(tmp_path)
    root = wesnoth.prepare(tmp_path / "cache", deb=deb)
    manifest = json.loads((root / "classes.json").read_text())
    assert manifest["num_classes"] == 8 and manifest["num_images"] == 80
    assert manifest["source"]["version"] == "1:1.16.0-test"
    assert manifest["classes"]["beast_3"][:2] == ["beast3-0.png", "beast3-1.png"]
    image = Image.open(root / "images" / "beast_3" / "beast3-0.png")
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((1, 1)) == (60, 0, 255)
    readme = (root / "README.md").read_text()
    assert "GPL-2+" in readme and "wesnoth-1.16-data" in readme and "1:1.16.0-test" in readme
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []

    # Prepared already: returns at once without rebuilding.
    stamp = (root / "classes.json").stat().st_mtime_ns
    assert wesnoth.prepare(root, deb=tmp_path / "no-such.deb") == root
    assert (root / "classes.json").stat().st_mtime_ns == stamp

    splits = build_splits(config("wesnoth", root, val_fraction=0.5))
    assert splits.train.class_names + splits.val.class_names == tuple(manifest["seen"])
    assert splits.test.class_names == tuple(manifest["unseen"])
    assert (splits.train.num_classes, splits.val.num_classes, len(splits.train)) == (2, 2, 20)
    assert splits.recall_ks == (1, 2, 4, 8)


def test_prepare_uses_the_default_root(tmp_path: Path) -> None:
    deb = fake_package(tmp_path, units=2)
    root = wesnoth.prepare(deb=deb)
    assert root == Path(os.environ["GAPAN_DATA_HOME"]) / "wesnoth-v2" == wesnoth.default_root()
    assert wesnoth.is_prepared(root)


def test_prepare_cleans_abandoned_builds_and_refuses_foreign_folders(tmp_path: Path) -> None:
    deb = fake_package(tmp_path, units=2)
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = tmp_path / f".cache.partial-{dead.pid}-abc"
    (abandoned / "cache" / "images").mkdir(parents=True)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=f"{foreign}.*not a complete Wesnoth cache"):
        wesnoth.prepare(foreign, deb=deb)
    assert (foreign / "notes.txt").exists()
    wesnoth.prepare(tmp_path / "cache", deb=deb)
    assert not abandoned.exists()


def test_prepare_reports_a_bad_package(tmp_path: Path) -> None:
    fake = tmp_path / "fake.deb"
    fake.write_bytes(b"not a package")
    with pytest.raises(DataError, match=str(fake)):
        wesnoth.prepare(tmp_path / "cache", deb=fake)
    assert not (tmp_path / "cache").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["fake.deb"]


def test_load_of_an_unprepared_folder_says_how_to_prepare(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"python -m gapan.data.wesnoth --root {tmp_path}"):
        build_splits(config("wesnoth", tmp_path))


def test_command_line_prints_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deb = fake_package(tmp_path, units=3)
    wesnoth.main(["--root", str(tmp_path / "cache"), "--deb", str(deb)])
    out = capsys.readouterr().out
    assert str(tmp_path / "cache") in out and "3 classes in 3 families, 30 images" in out


@pytest.mark.slow
def test_prepare_the_real_package(tmp_path: Path) -> None:
    """Download wesnoth-1.16-data with apt-get and prepare it (about 20 s)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("needs apt-get and dpkg-deb")
    started = time.perf_counter()
    root = wesnoth.prepare(tmp_path / "wesnoth")
    manifest = wesnoth.read_manifest(root)
    assert 140 <= manifest["num_classes"] <= 200
    assert 3500 <= manifest["num_images"] <= 6000
    assert manifest["source"]["package"] == "wesnoth-1.16-data"
    assert all(
        len(files) >= wesnoth.PREPARATION.min_images for files in manifest["classes"].values()
    )
    assert time.perf_counter() - started < 300
    splits = build_splits(dataclasses.replace(DataConfig(), root=str(root)))
    family = {name: family for family, names in manifest["families"].items() for name in names}
    sides = [splits.train.class_names, splits.val.class_names, splits.test.class_names]
    families_by_side = [{family[name] for name in side} for side in sides]
    assert sum(map(len, families_by_side)) == len(manifest["families"])  # none spans two sides
    assert splits.test.num_classes >= 60 and splits.val.num_classes >= 10
    assert read_image(splits.test.paths[0]).shape[0] == 3


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_changes_when_an_image_is_replaced_in_place(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{k}.png", k) for k in range(3)]
    images = make_imageset([(path, "a") for path in paths], ["a"])
    before = images.fingerprint
    assert images.fingerprint == before  # stable while nothing changes

    write_image(paths[1], 99)  # other pixels under the same name
    later = paths[1].stat().st_mtime_ns + 5 * 10**9
    os.utime(paths[1], ns=(later, later))
    assert images.fingerprint != before


def test_fingerprint_of_a_set_with_a_missing_file(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{k}.png", k) for k in range(2)]
    images = make_imageset([(path, "a") for path in paths], ["a"])
    present = images.fingerprint
    paths[0].unlink()
    missing = images.fingerprint
    assert missing != present and len(missing) == 16
    assert images.fingerprint == missing


# ----------------------------------------------------------------------------- unscored classes


def test_a_test_class_with_one_image_is_named_once_at_the_start(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    for k in (1, 2):
        (folder / "dog" / f"{k}.png").unlink()  # dog is a test class; one image is left
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = build("folder", folder)
    assert "dog" in splits.test.class_names  # kept: the build does not fail
    (warning,) = caught
    message = str(warning.message)
    assert message.startswith("folder: 1 test class with a single image (dog). ")
    assert "Recall@K, MAP@R and R-Precision leave them out" in message


def test_a_query_class_without_gallery_images_is_named(tmp_path: Path) -> None:
    folder = make_inshop(tmp_path)
    partition = folder / "Eval" / "list_eval_partition.txt"
    lines = partition.read_text().splitlines()
    # Leave the first query class of the test split without gallery images.
    splits = build("inshop", folder)
    lonely = splits.test.class_names[0]
    kept = [line for line in lines if not (lonely in line and line.rstrip().endswith("gallery"))]
    partition.write_text("\n".join(kept) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build("inshop", folder)
    (warning,) = caught
    assert f"1 test class with no gallery image ({lonely})" in str(warning.message)


def test_splits_where_every_class_can_be_scored_build_silently(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build("folder", make_folder(tmp_path))
