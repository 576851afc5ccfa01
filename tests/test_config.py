import re

import pytest
import yaml

from spade_tf.config import CONFIG_DIR, Config, ConfigError, load_config


@pytest.mark.parametrize("preset", ["cityscapes", "ade20k", "coco", "facades", "custom", "synthetic"])
def test_every_preset_loads_and_round_trips(preset, tmp_path):
    cfg = load_config(preset)
    assert cfg.data.dataset_mode == preset
    cfg.to_yaml(tmp_path / "c.yaml")
    assert load_config(str(tmp_path / "c.yaml")) == cfg


def test_presets_carry_the_reference_defaults():
    city, ade, coco = load_config("cityscapes"), load_config("ade20k"), load_config("coco")
    assert (city.data.label_nc, city.data.contain_dontcare_label, city.data.no_instance) == (35, False, False)
    assert (city.data.crop_size, city.data.aspect_ratio, city.model.num_upsampling_layers) == (512, 2.0, "more")
    assert city.image_size == (256, 512) and city.semantic_nc == 36
    assert (ade.data.label_nc, ade.data.contain_dontcare_label, ade.semantic_nc) == (150, True, 151)
    assert (coco.data.label_nc, coco.semantic_nc) == (182, 184)
    assert (ade.train.niter, ade.train.niter_decay) == (100, 100)


def test_overrides_by_section_and_by_unique_name():
    cfg = load_config("synthetic", ["model.ngf=8", "lr=1e-3", "train.no_TTUR=true", "data.class_names=[a, b]"])
    assert cfg.model.ngf == 8 and cfg.train.lr == 0.001 and cfg.train.no_TTUR is True
    assert cfg.data.class_names == ("a", "b")
    assert load_config("synthetic", ["aspect_ratio=2"]).data.aspect_ratio == 2.0
    on_off = load_config("synthetic", ["train.jit_compile=on", "mixed_precision=off"])
    assert (on_off.train.jit_compile, on_off.train.mixed_precision) == ("on", "off")


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.ngff=3", ["unknown config key 'model.ngff'", "Did you mean model.ngf", "Valid keys"]),
        ("ngf=abc", ["'model.ngf' must be of type int", "'abc'"]),
        ("label_nc=true", ["'data.label_nc' must be of type int"]),
        ("gan_mode=foo", ["'train.gan_mode' must be one of hinge, ls, original, w"]),
        ("ngf", ["must look like section.field=value"]),
    ],
)
def test_bad_overrides_name_the_key_and_what_is_valid(override, words):
    with pytest.raises(ConfigError) as e:
        load_config("synthetic", [override])
    for w in words:
        assert w in str(e.value)


def test_a_folder_named_like_a_preset_is_not_a_config_file(tmp_path, monkeypatch):
    (tmp_path / "synthetic").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_config("synthetic").data.dataset_mode == "synthetic"


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no preset named 'nope'.*cityscapes"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"ngf": 8, "wings": 2}}))
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'model.wings'"):
        load_config(str(bad))
    bad.write_text("model: [1, 2]")
    with pytest.raises(ConfigError, match="'model' must be a mapping"):
        load_config(str(bad))


def test_defaults_are_the_reference_options():
    cfg = Config()
    assert cfg.model.norm_G == "spectralspadesyncbatch3x3" and cfg.model.norm_D == "spectralinstance"
    assert (cfg.model.init_type, cfg.model.init_variance) == ("xavier", 0.02)
    assert (cfg.train.lr, cfg.train.beta1, cfg.train.beta2, cfg.train.gan_mode) == (0.0002, 0.0, 0.9, "hinge")
    assert (cfg.train.lambda_feat, cfg.train.lambda_vgg, cfg.train.lambda_kld) == (10.0, 10.0, 0.05)
    assert sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) == [
        "ade20k", "cityscapes", "coco", "custom", "facades", "synthetic"
    ]


# --- the eval section (synthesis and evaluation) ------------------------------------------------

