"""The tf.data pipeline: batches, shuffling, determinism, sharding, label checks, distribution."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from spade_tf.config import Config, DataConfig, TrainConfig, replace
from spade_tf.data import DataError, build_dataset, decode

H, W = 32, 64


def write_samples(root, n, label_nc=8, size=(H, W)):
    """Custom-layout fixture; sample i's instance map is i * 100 + column block, so it names the sample."""
    for d in ("labels", "images", "instances"):
        (root / d).mkdir(parents=True, exist_ok=True)
    h, w = size
    y, x = np.mgrid[:h, :w]
    for i in range(n):
        label = ((x // 8) + (y // 8) + i) % label_nc
        Image.fromarray(label.astype(np.uint8)).save(root / "labels" / f"s{i}.png")
        Image.fromarray(np.stack([label * 30, x * 3, y * 5], -1).astype(np.uint8)).save(root / "images" / f"s{i}.png")
        Image.fromarray((i * 100 + x // 16).astype(np.uint16)).save(root / "instances" / f"s{i}.png")
    return root


def make_cfg(root, batch_size=2, **data):
    values = dict(
        dataset_mode="custom", label_dir=str(root / "labels"), image_dir=str(root / "images"),
        instance_dir=str(root / "instances"), no_instance=False, label_nc=8,
        preprocess_mode="resize_and_crop", load_size=40, crop_size=32,
    )
    values.update(data)
    return Config(data=DataConfig(**values), train=TrainConfig(batch_size=batch_size))


def ids(batches):
    """The sample index of every element, in order."""
    return [int(i) for b in batches for i in b["instance"].numpy().min(axis=(1, 2)) // 100]


def test_batches_have_the_documented_keys_shapes_and_dtypes(tmp_path):
    cfg = make_cfg(write_samples(tmp_path, 4))
    spec = build_dataset(cfg).element_spec
    assert set(spec) == {"label", "image", "instance"}
    assert spec["label"].shape == (2, 32, 32) and spec["label"].dtype == tf.int32
    assert spec["instance"].shape == (2, 32, 32) and spec["instance"].dtype == tf.int32
    assert spec["image"].shape == (2, 32, 32, 3) and spec["image"].dtype == tf.float32
    batch = next(iter(build_dataset(cfg)))
    assert -1.0 <= batch["image"].numpy().min() and batch["image"].numpy().max() <= 1.0
    assert set(np.unique(batch["label"])) <= set(range(8))
    cfg = replace(cfg, {"data.no_instance": True})
    assert set(build_dataset(cfg).element_spec) == {"label", "image"}


def test_training_drops_the_last_partial_batch_and_val_keeps_it(tmp_path):
    cfg = make_cfg(write_samples(tmp_path, 5), batch_size=2)
    assert [b["label"].shape[0] for b in build_dataset(cfg, "train")] == [2, 2]
    val = list(build_dataset(cfg, "val"))
    assert [b["label"].shape[0] for b in val] == [2, 2, 1]
    assert ids(val) == [0, 1, 2, 3, 4]  # no shuffling outside training


def test_same_seed_same_batches_and_each_epoch_reshuffled(tmp_path):
    cfg = make_cfg(write_samples(tmp_path, 8), batch_size=1)
    first = list(build_dataset(cfg))
    again = list(build_dataset(cfg))
    assert ids(first) == ids(again)
    for a, b in zip(first, again):  # same crops and flips too
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert sorted(ids(first)) == list(range(8))

    stream = ids(build_dataset(cfg, repeat=True).take(24))
    epochs = [stream[i:i + 8] for i in range(0, 24, 8)]
    assert epochs[0] == ids(first)  # the first epoch of the endless stream is the one-epoch dataset
    assert all(sorted(e) == list(range(8)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3  # reshuffled every epoch, deterministically

    cfg = replace(cfg, {"data.seed": 1})
    assert ids(build_dataset(cfg)) != ids(first)


def test_training_epochs_end_on_their_last_whole_batch_and_the_length_is_known(tmp_path):
    cfg = make_cfg(write_samples(tmp_path, 7), batch_size=2)
    assert int(build_dataset(cfg).cardinality()) == 3
    stream = ids(build_dataset(cfg, repeat=True).take(9))  # 3 epochs of 3 batches
    epochs = [stream[i:i + 6] for i in range(0, 18, 6)]
    assert all(len(set(e)) == 6 and set(e) <= set(range(7)) for e in epochs)
    assert len({frozenset(e) for e in epochs}) > 1  # the sample left out changes with the epoch's order


def batches(ds):
    return [{k: v.numpy() for k, v in b.items()} for b in ds]


def assert_same_batches(resumed, uninterrupted):
    assert len(resumed) == len(uninterrupted)
    for a, b in zip(resumed, uninterrupted, strict=True):
        for key in b:
            np.testing.assert_array_equal(a[key], b[key])  # same samples, crops and flips


@pytest.mark.parametrize(
    "pipelines,replicas", [(1, 1), (1, 2), (2, 4)], ids=["one-device", "mirrored-2-replicas", "2-workers-2-replicas-each"]
)
def test_a_stream_started_at_a_step_continues_exactly_where_an_uninterrupted_one_is(tmp_path, pipelines, replicas):
    """Each input pipeline (one per worker) hands a step one batch per local replica: from step k
    its stream must be the uninterrupted stream from batch k * local replicas, across epochs."""
    cfg = make_cfg(write_samples(tmp_path, 11), batch_size=replicas * 2)  # shards of 6 and 5 with 2 pipelines
    local = replicas // pipelines
    steps = 7  # more than 2 epochs of every shard
    for pipeline in range(pipelines):
        ctx = tf.distribute.InputContext(pipelines, pipeline, replicas)
        uninterrupted = batches(build_dataset(cfg, "train", ctx, repeat=True).take(steps * local))
        for k in (1, 5):  # inside the first epoch; in a later one
            resumed = batches(build_dataset(cfg, "train", ctx, repeat=True, start_step=k).take((steps - k) * local))
            assert_same_batches(resumed, uninterrupted[k * local:])
        shard = range(pipeline, 11, pipelines)
        epoch = [i for b in uninterrupted[:len(shard) // 2] for i in b["instance"].min(axis=(1, 2)) // 100]
        assert len(set(epoch)) == len(shard) // 2 * 2 and set(epoch) <= set(shard)


def test_a_resumed_stream_reads_no_sample_before_its_position(tmp_path):
    cfg = make_cfg(write_samples(tmp_path, 8), batch_size=2)
    order = ids(build_dataset(cfg, repeat=True).take(8))  # 2 epochs of 4 batches
    uninterrupted = build_dataset(cfg, repeat=True)
    resumed = build_dataset(cfg, repeat=True, start_step=2)  # the second half of epoch 0
    first = order[0]
    assert first not in order[4:8]
    (tmp_path / "images" / f"s{first}.png").unlink()  # after the up-front file check
    assert ids(resumed.take(2)) == order[4:8]  # never reads the first batch's files
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"image {tmp_path / 'images' / f's{first}.png'}"):
        list(uninterrupted.take(1))


def damage_png(path):
    """Overwrites bytes in the middle of the PNG's image data; signature, header and IEND stay intact."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8:start - 4], "big")
    data[start + length // 2:start + length // 2 + 8] = bytes(8)
    path.write_bytes(bytes(data))


def damage_jpeg(path):
    """Puts a marker with a bogus length into the middle of the JPEG's scan; SOI, headers and EOI stay intact."""
    data = bytearray(path.read_bytes())
    middle = (data.index(b"\xff\xda") + len(data)) // 2
    data[middle:middle + 5] = b"\xff\xc4\x00\x03\x00"
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("role,index", [("images", 1), ("labels", 2), ("instances", 3), ("images", 4)],
                         ids=["image", "label", "instance", "last-sample"])
def test_a_file_damaged_in_the_middle_names_itself(tmp_path, role, index):
    write_samples(tmp_path, 5)
    bad = tmp_path / role / f"s{index}.png"
    damage_png(bad)
    cfg = make_cfg(tmp_path, batch_size=1)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        list(build_dataset(cfg, "val"))  # the up-front check passes: the file's header and end marker are intact
    message = e.value.message
    assert f"{role[:-1]} {bad} cannot be read or decoded" in message and "Invalid PNG data" in message
    assert "expected a complete, undamaged PNG/JPEG/BMP file" in message


def test_a_failed_sample_is_described_once_and_the_stream_goes_on(tmp_path, monkeypatch):
    """Python runs once per failed sample, not again for each later batch: a description still running in
    a background thread of the pipeline when its iterator is deleted (after the error) could hang the
    process. After the error the stream goes on, without errors about the good samples that follow."""
    write_samples(tmp_path, 6)
    damage_png(tmp_path / "images" / "s1.png")
    described = []
    real = decode.describe_failure
    monkeypatch.setattr(decode, "describe_failure",
                        lambda paths, load=None: described.append(paths) or real(paths, load))
    iterator = iter(build_dataset(make_cfg(tmp_path, batch_size=1), "val"))
    assert ids([next(iterator)]) == [0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="s1.png cannot be read or decoded"):
        next(iterator)
    assert ids([next(iterator) for _ in range(3)]) == [3, 4, 5]  # the failed batch reported sample 1 (it held 2)
    assert [str(paths["image"]) for paths in described] == [str(tmp_path / "images" / "s1.png")]


def test_a_jpeg_with_a_damaged_scan_names_itself_and_skip_drops_it_with_a_warning(tmp_path, caplog):
    write_samples(tmp_path, 4)
    for i in range(4):
        image = tmp_path / "images" / f"s{i}.png"
        Image.open(image).save(image.with_suffix(".jpg"), quality=95)
        image.unlink()
    bad = tmp_path / "images" / "s2.jpg"
    damage_jpeg(bad)
    cfg = make_cfg(tmp_path, batch_size=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"image {bad} cannot be read or decoded"):
        list(build_dataset(cfg, "val"))
    cfg = replace(cfg, {"data.on_bad_file": "skip"})
    assert ids(build_dataset(cfg, "val")) == [0, 1, 3]
    assert f"skipping a sample: image {bad} cannot be read or decoded" in caplog.text
    assert sorted(ids(build_dataset(cfg, "train", batch_size=1))) == [0, 1, 3]


def test_each_input_pipeline_reads_its_own_shard(tmp_path):
    cfg = make_cfg(write_samples(tmp_path, 8), batch_size=4)
    shards = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        ds = build_dataset(cfg, "train", ctx)
        assert ds.element_spec["label"].shape[0] == 2  # per-replica batch of the global 4
        shards.append(ids(ds))
    assert len(shards[0]) == len(shards[1]) == 4
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(8))


def test_too_few_samples_for_one_batch_per_pipeline_is_an_error(tmp_path):
    cfg = make_cfg(write_samples(tmp_path, 3), batch_size=4)
    with pytest.raises(DataError, match="3 samples.*fewer than one batch of 4"):
        build_dataset(cfg)


def test_label_outside_the_label_set_names_the_file_and_values(tmp_path):
    write_samples(tmp_path, 3)
    bad = tmp_path / "labels" / "s1.png"
    label = np.asarray(Image.open(bad)).copy()
    label[0, :3] = [9, 40, 9]
    Image.fromarray(label).save(bad)
    cfg = make_cfg(tmp_path, batch_size=1)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        list(build_dataset(cfg, "val"))
    assert str(bad) in e.value.message and "[9 40]" in e.value.message and "expected class indices 0..7" in e.value.message

    cfg = replace(cfg, {"data.on_bad_file": "skip"})
    assert ids(build_dataset(cfg, "val")) == [0, 2]


def test_255_is_kept_with_a_dontcare_label_and_an_error_without(tmp_path):
    write_samples(tmp_path, 2)
    path = tmp_path / "labels" / "s0.png"
    label = np.asarray(Image.open(path)).copy()
    label[:5, :5] = 255
    Image.fromarray(label).save(path)
    cfg = make_cfg(tmp_path, batch_size=1, preprocess_mode="none", contain_dontcare_label=True)
    first = next(iter(build_dataset(cfg, "val")))["label"].numpy()[0]
    np.testing.assert_array_equal(first, label)  # 255 left for semantic_input to map to "unknown"
    cfg = replace(cfg, {"data.contain_dontcare_label": False})
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{path}.*255.*only with data.contain_dontcare_label"):
        list(build_dataset(cfg, "val"))


def test_sizes_that_differ_cannot_be_batched(tmp_path):
    write_samples(tmp_path, 2)
    write_samples(tmp_path / "other", 1, size=(48, 64))
    for d in ("labels", "images", "instances"):
        os.rename(tmp_path / "other" / d / "s0.png", tmp_path / d / "s9.png")
    cfg = make_cfg(tmp_path, batch_size=2, preprocess_mode="scale_width", load_size=64)
    with pytest.raises(DataError, match=f"{tmp_path / 'images' / 's9.png'} 48x64"):
        build_dataset(cfg)
    assert [b["label"].shape[1:] for b in build_dataset(cfg, "val", batch_size=1)] == [(32, 64), (32, 64), (48, 64)]


def test_synthetic_dataset_through_the_pipeline():
    pytest.importorskip("spade_tf.data.synthetic")
    cfg = Config(
        data=DataConfig(dataset_mode="synthetic", label_nc=8, no_instance=False, crop_size=64, synthetic_size=6),
        train=TrainConfig(batch_size=2),
    )
    cfg = replace(cfg, {"model.num_upsampling_layers": "normal"})
    train = list(build_dataset(cfg))
    assert len(train) == 3
    assert train[0]["label"].shape == (2, 64, 64) and train[0]["image"].shape == (2, 64, 64, 3)
    assert train[0]["instance"].dtype == tf.int32
    again = list(build_dataset(cfg))
    for a, b in zip(train, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    val = next(iter(build_dataset(cfg, "val")))
    assert not np.array_equal(val["image"], train[0]["image"])
    cfg = replace(cfg, {"data.no_instance": True})
    assert set(build_dataset(cfg).element_spec) == {"label", "image"}


MIRRORED = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from spade_tf.config import load_config
    from spade_tf.data import distributed_dataset

    root = sys.argv[1]
    cfg = load_config("custom", [
        f"data.label_dir={root}/labels", f"data.image_dir={root}/images", f"data.instance_dir={root}/instances",
        "data.no_instance=false", "data.label_nc=8", "data.load_size=40", "data.crop_size=32", "train.batch_size=4",
    ])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    seen = []
    for batch in distributed_dataset(strategy, cfg):
        per_replica = strategy.experimental_local_results(batch["instance"])
        assert len(per_replica) == 2, per_replica
        for t in per_replica:
            assert t.shape == (2, 32, 32), t.shape
            seen += [int(v) // 100 for v in tf.reduce_min(t, axis=[1, 2]).numpy()]
    print("SEEN", sorted(seen))
    """
)


def test_distributed_dataset_feeds_two_replicas(tmp_path):
    """MirroredStrategy over 2 logical CPUs, in a subprocess: logical devices are set once per process."""
    write_samples(tmp_path, 8)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SEEN [0, 1, 2, 3, 4, 5, 6, 7]" in result.stdout
