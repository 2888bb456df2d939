"""SASRec (Kang and McAuley 2018) in plain Keras 2: the next item by causal self-attention over the items before it.

item indices (batch, width), left-padded with 0, most recent item last
  → item embedding × sqrt(d) + learned position embedding → dropout
  → N blocks of [layer norm → causal multi-head self-attention → dropout → + residual,
                 layer norm → point-wise feed-forward (d → d, ReLU, d) → dropout → + residual]
  → layer norm → one hidden state per position (zero at padding)
  → scores over the vocabulary: a dot product with the item embedding itself (tied, as in the paper;
    no bias).

Each position attends to itself and the items before it, never to padding, so position t's state
depends on items 1..t only. Positions count from the oldest item kept (the first non-padding column
is position 0), not from the left edge: position t's state is exactly what the prefix of its t + 1
items alone would give. So training every position in one pass computes the same loss as one
example per prefix (``data.all_prefixes``), at the cost of one sequence, and the scores do not
depend on how much left padding an input has (any width up to ``max_len``). The original SASRec
numbers positions from the left edge of a fixed-width input, so its last position, the one that is
scored, always has the same index while training sees it at every index. The blocks are pre-norm
(the norm before each sub-layer), the layout of later SASRec implementations that trains stably at
higher learning rates.

Calling the model returns the LAST position's scores (batch, vocab_size), like GRU4Rec: the batch
scorer and ``models.evaluate`` need nothing else. Training takes either target layout:

- ``targets`` (batch,): the next item after the last position (GRU4Rec's layout, with or without
  ``data.all_prefixes``);
- ``targets`` (batch, width): the next item after every position (``data.sequence_targets``), 0
  where a position has none. One forward pass then trains every position of the sequence, instead
  of one example per prefix; ``loss_positions`` > 0 keeps only the last that many positions.

The loss is the cross-entropy of the next item over the whole vocabulary (Klenitskiy and Vasilev,
RecSys 2023: far better than the paper's one sampled negative), computed only at positions that
have a target; or, when ``num_sampled`` > 0, TensorFlow's sampled softmax with that many items per
batch in training. That sampler is log-uniform over indices, which fits gold.item_vocab (indices in
descending order of popularity), and ``tf.nn.sampled_softmax_loss`` subtracts each logit's log
sampling probability (the logQ correction), so the sampled loss estimates the full one. Scoring is
always over the full vocabulary.

The model knows nothing of Horovod: ``train_step`` calls ``optimizer.minimize`` like Keras's own,
so a ``hvd.DistributedOptimizer`` averages its gradients (``shoplens.distributed``).
"""

from __future__ import annotations

import math

import tensorflow as tf

from shoplens import schemas as S
from shoplens.models.base import NextItemModel
from shoplens.models.metrics import FIRST_ITEM


class SASRecBlock(tf.keras.layers.Layer):
    """One pre-norm transformer block: causal multi-head self-attention and a point-wise feed-forward
    network, each with a residual connection. Padding positions come out as zeros."""

    def __init__(self, units: int, num_heads: int, dropout: float, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=1e-8, name="attention_norm")
        self.attention = tf.keras.layers.MultiHeadAttention(
            num_heads, units // num_heads, dropout=dropout, name="attention",
            kernel_initializer=tf.keras.initializers.GlorotUniform(seed=seed),
        )
        self.attention_dropout = tf.keras.layers.Dropout(dropout, seed=seed)
        self.ffn_norm = tf.keras.layers.LayerNormalization(epsilon=1e-8, name="ffn_norm")
        self.ffn_in = tf.keras.layers.Dense(
            units, activation="relu", name="ffn_in", kernel_initializer=tf.keras.initializers.GlorotUniform(seed=seed)
        )
        self.ffn_out = tf.keras.layers.Dense(
            units, name="ffn_out",
            kernel_initializer=tf.keras.initializers.GlorotUniform(seed=None if seed is None else seed + 1),
        )
        self.ffn_dropout = tf.keras.layers.Dropout(dropout, seed=seed)

    def call(self, x, attention_mask, is_item, training=False):
        """``x`` (batch, width, units); ``attention_mask`` (batch, width, width), true where a query
        position may attend a key position; ``is_item`` (batch, width, 1) float, 0 at padding."""
        normed = self.attention_norm(x)
        attended = self.attention(normed, normed, attention_mask=attention_mask, training=training)
        x = x + self.attention_dropout(attended, training=training)
        hidden = self.ffn_out(self.ffn_dropout(self.ffn_in(self.ffn_norm(x)), training=training))
        return (x + self.ffn_dropout(hidden, training=training)) * is_item


