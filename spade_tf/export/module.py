"""The exported model: label map in, uint8 image out, pre- and post-processing inside the graph.

In the manner of TF Model Garden's `ExportModule` (official/core/export_base.py), a `tf.Module`
owns the networks and the serving signatures of the export contract (docs: EXPORT_CONTRACT.md):

- `serving_default(label_map[, instance_map]) -> image`; a VAE model draws z ~ N(0, I).
- `with_seed(label_map[, instance_map], seed) -> image`: a VAE model uses, for example i,
  z_i = tf.random.stateless_normal([z_dim], seed=[seed_i, 0], alg="philox"), so the same seed
  gives the same image on any machine. A model without VAE has no z: its image does not depend
  on the seed, and the signature exists so that clients can be generic.
- VAE models: `with_z(label_map[, instance_map], z) -> image` and
  `encode_style(image) -> z, mu, logvar` (z sampled from N(mu, exp(logvar))).

`label_map` is uint8 [batch, H, W] class ids (255 = unknown with a don't-care label),
`instance_map` int32 [batch, H, W] (exactly when the model uses instances), `seed` int64
[batch], `z` float32 [batch, z_dim], images uint8 [batch, H, W, 3]. The layout goes through
`spade_tf.semantics.semantic_input`, the function the trainer uses. Bad labels, sizes the
generator cannot produce and mismatched batch or map shapes fail inside the graph with an
InvalidArgumentError that says what is wrong. No function is XLA-compiled (stock TF Serving
runs without XLA).
"""

import types

import numpy as np
import tensorflow as tf

from spade_tf.export.labels import labels_json
from spade_tf.models.encoder import reparameterize
from spade_tf.semantics import semantic_input

Z_SEED_ALG = "philox"  # fixed, so that a seed means the same z on every device


def to_uint8(image):
    """Generator output in [-1, 1] -> uint8 RGB, rounded."""
    return tf.cast(tf.round(tf.clip_by_value((tf.cast(image, tf.float32) + 1.0) * 127.5, 0.0, 255.0)), tf.uint8)


def z_from_seed(seed, z_dim):
    """int64 [batch] seeds -> float32 [batch, z_dim]: one stateless normal draw per seed."""
    return tf.map_fn(
        lambda s: tf.random.stateless_normal([z_dim], seed=tf.stack([s, tf.zeros_like(s)]), alg=Z_SEED_ALG),
        seed,
        fn_output_signature=tf.float32,
    )


