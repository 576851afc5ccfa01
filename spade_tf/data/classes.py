"""Class names and colour palettes of every dataset mode (colour <-> label conversion: the export contract's
`colorize`/`decolorize`, `spade_tf_client.contract`).

Palettes:
- synthetic: the middle of each class's first colour line in `synthetic.CLASS_COLORS`, so a
  colourised layout looks like a flat photo of it (and the reference segmenter reads it back).
- cityscapes: the 35 label ids and colours of cityscapesScripts' `labels.py` (ids 0..33, then
  "license plate", id -1 there, at index 34 as in the reference's colour map). The official
  palette repeats colours: black for ids 0..4, (153, 153, 153) for pole/polegroup, (0, 0, 142)
  for car/license plate; `decolorize` maps a repeated colour to its lowest id.
- ade20k: index 0 "other" (black), then the 150 SceneParsing classes with the standard ADE20K
  palette of common segmentation toolkits (CSAIL `color150`, MMSegmentation). It repeats
  (140, 140, 140) for road and skyscraper. With the reference's label_nc 150, raw label 150
  ("flag") is the don't-care index, as in the reference.
- coco: COCO-Stuff's 182 labels (png value v = labels.txt id v + 1: 0 = person ... 181 = wood),
  with the reference's bit-interleaving colour map and its five fixed colours (sea, sky, tree,
  clouds, grass).
- facades: the 12 CMP Facade classes at their label values 1..12 (0 = unlabeled), with the
  bit-interleaving colour map (the CMP label colours are not used).
- custom: `class_0`, `class_1`, ... with the bit-interleaving colour map.
"""

import numpy as np
from spade_tf_client.contract import classes_to_colours as colorize  # noqa: F401 - the export contract's rule
from spade_tf_client.contract import colours_to_classes as decolorize  # noqa: F401

from spade_tf.data.synthetic import CLASS_COLORS, SYNTHETIC_CLASSES

DATASET_MODES = ("synthetic", "cityscapes", "ade20k", "coco", "facades", "custom")

CITYSCAPES_LABELS = [  # (name, colour) for label ids 0..34
    ("unlabeled", (0, 0, 0)),
    ("ego vehicle", (0, 0, 0)),
    ("rectification border", (0, 0, 0)),
    ("out of roi", (0, 0, 0)),
    ("static", (0, 0, 0)),
    ("dynamic", (111, 74, 0)),
    ("ground", (81, 0, 81)),
    ("road", (128, 64, 128)),
    ("sidewalk", (244, 35, 232)),
    ("parking", (250, 170, 160)),
    ("rail track", (230, 150, 140)),
    ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)),
    ("fence", (190, 153, 153)),
    ("guard rail", (180, 165, 180)),
    ("bridge", (150, 100, 100)),
    ("tunnel", (150, 120, 90)),
    ("pole", (153, 153, 153)),
    ("polegroup", (153, 153, 153)),
    ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)),
    ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)),
    ("person", (220, 20, 60)),
    ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)),
    ("bus", (0, 60, 100)),
    ("caravan", (0, 0, 90)),
    ("trailer", (0, 0, 110)),
    ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)),
    ("license plate", (0, 0, 142)),
]

ADE20K_CLASSES = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel",
    "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
]

ADE20K_PALETTE = [  # colours of ADE20K_CLASSES (CSAIL color150 / MMSegmentation)
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3),
    (120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7),
    (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70), (8, 255, 51),
    (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3),
    (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71),
    (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7),
    (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255),
    (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140), (250, 10, 15),
    (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0),
    (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112),
    (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173),
    (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255),
    (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20), (255, 184, 184),
    (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255),
    (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0),
    (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255),
    (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255),
    (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235),
    (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0),
    (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255),
    (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0),
    (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
]

