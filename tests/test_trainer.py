import functools
import logging

import numpy as np
import pytest
import tensorflow as tf

from spade_tf.config import load_config
from spade_tf.data import pipeline
from spade_tf.training import checkpoints, trainer as trainer_module
from spade_tf.training.trainer import NonFiniteLossError, Trainer

from helpers import layout_miou, run_script


@pytest.fixture
def tiny_config(tiny_config):
    """The shared tiny config (tests/conftest.py) with epochs of 4 steps: on purpose, so that the
    learning-rate schedule and the data order cross epoch boundaries within a few steps."""
    return functools.partial(tiny_config, "train.steps_per_epoch=4")


def snapshot(model):
    return [np.array(v) for v in model.trainable_variables]


def changed(before, model):
    return [not np.array_equal(b, np.array(v)) for b, v in zip(before, model.trainable_variables)]


@pytest.mark.parametrize(
    "overrides",
    [["train.gan_mode=hinge"], ["train.gan_mode=ls"], ["train.gan_mode=original"], ["train.gan_mode=w"],
     ["model.use_vae=true", "train.no_ganFeat_loss=true", "train.no_TTUR=true"], ["model.num_D=1"]],
    ids=["hinge", "ls", "original", "w", "vae", "one-scale-discriminator"],
)
def test_one_step_updates_both_networks_with_finite_losses(tiny_config, overrides):
    cfg = tiny_config(*overrides)
    trainer = Trainer(cfg)
    batch = next(iter(pipeline.build_dataset(cfg)))
    g, d = snapshot(trainer.generator), snapshot(trainer.discriminator)
    e = snapshot(trainer.encoder) if trainer.encoder is not None else None
    logs = {k: float(v) for k, v in trainer.replica_step(batch).items()}  # eager: one compiled step is tested below
    expected = {"GAN", "D_Fake", "D_real"} | ({"KLD"} if cfg.model.use_vae else {"GAN_Feat"})
    assert set(logs) == expected
    assert all(np.isfinite(v) for v in logs.values()), logs
    # Every kernel of G and D moves (biases too); with VAE the encoder (trained with G's optimizer) too.
    assert all(changed(g, trainer.generator)), "some generator weights did not change"
    assert all(changed(d, trainer.discriminator)), "some discriminator weights did not change"
    if e is not None:
        assert all(changed(e, trainer.encoder)) and logs["KLD"] > 0
    assert int(trainer.g_optimizer.iterations) == 1 and int(trainer.d_optimizer.iterations) == 1


def test_d_steps_per_g_skips_generator_updates(tiny_config):
    trainer = Trainer(tiny_config("train.D_steps_per_G=2"))
    batch = next(iter(pipeline.build_dataset(trainer.cfg)))
    g = snapshot(trainer.generator)
    logs = trainer.replica_step(batch, train_generator=False)
    assert set(logs) == {"D_Fake", "D_real"} and not any(changed(g, trainer.generator))
    assert int(trainer.g_optimizer.iterations) == 0 and int(trainer.d_optimizer.iterations) == 1


def spade_impls(network):
    return {layer.spade_impl for layer in network._flatten_layers() if hasattr(layer, "spade_impl")}


def test_trains_with_the_dense_layout_branch_unless_lookups_are_asked_for(tiny_config):
    """model.spade_impl=regions is for inference; the training step uses it only with train.spade_lookups."""
    dense = Trainer(tiny_config("model.spade_impl=regions", "train.ema_decay=0.5"))
    assert dense.cfg.model.spade_impl == "regions"  # what the run folder saves, for its exports
    assert spade_impls(dense.generator) == spade_impls(dense.ema_generator) == {"dense"}
    lookups = Trainer(tiny_config("model.spade_impl=regions", "train.spade_lookups=true"))
    assert spade_impls(lookups.generator) == {"regions"}
    logs = lookups.replica_step(next(iter(pipeline.build_dataset(lookups.cfg))))
    assert all(np.isfinite(float(v)) for v in logs.values())