class ExportModule(tf.Module):
    """Serving signatures around an inference generator (and, for VAE models, its encoder).

    Args:
        cfg: the run's `Config` (label set, instance maps, VAE, trained size).
        generator: a generator built from `cfg`, e.g. by `spade_tf.export.fold.inference_networks`.
        encoder: the style encoder; required for VAE models, ignored otherwise.
    """

    def __init__(self, cfg, generator, encoder=None):
        super().__init__(name="spade")
        self.use_vae = bool(cfg.model.use_vae)
        if self.use_vae and encoder is None:
            raise ValueError("this is a VAE model (model.use_vae): pass its encoder, encode_style needs it")
        # The SavedModel keeps the networks' weights, not their Keras objects: the Keras objects sit
        # in a namespace the tracking ignores, so saving neither traces nor stores them.
        self.networks = types.SimpleNamespace(generator=generator, encoder=encoder if self.use_vae else None)
        self.network_weights = list(generator.weights) + (list(encoder.weights) if self.use_vae else [])
        self.label_nc = cfg.data.label_nc
        self.contain_dontcare_label = cfg.data.contain_dontcare_label
        self.use_instance = not cfg.data.no_instance
        self.z_dim = cfg.model.z_dim
        self.rules = labels_json(cfg)  # the export contract's size rule, checked in the graph below
        if self.rules.size_multiple != generator.size_multiple:
            raise ValueError(f"the generator takes multiples of {generator.size_multiple}, the config says "
                             f"{self.rules.size_multiple}: build the generator from this config")
        self.image_size = self.rules.image_size

    # --- pre-processing, generation, post-processing ------------------------------------
    def check_layout_size(self, label_map):
        """In-graph checks of the export contract's size rule (`LabelsJson.check_size`) on `label_map`'s H x W."""
        shape = tf.shape(label_map)
        height, width = shape[1], shape[2]
        h, w = self.image_size
        f, smallest, aspect_ratio = self.rules.size_multiple, self.rules.min_size, self.rules.aspect_ratio
        got = "; got height, width:"
        if self.use_vae:
            return [
                tf.debugging.Assert(
                    (height == h) & (width == w),
                    [f"this VAE model produces only {h}x{w} images (its linear layer fixes the size): "
                     f"label_map must be [batch, {h}, {w}]{got}", height, width],
                )
            ]
        aspect_ok = tf.round(tf.cast(width // f, tf.float64) / aspect_ratio) == tf.cast(height // f, tf.float64)
        return [
            tf.debugging.Assert(
                (height % f == 0) & (width % f == 0),
                [f"label_map height and width must be multiples of {f}, e.g. {h}x{w}{got}", height, width],
            ),
            tf.debugging.Assert(
                (height >= smallest) & (width >= smallest),
                [f"label_map must be at least {smallest}x{smallest}, e.g. {h}x{w}{got}", height, width],
            ),
            tf.debugging.Assert(
                aspect_ok,
                [f"label_map height x width must have the aspect ratio {aspect_ratio} (width / height) "
                 f"the generator was built for, e.g. {h}x{w}{got}", height, width],
            ),
        ]

    def preprocess(self, label_map, instance_map=None):
        """uint8 label map [batch, H, W] (+ int32 instance ids) -> checked semantic input."""
        checks = self.check_layout_size(label_map)
        if instance_map is not None:
            checks.append(
                tf.debugging.Assert(
                    tf.reduce_all(tf.shape(instance_map) == tf.shape(label_map)),
                    ["instance_map must have the same shape [batch, H, W] as label_map; got shapes:",
                     tf.shape(instance_map), tf.shape(label_map)],
                )
            )
        with tf.control_dependencies(checks):
            label_map = tf.identity(label_map)
        return semantic_input(
            label_map, instance_map, label_nc=self.label_nc,
            contain_dontcare_label=self.contain_dontcare_label, use_instance=self.use_instance,
        )

    def generate(self, semantics, z=None):
        inputs = {"semantics": semantics, "z": z} if self.use_vae else semantics
        return self.networks.generator(inputs, training=False)

    def _one_per_example(self, values, label_map, name):
        n, batch = tf.shape(values)[0], tf.shape(label_map)[0]
        return tf.debugging.Assert(
            n == batch, [f"{name} must have one entry per example of label_map; got entries, examples:", n, batch]
        )

    def random_z(self, label_map):
        return tf.random.normal([tf.shape(label_map)[0], self.z_dim]) if self.use_vae else None

    def seeded_z(self, label_map, seed):
        check = self._one_per_example(seed, label_map, "seed")
        if not self.use_vae:
            return None  # the check still runs: a tf.function runs all of its stateful ops
        with tf.control_dependencies([check]):
            return z_from_seed(seed, self.z_dim)

    def given_z(self, label_map, z):
        with tf.control_dependencies([self._one_per_example(z, label_map, "z")]):
            return tf.debugging.check_numerics(z, "z must hold finite numbers")

    def encode_style(self, image):
        """uint8 RGB [batch, H, W, 3] -> {"z", "mu", "logvar"}, each float32 [batch, z_dim]."""
        check = tf.debugging.assert_positive(tf.shape(image)[1:3], message="image must be at least 1x1 pixels")
        with tf.control_dependencies([check]):
            x = tf.cast(image, tf.float32) / 127.5 - 1.0
        mu, logvar = (tf.cast(t, tf.float32) for t in self.networks.encoder(x, training=False))
        # tf.random.normal at serving time (a Keras seed would be fixed when the graph is traced).
        z = reparameterize(mu, logvar, tf.random.normal(tf.shape(mu)))
        return {"z": z, "mu": mu, "logvar": logvar}

    # --- signatures ----------------------------------------------------------------------
    def _endpoint(self, latent, extra_specs):
        """A tf.function (label_map[, instance_map], *extra) -> {"image"}, z = latent(label_map, *extra)."""
        hw = list(self.image_size) if self.use_vae else [None, None]
        specs = [tf.TensorSpec([None, *hw], tf.uint8, name="label_map")]
        if self.use_instance:
            specs.append(tf.TensorSpec([None, *hw], tf.int32, name="instance_map"))
        n = len(specs)

        def serve(*args):
            label_map, instance_map = args[0], (args[1] if self.use_instance else None)
            semantics = self.preprocess(label_map, instance_map)
            z = latent(label_map, *args[n:])
            return {"image": to_uint8(self.generate(semantics, z))}

        return tf.function(serve, input_signature=specs + extra_specs, jit_compile=False)

    def functions(self) -> dict:
        """Signature name -> its tf.function (named input signature, traced on first call).

        What the export saves, and what synthesis from a run folder calls in-process.
        """
        functions = {
            "serving_default": self._endpoint(self.random_z, []),
            "with_seed": self._endpoint(self.seeded_z, [tf.TensorSpec([None], tf.int64, name="seed")]),
        }
        if self.use_vae:
            z_spec = tf.TensorSpec([None, self.z_dim], tf.float32, name="z")
            functions["with_z"] = self._endpoint(self.given_z, [z_spec])
            functions["encode_style"] = tf.function(
                self.encode_style, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")],
                jit_compile=False,
            )
        return functions

    def signatures(self) -> dict:
        """Signature name -> concrete function, for `tf.saved_model.save(module, path, signatures=...)`."""
        return {name: fn.get_concrete_function() for name, fn in self.functions().items()}

    def example_inputs(self, signature: str, rng: np.random.Generator) -> dict:
        """Valid inputs of one signature, batch 1 at the trained size (for warm-up requests)."""
        h, w = self.image_size
        if signature == "encode_style":
            return {"image": rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)}
        inputs = {"label_map": rng.integers(0, self.label_nc, (1, h, w), dtype=np.uint8)}
        if self.use_instance:
            inputs["instance_map"] = rng.integers(0, 4, (1, h, w), dtype=np.int32)
        if signature == "with_seed":
            inputs["seed"] = rng.integers(0, 2**31, (1,), dtype=np.int64)
        elif signature == "with_z":
            inputs["z"] = rng.standard_normal((1, self.z_dim), dtype=np.float32)
        return inputs