def test_eval_section_from_a_file_then_overrides(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("eval: {split: val, seeds: [0, 3], extractor: inception-2015, batch_size: 2}\n")
    e = load_config(str(path), ["eval.batch_size=4", "kid_subset_size=50", "eval.segmenter=exports/seg/1"]).eval
    assert (e.split, e.seeds, e.extractor) == ("val", (0, 3), "inception-2015")
    assert (e.batch_size, e.kid_subset_size, e.segmenter) == (4, 50, "exports/seg/1")
    old = Config().to_dict()  # a run's config.yaml written before the section existed
    del old["eval"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    assert load_config(str(tmp_path / "old.yaml")).eval == Config().eval


@pytest.mark.parametrize(
    "override, words",
    [
        ("eval.extractor=vgg", ["'eval.extractor' must be one of none, inception-2015, keras-inceptionv3; got 'vgg'"]),
        ("eval.split=testing", ["'eval.split' must be one of train, val, test; got 'testing'"]),
        ("eval.seeds=0,1", ["'eval.seeds' must be a list"]),
        ("eval.how_many=all", ["'eval.how_many' must be of type int"]),
        ("eval.weights=x.h5", ["unknown config key 'eval.weights'", "eval.keras_inception_weights"]),
    ],
)
def test_bad_eval_values_name_the_key_and_what_is_valid(override, words):
    with pytest.raises(ConfigError) as e:
        load_config("synthetic", [override])
    for w in words:
        assert w in str(e.value)


# --- ranges, renamed keys, ambiguous short names -------------------------------------------------

@pytest.mark.parametrize(
    "override, message",
    [
        ("train.sample_every_steps=0", "'train.sample_every_steps' must be >= 1; got 0"),
        ("train.batch_size=-2", "'train.batch_size' must be >= 1; got -2"),
        ("model.ngf=0", "'model.ngf' must be >= 1; got 0"),
        ("data.aspect_ratio=0", "'data.aspect_ratio' must be > 0; got 0.0"),
        ("train.ema_decay=1", "'train.ema_decay' must be in [0, 1); got 1.0"),
        ("serve.max_batch_size=0", "'serve.max_batch_size' must be >= 1; got 0"),
    ],
)
def test_values_out_of_range_are_refused(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("synthetic", [override])


def test_every_range_names_a_numeric_field_and_accepts_its_default():
    from spade_tf.config import RANGES

    cfg = Config()
    for key, (_, test) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        assert isinstance(value, (int, float)) and test(value), key


def test_a_config_saved_with_a_renamed_or_retired_key_still_loads(tmp_path):
    old = Config().to_dict()
    old["serve"]["poll_wait_seconds"] = old["serve"].pop("file_system_poll_wait_seconds") + 4
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    old["data"]["shuffle_buffer"] = 64  # retired: ignored
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert load_config(str(tmp_path / "config.yaml")).serve.file_system_poll_wait_seconds == 5.0


def test_a_short_name_in_several_sections_asks_which():
    with pytest.raises(ConfigError, match=r"'batch_size' is in several sections; write one of .*train\.batch_size"):
        load_config("synthetic", ["batch_size=4"])


# --- frozen after parsing; changes through replace ----------------------------------------------

def test_a_config_is_frozen_and_replace_returns_a_checked_copy():
    import dataclasses

    from spade_tf.config import replace

    cfg = load_config("synthetic")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.max_steps = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"
    changed = replace(cfg, {"train": {"max_steps": 5}, "model.ngf": 8}, name="other")
    assert (changed.train.max_steps, changed.model.ngf, changed.name) == (5, 8, "other")
    assert cfg == load_config("synthetic")  # the original is unchanged
    assert changed.data is cfg.data  # untouched sections are shared, not copied
    with pytest.raises(ConfigError, match=r"demo: 'train.gan_mode' must be one of hinge, ls, original, w; got 'l2'"):
        replace(cfg, {"train.gan_mode": "l2"}, where="demo")
    with pytest.raises(ConfigError, match=r"'train.batch_size' must be >= 1; got 0"):
        replace(cfg, {"train.batch_size": 0})
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_step'.*Did you mean train.max_steps"):
        replace(cfg, {"train.max_step": 3})


def test_sections_made_directly_are_checked_too():
    import dataclasses

    from spade_tf.config import ServeConfig, TrainConfig

    with pytest.raises(ConfigError, match="'train.distribute' must be one of auto, none, mirrored, multiworker"):
        TrainConfig(distribute="tpu")
    with pytest.raises(ConfigError, match="'serve.max_batch_size' must be >= 1; got 0"):
        dataclasses.replace(ServeConfig(), max_batch_size=0)
    assert TrainConfig(lr=1).lr == 1.0 and isinstance(TrainConfig(lr=1).lr, float)  # coerced as in a file
    with pytest.raises(ConfigError, match="'data' must be a DataConfig"):
        Config(data={"label_nc": 3})
