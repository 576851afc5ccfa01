"""labels.json of an export, built from a config (spade_tf/export/labels.py)."""

import json

import pytest

from spade_tf.config import load_config
from spade_tf.data.classes import palette
from spade_tf.export.labels import labels_json


def labels_dict(cfg):
    return labels_json(cfg).to_dict()


def test_labels_json_synthetic():
    cfg = load_config("synthetic", ["export.model_name=landscapes"])
    info = labels_json(cfg, ["with_seed", "serving_default"]).to_dict()
    assert json.loads(json.dumps(info)) == info
    assert info == {
        "model_name": "landscapes",
        "class_names": ["sky", "mountain", "water", "grass", "tree", "building", "road", "object"],
        "palette": palette("synthetic", 8).tolist(),
        "label_nc": 8,
        "contain_dontcare_label": False,
        "unknown_label": None,
        "use_instance": True,
        "use_vae": False,
        "z_dim": 256,
        "image_size": [64, 64],
        "size_multiple": 32,
        "min_size": 32,
        "aspect_ratio": 1.0,
        "signatures": ["serving_default", "with_seed"],
    }


def test_labels_json_other_presets():
    city = labels_dict(load_config("cityscapes"))
    assert city["image_size"] == [256, 512] and city["size_multiple"] == 64 and city["aspect_ratio"] == 2.0
    ade = labels_dict(load_config("ade20k"))
    assert ade["contain_dontcare_label"] and ade["unknown_label"] == 255 and not ade["use_instance"]
    assert len(ade["class_names"]) == len(ade["palette"]) == 150
    custom = labels_dict(load_config("custom", ["data.label_nc=2", "data.class_names=[cat, dog]", "model.use_vae=true"]))
    assert custom["class_names"] == ["cat", "dog"] and custom["use_vae"]
    with pytest.raises(ValueError, match="1 names but label_nc is 2"):
        labels_json(load_config("custom", ["data.label_nc=2", "data.class_names=[cat]"]))


def test_pix2pixhd_min_size_and_image_size_follow_its_own_rules():
    # pix2pixHD rounds each side to the nearest multiple of 2^n_downsample (its __make_power_2), and its
    # bottleneck must be larger than the reflection padding of its k x k residual convs.
    cfg = load_config("synthetic", ["model.netG=pix2pixhd", "data.crop_size=220", "data.aspect_ratio=1.6"])
    assert cfg.image_size == (144, 224)  # 220 / 1.6 = 137.5 -> 144, 220 -> 224 (nearest multiples of 16)
    info = labels_dict(cfg)
    assert info["size_multiple"] == 16 and info["min_size"] == 32
    wide = labels_dict(load_config("synthetic", ["model.netG=pix2pixhd", "model.resnet_kernel_size=7"]))
    assert wide["min_size"] == 16 * 4
    small = load_config("synthetic", ["model.netG=pix2pixhd", "data.crop_size=16"])
    assert small.image_size == (32, 32)  # never below the minimum size
    assert labels_dict(load_config("synthetic"))["min_size"] == 32  # SPADE: one block
