"""Stopping a run on SIGTERM or SIGINT without losing a step: the step in flight ends, is saved, and the
process exits with a code that asks for a restart.

A preempted pod gets SIGTERM, then SIGKILL after Kubernetes' `terminationGracePeriodSeconds`. On
SIGTERM (or SIGINT: Ctrl-C) the trainer lets the step in flight finish, saves a checkpoint of it
and raises `Preempted`; `train.py` exits with `EXIT_CODE` (42, the code TensorFlow's
`PreemptionCheckpointHandler` uses) after SIGTERM, so that the Job restarts the pod, and with 130
after SIGINT (an interrupted command). The rerun resumes from that checkpoint: same step, data
position and learning rate. A second SIGINT interrupts at once (KeyboardInterrupt).

`train.preemption_grace_seconds` bounds the whole stop, from the signal to the end of the process:
when the step in flight and the save have not finished by then, the process exits with the same
code without saving (the previous checkpoint stays intact: checkpoints are written to temporary
files and renamed), and a slow teardown after the save is cut short the same way, before the
kubelet's SIGKILL.

Several workers (MultiWorkerMirroredStrategy): a signal reaches one pod, but checkpointing is
collective and every worker must stop at the same step. After every step the workers all-reduce
their "stop" flags (one scalar collective, as cheap as the step's smallest all-reduce), so they all
see the signal after the same step, save that one checkpoint together and exit with the code.
TensorFlow's `tf.distribute.experimental.PreemptionCheckpointHandler` does the same with the
coordination service, but it is not used, for reasons read in its TF 2.21 source
(`tensorflow/python/distribute/failure_handling/failure_handling.py`): on Google Cloud CPU machines
(GKE CPU node pools, this project's default manifests) it only logs that it does not support them
and never saves; on Google Cloud GPU machines it ignores SIGTERM and polls the maintenance-event
metadata instead; it handles SIGTERM only, not SIGINT; it trains one more step after the signal
before saving; and it keeps its own run counter, restored from the folder its checkpoint manager
writes, which for this trainer's non-chief workers is a temporary folder (so after a resume the
workers' counters differ and the agreed save step is never reached on them).
"""

import logging
import os
import signal
import threading
import time

import tensorflow as tf

log = logging.getLogger(__name__)

EXIT_CODE = 42  # after SIGTERM: "preempted, checkpoint saved, restart me" (TensorFlow's handler's code)
INTERRUPT_EXIT_CODE = 130  # after SIGINT: the shell's code for an interrupted command
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a signal after saving step `step` (None: nothing new to save)."""

    def __init__(self, signum, step, checkpoint, deadline=None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.deadline = deadline  # the grace's timer, still running: it also bounds the process's teardown
        self.exit_code = EXIT_CODE if signum == signal.SIGTERM else INTERRUPT_EXIT_CODE
        name = signal.Signals(signum).name
        where = f"saved step {step} in {checkpoint}" if checkpoint else f"step {step} was already saved"
        super().__init__(f"{name}: stopped after step {step} ({where}); a rerun resumes there")


class PreemptionWatch:
    """Context manager: while open, SIGTERM and SIGINT only set a flag that `should_stop()` reports
    (agreed over all workers), and start the `grace_seconds` deadline.

    Installed only from the main thread (Python's rule for signal handlers); elsewhere it watches nothing.
    """

    def __init__(self, strategy, grace_seconds: float):
        self.strategy = strategy
        self.grace_seconds = float(grace_seconds)
        self.signum = None
        self.received_at = None
        self._previous = {}
        self._deadline = None
        self._agree = None
        self._workers = _worker_count(strategy)

    # --- signals ---------------------------------------------------------------------------------
    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        else:
            log.debug("not the main thread: SIGTERM/SIGINT keep their handlers")
        return self

    def __exit__(self, kind, error, traceback):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._deadline is not None and not isinstance(error, Preempted):
            self._deadline.cancel()  # a Preempted stop keeps it: the process must also end within the grace
        return False

    def _handle(self, signum, frame):
        if self.signum is not None:
            if signum == signal.SIGINT:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            return
        self.signum, self.received_at = signum, time.monotonic()
        log.warning("%s received: finishing the step in flight, saving it and stopping (within %g s, "
                    "train.preemption_grace_seconds)", signal.Signals(signum).name, self.grace_seconds)
        self._deadline = threading.Timer(self.grace_seconds, self._out_of_time)
        self._deadline.daemon = True
        self._deadline.start()

    def _out_of_time(self):
        code = EXIT_CODE if self.signum == signal.SIGTERM else INTERRUPT_EXIT_CODE
        log.error("train.preemption_grace_seconds=%g ran out before the process ended: exiting with %d now (a "
                  "checkpoint being written is left unfinished; the previous one is intact). Raise the grace, and "
                  "Kubernetes' terminationGracePeriodSeconds with it", self.grace_seconds, code)
        logging.shutdown()
        os._exit(code)

    # --- agreement -------------------------------------------------------------------------------
    def should_stop(self) -> bool:
        """True on every worker when any worker got a signal. A collective under several workers:
        every worker must call it at the same points of the loop."""
        local = self.signum is not None
        if self._workers <= 1:
            return local
        if self._agree is None:
            strategy = self.strategy

            @tf.function(autograph=False)
            def agree(flag):
                return strategy.reduce("SUM", strategy.run(lambda f: tf.identity(f), args=(flag,)), axis=None)

            self._agree = agree
        stop = bool(self._agree(tf.constant(1.0 if local else 0.0)).numpy() > 0)
        if stop and not local:
            self.signum, self.received_at = signal.SIGTERM, time.monotonic()
            log.warning("another worker was signalled: saving this step with it and stopping")
        return stop

    def stop(self, step, save):
        """Saves with `save()` (None when `step` is already saved) and raises Preempted."""
        path = save() if save is not None else None
        log.warning("stopped by %s after step %d in %.1f s%s", signal.Signals(self.signum).name, step,
                    time.monotonic() - self.received_at, f"; saved {path}" if path else "")
        raise Preempted(self.signum, step, path, self._deadline)


def _worker_count(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    spec = resolver.cluster_spec().as_dict()
    return sum(len(tasks) for job, tasks in spec.items() if job in ("chief", "worker"))
