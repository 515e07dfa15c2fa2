"""Loaders for the standard retrieval benchmarks and for any image-folder tree, from local disk.

Each loader takes the `DataConfig` (``data.root``, for `load_folder` ``data.split_file`` too),
reads the data set's own index files and returns a `Source`: the seen (training) and unseen
(test) classes in the benchmark's standard order, with the standard class-disjoint split.
`gapan.config.DATASETS` names them; `gapan.data.build_splits` then holds out validation classes,
slices and checks the images.

A loader accepts the data set folder itself or its parent holding the folder under its usual name
(``CUB_200_2011``, ``cars196``, ``Stanford_Online_Products``, ``Inshop_Clothes``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from gapan.config import DataConfig
from gapan.data.imageset import DataError, ImageSet, make_imageset

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

CUB_LAYOUT = (
    "CUB_200_2011/ with images.txt (<image id> <relative path>), image_class_labels.txt "
    "(<image id> <class id>), classes.txt (<class id> <name>) and images/<class>/<file>.jpg"
)
CARS_LAYOUT = (
    "cars196/ with cars_annos.mat (struct array `annotations` with fields relative_im_path, "
    "class, test; cell array `class_names`) and car_ims/<file>.jpg"
)
SOP_LAYOUT = (
    "Stanford_Online_Products/ with Ebay_train.txt and Ebay_test.txt (a header line, then "
    "<image_id> <class_id> <super_class_id> <path>) and the <category>_final/ image folders"
)
INSHOP_LAYOUT = (
    "Inshop_Clothes/ with Eval/list_eval_partition.txt (or list_eval_partition.txt: a count line, "
    "a header line, then <image_name> <item_id> <train|query|gallery>) and the images at "
    "Img/<image_name> (or <image_name>)"
)
FOLDER_LAYOUT = "<root>/<class name>/<image files>, one folder per class"


@dataclass(frozen=True)
class Source:
    """A data set as its loader reads it, before the common steps of `gapan.data.build_splits`.

    Attributes:
        seen: The training classes (train and validation), labelled in the standard class order.
        unseen: The test classes; the query set where the benchmark defines a gallery.
        gallery: The benchmark's gallery of the unseen classes, labelled like `unseen`.
        recall_ks: The Recall@K cut-offs this benchmark reports.
        verified: The files were written by this package and are known to decode, so the
            bad-image scan may skip them.
        families: Class name -> family name, where related classes are known: the validation
            classes are then cut from the seen ones at a family boundary. The seen classes are
            listed family by family. Without it every class is its own family.
    """

    seen: ImageSet
    unseen: ImageSet
    gallery: ImageSet | None = None
    recall_ks: tuple[int, ...] = (1, 2, 4, 8)
    verified: bool = False
    families: Mapping[str, str] | None = None


def required_root(cfg: DataConfig) -> Path:
    """``data.root``, which a data set on disk needs."""
    if not cfg.root:
        raise DataError(
            f"data.root is empty: set it to the folder that holds the {cfg.name} data set."
        )
    return Path(cfg.root)


def data_root(root: Path | str, expected: str) -> Path:
    """`root` (data.root) as an absolute path, once it is known to be a folder.

    Args:
        root: The path the user named.
        expected: The folder data.root must name, in words, for the error.

    Raises:
        DataError: `root` is missing, or is a file: naming it, which, and the folder expected.
    """
    root = Path(root).expanduser().absolute()
    if root.is_dir():
        return root
    if root.is_file():
        problem = "is a file, not a folder"
    elif root.exists():
        problem = "is not a folder"
    else:
        problem = "does not exist"
    raise DataError(f"data set folder {root} {problem}. Set data.root to {expected}.")


def find_dataset_dir(
    root: Path, markers: Sequence[str], folder_names: Sequence[str], layout: str
) -> Path:
    """The folder that holds a data set: `root` itself or ``root/<one of folder_names>``.

    Args:
        root: The folder the user named.
        markers: Relative paths of which at least one exists in the data set folder.
        folder_names: The usual names of the data set folder, tried under `root`.
        layout: The expected layout, quoted in the error.

    Raises:
        DataError: naming the folder and the file expected there.
    """
    root = data_root(root, f"a folder laid out as {layout}")
    for candidate in (root, *(root / name for name in folder_names)):
        if any((candidate / marker).is_file() for marker in markers):
            return candidate
    raise DataError(
        f"{root / markers[0]} not found (nor under {root}/{folder_names[0]}/). "
        f"Expected a folder laid out as {layout}."
    )


def read_table(path: Path, columns: int, header_lines: int = 0) -> list[list[str]]:
    """The whitespace-separated rows of a text index file, each with at least `columns` fields.

    Raises:
        DataError: naming the file and line when it is missing or a row is short.
    """
    if not path.is_file():
        raise DataError(f"expected the index file {path}, which is missing.")
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines[header_lines:], start=header_lines + 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < columns:
            raise DataError(
                f"{path} line {number}: expected {columns} columns, got {line.strip()!r}."
            )
        rows.append(fields)
    if not rows:
        raise DataError(f"{path} lists no images.")
    return rows


def require_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise DataError(f"expected the image folder {path}, which is missing. Layout: {layout}.")
    return path


def _parse_int(text: str, path: Path) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{path}: expected an integer id, got {text!r}.") from None


def _split_by_class(
    items: Iterable[tuple[Path, str, int]], seen_ids: set[int], recall_ks: tuple[int, ...]
) -> Source:
    """A `Source` from ``(path, class name, class id)`` triples; classes ordered by id."""
    items = list(items)
    order = sorted({(class_id, name) for _, name, class_id in items})
    seen_order = [name for class_id, name in order if class_id in seen_ids]
    unseen_order = [name for class_id, name in order if class_id not in seen_ids]
    seen = [(path, name) for path, name, class_id in items if class_id in seen_ids]
    unseen = [(path, name) for path, name, class_id in items if class_id not in seen_ids]
    return Source(
        make_imageset(seen, seen_order), make_imageset(unseen, unseen_order), recall_ks=recall_ks
    )


def load_cub(cfg: DataConfig) -> Source:
    """CUB-200-2011: classes 1-100 seen, 101-200 unseen."""
    folder = find_dataset_dir(required_root(cfg), ["images.txt"], ["CUB_200_2011"], CUB_LAYOUT)
    images = require_dir(folder / "images", CUB_LAYOUT)
    paths = {row[0]: row[1] for row in read_table(folder / "images.txt", 2)}
    labels = {row[0]: row[1] for row in read_table(folder / "image_class_labels.txt", 2)}
    names = {
        _parse_int(row[0], folder / "classes.txt"): row[1]
        for row in read_table(folder / "classes.txt", 2)
    }
    items = []
    for image_id, relative in paths.items():
        if image_id not in labels:
            raise DataError(
                f"image id {image_id} of {folder / 'images.txt'} has no class in "
                f"{folder / 'image_class_labels.txt'}."
            )
        class_id = _parse_int(labels[image_id], folder / "image_class_labels.txt")
        if class_id not in names:
            raise DataError(
                f"class id {class_id} of {folder / 'image_class_labels.txt'} is not "
                f"listed in {folder / 'classes.txt'}."
            )
        items.append((images / relative, names[class_id], class_id))
    return _split_by_class(items, set(range(1, 101)), (1, 2, 4, 8))


def load_cars(cfg: DataConfig) -> Source:
    """Cars196 (Stanford Cars): classes 1-98 seen, 99-196 unseen."""
    folder = find_dataset_dir(
        required_root(cfg),
        ["cars_annos.mat"],
        ["cars196", "CARS196", "Cars196", "stanford_cars"],
        CARS_LAYOUT,
    )
    annotations_file = folder / "cars_annos.mat"
    require_dir(folder / "car_ims", CARS_LAYOUT)
    try:
        mat = scipy.io.loadmat(annotations_file, simplify_cells=True)
    except Exception as error:  # scipy raises several types for a file that is not a MAT file.
        raise DataError(
            f"cannot read {annotations_file} as a MATLAB file ({error}). Layout: {CARS_LAYOUT}."
        ) from None
    annotations = mat.get("annotations")
    if isinstance(annotations, dict):  # a single annotation is simplified to one struct
        annotations = [annotations]
    if not isinstance(annotations, (list, tuple, np.ndarray)) or len(annotations) == 0:
        raise DataError(
            f"{annotations_file} has no struct array `annotations`. Layout: {CARS_LAYOUT}."
        )
    class_names = mat.get("class_names")
    if class_names is not None:
        class_names = [str(name) for name in np.atleast_1d(class_names)]
    items = []
    for annotation in annotations:
        try:
            relative, class_id = str(annotation["relative_im_path"]), int(annotation["class"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise DataError(
                f"{annotations_file}: every annotation needs relative_im_path and class; "
                f"got {annotation!r}. Layout: {CARS_LAYOUT}."
            ) from None
        name = (
            class_names[class_id - 1]
            if class_names and 0 < class_id <= len(class_names)
            else str(class_id)
        )
        items.append((folder / relative, name, class_id))
    return _split_by_class(items, set(range(1, 99)), (1, 2, 4, 8))


def _read_sop_file(path: Path, folder: Path) -> list[tuple[Path, str]]:
    rows = read_table(path, 4, header_lines=1)
    return [(folder / row[3], str(_parse_int(row[1], path))) for row in rows]


def _class_order(items: Sequence[tuple[Path, str]]) -> list[str]:
    return sorted({name for _, name in items}, key=int)


def load_sop(cfg: DataConfig) -> Source:
    """Stanford Online Products: the classes of Ebay_train.txt seen, of Ebay_test.txt unseen."""
    folder = find_dataset_dir(
        required_root(cfg), ["Ebay_train.txt"], ["Stanford_Online_Products"], SOP_LAYOUT
    )
    seen = _read_sop_file(folder / "Ebay_train.txt", folder)
    unseen = _read_sop_file(folder / "Ebay_test.txt", folder)
    overlap = set(_class_order(seen)) & set(_class_order(unseen))
    if overlap:
        raise DataError(
            f"{folder}: classes {sorted(overlap, key=int)[:10]} appear in both Ebay_train.txt "
            "and Ebay_test.txt; the split must be class-disjoint."
        )
    return Source(
        make_imageset(seen, _class_order(seen)),
        make_imageset(unseen, _class_order(unseen)),
        recall_ks=(1, 10, 100, 1000),
    )


def load_inshop(cfg: DataConfig) -> Source:
    """In-Shop Clothes: train items seen; query and gallery items unseen, labelled alike."""
    markers = ["Eval/list_eval_partition.txt", "list_eval_partition.txt"]
    folder = find_dataset_dir(
        required_root(cfg),
        markers,
        ["Inshop_Clothes", "InShop", "In-shop", "inshop"],
        INSHOP_LAYOUT,
    )
    partition = next(folder / marker for marker in markers if (folder / marker).is_file())
    images = folder / "Img" if (folder / "Img").is_dir() else folder
    parts: dict[str, list[tuple[Path, str]]] = {"train": [], "query": [], "gallery": []}
    for number, row in enumerate(read_table(partition, 3, header_lines=2), start=3):
        status = row[2]
        if status not in parts:
            raise DataError(
                f"{partition} line {number}: evaluation_status must be train, query or "
                f"gallery, got {status!r}."
            )
        parts[status].append((images / row[0], row[1]))
    for status, items in parts.items():
        if not items:
            raise DataError(f"{partition} lists no {status} images. Layout: {INSHOP_LAYOUT}.")
    test_order = sorted({name for _, name in parts["query"] + parts["gallery"]})
    return Source(
        make_imageset(parts["train"], sorted({name for _, name in parts["train"]})),
        make_imageset(parts["query"], test_order),
        gallery=make_imageset(parts["gallery"], test_order),
        recall_ks=(1, 10, 20, 30, 40),
    )


def list_class_folders(root: Path) -> dict[str, list[Path]]:
    """The image files of each class folder under `root`, sorted; hidden entries are ignored."""
    classes = {}
    for folder in sorted(
        path for path in root.iterdir() if path.is_dir() and not path.name.startswith(".")
    ):
        classes[folder.name] = sorted(
            path
            for path in folder.iterdir()
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
        )
    return classes


def _read_split_file(path: Path) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise DataError(f"split file {path} (data.split_file) does not exist.")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"split file {path} is not valid JSON: {error}.") from None
    if not isinstance(spec, dict) or not all(
        isinstance(spec.get(key), list) and all(isinstance(name, str) for name in spec[key])
        for key in ("train", "test")
    ):
        raise DataError(
            f"split file {path} must be a JSON object "
            '{"train": [class, ...], "test": [class, ...]}.'
        )
    return spec["train"], spec["test"]


def load_folder(cfg: DataConfig) -> Source:
    """One folder per class under ``data.root``; the classes split by ``data.split_file``, else
    half and half in sorted order.

    ``data.split_file`` is JSON ``{"train": [class, ...], "test": [class, ...]}``; classes in
    neither are left out.
    """
    root = data_root(required_root(cfg), f"a folder laid out as {FOLDER_LAYOUT}")
    classes = list_class_folders(root)
    split_file = Path(cfg.split_file) if cfg.split_file else None
    if split_file is None:
        named = [name for name, files in classes.items() if files]
        train, test = named[: len(named) // 2], named[len(named) // 2 :]
    else:
        train, test = _read_split_file(Path(split_file).expanduser())
        both = set(train) & set(test)
        if both:
            raise DataError(
                f"split file {split_file}: classes {sorted(both)[:10]} are in both train and test."
            )
        for name in train + test:
            if not classes.get(name):
                raise DataError(
                    f"split file {split_file} names class {name!r}, but {root / name} "
                    f"{'has no images' if name in classes else 'does not exist'}."
                )
    if not train or not test:
        raise DataError(
            f"{root} needs image folders for at least two classes (one seen, one unseen); "
            f"found {len(train) + len(test)}. Expected {FOLDER_LAYOUT}."
        )

    def items(names: Sequence[str]) -> list[tuple[Path, str]]:
        return [(path, name) for name in names for path in classes[name]]

    return Source(make_imageset(items(train), train), make_imageset(items(test), test))
