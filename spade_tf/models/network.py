"""The base of SPADE's networks (the reference's `BaseNetwork`): functional Keras models whose
constructor arguments are their config, as keras-hub's backbones.

A network builds its graph in its constructor, giving every layer `dtype=dtype` (its Keras dtype
policy: None follows the global policy, "mixed_bfloat16" computes in bfloat16 with float32
variables), then calls `Network.__init__(self, inputs, outputs, config, dtype, **kwargs)` with the
constructor's other arguments as `config`. `get_config` returns those arguments, the name and the
dtype policy, and `from_config` calls the constructor with them.
"""

import keras


class Network(keras.Model):
    def __init__(self, inputs, outputs, config: dict, dtype=None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._network_config = dict(config)
        if dtype is not None:  # a functional model ignores a `dtype` argument: its layers carry the policy
            self.dtype_policy = dtype

    def get_config(self):
        return {
            "name": self.name, "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy), **self._network_config,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def policy(dtype):
    """A constructor's `dtype` argument (None, a policy name, a policy or its serialised dict) as a policy or None."""
    return None if dtype is None else keras.dtype_policies.get(dtype)
