"""The SPADE training loop: the reference's GAN step under tf.distribute, checkpoints, summaries.

Design: a hand-written loop (`Trainer.train`) around one `tf.function` step, with
`keras.utils.Progbar` for the progress bar, not `keras.Model.train_step` + `fit`. SPADE trains
two networks with two optimizers in a fixed order, the learning rate follows a checkpointed step
counter, and the step must be rebuilt without XLA when compilation fails: `compile`/`fit` are
built around one model and one loss, and their callbacks would still need the
`tf.train.CheckpointManager`, the NaN stop and the sample grids written here.

One training iteration (`Trainer.run_step`), as the reference's `Pix2PixTrainer`; the networks and
their losses are `spade_tf.models.pix2pix_model.Pix2PixModel`'s, as the reference's `Pix2PixModel`:
1. generator step (every `D_steps_per_G`-th iteration): loss = GAN + feature matching + VGG (+ KLD);
   G (and E) are updated with the generator's Adam;
2. discriminator step on a regenerated fake: loss = D_Fake + D_real.
Every network runs in training mode throughout (batch-norm statistics, spectral-norm power
iterations), as the reference's `model.train()`.

Under distribution each replica's loss terms are its share of the global batch's loss
(`losses.replica_loss`: means over the global batch; the KL term summed, as the reference sums it
over the batch); the optimizers sum the replicas' gradients, so the update equals the reference's
on the global batch. Synchronized batch norm (norm_G `...syncbatch...`) comes from the model.
Reported losses are the global values (replica shares summed).

Only the chief writes checkpoints, TensorBoard logs and sample grids; other workers save into a
temporary folder (saving is collective under MultiWorkerMirroredStrategy) removed at the end.
With `train.ema_decay` > 0 an exponential moving average of G's trainable weights
(`ema_generator`; its batch-norm statistics and spectral-norm vectors are copied from G) makes the
samples and is what export uses. A NaN or infinite loss stops the run before anything is saved.

Resume: the default when the run folder holds a checkpoint; networks, optimizers (with their
iteration counts) and the step are restored, and the learning rate is a function of the step. The
input pipeline starts at the step's data position (its epoch and the batch inside it: the order is
a function of the position, `spade_tf.data.order`), so a resumed run is fed the batches an
uninterrupted run would have been fed, on every replica and worker.
"""

import functools
import logging
import math
import pathlib
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from spade_tf.config import replace
from spade_tf.data import pipeline
from spade_tf.models import build_generator
from spade_tf.models.pix2pix_model import DISCRIMINATOR_LOSSES, GENERATOR_LOSSES, Pix2PixModel
from spade_tf.training import checkpoints, preemption, schedule, strategy as placement, visuals

log = logging.getLogger(__name__)

NUM_SAMPLES = 4  # examples in a sample grid


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stopped without saving."""


def count_steps_per_epoch(cfg) -> int:
    """`train.steps_per_epoch`, else the training split's size // the global batch."""
    if cfg.train.steps_per_epoch:
        return cfg.train.steps_per_epoch
    batches = int(pipeline.build_dataset(cfg, "train", batch_size=cfg.train.batch_size).cardinality())
    if batches < 1:
        raise ValueError(
            "cannot tell how many batches an epoch of this dataset holds; set train.steps_per_epoch"
            if batches < 0
            else f"the training split holds less than one batch of {cfg.train.batch_size}"
        )
    return batches


def _copy_weights(target, source):
    for t, s in zip(target.weights, source.weights, strict=True):
        t.assign(s)


