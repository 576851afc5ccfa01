"""The sample order of an input pipeline's stream: shards, per-epoch permutations, starting anywhere."""

from spade_tf.data.order import SampleOrder


def pairs(order, count=None):
    ds = order.positions()
    return [(int(q), int(i)) for q, i in (ds.take(count) if count else ds).as_numpy_iterator()]


def test_training_epochs_are_new_permutations_of_the_shard_cut_to_whole_batches():
    order = SampleOrder(23, 3, seed=5, training=True, shard=(2, 1), repeat=True)  # shard 1, 3, ..., 21: 11 samples
    assert (order.shard_size, order.epoch_size) == (11, 9)
    stream = pairs(order, 27)
    assert [q for q, _ in stream] == list(range(27))
    epochs = [[i for _, i in stream[k:k + 9]] for k in range(0, 27, 9)]
    for epoch in epochs:
        assert len(set(epoch)) == 9 and set(epoch) <= set(range(1, 23, 2))
    assert len({tuple(e) for e in epochs}) == 3
    assert pairs(SampleOrder(23, 3, seed=6, training=True, shard=(2, 1), repeat=True), 9) != stream[:9]


def test_a_stream_from_a_batch_is_the_tail_of_the_stream_from_the_start():
    whole = pairs(SampleOrder(10, 2, seed=1, training=True, repeat=True), 30)
    for start_batch in (1, 4, 5, 11):
        assert pairs(SampleOrder(10, 2, seed=1, training=True, start_batch=start_batch, repeat=True),
                     30 - 2 * start_batch) == whole[2 * start_batch:]
    # Without repeat: to the end of the start batch's epoch.
    rest = SampleOrder(10, 2, seed=1, training=True, start_batch=7)
    assert (rest.start, rest.stop) == (14, 20) and pairs(rest) == whole[14:20]


def test_index_at_is_the_sample_the_stream_reads_there():
    order = SampleOrder(13, 2, seed=3, training=True, shard=(3, 2), start_batch=2, repeat=True)
    for q, i in pairs(order, 12):
        assert order.index_at(q) == i


def test_outside_training_the_shard_in_file_order_every_time():
    order = SampleOrder(7, 3, seed=0, training=False, shard=(2, 0))
    assert pairs(order) == [(0, 0), (1, 2), (2, 4), (3, 6)]  # the last partial batch is kept
    again = pairs(SampleOrder(7, 3, seed=0, training=False, shard=(2, 0), repeat=True), 8)[4:]
    assert again == [(4, 0), (5, 2), (6, 4), (7, 6)]
