"""Training data and training: synthetic artifacts, datasets, the training loop, distillation, evaluation."""