COCO_STUFF_CLASSES = [  # index v = COCO-Stuff labels.txt id v + 1; 0..90 things (incl. unused ids), 91..181 stuff
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe", "eye glasses",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk", "toilet",
    "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster",
    "sink", "refrigerator", "blender", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
    "hair brush", "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard",
    "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog",
    "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light",
    "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock",
    "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other",
    "stairs", "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
]
COCO_FIXED_COLORS = {  # the reference's colours for a few COCO-Stuff classes, over the colour map
    "sea": (54, 62, 167),
    "sky-other": (95, 219, 255),
    "tree": (140, 104, 47),
    "clouds": (170, 170, 170),
    "grass": (29, 195, 49),
}

FACADES_CLASSES = [
    "unlabeled", "background", "facade", "window", "door", "cornice", "sill", "balcony", "blind", "deco",
    "molding", "pillar", "shop",
]

_NAMES = {
    "synthetic": SYNTHETIC_CLASSES,
    "cityscapes": [name for name, _ in CITYSCAPES_LABELS],
    "ade20k": ["other"] + ADE20K_CLASSES,
    "coco": COCO_STUFF_CLASSES,
    "facades": FACADES_CLASSES,
}


def labelcolormap(n: int) -> np.ndarray:
    """The reference's (pix2pixHD's) colour map: the bits of i + 1, interleaved over R, G, B from the top bit.

    uint8 [n, 3]; distinct colours for every n, none of them black.
    """
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        code = i + 1
        for bit in range(7):  # bit 3j, 3j+1, 3j+2 of the code -> bit 7-j of R, G, B
            for channel in range(3):
                cmap[i, channel] |= ((code >> (3 * bit + channel)) & 1) << (7 - bit)
    return cmap


def _check(dataset_mode: str, label_nc: int) -> None:
    if dataset_mode not in DATASET_MODES:
        raise ValueError(f"unknown dataset_mode '{dataset_mode}'; expected one of {', '.join(DATASET_MODES)}")
    if isinstance(label_nc, bool) or not isinstance(label_nc, (int, np.integer)) or not 1 <= label_nc <= 255:
        raise ValueError(f"label_nc must be an integer in 1..255 (labels are uint8), got {label_nc!r}")
    known = _NAMES.get(dataset_mode)
    if known is not None and label_nc > len(known):
        raise ValueError(
            f"dataset_mode '{dataset_mode}' has {len(known)} classes, label_nc {label_nc} is larger; "
            f"use dataset_mode 'custom' for another label set"
        )


def class_names(dataset_mode: str, label_nc: int, override=None) -> list:
    """The names of class indices 0..label_nc-1: `override` if given, else the dataset mode's."""
    _check(dataset_mode, label_nc)
    if override is not None:
        if len(override) != label_nc:
            raise ValueError(f"class_names has {len(override)} names but label_nc is {label_nc}; give one per class")
        return [str(name) for name in override]
    if dataset_mode == "custom":
        return [f"class_{i}" for i in range(label_nc)]
    return list(_NAMES[dataset_mode][:label_nc])


def palette(dataset_mode: str, label_nc: int) -> np.ndarray:
    """uint8 [label_nc, 3]: the colour of each class index (see the module docstring)."""
    _check(dataset_mode, label_nc)
    if dataset_mode == "synthetic":
        colors = [np.mean(colors[0], axis=0) for colors in CLASS_COLORS]
        return np.round(colors[:label_nc]).astype(np.uint8)
    if dataset_mode == "cityscapes":
        return np.array([color for _, color in CITYSCAPES_LABELS[:label_nc]], np.uint8)
    if dataset_mode == "ade20k":
        return np.array([(0, 0, 0)] + ADE20K_PALETTE, np.uint8)[:label_nc]
    cmap = labelcolormap(label_nc)
    if dataset_mode == "coco":
        for i, name in enumerate(COCO_STUFF_CLASSES[:label_nc]):
            if name in COCO_FIXED_COLORS:
                cmap[i] = COCO_FIXED_COLORS[name]
    return cmap
