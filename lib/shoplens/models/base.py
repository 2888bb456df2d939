"""What every next-item model shares: Keras's train and test steps around its ``next_item_loss``."""

from __future__ import annotations

import tensorflow as tf


class NextItemModel(tf.keras.Model):
    """A Keras model trained on (items, targets) batches through ``next_item_loss(items, targets,
    training=...)``, which subclasses define; the mean loss is the one metric."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")

    def next_item_loss(self, items, targets, training: bool = False):
        raise NotImplementedError

    def train_step(self, data):
        items, targets = data
        with tf.GradientTape() as tape:
            loss = self.next_item_loss(items, targets, training=True)
        # minimize() = compute_gradients + apply_gradients, the two a DistributedOptimizer wraps.
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        items, targets = data[0], data[1]
        self.loss_tracker.update_state(self.next_item_loss(items, targets))
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]
