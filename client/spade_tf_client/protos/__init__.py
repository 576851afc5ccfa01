"""TF Serving's messages for the light client, generated from the `.proto` files here.

The `.proto` files use TF Serving's package names, message names and field numbers, so their
messages are byte-compatible with stock TF Serving's. They live in their own descriptor pool, `POOL`,
not protobuf's default one, where TensorFlow registers messages of the same full names: a process can
load TensorFlow and this client together. Regenerate with `client/scripts/generate_protos.py`.
"""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
for _dependency in (any_pb2, wrappers_pb2):  # well-known types the protos import
    POOL.AddSerializedFile(_dependency.DESCRIPTOR.serialized_pb)
