"""The order an input pipeline reads samples in: epoch after epoch, reachable at any position.

Input pipeline i of P reads the samples i, i + P, i + 2P, ... (its shard of m samples). Position
q of its stream is place q mod e of epoch q // e, where an epoch holds e = m samples, in training
only its whole batches (m // batch * batch: the rest of the epoch's order is dropped, as the
reference's drop_last). In training each epoch visits the shard in a new order, the permutation
`tf.random.experimental.index_shuffle` keys by (seed, epoch); outside training in file order.

The sample at a position is a function of the position alone, so a stream can start anywhere:
a resumed run starts at the position an uninterrupted run would be at, and no sample before it
is read, decoded or drawn.
"""

import tensorflow as tf


class SampleOrder:
    """Which sample of `num_samples` input pipeline `shard[1]` of `shard[0]` reads at each position
    of its stream, and the stream's positions: from batch `start_batch` to the end of its epoch,
    or with `repeat` through every epoch after it (`start`, and `stop`: None for no end)."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, training: bool, shard=(1, 0),
                 start_batch: int = 0, repeat: bool = False):
        self.pipelines, self.pipeline_id = shard
        self.shard_size = len(range(self.pipeline_id, num_samples, self.pipelines))
        self.epoch_size = self.shard_size // batch_size * batch_size if training else self.shard_size
        self.seed = seed
        self.training = training
        self.start = start_batch * batch_size
        self.stop = None
        if not repeat:
            epoch = self.start // self.epoch_size if self.epoch_size else 0
            self.stop = (epoch + 1) * self.epoch_size

    def _places(self, epoch, places):
        """Places in the epoch -> the shard's samples there (their place in the shard)."""
        if not self.training:
            return places
        seed = tf.stack([tf.constant(self.seed, tf.int64), epoch])
        return tf.random.experimental.index_shuffle(places, seed, tf.constant(self.shard_size - 1, tf.int64))

    def index_at(self, position: int) -> int:
        """The sample index read at `position` (for reports; the stream itself comes from `positions`)."""
        epoch, place = (tf.constant(v, tf.int64) for v in divmod(position, self.epoch_size))
        return self.pipeline_id + self.pipelines * int(self._places(epoch, place))

    def _epoch(self, epoch):
        """(positions, sample indices) of `epoch` that the stream holds."""
        size = self.epoch_size
        places = self._places(epoch, tf.range(self.shard_size, dtype=tf.int64))[:size]
        skip = tf.maximum(self.start - epoch * size, 0)
        positions = epoch * size + tf.range(size, dtype=tf.int64)
        return positions[skip:], self.pipeline_id + self.pipelines * places[skip:]

    def positions(self) -> tf.data.Dataset:
        """(position, sample index) pairs, int64, of the stream: one permutation per epoch, sliced."""
        first = tf.constant(self.start // self.epoch_size if self.epoch_size else 0, tf.int64)
        if self.stop is not None:
            return tf.data.Dataset.from_tensor_slices(self._epoch(first))
        return tf.data.Dataset.counter(first).flat_map(lambda e: tf.data.Dataset.from_tensor_slices(self._epoch(e)))
