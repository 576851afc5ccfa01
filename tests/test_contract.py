"""The export contract (client/spade_tf_client/contract.py): labels.json, size and label rules, colours,
label PNGs, version folders; NumPy and Pillow only."""

import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from spade_tf_client import contract
from spade_tf_client.contract import ContractError, LabelsJson

REPO = pathlib.Path(__file__).resolve().parents[1]


def labels(**overrides):
    values = {"model_name": "spade", "class_names": ["sky", "grass", "road"],
              "palette": [[70, 130, 210], [110, 170, 55], [55, 55, 57]], "label_nc": 3,
              "contain_dontcare_label": False, "use_instance": False, "use_vae": False, "z_dim": 256,
              "image_size": [32, 64], "size_multiple": 8, "min_size": 8, "aspect_ratio": 2.0,
              "signatures": ["serving_default", "with_seed"]}
    return LabelsJson.from_dict({**values, **overrides})


def png(array, mode=None):
    out = io.BytesIO()
    Image.fromarray(np.asarray(array), mode=mode).save(out, format="PNG")
    return out.getvalue()


def test_the_contract_never_loads_tensorflow():
    code = ("import sys, spade_tf_client, spade_tf_client.contract, spade_tf_client.cli\n"
            "assert 'tensorflow' not in sys.modules, sorted(m for m in sys.modules if 'tensorflow' in m)\n")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_labels_json_round_trip_and_older_exports(tmp_path):
    info = labels()
    assert LabelsJson.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    assert info.to_dict()["unknown_label"] is None and info.palette_array.dtype == np.uint8
    old = info.to_dict()
    for key in ("min_size", "contain_dontcare_label", "signatures"):
        del old[key]
    old["unknown_label"] = 255
    parsed = LabelsJson.from_dict(old)
    assert parsed.min_size == 8 and parsed.contain_dontcare_label and parsed.unknown_label == 255
    (tmp_path / "3" / "assets.extra").mkdir(parents=True)
    (tmp_path / "12" / "assets.extra").mkdir(parents=True)
    info.write(tmp_path / "12" / "assets.extra" / "labels.json")
    assert LabelsJson.read(tmp_path) == info  # newest version: 12, not 3
    assert LabelsJson.read(tmp_path / "12") == info


@pytest.mark.parametrize("overrides, message", [
    ({"label_nc": 4}, "3 class_names for label_nc 4"),
    ({"palette": [[0, 0, 0]] * 2 + [[0, 0, 300]]}, "palette must be label_nc (3) RGB colours"),
    ({"min_size": 12}, "min_size must be a positive multiple of size_multiple"),
    ({"image_size": [32]}, "image_size must be [height, width]"),
    ({"aspect_ratio": "wide"}, "wrong type"),
])
def test_bad_labels_json_is_named(overrides, message):
    with pytest.raises(ContractError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        labels(**overrides)
    with pytest.raises(ContractError, match="lacks size_multiple, aspect_ratio"):
        LabelsJson.from_dict({k: v for k, v in labels().to_dict().items() if k not in ("size_multiple", "aspect_ratio")})


def test_size_rule():
    info = labels()
    info.check_size(32, 64, "x")
    info.check_size(16, 32, "x")
    with pytest.raises(ContractError, match=r'Input "label_map" is 30 x 60 \(height x width\) but model "m" takes '
                                            r"heights and widths that are multiples of 8 \(size_multiple in labels.json\), "
                                            "e.g. 32 x 64"):
        info.check_size(30, 60, 'Input "label_map"', 'model "m"')
    with pytest.raises(ContractError, match="for width 64 the height must be 32"):
        info.check_size(64, 64, "x")
    pix2pixhd = labels(size_multiple=16, min_size=32, image_size=[64, 64], aspect_ratio=1.0)
    with pytest.raises(ContractError, match=r"at least 32 \(min_size in labels.json\)"):
        pix2pixhd.check_size(16, 16, "x")
    pix2pixhd.check_size(32, 32, "x")
    assert contract.min_size(16, 3) == 32 and contract.min_size(16, 7) == 64 and contract.min_size(16) == 16
    vae = labels(use_vae=True)
    with pytest.raises(ContractError, match=r"only takes 32 x 64 \(a VAE model"):
        vae.check_size(16, 32, "x")


def test_label_value_rule():
    plain, dontcare = labels(), labels(contain_dontcare_label=True)
    values = np.array([[0, 2, 3, 255]], np.uint8)
    assert contract.invalid_labels(values, 3, False).tolist() == [[False, False, True, True]]
    assert contract.invalid_labels(values, 3, True).tolist() == [[False, False, False, False]]
    with pytest.raises(ContractError, match=r"the layout holds 3 at \[0, 2\], but this model takes class indices "
                                            r"0..2 \(this model has no don't-care label, so 255 is not allowed"):
        plain.check_labels(values, "the layout")
    dontcare.check_labels(values, "the layout")
    with pytest.raises(ContractError, match="and 3 or 255 for unknown pixels"):
        dontcare.check_labels(np.array([[4]]), "x")


def test_colours_and_label_pngs():
    info = labels(palette=[[70, 130, 210], [110, 170, 55], [70, 130, 210]])  # a repeated colour
    layout = np.array([[0, 1, 2, 1]], np.uint8)
    rgb = contract.classes_to_colours(layout, info.palette_array)
    np.testing.assert_array_equal(contract.colours_to_classes(rgb, info.palette_array), [[0, 1, 0, 1]])
    np.testing.assert_array_equal(contract.read_label_png(png(rgb), info.palette_array), [[0, 1, 0, 1]])
    np.testing.assert_array_equal(contract.read_label_png(png(layout)), layout)
    rgba = np.concatenate([rgb, np.full((1, 4, 1), 255, np.uint8)], -1)
    np.testing.assert_array_equal(contract.read_label_png(png(rgba), info.palette_array), [[0, 1, 0, 1]])
    rgba[0, 0, 3] = 0
    with pytest.raises(ContractError, match="transparent pixels"):
        contract.read_label_png(png(rgba), info.palette_array, what="the layout")
    odd = rgb.copy()
    odd[0, 3] = (1, 2, 3)
    with pytest.raises(ContractError, match=r"1 pixels in 1 colours .* \(1, 2, 3\): 1 px, the first at \(x=3, y=0\)"):
        contract.read_label_png(png(odd), info.palette_array)
    np.testing.assert_array_equal(contract.read_label_png(png(odd), info.palette_array, unknown_label=255),
                                  [[0, 1, 0, 255]])
    with pytest.raises(ContractError, match="colour \\(RGB\\) label map"):
        contract.read_label_png(png(rgb))
    with pytest.raises(ContractError, match="is not a readable image"):
        contract.read_label_png(b"text", what="notes.png")
    wide = Image.fromarray(np.array([[0, 300]], np.uint16))  # a 16-bit PNG
    out = io.BytesIO()
    wide.save(out, format="PNG")
    with pytest.raises(ContractError, match="holds values 0..300; class indices are 0..255"):
        contract.read_label_png(out.getvalue())
    assert contract.read_instance_png(png(np.array([[0, 7]], np.uint8))).dtype == np.int32


def test_version_folders(tmp_path):
    for name in ("1", "10", "2", "007", "x1", ".tmp-3-1", "99999999999999999999"):
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file, not a version")
    assert contract.version_folders(tmp_path) == [1, 2, 7, 10]
    assert contract.newest_version(tmp_path) == 10
    assert contract.version_folders(tmp_path / "missing") == [] and contract.newest_version(tmp_path / "x1") is None
    assert contract.MAX_WARMUP_RECORDS == 1000
