"""Keras models. They know nothing of Horovod or Spark: ``shoplens.distributed`` adds the wiring."""