class SASRec(NextItemModel):
    """Calling the model on item indices (batch, width ≤ max_len) returns the last position's scores
    (batch, vocab_size)."""

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        embedding_dim: int,
        num_blocks: int,
        num_heads: int,
        dropout: float,
        num_sampled: int = 0,
        loss_positions: int = 0,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if vocab_size <= S.OOV_INDEX + 1:
            raise ValueError(f"vocab_size {vocab_size} holds no item (0 is padding, 1 out of vocabulary)")
        if num_sampled >= vocab_size:
            raise ValueError(f"num_sampled {num_sampled} must be below the vocabulary size {vocab_size}")
        if embedding_dim % num_heads:
            raise ValueError(f"embedding_dim {embedding_dim} must be a multiple of num_heads {num_heads}")
        if max_len < 1 or num_blocks < 1 or loss_positions < 0:
            raise ValueError("max_len and num_blocks must be positive, loss_positions non-negative")
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.embedding_dim = embedding_dim
        self.num_sampled = num_sampled
        self.loss_positions = loss_positions
        self.item_embedding = tf.keras.layers.Embedding(
            vocab_size, embedding_dim, name="item_embedding",
            embeddings_initializer=tf.keras.initializers.GlorotNormal(seed=seed),
        )
        self.position_embedding = tf.keras.layers.Embedding(
            max_len, embedding_dim, name="position_embedding",
            embeddings_initializer=tf.keras.initializers.GlorotNormal(seed=None if seed is None else seed + 1),
        )
        self.input_dropout = tf.keras.layers.Dropout(dropout, seed=seed)
        self.blocks = [
            SASRecBlock(embedding_dim, num_heads, dropout, seed=None if seed is None else seed + 10 * (i + 1),
                        name=f"block_{i}")
            for i in range(num_blocks)
        ]
        self.output_norm = tf.keras.layers.LayerNormalization(epsilon=1e-8, name="output_norm")

    @property
    def item_vectors(self):
        """The item embedding, (vocab_size, embedding_dim): also the output layer's item vectors."""
        return self.item_embedding.embeddings

    def encode(self, items, training=False):
        """Returns one hidden state per position, (batch, width, embedding_dim), zero at padding."""
        items = tf.cast(items, tf.int32)
        width = tf.shape(items)[1]
        is_item = tf.not_equal(items, S.PADDING_INDEX)
        is_item_f = tf.cast(is_item, self.compute_dtype)[:, :, None]
        # Position 0 is the oldest item kept: a prefix gets the same positions alone or in its sequence.
        positions = tf.maximum(tf.cumsum(tf.cast(is_item, tf.int32), axis=1) - 1, 0)
        x = self.item_embedding(items) * math.sqrt(self.embedding_dim) + self.position_embedding(positions)
        x = self.input_dropout(x, training=training) * is_item_f
        causal = tf.cast(tf.linalg.band_part(tf.ones((width, width)), -1, 0), tf.bool)
        # A query attends to earlier or equal positions holding an item. A padding query then sees
        # no key (Keras gives it uniform weights); its output is zeroed anyway.
        attention_mask = tf.logical_and(causal[None], is_item[:, None, :])
        for block in self.blocks:
            x = block(x, attention_mask, is_item_f, training=training)
        return self.output_norm(x) * is_item_f

    def item_scores(self, hidden):
        """Scores over the vocabulary for hidden states (..., embedding_dim): (..., vocab_size)."""
        return tf.tensordot(hidden, self.item_vectors, axes=[[-1], [1]])

    def call(self, items, training=False):
        return self.item_scores(self.encode(items, training=training)[:, -1, :])

    def next_item_loss(self, items, targets, training=False):
        """Mean cross-entropy of the targets (full softmax, or sampled softmax in training), over
        every position that has a target: the last one for targets (batch,), each non-zero one of
        targets (batch, width) (only the last ``loss_positions`` when set)."""
        hidden = self.encode(items, training=training)
        targets = tf.cast(targets, tf.int32)
        if targets.shape.rank == 2:
            keep = targets >= FIRST_ITEM
            if self.loss_positions:
                width = tf.shape(targets)[1]
                keep = tf.logical_and(keep, tf.range(width)[None, :] >= width - self.loss_positions)
            # Only positions with a target reach the output layer: padding costs nothing there.
            hidden = tf.boolean_mask(hidden, keep)
            targets = tf.boolean_mask(targets, keep)
        else:
            hidden = hidden[:, -1, :]
        if training and self.num_sampled:
            losses = tf.nn.sampled_softmax_loss(
                weights=self.item_vectors,
                biases=tf.zeros((self.vocab_size,), dtype=hidden.dtype),
                labels=tf.reshape(tf.cast(targets, tf.int64), (-1, 1)),
                inputs=hidden,
                num_sampled=self.num_sampled,
                num_classes=self.vocab_size,
                remove_accidental_hits=True,
            )
        else:
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=self.item_scores(hidden))
        # A batch without any target (possible with sequence targets) adds 0, not NaN.
        return tf.math.divide_no_nan(tf.reduce_sum(losses), tf.cast(tf.size(losses), losses.dtype))


def build_sasrec(
    vocab_size: int,
    max_len: int,
    embedding_dim: int,
    num_blocks: int,
    num_heads: int,
    dropout: float,
    num_sampled: int = 0,
    loss_positions: int = 0,
    seed: int | None = None,
) -> SASRec:
    """Returns a built, uncompiled SASRec for inputs of up to ``max_len`` items (its variables exist,
    so a checkpoint can be restored into it)."""
    model = SASRec(
        vocab_size, max_len, embedding_dim, num_blocks, num_heads, dropout,
        num_sampled=num_sampled, loss_positions=loss_positions, seed=seed,
    )
    model(tf.zeros((1, max_len), dtype=tf.int32))
    return model