def test_run_resumes_after_a_normal_stop_and_stops_on_nan_keeping_the_last_good_checkpoint(
        tmp_path, tiny_config, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    overrides = ["train.niter=1", "train.niter_decay=2", "train.save_every_steps=2", "train.sample_every_steps=2",
                 "train.ema_decay=0.9"]
    first = Trainer(tiny_config(*overrides, "train.max_steps=2"))
    run = first.train()
    assert run == tmp_path / "synthetic"
    assert checkpoints.load_run_config(run).train.max_steps == 2
    assert (run / "samples" / "step_2.png").is_file()
    tags = {value.tag for path in (run / "logs").glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(path)) for value in event.summary.value}
    assert {"loss/GAN", "loss/GAN_Feat", "loss/D_Fake", "loss/D_real", "learning_rate/generator",
            "learning_rate/discriminator", "samples/layout_generated_real"} <= tags, tags
    assert tf.train.latest_checkpoint(str(run)).endswith("ckpt-2")

    # A new trainer (as a new process would) restores step, optimizers and schedule position.
    second = Trainer(tiny_config(*overrides, "train.max_steps=4"))
    assert second.restore(second.prepare_run()).endswith("ckpt-2")
    assert int(second.step.numpy()) == 2 and int(second.g_optimizer.iterations) == 2
    for a, b in zip(first.ema_generator.weights, second.ema_generator.weights, strict=True):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    # niter=1, niter_decay=2 epochs of 4 steps: constant to step 4, then linear to 0 at step 12.
    assert second.learning_rates() == pytest.approx((1e-4, 4e-4))
    second.step.assign(8)
    assert second.learning_rates() == pytest.approx((0.5e-4, 2e-4))
    second.step.assign(2)

    # Images turn NaN: the resumed run's first step is step 3. There the generator's adversarial
    # loss (D on fake only) is still finite, feature matching (D on real) is not; the run stops
    # naming it and keeps ckpt-2.
    build = pipeline.build_dataset

    def poisoned(*args, **kwargs):
        return build(*args, **kwargs).map(lambda b: {**b, "image": b["image"] * np.nan})

    monkeypatch.setattr(trainer_module.pipeline, "build_dataset", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss GAN_Feat is not finite at step 3 .*ckpt-2"):
        second.train()
    assert "resuming" in caplog.text and "at step 2" in caplog.text
    assert tf.train.latest_checkpoint(str(run)).endswith("ckpt-2")
    assert sorted(p.name for p in run.glob("ckpt-*.index")) == ["ckpt-2.index"]


def test_imported_networks_resume_fresh_starts_a_new_folder_changed_model_is_refused(tmp_path, tiny_config):
    cfg = tiny_config()
    directory = checkpoints.run_dir(cfg)
    imported = Trainer(cfg).generator
    checkpoints.save_imported(directory, cfg, imported)
    resumed = Trainer(tiny_config("train.seed=1"))  # other initial weights
    assert resumed.restore(resumed.prepare_run()).endswith("ckpt-0")
    for a, b in zip(imported.weights, resumed.generator.weights, strict=True):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert int(resumed.d_optimizer.iterations) == 0
    with pytest.raises(ValueError, match=r"model.ngf: 8 in the run, 16 now.*--fresh"):
        Trainer(tiny_config("model.ngf=16")).prepare_run()
    fresh = Trainer(tiny_config())
    assert fresh.prepare_run(fresh=True) == tmp_path / "synthetic-2"
    assert (tmp_path / "synthetic-2" / "config.yaml").is_file() and (directory / "ckpt-0.index").is_file()


@pytest.mark.slow
def test_xla_failure_falls_back_without_xla(tiny_config, monkeypatch, caplog):
    """A step XLA cannot compile (a py_function inside) runs without XLA after a warning."""
    trainer = Trainer(tiny_config("train.jit_compile='on'"))
    assert trainer.jit
    discriminator_losses = trainer.model.discriminator_losses

    def uncompilable(semantics, real):
        terms = discriminator_losses(semantics, real)
        terms["D_real"] = tf.py_function(lambda x: x, [terms["D_real"]], tf.float32)
        return terms

    monkeypatch.setattr(trainer.model, "discriminator_losses", uncompilable)
    iterator = iter(trainer.distributed_dataset())
    with caplog.at_level(logging.WARNING):
        logs = trainer.run_step(iterator)
    assert not trainer.jit and "continuing without XLA" in caplog.text
    assert np.isfinite(logs["D_real"]) and int(trainer.step.numpy()) == 1


@pytest.mark.slow
def test_two_cpu_replicas_match_one_device(tmp_path):
    """MirroredStrategy on 2 logical CPUs: same first-step losses as one device, batch-norm stats in sync."""
    run_script("mirrored_step.py", tmp_path)


@pytest.mark.slow
def test_short_run_follows_the_layout(tiny_run):
    """The tiny model's images segment back to their layouts far better than the untrained generator's."""
    from spade_tf.models import build_generator

    run = tiny_run  # trained once per session (tests/conftest.py), shared with the serving tests
    cfg, generator, _ = checkpoints.restore_networks(run)  # the EMA generator, as export uses it
    trained = layout_miou(cfg, generator)
    untrained = layout_miou(cfg, build_generator(cfg))
    assert (run / "samples" / "step_200.png").is_file()
    assert trained > 0.45 and trained > untrained + 0.3, (untrained, trained)  # measured: 0.03 -> 0.66


def test_a_resumed_run_is_fed_the_batches_an_uninterrupted_run_is(tmp_path):
    """Stopped at step 4, in the second epoch of 3 batches, and resumed to step 8: the same batch at every step."""
    from fed_batches import resume_overrides, train_recorded

    def config(name, steps):
        return load_config("synthetic", resume_overrides(tmp_path, f"name={name}", f"train.max_steps={steps}"))

    uninterrupted = train_recorded(config("uninterrupted", 8))
    first = train_recorded(config("resumed", 4))
    resumed = train_recorded(config("resumed", 8))
    assert sorted(first) == [(s, 0) for s in range(4)] and sorted(resumed) == [(s, 0) for s in range(4, 8)]
    assert {**first, **resumed} == uninterrupted
    assert len(set(uninterrupted.values())) > 3  # the batches differ, so the comparison can fail


@pytest.mark.slow
def test_a_resumed_run_feeds_two_replicas_the_batches_of_an_uninterrupted_run(tmp_path):
    """MirroredStrategy on 2 logical CPUs (a subprocess: logical devices are set once per process)."""
    run_script("fed_batches.py", tmp_path)
