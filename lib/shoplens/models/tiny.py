"""A tiny regression model and deterministic synthetic data, for smoke-testing distributed training.

TensorFlow is imported inside the functions: importing this module on the Spark driver stays cheap.
"""

from __future__ import annotations

import numpy as np

N_FEATURES = 4
HIDDEN_UNITS = 8
# The target is a fixed linear function of the features plus a little noise.
_TRUE_WEIGHTS = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)


def synthetic_shard(shard: int, num_shards: int, rows_per_shard: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns shard ``shard`` of ``num_shards`` of a deterministic regression data set.

    Returns: ``(x, y)``, ``x`` of shape (rows_per_shard, N_FEATURES) and ``y`` of shape
    (rows_per_shard, 1), both float32; the same arguments always give the same arrays, and
    different shards hold different rows.
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is not in [0, {num_shards})")
    rng = np.random.default_rng([seed, shard, num_shards])
    x = rng.normal(size=(rows_per_shard, N_FEATURES)).astype(np.float32)
    noise = rng.normal(scale=0.05, size=(rows_per_shard, 1)).astype(np.float32)
    y = x @ _TRUE_WEIGHTS.reshape(-1, 1) + noise
    return x, y.astype(np.float32)


def build_tiny_model(seed: int):
    """Returns an uncompiled Keras model: N_FEATURES → Dense(HIDDEN_UNITS, relu) → Dense(1).

    ``seed`` fixes the initial weights.
    """
    import tensorflow as tf

    init = tf.keras.initializers.GlorotUniform(seed=seed)
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape=(N_FEATURES,)),
            tf.keras.layers.Dense(HIDDEN_UNITS, activation="relu", kernel_initializer=init),
            tf.keras.layers.Dense(1, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=seed + 1)),
        ]
    )


def weights_fingerprint(weights: list[np.ndarray]) -> tuple[str, float]:
    """Returns the sha256 of the weights' float32 bytes (in layer order) and their sum."""
    import hashlib

    digest = hashlib.sha256()
    total = 0.0
    for array in weights:
        as_f32 = np.ascontiguousarray(array, dtype=np.float32)
        digest.update(as_f32.tobytes())
        total += float(as_f32.sum(dtype=np.float64))
    return digest.hexdigest(), total
