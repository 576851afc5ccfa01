import numpy as np
import pytest

from spade_tf.config import load_config
from spade_tf.data.classes import (
    DATASET_MODES,
    class_names,
    colorize,
    decolorize,
    labelcolormap,
    palette,
)
from spade_tf.data.segmenter import segment
from spade_tf.data.synthetic import synthetic_sample
from spade_tf.evaluation.segmentation import miou

# (dataset mode, label_nc) of every preset, read from configs/<mode>.yaml.
PRESETS = [(mode, load_config(mode).data.label_nc) for mode in DATASET_MODES]

# Colours the official palettes repeat, as sets of indices sharing one colour.
OFFICIAL_REPEATS = {
    "cityscapes": [{0, 1, 2, 3, 4}, {17, 18}, {26, 34}],  # black; pole/polegroup; car/license plate
    "ade20k": [{7, 49}],  # road and skyscraper (index = ADE20K class + 1)
}


def _repeats(colors):
    groups = {}
    for i, color in enumerate(map(tuple, colors)):
        groups.setdefault(color, set()).add(i)
    return [group for group in groups.values() if len(group) > 1]


def test_presets_cover_the_reference_sizes():
    assert dict(PRESETS) == {
        "synthetic": 8, "cityscapes": 35, "ade20k": 150, "coco": 182, "facades": 13, "custom": 13,
    }


@pytest.mark.parametrize("mode,label_nc", PRESETS)
def test_names_and_palette_lengths(mode, label_nc):
    names = class_names(mode, label_nc)
    assert len(names) == label_nc and all(isinstance(n, str) and n for n in names)
    colors = palette(mode, label_nc)
    assert colors.dtype == np.uint8 and colors.shape == (label_nc, 3)


@pytest.mark.parametrize("mode,label_nc", PRESETS)
def test_palette_colours_unique_except_official_repeats(mode, label_nc):
    repeats = _repeats(palette(mode, label_nc))
    assert sorted(map(sorted, repeats)) == sorted(map(sorted, OFFICIAL_REPEATS.get(mode, [])))


def test_names_and_colours_of_well_known_classes():
    city_names, city = class_names("cityscapes", 35), palette("cityscapes", 35)
    for label_id, name, color in [(7, "road", (128, 64, 128)), (23, "sky", (70, 130, 180)), (26, "car", (0, 0, 142))]:
        assert city_names[label_id] == name and tuple(city[label_id]) == color
    ade_names, ade = class_names("ade20k", 151), palette("ade20k", 151)
    assert ade_names[:4] == ["other", "wall", "building", "sky"] and ade_names[150] == "flag"
    assert tuple(ade[0]) == (0, 0, 0) and tuple(ade[1]) == (120, 120, 120) and tuple(ade[3]) == (6, 230, 230)
    coco_names, coco = class_names("coco", 182), palette("coco", 182)
    assert coco_names[0] == "person" and coco_names[90] == "hair brush" and coco_names[181] == "wood"
    assert tuple(coco[coco_names.index("sky-other")]) == (95, 219, 255)
    assert tuple(coco[coco_names.index("grass")]) == (29, 195, 49)
    assert class_names("facades", 13)[1:4] == ["background", "facade", "window"]
    assert class_names("custom", 3) == ["class_0", "class_1", "class_2"]


def test_labelcolormap_is_the_pascal_voc_map_from_index_1():
    # The VOC colour map: class k's colour from the bits of k, interleaved from the top bit.
    voc = [(128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128), (128, 128, 128),
           (64, 0, 0), (192, 0, 0), (64, 128, 0)]
    np.testing.assert_array_equal(labelcolormap(10), voc)
    np.testing.assert_array_equal(palette("custom", 10), voc)
    assert len(_repeats(labelcolormap(255))) == 0


def test_override_names():
    assert class_names("custom", 2, ["cat", "dog"]) == ["cat", "dog"]
    with pytest.raises(ValueError, match="3 names but label_nc is 2"):
        class_names("custom", 2, ["a", "b", "c"])


def test_bad_mode_or_label_nc():
    with pytest.raises(ValueError, match="unknown dataset_mode 'kitti'"):
        palette("kitti", 3)
    with pytest.raises(ValueError, match="has 13 classes"):
        class_names("facades", 20)
    with pytest.raises(ValueError, match="1..255"):
        palette("custom", 0)


@pytest.mark.parametrize("mode,label_nc", PRESETS)
def test_colorize_decolorize_round_trip(mode, label_nc):
    colors = palette(mode, label_nc)
    rng = np.random.default_rng(label_nc)
    labels = rng.permutation(np.resize(np.arange(label_nc), 16 * 24)).reshape(16, 24).astype(np.uint8)
    rgb = colorize(labels, colors)
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 24, 3)
    np.testing.assert_array_equal(rgb, colors[labels])
    # A repeated colour comes back as the lowest index that has it.
    lowest = [min(j for j in range(label_nc) if tuple(colors[j]) == tuple(colors[i])) for i in range(label_nc)]
    np.testing.assert_array_equal(decolorize(rgb, colors), np.array(lowest)[labels])


def test_cityscapes_repeated_colours_decode_to_the_lowest_id():
    colors = palette("cityscapes", 35)
    rgb = np.array([[[0, 0, 142], [0, 0, 0], [153, 153, 153]]], np.uint8)
    np.testing.assert_array_equal(decolorize(rgb, colors), [[26, 0, 17]])


def test_colorize_unknown_labels():
    colors = palette("custom", 4)
    rgb = colorize(np.array([[0, 4, 255]], np.uint8), colors, unknown_color=(1, 2, 3))
    np.testing.assert_array_equal(rgb, [[colors[0], (1, 2, 3), (1, 2, 3)]])
    with pytest.raises(ValueError, match="integer"):
        colorize(np.zeros((2, 2), np.float32), colors)


def test_decolorize_unknown_colours():
    colors = palette("custom", 4)
    rgb = colorize(np.zeros((4, 8), np.uint8), colors)
    rgb[0, :3] = (1, 2, 3)
    rgb[1, 0] = (9, 9, 9)
    for k in range(6):  # 6 more colours, one pixel each: only 5 colours are listed
        rgb[3, k] = (200, 200, k)
    with pytest.raises(ValueError) as error:
        decolorize(rgb, colors)
    message = str(error.value)
    assert "10 pixels in 8 colours" in message
    assert "(1, 2, 3): 3 px" in message and "(9, 9, 9): 1 px" in message
    assert message.count(" px") == 5
    labels = decolorize(rgb, colors, unknown_label=255)
    assert labels[0, 0] == 255 and labels[1, 0] == 255 and labels[2, 0] == 0 and np.sum(labels == 255) == 10
    with pytest.raises(ValueError, match="uint8"):
        decolorize(rgb.astype(np.float32), colors)


def test_synthetic_palette_reads_back_through_the_segmenter():
    label = synthetic_sample(0, 0, 64, 64)["label"]
    flat_photo = colorize(label, palette("synthetic", 8))
    assert miou(segment(flat_photo), label, 8)[0] > 0.99