class Trainer:
    """Builds the networks, optimizers and step for `cfg` under its strategy; `train()` runs it.

    `strategy`: a tf.distribute strategy, default `strategy.make_strategy(cfg.train)`.
    `steps_per_epoch`: default `count_steps_per_epoch(cfg)` (reads the dataset's size).
    """

    def __init__(self, cfg, strategy=None, steps_per_epoch=None):
        t = cfg.train
        self.cfg = cfg
        self.strategy = strategy or placement.make_strategy(t)
        replicas = self.strategy.num_replicas_in_sync
        if t.batch_size % replicas:
            raise ValueError(
                f"train.batch_size={t.batch_size} is the global batch and must be a multiple of the "
                f"{replicas} replicas in sync"
            )
        self.is_chief = placement.is_chief(self.strategy)
        log.info("strategy: %s", placement.describe(self.strategy))
        self.jit, why = placement.choose_jit(t, self.strategy)
        log.info("%s", why)
        self.policy = placement.mixed_policy(t, self.strategy)
        log.info("precision: %s", self.policy or "float32 (train.mixed_precision=off)")
        self.steps_per_epoch = steps_per_epoch or count_steps_per_epoch(cfg)
        self.max_steps = t.max_steps or (t.niter + t.niter_decay) * self.steps_per_epoch
        self.g_schedule, self.d_schedule = schedule.schedules(t, self.steps_per_epoch)

        keras.utils.set_random_seed(t.seed)
        dtype = self.policy or "float32"  # every network layer's dtype policy
        # The region-wise layout branch is for inference; in a training step its lookups measured slower
        # and larger than the dense convolutions (README, "Region-wise SPADE"): train dense unless asked.
        networks = cfg if t.spade_lookups else replace(cfg, {"model": {"spade_impl": "dense"}})
        with self.strategy.scope():
            self.model = Pix2PixModel(networks, self._noise, dtype=dtype)
            self.generator, self.discriminator, self.encoder = (
                self.model.generator, self.model.discriminator, self.model.encoder)
            self.ema_generator = None
            if t.ema_decay > 0:
                self.ema_generator = build_generator(networks, dtype=dtype)
                _copy_weights(self.ema_generator, self.generator)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            adam = schedule.adam_settings(t)
            self.g_optimizer = self._adam(lambda: self.g_schedule(self.step), adam, "g_optimizer")
            self.d_optimizer = self._adam(lambda: self.d_schedule(self.step), adam, "d_optimizer")
            self.g_optimizer.build(self.model.generator_variables())
            self.d_optimizer.build(self.discriminator.trainable_variables)
        parts = {
            "generator": self.generator,
            "discriminator": self.discriminator,
            "g_optimizer": self.g_optimizer,
            "d_optimizer": self.d_optimizer,
            "step": self.step,
        }
        if self.encoder is not None:
            parts["encoder"] = self.encoder
        if self.ema_generator is not None:
            parts["ema_generator"] = self.ema_generator
        self.checkpoint_parts = parts
        self.checkpoint = tf.train.Checkpoint(**parts)
        self._steps = {}  # (train G?) -> compiled step function
        self._ran = set()  # step functions that ran once (compiled)
        self._sample_fn = None

    def _adam(self, learning_rate, adam, name):
        optimizer = keras.optimizers.Adam(
            learning_rate=learning_rate, beta_1=adam.beta_1, beta_2=adam.beta_2, epsilon=1e-8, name=name
        )
        if self.policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=name)
        return optimizer

    def learning_rates(self):
        """(generator lr, discriminator lr) at the current step."""
        return float(self.g_schedule(self.step)), float(self.d_schedule(self.step))

    # --- the step ------------------------------------------------------------------------
    def _noise(self, shape, salt):
        """N(0, I) keyed by (train.seed, step, replica, salt): each replica its own draw, every step a new one.

        Not Keras's global seed generator: its state variable is created on first use and shared,
        which fails inside tf.function under several replicas, and replicas would draw the same noise.
        """
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context is not None else 0
        key = tf.stack([tf.constant(self.cfg.train.seed, tf.int64), tf.cast(self.step, tf.int64)])
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(replica, tf.int64) * 4 + salt)
        return tf.random.stateless_normal(shape, key)

    def _update(self, optimizer, variables, compute_losses, *args):
        with tf.GradientTape() as tape:
            terms = compute_losses(*args)
            total = optimizer.scale_loss(tf.add_n(list(terms.values())))
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return terms

    def _update_ema(self):
        decay = self.cfg.train.ema_decay
        for e, w in zip(self.ema_generator.weights, self.generator.weights, strict=True):
            e.assign(decay * e + (1.0 - decay) * w if w.trainable else w)

    def replica_step(self, batch, train_generator=True):
        """One iteration on this replica's batch: G step (if `train_generator`), then D step."""
        model = self.model
        semantics = model.semantics(batch)
        real = batch["image"]
        logs = {}
        if train_generator:
            g_variables = model.generator_variables()
            logs.update(self._update(self.g_optimizer, g_variables, model.generator_losses, semantics, real))
            if self.ema_generator is not None:
                self._update_ema()
            # The D step starts after the whole G step: begun as soon as its first weights are updated, it
            # holds its activations beside the G step's gradients (a higher peak, README "Memory").
            with tf.control_dependencies([tf.identity(v) for v in g_variables]):
                semantics, real = tf.identity(semantics), tf.identity(real)
        d_variables = self.discriminator.trainable_variables
        logs.update(self._update(self.d_optimizer, d_variables, model.discriminator_losses, semantics, real))
        return logs

    def _build_step(self, train_generator):
        replica_fn = functools.partial(self.replica_step, train_generator=train_generator)
        if self.jit:
            replica_fn = tf.function(replica_fn, jit_compile=True, autograph=False)

        @tf.function(autograph=False)
        def step(iterator):
            logs = self.strategy.run(replica_fn, args=(next(iterator),))
            self.step.assign_add(1)
            return {k: self.strategy.reduce("SUM", v, axis=None) for k, v in logs.items()}

        return step

    def run_step(self, iterator) -> dict:
        """One training iteration on the next batch of a distributed iterator -> global losses (floats).

        When the XLA-compiled step fails on its first run it is rebuilt without XLA and retried.
        """
        train_generator = int(self.step.numpy()) % self.cfg.train.D_steps_per_G == 0
        if train_generator not in self._steps:
            self._steps[train_generator] = self._build_step(train_generator)
        step = self._steps[train_generator]
        try:
            logs = step(iterator)
        except (tf.errors.OpError, RuntimeError, ValueError, NotImplementedError) as error:
            if not self.jit or step in self._ran:
                raise
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            log.warning(
                "the XLA-compiled training step failed on its first run (%s: %s); continuing without XLA",
                type(error).__name__, first_line[:300],
            )
            self.jit = False
            self._steps.clear()
            return self.run_step(iterator)
        self._ran.add(step)
        return {k: float(v) for k, v in logs.items()}

    def distributed_dataset(self, split="train", start_step=0):
        """The repeated training data from the data position of `start_step` (`pipeline.distributed_dataset`)."""
        return pipeline.distributed_dataset(self.strategy, self.cfg, split, repeat=True, start_step=start_step)

    # --- samples -------------------------------------------------------------------------
    def sample_images(self, batch):
        """Images of a local (not distributed) batch from the EMA generator if kept, else G; inference mode."""
        if self._sample_fn is None:
            generator = self.ema_generator or self.generator

            @tf.function(autograph=False)
            def sample(batch):
                semantics = self.model.semantics(batch)
                return self.model.generate(semantics, batch["image"], training=False, generator=generator, salt=2)[0]

            self._sample_fn = sample
        return self._sample_fn(batch).numpy()

    def sample_grid(self, batch):
        return visuals.sample_grid(batch["label"], self.sample_images(batch), batch["image"], self.cfg.data)

    # --- the run -------------------------------------------------------------------------
    def prepare_run(self, fresh=False) -> pathlib.Path:
        """The run folder: resumed when it holds a checkpoint, unless `fresh` (then `<name>-<k>`)."""
        if fresh:
            name = checkpoints.fresh_run_name(self.cfg)
            if name != self.cfg.name:
                log.info("--fresh: %s holds a run; starting a new one in %s", checkpoints.run_dir(self.cfg), name)
                self.cfg = replace(self.cfg, name=name)
        directory = checkpoints.run_dir(self.cfg)
        if checkpoints.has_checkpoint(directory):
            checkpoints.check_resumable(directory, self.cfg)
        if self.is_chief:
            directory.mkdir(parents=True, exist_ok=True)
            self.cfg.to_yaml(directory / checkpoints.CONFIG_FILE)
        return directory

    def restore(self, directory):
        """Restores the latest checkpoint in `directory` if any; returns its path or None.

        A checkpoint from `checkpoints.save_imported` (networks only) restores the networks and
        starts the optimizers fresh; an EMA generator missing from the checkpoint starts as G.
        """
        path = tf.train.latest_checkpoint(str(directory))
        if path is None:
            return None
        saved = {name.split("/")[0] for name in tf.train.load_checkpoint(path).get_variable_to_shape_map()}
        parts = {name: obj for name, obj in self.checkpoint_parts.items() if name in saved}
        tf.train.Checkpoint(**parts).restore(path).assert_existing_objects_matched()
        missing = sorted(set(self.checkpoint_parts) - set(parts))
        if missing:
            log.warning("%s has no %s: those start fresh", path, ", ".join(missing))
        if self.ema_generator is not None and "ema_generator" not in parts:
            _copy_weights(self.ema_generator, self.generator)
        return path

    def train(self, fresh=False) -> pathlib.Path:
        """Trains to `max_steps`, resuming from the run folder's checkpoint; returns the run folder."""
        t = self.cfg.train
        directory = self.prepare_run(fresh)
        restored = self.restore(directory)
        step = int(self.step.numpy())
        if restored:
            log.info("resuming %s at step %d (learning rates G %.3g, D %.3g)", restored, step, *self.learning_rates())
        else:
            log.info("starting %s at step %d", directory, step)
        if self.is_chief:  # a run killed while saving can leave its temporary folder behind
            for orphan in directory.glob("ckpt-*_temp"):
                log.info("removing %s, left by an interrupted save", orphan)
                shutil.rmtree(orphan, ignore_errors=True)
        # Non-chief workers save too (checkpointing is collective under MultiWorkerMirroredStrategy),
        # into a temporary folder removed at the end.
        save_dir = directory if self.is_chief else pathlib.Path(tempfile.mkdtemp(prefix="spade_worker_ckpt_"))
        manager = tf.train.CheckpointManager(
            self.checkpoint, str(save_dir), max_to_keep=t.keep_checkpoints,
            keep_checkpoint_every_n_hours=t.keep_every_n_hours or None,
        )
        writer = (
            tf.summary.create_file_writer(str(directory / checkpoints.LOGS_DIR))
            if self.is_chief else tf.summary.create_noop_writer()
        )
        try:
            if step >= self.max_steps:
                log.info("the run is already at step %d of %d: nothing to do", step, self.max_steps)
                return directory
            with preemption.PreemptionWatch(self.strategy, t.preemption_grace_seconds) as watch:
                self._loop(step, manager, writer, directory, watch)
        finally:
            writer.close()
            if not self.is_chief:
                shutil.rmtree(save_dir, ignore_errors=True)
        return directory

    def _loop(self, step, manager, writer, directory, watch):
        t = self.cfg.train
        iterator = iter(self.distributed_dataset(start_step=step))
        samples = self._sample_batch() if self.is_chief else None
        names = list(GENERATOR_LOSSES + DISCRIMINATOR_LOSSES)
        progbar = keras.utils.Progbar(
            self.max_steps, verbose=1 if self.is_chief else 0, stateful_metrics=names + ["steps/s"], unit_name="step"
        )
        saved_step = step if manager.latest_checkpoint else None
        timer_step, timer, logs = step, None, {}
        while step < self.max_steps:
            if watch.should_stop():  # SIGTERM/SIGINT (on any worker): save this step and stop
                watch.stop(step, None if saved_step == step else lambda: manager.save(checkpoint_number=step))
            logs = self.run_step(iterator)
            step += 1
            self._check_finite(logs, step, manager)
            if timer is None:  # the first step traces and compiles: time from its end
                timer_step, timer = step, time.perf_counter()
                log.info("step %d done (the first step of a process traces the graph)", step)
            if step % t.log_every_steps == 0 or step == self.max_steps:
                rate = (step - timer_step) / max(time.perf_counter() - timer, 1e-9) if step > timer_step else 0.0
                timer_step, timer = step, time.perf_counter()
                self._log(writer, step, logs, rate, progbar)
            if samples is not None and step % t.sample_every_steps == 0:
                self._write_samples(writer, step, samples, directory)
                timer_step, timer = step, time.perf_counter()
            if step % t.save_every_steps == 0:
                manager.save(checkpoint_number=step)
                saved_step = step
                timer_step, timer = step, time.perf_counter()
        if saved_step != step:
            manager.save(checkpoint_number=step)
        log.info("finished at step %d (%s); checkpoint %s", step,
                 ", ".join(f"{k} {v:.6g}" for k, v in logs.items()), manager.latest_checkpoint)

    def _check_finite(self, logs, step, manager):
        bad = [name for name, value in logs.items() if not math.isfinite(value)]
        if bad:
            details = ", ".join(f"{name}={logs[name]}" for name in bad)
            last = manager.latest_checkpoint or "none (no checkpoint was written yet)"
            raise NonFiniteLossError(
                f"loss {bad[0]} is not finite at step {step} ({details}); training stopped without saving. "
                f"The last good checkpoint is {last}. Lower train.lr, or check the data."
            )

    def _log(self, writer, step, logs, rate, progbar):
        g_lr, d_lr = self.learning_rates()
        progbar.update(step, values=list(logs.items()) + ([("steps/s", rate)] if rate else []))
        with writer.as_default(step=step):
            for name, value in logs.items():
                tf.summary.scalar(f"loss/{name}", value)
            tf.summary.scalar("learning_rate/generator", g_lr)
            tf.summary.scalar("learning_rate/discriminator", d_lr)
            if rate:
                tf.summary.scalar("steps_per_second", rate)

    def _sample_batch(self):
        count = min(NUM_SAMPLES, self.steps_per_epoch * self.cfg.train.batch_size)
        ds = pipeline.build_dataset(self.cfg, "train", batch_size=count).take(1)
        return next(iter(ds))

    def _write_samples(self, writer, step, batch, directory):
        grid = self.sample_grid(batch)
        path = visuals.save_png(grid, directory / checkpoints.SAMPLES_DIR / f"step_{step}.png")
        with writer.as_default(step=step):
            tf.summary.image("samples/layout_generated_real", grid[None])
        log.debug("wrote %s", path)
        return path
