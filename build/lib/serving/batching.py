"""Server-side batching, configured by TF Serving's `BatchingParameters` text files.

Concurrent requests that share a queue key (same servable, signature, input keys, dtypes and sizes
beyond dimension 0) are concatenated on dimension 0, run once and split back, like TF Serving's
`SharedBatchScheduler`: a batch runs when it is full, when a later batch has opened behind it, or
when its first request has waited `batch_timeout_micros` and a batch thread is free.
"""

import collections
import logging
import os
import threading
import time

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from serving.errors import ServingError, internal_error
from spade_tf.config import ServeConfig

log = logging.getLogger(__name__)

# Used for fields a parameters file leaves out, and when batching is on without a file.
DEFAULTS = {"max_batch_size": ServeConfig.max_batch_size, "batch_timeout_micros": ServeConfig.batch_timeout_micros,
            "max_enqueued_batches": 100, "num_batch_threads": os.cpu_count() or 1, "thread_pool_name": "batch_threads"}


def batching_parameters_class():
    """`tensorflow.serving.BatchingParameters`: the installed proto, else the same fields built here.

    tensorflow-serving-api does not ship `session_bundle_config_pb2`; the fields below are the ones of
    `tensorflow_serving/servables/tensorflow/session_bundle_config.proto` (text format only uses the
    names and types).
    """
    try:
        from tensorflow_serving.servables.tensorflow.session_bundle_config_pb2 import BatchingParameters
        return BatchingParameters
    except ImportError:
        pass
    file = descriptor_pb2.FileDescriptorProto(
        name="serving/batching_parameters.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    message = file.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for number, (name, wrapper) in enumerate(
            [("max_batch_size", "Int64Value"), ("batch_timeout_micros", "Int64Value"),
             ("max_enqueued_batches", "Int64Value"), ("num_batch_threads", "Int64Value"),
             ("thread_pool_name", "StringValue")], start=1):
        message.field.add(name=name, number=number, label=field.LABEL_OPTIONAL, type=field.TYPE_MESSAGE,
                          type_name=f".google.protobuf.{wrapper}")
    message.field.add(name="allowed_batch_sizes", number=6, label=field.LABEL_REPEATED, type=field.TYPE_INT64)
    message.field.add(name="pad_variable_length_inputs", number=7, label=field.LABEL_OPTIONAL,
                      type=field.TYPE_BOOL)
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.AddSerializedFile(wrappers.SerializeToString())
    pool.AddSerializedFile(file.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def read_batching_parameters(path):
    """Parse a `--batching_parameters_file`; raises ValueError naming the file and the problem."""
    try:
        with open(path) as f:
            return text_format.Parse(f.read(), batching_parameters_class()())
    except (OSError, text_format.ParseError) as e:
        raise ValueError(f"cannot read batching parameters file {path}: {e}") from None


class BatchScheduler:
    """Runs `fn(inputs) -> outputs` (dicts of arrays with batch dimension 0) on batches of requests."""

    def __init__(self, parameters):
        """`parameters`: a BatchingParameters message; fields it leaves out take DEFAULTS."""

        def value(name):
            return getattr(parameters, name).value if parameters.HasField(name) else DEFAULTS[name]

        self.max_batch_size = value("max_batch_size")
        self.timeout = value("batch_timeout_micros") / 1e6
        self.max_enqueued_batches = value("max_enqueued_batches")
        self.allowed_batch_sizes = list(parameters.allowed_batch_sizes)
        threads = value("num_batch_threads")
        if self.max_batch_size < 1 or threads < 1 or self.max_enqueued_batches < 1 or self.timeout < 0:
            raise ValueError("batching parameters: max_batch_size, num_batch_threads and max_enqueued_batches "
                             "must be >= 1 and batch_timeout_micros >= 0")
        sizes = self.allowed_batch_sizes
        if sizes and (sizes != sorted(set(sizes)) or sizes[-1] != self.max_batch_size):
            raise ValueError(f"batching parameters: allowed_batch_sizes {sizes} must increase and end with "
                             f"max_batch_size {self.max_batch_size}")
        self._cond = threading.Condition()
        self._queues = collections.OrderedDict()  # key -> [_Batch], oldest first
        self._draining = False
        self._closed = False
        self._sizes = collections.Counter()
        self._threads = [threading.Thread(target=self._work, name=f"{value('thread_pool_name')}_{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def run(self, key, fn, inputs, size):
        """Queue one request of `size` items; blocks until its slice of the batch's outputs is ready."""
        if size > self.max_batch_size:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Task size {size} is larger than maximum batch size {self.max_batch_size}; "
                               "send fewer items per request")
        task = _Task(inputs, size)
        with self._cond:
            if self._closed:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "The server is shutting down")
            batches = self._queues.setdefault(key, [])
            if batches and batches[-1].size + size <= self.max_batch_size:
                batches[-1].add(task)
            elif len(batches) >= self.max_enqueued_batches:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted is full")
            else:
                batches.append(_Batch(fn, task))
            self._cond.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def batch_sizes(self):
        """{executed batch size (requested items, before padding): number of batches}."""
        with self._cond:
            return dict(self._sizes)

    def drain(self):
        """Run every queued batch now instead of waiting for its timeout (used while stopping)."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def close(self):
        """Refuse new requests, run the queued ones, stop the threads."""
        with self._cond:
            self._closed = self._draining = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _work(self):
        while True:
            with self._cond:
                while True:
                    batch, wait = self._take_ready()
                    if batch is not None:
                        break
                    if self._closed and not self._queues:
                        return
                    self._cond.wait(wait)
            self._execute(batch)

    def _take_ready(self):
        """The oldest batch that may run now, else (None, seconds until one may run or None)."""
        now = time.monotonic()
        ready, wait = None, None
        for key, batches in self._queues.items():
            first = batches[0]
            left = first.opened + self.timeout - now
            if (self._draining or len(batches) > 1 or first.size >= self.max_batch_size or left <= 0):
                if ready is None or first.opened < ready[1].opened:
                    ready = (key, first)
            else:
                wait = left if wait is None else min(wait, left)
        if ready is None:
            return None, wait
        key, batch = ready
        self._queues[key].pop(0)
        if not self._queues[key]:
            del self._queues[key]
        return batch, None

    def _execute(self, batch):
        tasks = batch.tasks
        padded = next((s for s in self.allowed_batch_sizes if s >= batch.size), batch.size)
        try:
            inputs = {}
            for name in tasks[0].inputs:
                value = np.concatenate([t.inputs[name] for t in tasks])
                if padded > batch.size:  # repeat the last item up to an allowed batch size
                    value = np.concatenate([value, np.repeat(value[-1:], padded - batch.size, axis=0)])
                inputs[name] = value
            outputs = batch.fn(inputs)
            wrong = {name: v.shape for name, v in outputs.items() if not v.shape or v.shape[0] != padded}
            if wrong:
                raise ServingError(grpc.StatusCode.INTERNAL,
                                   f"Batched outputs do not have batch size {padded} in dimension 0: {wrong}; "
                                   "run this model with batching disabled")
            start = 0
            for task in tasks:
                task.outputs = {name: v[start:start + task.size] for name, v in outputs.items()}
                start += task.size
        except ServingError as e:
            for task in tasks:
                task.error = e
        except Exception as e:  # noqa: BLE001 - the request threads report it; the traceback stays here
            log.exception("batch of %d failed", batch.size)
            for task in tasks:
                task.error = internal_error("Batch", e)
        with self._cond:
            self._sizes[batch.size] += 1
        log.debug("ran a batch of %d request(s), %d item(s)", len(tasks), batch.size)
        for task in tasks:
            task.done.set()


class _Task:
    def __init__(self, inputs, size):
        self.inputs, self.size = inputs, size
        self.done = threading.Event()
        self.outputs = self.error = None


class _Batch:
    def __init__(self, fn, task):
        self.fn = fn
        self.tasks = [task]
        self.size = task.size
        self.opened = time.monotonic()

    def add(self, task):
        self.tasks.append(task)
        self.size += task.size
