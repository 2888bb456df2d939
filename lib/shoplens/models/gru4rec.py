"""GRU4Rec (Hidasi et al. 2016) in plain Keras 2: the next item from the items before it.

item indices (batch, max_len), left-padded with 0
  → item embedding (index 0 masked) → dropout → GRU layer(s) → dropout → the last state
  → one score per item of the vocabulary (a dot product with the item's output vector, plus a bias).

Training minimises the cross-entropy of the next item over the whole vocabulary (full softmax), or,
when ``num_sampled`` > 0, TensorFlow's sampled softmax with that many items per batch: for
vocabularies too large for a full softmax at every step. Its sampler is log-uniform over indices,
which fits gold.item_vocab, whose indices were given in descending order of popularity (the padding
and out-of-vocabulary indices 0 and 1 are drawn too: they only become extra negatives). Scoring is
always over the full vocabulary.

The model knows nothing of Horovod: ``train_step`` calls ``optimizer.minimize`` like Keras's own,
so a ``hvd.DistributedOptimizer`` averages its gradients (``shoplens.distributed``).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from shoplens import schemas as S
from shoplens.models.base import NextItemModel


class ItemScores(tf.keras.layers.Layer):
    """One score per item: ``hidden @ item_vectors.T + bias``; the vectors are (vocab_size, units),
    the layout ``tf.nn.sampled_softmax_loss`` takes."""

    def __init__(self, vocab_size: int, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.seed = seed

    def build(self, input_shape) -> None:
        units = int(input_shape[-1])
        self.item_vectors = self.add_weight(
            name="item_vectors",
            shape=(self.vocab_size, units),
            initializer=tf.keras.initializers.GlorotUniform(seed=self.seed),
        )
        self.bias = self.add_weight(name="bias", shape=(self.vocab_size,), initializer="zeros")
        super().build(input_shape)

    def call(self, hidden):
        return tf.matmul(hidden, self.item_vectors, transpose_b=True) + self.bias


class GRU4Rec(NextItemModel):
    """Calling the model on item indices (batch, max_len) returns scores (batch, vocab_size)."""

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden_units: Sequence[int],
        dropout: float,
        num_sampled: int = 0,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if vocab_size <= S.OOV_INDEX + 1:
            raise ValueError(f"vocab_size {vocab_size} holds no item (0 is padding, 1 out of vocabulary)")
        if num_sampled >= vocab_size:
            raise ValueError(f"num_sampled {num_sampled} must be below the vocabulary size {vocab_size}")
        self.vocab_size = vocab_size
        self.num_sampled = num_sampled
        self.embedding = tf.keras.layers.Embedding(
            vocab_size, embedding_dim, mask_zero=True, name="item_embedding",
            embeddings_initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05, seed=seed),
        )
        self.input_dropout = tf.keras.layers.Dropout(dropout, seed=seed)
        self.grus = [
            tf.keras.layers.GRU(
                units,
                return_sequences=i < len(hidden_units) - 1,
                kernel_initializer=tf.keras.initializers.GlorotUniform(seed=None if seed is None else seed + i),
                recurrent_initializer=tf.keras.initializers.Orthogonal(seed=None if seed is None else seed + i),
                name=f"gru_{i}",
            )
            for i, units in enumerate(hidden_units)
        ]
        self.output_dropout = tf.keras.layers.Dropout(dropout, seed=seed)
        self.scores = ItemScores(vocab_size, seed=seed, name="item_scores")

    def encode(self, items, training=False):
        """Returns the last GRU state over the non-padding items: (batch, hidden_units[-1])."""
        mask = self.embedding.compute_mask(items)
        x = self.input_dropout(self.embedding(items), training=training)
        for gru in self.grus:
            x = gru(x, mask=mask, training=training)
        return self.output_dropout(x, training=training)

    def call(self, items, training=False):
        return self.scores(self.encode(items, training=training))

    def next_item_loss(self, items, targets, training=False):
        """Mean cross-entropy of the targets: full softmax, or sampled softmax in training."""
        hidden = self.encode(items, training=training)
        if training and self.num_sampled:
            labels = tf.reshape(tf.cast(targets, tf.int64), (-1, 1))
            losses = tf.nn.sampled_softmax_loss(
                weights=self.scores.item_vectors,
                biases=self.scores.bias,
                labels=labels,
                inputs=hidden,
                num_sampled=self.num_sampled,
                num_classes=self.vocab_size,
                remove_accidental_hits=True,
            )
        else:
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(targets, tf.int32), logits=self.scores(hidden)
            )
        return tf.reduce_mean(losses)


def build_gru4rec(
    vocab_size: int,
    max_len: int,
    embedding_dim: int,
    hidden_units: Sequence[int],
    dropout: float,
    num_sampled: int = 0,
    seed: int | None = None,
) -> GRU4Rec:
    """Returns a built, uncompiled GRU4Rec for inputs of ``max_len`` items (its variables exist,
    so a checkpoint can be restored into it)."""
    model = GRU4Rec(vocab_size, embedding_dim, tuple(hidden_units), dropout, num_sampled=num_sampled, seed=seed)
    model(tf.zeros((1, max_len), dtype=tf.int32))
    return model
