"""Readers for the reference's folder layouts, on tiny fixtures written here in exactly those layouts.

Each fixture sample i is 32 x 64 pixels: a blocky label map, a photo painting every class in its
own colour (so image and label can be checked against each other), and an instance map
label * 1000 + column block (16-bit PNG for Cityscapes, 8-bit for COCO-Stuff).
"""

import dataclasses
import logging
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from spade_tf.config import Config, DataConfig
from spade_tf.data import DataError, build_dataset, list_files

H, W = 32, 64
COLORS = np.array([[(37 * c) % 256, (91 * c + 40) % 256, (173 * c + 90) % 256] for c in range(256)], np.uint8)


def arrays(i, label_nc=8, unknown=False):
    y, x = np.mgrid[:H, :W]
    label = ((x // 8) + 3 * (y // 8) + i) % label_nc
    if unknown:
        label[:4, :4] = 255
    instance = label.astype(np.int64) * 1000 + x // 16
    return label.astype(np.uint8), COLORS[label], instance


def save(path, array, **kw):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return str(path)


def write_cityscapes(root, n=3, splits=("train", "val")):
    for split in splits:
        for i in range(n):
            city = ("aachen", "bochum")[i % 2]
            key = f"{city}_{i:06d}_000019"
            label, image, instance = arrays(i, label_nc=34)
            gt = root / "gtFine" / split / city
            save(gt / f"{key}_gtFine_labelIds.png", label)
            save(gt / f"{key}_gtFine_instanceIds.png", instance.astype(np.uint16))  # 16-bit: ids up to 33003
            save(gt / f"{key}_gtFine_color.png", image)  # present in real gtFine; not a label
            save(root / "leftImg8bit" / split / city / f"{key}_leftImg8bit.png", image)
    return root


def write_ade20k(root, n=3, standard=True):
    for split, sub in (("train", "training"), ("val", "validation")):
        for i in range(1, n + 1):
            name = f"ADE_{split}_{i:08d}"
            label, image, _ = arrays(i, label_nc=151, unknown=True)
            images, annotations = (root / "images" / sub, root / "annotations" / sub)
            if not standard:  # the reference's single tree: split by name only
                images, annotations = root, root / "ann"
            save(images / f"{name}.jpg", image, quality=95)
            save(annotations / f"{name}.png", label)
    return root


def write_coco(root, n=3):
    for split in ("train", "val"):
        for i in range(n):
            label, image, instance = arrays(i, label_nc=182, unknown=True)
            name = f"{i:012d}"
            save(root / f"{split}_label" / f"{name}.png", label)
            save(root / f"{split}_img" / f"{name}.jpg", image, quality=95)
            save(root / f"{split}_inst" / f"{name}.png", (instance % 256).astype(np.uint8))  # 8-bit "L" ids
    return root


def write_facades(root, n=3):
    for split in ("train", "val"):
        for i in range(n):
            label, image, _ = arrays(i, label_nc=13)
            palette = Image.fromarray(label, mode="L").convert("P")  # CMP labels are palette PNGs
            palette.putpalette(COLORS[:256].ravel().tolist())
            (root / f"{split}_label").mkdir(parents=True, exist_ok=True)
            palette.save(root / f"{split}_label" / f"cmp_b{i:04d}.png")
            save(root / f"{split}_img" / f"cmp_b{i:04d}.jpg", image, quality=95)
    return root


def write_custom(root, names=("a1", "a2", "a10"), instances=True):
    for i, name in enumerate(names):
        label, image, instance = arrays(i)
        save(root / "labels" / f"{name}.png", label)
        save(root / "images" / f"{name}.png", image)
        if instances:
            save(root / "instances" / f"{name}.png", instance.astype(np.uint16))
    return root


def custom_cfg(root, **kw):
    values = dict(
        dataset_mode="custom", label_dir=str(root / "labels"), image_dir=str(root / "images"),
        instance_dir=str(root / "instances"), no_instance=False, preprocess_mode="none", crop_size=32,
    )
    values.update(kw)
    return DataConfig(**values)


def cfg_for(mode, root, **kw):
    presets = {
        "cityscapes": dict(label_nc=35, no_instance=False),
        "ade20k": dict(label_nc=150, contain_dontcare_label=True),
        "coco": dict(label_nc=182, contain_dontcare_label=True, no_instance=False),
        "facades": dict(label_nc=13),
    }
    values = dict(dataset_mode=mode, dataroot=str(root), preprocess_mode="none", crop_size=32, **presets[mode])
    values.update(kw)
    return DataConfig(**values)


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def read_back(data_cfg, split="val"):
    """All samples of `split` through the public pipeline, batch 1, as NumPy."""
    cfg = Config(data=data_cfg)
    return [{k: v.numpy()[0] for k, v in b.items()} for b in build_dataset(cfg, split, batch_size=1)]


# --- layouts and pairing -----------------------------------------------------------------------

def test_cityscapes_pairs_by_city_sequence_frame(tmp_path):
    write_cityscapes(tmp_path, n=3)
    samples = list_files(cfg_for("cityscapes", tmp_path), "train")
    assert len(samples) == 3
    for s in samples:
        key = "_".join(os.path.basename(s.label).split("_")[:3])
        assert s.label.endswith(f"{key}_gtFine_labelIds.png")
        assert s.image.endswith(f"{key}_leftImg8bit.png") and "/leftImg8bit/train/" in s.image
        assert s.instance.endswith(f"{key}_gtFine_instanceIds.png")
        assert s.size == (H, W)
    # ordered by the labels' paths (natural sort), found recursively below gtFine/train
    assert [stem(s.label)[:13] for s in samples] == ["aachen_000000", "aachen_000002", "bochum_000001"]


def test_cityscapes_reads_back_labels_images_and_16bit_instance_ids(tmp_path):
    write_cityscapes(tmp_path, n=2)
    got = read_back(cfg_for("cityscapes", tmp_path))
    assert len(got) == 2
    for i, sample in enumerate(got):
        label, image, instance = arrays(i, label_nc=34)
        assert sample["label"].dtype == np.int32 and sample["instance"].dtype == np.int32
        assert sample["image"].dtype == np.float32 and sample["image"].shape == (H, W, 3)
        np.testing.assert_array_equal(sample["label"], label)
        np.testing.assert_array_equal(sample["instance"], instance)  # raw 16-bit ids, e.g. 33003
        assert sample["instance"].max() > 255
        np.testing.assert_allclose(sample["image"], image / 127.5 - 1, atol=1e-6)


def test_test_phase_reads_the_val_split(tmp_path):
    write_cityscapes(tmp_path, n=2, splits=("val",))
    cfg = cfg_for("cityscapes", tmp_path)
    assert list_files(cfg, "test") == list_files(cfg, "val")
    assert all("/val/" in s.label for s in list_files(cfg, "test"))
    with pytest.raises(DataError, match="gtFine/train"):
        list_files(cfg, "train")


@pytest.mark.parametrize("standard", [True, False], ids=["ADEChallengeData2016-tree", "one-tree"])
def test_ade20k_splits_by_name_and_keeps_255(tmp_path, standard):
    write_ade20k(tmp_path, n=3, standard=standard)
    cfg = cfg_for("ade20k", tmp_path)
    train, val = list_files(cfg, "train"), list_files(cfg, "val")
    assert [stem(s.label) for s in train] == [f"ADE_train_{i:08d}" for i in (1, 2, 3)]
    assert [stem(s.image) for s in val] == [f"ADE_val_{i:08d}" for i in (1, 2, 3)]
    assert all(s.image.endswith(".jpg") and s.label.endswith(".png") and s.instance is None for s in train + val)
    for s, sample in zip(val, read_back(cfg)):
        label, _, _ = arrays(int(stem(s.label)[-8:]), label_nc=151, unknown=True)
        np.testing.assert_array_equal(sample["label"], label)  # 0..150 raw, 255 left for semantic_input
        assert (sample["label"] == 255).sum() == 16 and "instance" not in sample
        photo = np.asarray(Image.open(s.image).convert("RGB")) / 127.5 - 1  # the JPEG as PIL decodes it
        np.testing.assert_allclose(sample["image"], photo, atol=1e-6)


def test_coco_reads_8bit_instance_maps_raw_and_portrait_folders(tmp_path):
    write_coco(tmp_path, n=2)
    label, image, instance = arrays(7, label_nc=182, unknown=True)
    save(tmp_path / "train_label_portrait" / "p7.png", label)
    save(tmp_path / "train_img_portrait" / "p7.jpg", image)
    save(tmp_path / "train_inst_portrait" / "p7.png", (instance % 256).astype(np.uint8))
    cfg = cfg_for("coco", tmp_path)
    assert [stem(s.label) for s in list_files(cfg, "train")] == ["000000000000", "000000000001", "p7"]
    assert len(list_files(cfg, "val")) == 2  # portraits only in training, as in the reference
    for i, sample in enumerate(read_back(cfg)):
        label, _, instance = arrays(i, label_nc=182, unknown=True)
        np.testing.assert_array_equal(sample["label"], label)
        np.testing.assert_array_equal(sample["instance"], instance % 256)  # "L" maps: the raw byte values


def test_facades_palette_labels_read_as_class_indices(tmp_path):
    write_facades(tmp_path, n=2)
    cfg = cfg_for("facades", tmp_path)
    assert [stem(s.image) for s in list_files(cfg, "train")] == ["cmp_b0000", "cmp_b0001"]
    for i, sample in enumerate(read_back(cfg)):
        np.testing.assert_array_equal(sample["label"], arrays(i, label_nc=13)[0])  # indices, not colours
        assert "instance" not in sample


def test_custom_natural_sort_stems_and_instances(tmp_path):
    write_custom(tmp_path, names=("a10", "a2", "a1"))
    samples = list_files(custom_cfg(tmp_path), "train")
    assert [stem(s.label) for s in samples] == ["a1", "a2", "a10"]
    assert all(stem(s.label) == stem(s.image) == stem(s.instance) for s in samples)
    assert list_files(custom_cfg(tmp_path), "val") == samples  # custom reads the same folders for every split
    assert [stem(s.label) for s in list_files(custom_cfg(tmp_path, max_dataset_size=2), "train")] == ["a1", "a2"]
    assert all(s.instance is None for s in list_files(custom_cfg(tmp_path, no_instance=True), "train"))


def test_custom_without_pairing_check_pairs_in_sorted_order(tmp_path):
    write_custom(tmp_path, names=("a1", "a2"), instances=False)
    for old, new in (("a1", "b1"), ("a2", "b2")):
        os.rename(tmp_path / "images" / f"{old}.png", tmp_path / "images" / f"{new}.png")
    cfg = custom_cfg(tmp_path, no_instance=True)
    with pytest.raises(DataError, match="has no image") as e:
        list_files(cfg, "train")
    assert str(tmp_path / "labels" / "a1.png") in str(e.value)
    cfg = dataclasses.replace(cfg, no_pairing_check=True)
    assert [(stem(s.label), stem(s.image)) for s in list_files(cfg, "train")] == [("a1", "b1"), ("a2", "b2")]


# --- errors name the file ----------------------------------------------------------------------

def test_missing_folder_names_it_and_the_layout(tmp_path):
    write_cityscapes(tmp_path, n=1)
    for path in (tmp_path / "leftImg8bit" / "train").iterdir():
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    (tmp_path / "leftImg8bit" / "train").rmdir()
    with pytest.raises(DataError) as e:
        list_files(cfg_for("cityscapes", tmp_path), "train")
    assert str(tmp_path / "leftImg8bit" / "train") in str(e.value) and "_leftImg8bit.png" in str(e.value)
    with pytest.raises(DataError, match="train_label folder|facades|Facades") as e:
        list_files(cfg_for("facades", tmp_path / "nothing"), "train")
    assert str(tmp_path / "nothing" / "train_label") in str(e.value)


def test_custom_needs_its_folders(tmp_path):
    write_custom(tmp_path, instances=False)
    with pytest.raises(DataError, match="data.instance_dir or set data.no_instance=true"):
        list_files(custom_cfg(tmp_path, instance_dir=""), "train")
    with pytest.raises(DataError, match="instances"):
        list_files(custom_cfg(tmp_path), "train")  # instance_dir given but not there


def test_image_without_label_names_both(tmp_path):
    write_cityscapes(tmp_path, n=3)
    label = tmp_path / "gtFine" / "train" / "bochum" / "bochum_000001_000019_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(DataError) as e:
        list_files(cfg_for("cityscapes", tmp_path), "train")
    message = str(e.value)
    assert str(tmp_path / "leftImg8bit" / "train" / "bochum" / "bochum_000001_000019_leftImg8bit.png") in message
    assert str(label) in message and "has no label" in message


def test_label_without_image_and_mismatched_counts_name_the_unpaired_files(tmp_path):
    write_custom(tmp_path, names=("a1", "a2", "a3"), instances=False)
    (tmp_path / "images" / "a2.png").unlink()
    cfg = custom_cfg(tmp_path, no_instance=True)
    with pytest.raises(DataError) as e:
        list_files(cfg, "train")
    labels, images = tmp_path / "labels", tmp_path / "images"
    assert f"label {labels / 'a2.png'} has no image: expected {images / 'a2'}" in str(e.value)
    cfg = dataclasses.replace(cfg, no_pairing_check=True)
    with pytest.raises(DataError) as e:
        list_files(cfg, "train")
    assert str(tmp_path / "labels" / "a3.png") in str(e.value) and "3 label files" in str(e.value)


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated png", "truncated jpeg"])
def test_corrupt_or_truncated_file_is_named(tmp_path, damage):
    write_coco(tmp_path, n=2)
    path = tmp_path / ("train_img/000000000001.jpg" if damage == "truncated jpeg" else "train_label/000000000001.png")
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not an image at all" * 10, "empty": b""}.get(damage, data[: len(data) // 2]))
    with pytest.raises(DataError) as e:
        list_files(cfg_for("coco", tmp_path), "train")
    assert str(path) in str(e.value)
    assert {"garbage": "not a readable image", "empty": "empty"}.get(damage, "truncated") in str(e.value)


def test_colour_label_map_is_rejected_with_its_name(tmp_path):
    write_custom(tmp_path, instances=False)
    save(tmp_path / "labels" / "a2.png", COLORS[arrays(1)[0]])
    with pytest.raises(DataError) as e:
        list_files(custom_cfg(tmp_path, no_instance=True), "train")
    assert str(tmp_path / "labels" / "a2.png") in str(e.value) and "colour" in str(e.value)


def test_image_smaller_than_crop_names_file_size_and_crop(tmp_path):
    write_custom(tmp_path, instances=False)
    cfg = custom_cfg(tmp_path, no_instance=True, preprocess_mode="crop", crop_size=48)
    with pytest.raises(DataError) as e:
        list_files(cfg, "train")
    message = str(e.value)
    assert str(tmp_path / "images" / "a1.png") in message and "32x64" in message and "crop_size 48" in message


def test_skip_drops_bad_samples_with_a_warning_naming_the_file(tmp_path, caplog):
    write_custom(tmp_path, names=("a1", "a2", "a3", "a4"), instances=False)
    (tmp_path / "images" / "a2.png").unlink()
    bad = tmp_path / "labels" / "a3.png"
    bad.write_bytes(bad.read_bytes()[:100])
    cfg = custom_cfg(tmp_path, no_instance=True, on_bad_file="skip")
    with caplog.at_level(logging.WARNING, logger="spade_tf.data.datasets"):
        samples = list_files(cfg, "train")
    assert [stem(s.label) for s in samples] == ["a1", "a4"]
    assert str(tmp_path / "labels" / "a2.png") in caplog.text and str(bad) in caplog.text
