"""Train -> export -> serve -> query, as a user runs it (issue: export and serving, end to end)."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.client import SpadeClient
from serving.server import ModelServer
from spade_tf.data import pipeline
from spade_tf.training.checkpoints import restore_networks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def layouts(tiny_run):
    cfg, _, _ = restore_networks(tiny_run)
    batch = next(iter(pipeline.build_dataset(cfg, "val", batch_size=2)))
    return cfg, np.asarray(batch["label"]).astype(np.uint8), np.asarray(batch["instance"]).astype(np.int32)


def in_process_images(tiny_run, labels, instances):
    """The generator of the run folder itself (moving average, as exported), in our own code."""
    from spade_tf.semantics import semantic_input

    cfg, generator, _ = restore_networks(tiny_run)
    d = cfg.data
    segmap = semantic_input(labels, instances, label_nc=d.label_nc, contain_dontcare_label=d.contain_dontcare_label,
                            use_instance=not d.no_instance)
    image = np.asarray(generator(segmap, training=False))
    return np.round((image + 1) * 127.5).clip(0, 255).astype(np.uint8)


def test_served_images_equal_the_in_process_generator(tiny_run, tiny_export, layouts):
    cfg, labels, instances = layouts
    expected = in_process_images(tiny_run, labels, instances)
    server = ModelServer(model_base_path=str(tiny_export), port=0, file_system_poll_wait_seconds=0)
    port = server.start()
    try:
        with SpadeClient(f"127.0.0.1:{port}", timeout=60) as client:
            via_client = client.synthesize(labels, instance_map=instances, seed=7)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "spade"
        request.model_spec.signature_name = "with_seed"
        request.inputs["label_map"].CopyFrom(tf.make_tensor_proto(labels))
        request.inputs["instance_map"].CopyFrom(tf.make_tensor_proto(instances))
        request.inputs["seed"].CopyFrom(tf.make_tensor_proto(np.array([7, 7], np.int64)))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
        via_stub = tf.make_ndarray(response.outputs["image"])
        channel.close()
    finally:
        server.stop()
    assert via_client.shape == expected.shape == (2, *cfg.image_size, 3)
    np.testing.assert_array_equal(via_client, via_stub)
    assert np.abs(via_client.astype(int) - expected.astype(int)).max() <= 1
