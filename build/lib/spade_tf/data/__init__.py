"""Datasets, preprocessing and the tf.data input pipeline (see `pipeline.build_dataset`)."""

from spade_tf.data.datasets import DataError, Sample, list_files
from spade_tf.data.pipeline import build_dataset, distributed_dataset
from spade_tf.data.preprocess import output_size

__all__ = ["DataError", "Sample", "build_dataset", "distributed_dataset", "list_files", "output_size"]
