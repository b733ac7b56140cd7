"""STEGO's datasets in their official layouts, as map-style datasets (thesis §4.6.1, App. B.10).

Items are ``{"x": float [3, res, res] in [0, 1], "label": long [res, res] (-1 = ignore),
"index": long}``. Evaluation splits resize the shorter side to ``res`` (320) and centre-crop;
training splits with ``five_crop`` hold the five (½h, ½w) crops of every image as separate
items (item ``5·i + c`` is crop ``c`` of image ``i``: TL, TR, BL, BR, centre), each resized to
``res`` (224) and centre-cropped (thesis §4.5.3). Images resize bilinearly, as the thesis says (the
reference code uses nearest); labels always nearest. A missing or incomplete tree raises
`fw.errors.DataError` naming the expected files and where to get them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from fw.errors import DataError, check_choice

COCO_CLASSES = [
    # things 0-11
    "electronic", "appliance", "food", "furniture", "indoor", "kitchen", "accessory", "animal",
    "outdoor", "person", "sports", "vehicle",
    # stuff 12-26
    "ceiling", "floor", "food-stuff", "furniture-stuff", "rawmaterial", "textile", "wall",
    "window", "building", "ground", "plant", "sky", "solid", "structural", "water",
]  # fmt: skip
#: COCO-Stuff category ids (1-based, as in the official json; stuffthingmaps store id - 1) of
#: each coarse class: the COCO / COCO-Stuff supercategories (IIC's 27-class setting)
_COARSE_MEMBERS: dict[str, tuple[int, ...]] = {
    "electronic": (72, 73, 74, 75, 76, 77),
    "appliance": (78, 79, 80, 81, 82, 83),
    "food": (52, 53, 54, 55, 56, 57, 58, 59, 60, 61),
    "furniture": (62, 63, 64, 65, 66, 67, 68, 69, 70, 71),
    "indoor": (84, 85, 86, 87, 88, 89, 90),
    "kitchen": (44, 45, 46, 47, 48, 49, 50, 51),
    "accessory": (26, 27, 28, 29, 30, 31, 32, 33),
    "animal": (16, 17, 18, 19, 20, 21, 22, 23, 24, 25),
    "outdoor": (10, 11, 12, 13, 14, 15),
    "person": (1,),
    "sports": (34, 35, 36, 37, 38, 39, 40, 41, 42, 43),
    "vehicle": (2, 3, 4, 5, 6, 7, 8, 9),
    "ceiling": (102, 103),
    "floor": (101, 114, 115, 116, 117, 118),
    "food-stuff": (121, 122, 153, 170),
    "furniture-stuff": (98, 107, 108, 110, 112, 123, 130, 133, 156, 161, 165),
    "rawmaterial": (100, 132, 139, 143),
    "textile": (92, 93, 104, 105, 109, 131, 137, 141, 152, 167, 168),
    "wall": (171, 172, 173, 174, 175, 176, 177),
    "window": (180, 181),
    "building": (95, 96, 128, 151, 158, 166),
    "ground": (111, 125, 126, 136, 140, 144, 145, 147, 149, 154, 159),
    "plant": (94, 97, 119, 124, 129, 134, 142, 163, 169),
    "sky": (106, 157),
    "solid": (127, 135, 150, 160, 162, 182),
    "structural": (99, 113, 138, 146, 164),
    "water": (120, 148, 155, 178, 179),
}


def coco_fine_to_coarse() -> np.ndarray:
    """Lookup ``[256]``: stuffthingmaps value (COCO-Stuff id - 1, 255 unlabeled) -> 0..26 or -1."""
    table = np.full(256, -1, dtype=np.int64)
    for coarse, name in enumerate(COCO_CLASSES):
        for cat_id in _COARSE_MEMBERS[name]:
            table[cat_id - 1] = coarse
    return table


CITYSCAPES_CLASSES = [
    "road", "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail",
    "bridge", "tunnel", "pole", "polegroup", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "caravan", "trailer", "train",
    "motorcycle", "bicycle",
]  # fmt: skip
POTSDAM_CLASSES = ["roads and cars", "buildings and clutter", "trees and vegetation"]
#: Potsdam fine label -> Potsdam-3 class: {0,4} -> 0, {1,5} -> 1, {2,3} -> 2
POTSDAM_FINE_TO_COARSE = {0: 0, 4: 0, 1: 1, 5: 1, 2: 2, 3: 2}


def resize_crop(image: Tensor, label: Tensor, res: int) -> tuple[Tensor, Tensor]:
    """Shorter side to ``res`` (image bilinear, label nearest), then the centre ``res × res``."""
    h, w = image.shape[-2:]
    scale = res / min(h, w)
    size = (max(res, round(h * scale)), max(res, round(w * scale)))
    image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
    label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    top, left = (size[0] - res) // 2, (size[1] - res) // 2
    return (
        image[:, top : top + res, left : left + res].clamp(0, 1),
        label[top : top + res, left : left + res],
    )


class SegmentationFiles(Dataset):
    """Pairs of (image file, label file) read on demand; see the module docstring for items.

    ``read_label`` maps a label file to class ids with -1 for ignored pixels.
    """

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        read_image: Callable[[Path], Tensor],
        read_label: Callable[[Path], Tensor],
        res: int,
        five_crop: bool,
        classes: list[str],
        name: str,
    ) -> None:
        if res < 1:
            raise DataError(f"{name}: res must be >= 1, got {res}")
        self.pairs = pairs
        self.read_image, self.read_label = read_image, read_label
        self.res, self.five_crop = res, five_crop
        self.classes, self.name = classes, name

    def __len__(self) -> int:
        return len(self.pairs) * (5 if self.five_crop else 1)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        image_i, crop = divmod(i, 5) if self.five_crop else (i, 0)
        img_path, label_path = self.pairs[image_i]
        try:
            image, label = self.read_image(img_path), self.read_label(label_path)
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"{self.name}: cannot read {img_path} / {label_path}: {err}") from err
        if image.shape[-2:] != label.shape[-2:]:
            raise DataError(
                f"{self.name}: image {img_path} is {tuple(image.shape[-2:])} but its label "
                f"{label_path} is {tuple(label.shape)}"
            )
        if self.five_crop:
            from torchvision.transforms import functional as tvf

            h, w = image.shape[-2:]
            size = [h // 2, w // 2]
            image = tvf.five_crop(image, size)[crop]
            label = tvf.five_crop(label[None], size)[crop][0]
        x, y = resize_crop(image, label, self.res)
        return {"x": x, "label": y, "index": torch.tensor(i)}


def _read_rgb(path: Path) -> Tensor:
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _read_png_ids(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im, dtype=np.int64)


def _check_files(pairs: list[tuple[Path, Path]], name: str, how: str) -> None:
    if not pairs:
        raise DataError(f"{name}: the split lists no images. {how}")
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        shown = "\n  ".join(missing[:5])
        raise DataError(
            f"{name}: {len(missing)} expected file(s) are missing, e.g.\n  {shown}\n{how}"
        )


COCO_HOW = (
    "Expected the layout of STEGO/PiCIE: <root>/images/{train2017,val2017}/<id>.jpg (COCO 2017 "
    "images, https://cocodataset.org), <root>/annotations/{train2017,val2017}/<id>.png "
    "(COCO-Stuff stuffthingmaps_trainval2017.zip, https://github.com/nightrome/cocostuff) and "
    "the curated lists <root>/curated/{train2017,val2017}/<list>.txt (IIC's "
    "COCOStuff164kCurated.tar.gz, https://www.robots.ox.ac.uk/~xuji/datasets/)."
)


def cocostuff27(
    root: str = "data/cocostuff",
    split: Literal["train", "val"] = "train",
    image_list: str | None = None,
    res: int | None = None,
    five_crop: bool | None = None,
) -> SegmentationFiles:
    """CocoStuff-27 (IIC's curated lists; 27 coarse classes).

    ``image_list`` defaults to ``Coco164kFull_Stuff_Coarse.txt`` for train and
    ``Coco164kFull_Stuff_Coarse_7.txt`` for val (our reading of the reference code;
    several reproductions train on the ``_7`` list: set it here). ``res`` defaults to 224
    (train) / 320 (val); ``five_crop`` to True for train.
    """
    check_choice(split, ("train", "val"), "split")
    base = Path(root).expanduser()
    folder = f"{split}2017"
    if image_list is None:
        image_list = (
            "Coco164kFull_Stuff_Coarse.txt"
            if split == "train"
            else "Coco164kFull_Stuff_Coarse_7.txt"
        )
    list_path = base / "curated" / folder / image_list
    if not list_path.is_file():
        raise DataError(f"cocostuff27: no image list at {list_path}. {COCO_HOW}")
    ids = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
    pairs = [
        (base / "images" / folder / f"{i}.jpg", base / "annotations" / folder / f"{i}.png")
        for i in ids
    ]
    _check_files(pairs, "cocostuff27", COCO_HOW)
    table = torch.from_numpy(coco_fine_to_coarse())

    def read_label(path: Path) -> Tensor:
        ids = _read_png_ids(path)
        if ids.ndim != 2 or ids.min() < 0 or ids.max() > 255:
            raise ValueError("expected a single-channel 8-bit stuffthingmap")
        return table[torch.from_numpy(ids)]

    return _official(
        pairs, _read_rgb, read_label, split, res, five_crop, COCO_CLASSES, "cocostuff27"
    )


def _official(
    pairs: list[tuple[Path, Path]],
    read_image: Callable[[Path], Tensor],
    read_label: Callable[[Path], Tensor],
    split: str,
    res: int | None,
    five_crop: bool | None,
    classes: list[str],
    name: str,
) -> SegmentationFiles:
    """The paper's defaults: five-cropped 224 px train images, 320 px centre-cropped val."""
    train = split == "train"
    return SegmentationFiles(
        pairs,
        read_image,
        read_label,
        res or (224 if train else 320),
        train if five_crop is None else five_crop,
        classes,
        name,
    )


CITYSCAPES_HOW = (
    "Expected the official Cityscapes layout (https://www.cityscapes-dataset.com, "
    "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip): "
    "<root>/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png and "
    "<root>/gtFine/<split>/<city>/<name>_gtFine_labelIds.png."
)


def cityscapes27(
    root: str = "data/cityscapes",
    split: Literal["train", "val"] = "train",
    res: int | None = None,
    five_crop: bool | None = None,
) -> SegmentationFiles:
    """Cityscapes-27 (PiCIE's setting: ``labelIds - 7``, negatives ignored)."""
    check_choice(split, ("train", "val"), "split")
    base = Path(root).expanduser()
    image_dir = base / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DataError(f"cityscapes27: no image folder {image_dir}. {CITYSCAPES_HOW}")
    images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
    pairs = [
        (
            p,
            base
            / "gtFine"
            / split
            / p.parent.name
            / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"),
        )
        for p in images
    ]
    _check_files(pairs, "cityscapes27", CITYSCAPES_HOW)

    def read_label(path: Path) -> Tensor:
        ids = torch.from_numpy(_read_png_ids(path)) - 7
        ids[(ids < 0) | (ids >= len(CITYSCAPES_CLASSES))] = -1
        return ids

    return _official(
        pairs, _read_rgb, read_label, split, res, five_crop, CITYSCAPES_CLASSES, "cityscapes27"
    )


POTSDAM_HOW = (
    "Expected IIC's Potsdam layout (https://github.com/xu-ji/IIC, datasets/README; from the "
    "ISPRS Potsdam data): <root>/imgs/<id>.mat (key 'img', H×W×4 RGBIR), <root>/gt/<id>.mat "
    "(key 'gt', fine labels 0-5) and the lists <root>/labelled_train.txt, "
    "<root>/labelled_test.txt."
)


def _read_mat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    return np.asarray(loadmat(str(path))[key])


def potsdam3(
    root: str = "data/potsdam",
    split: Literal["train", "val"] = "train",
    res: int | None = None,
    five_crop: bool | None = None,
) -> SegmentationFiles:
    """Potsdam-3 (IIC's lists; RGB of the RGBIR tiles; {0,4}, {1,5}, {2,3}).

    ``train`` reads ``labelled_train.txt``, ``val`` reads ``labelled_test.txt``.
    """
    check_choice(split, ("train", "val"), "split")
    base = Path(root).expanduser()
    list_path = base / ("labelled_train.txt" if split == "train" else "labelled_test.txt")
    if not list_path.is_file():
        raise DataError(f"potsdam3: no image list at {list_path}. {POTSDAM_HOW}")
    ids = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
    pairs = [(base / "imgs" / f"{i}.mat", base / "gt" / f"{i}.mat") for i in ids]
    _check_files(pairs, "potsdam3", POTSDAM_HOW)
    lookup = torch.full((256,), -1, dtype=torch.long)
    for fine, coarse in POTSDAM_FINE_TO_COARSE.items():
        lookup[fine] = coarse

    def read_image(path: Path) -> Tensor:
        img = _read_mat(path, "img")
        if img.ndim != 3 or img.shape[2] < 3:
            raise ValueError(f"expected an H×W×4 'img' array, got shape {img.shape}")
        arr = img[:, :, :3].astype(np.float32)
        if img.dtype == np.uint8 or arr.max() > 1.0:
            arr = arr / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def read_label(path: Path) -> Tensor:
        gt = torch.from_numpy(_read_mat(path, "gt").astype(np.int64))
        return torch.where((gt >= 0) & (gt < 256), lookup[gt.clamp(0, 255)], -1)

    return _official(
        pairs, read_image, read_label, split, res, five_crop, POTSDAM_CLASSES, "potsdam3"
    )
