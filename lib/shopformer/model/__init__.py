"""The sequence model: network, training data, distributed training, baselines, evaluation, registry."""
