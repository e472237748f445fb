"""Training: the loop, checkpoints, distributed data parallelism and the `train` command."""

from difflab.train.checkpoint import LoadedCheckpoint, load_checkpoint
from difflab.train.config import TrainConfig, load_train_config
from difflab.train.parts import Parts
from difflab.train.trainer import run_training

__all__ = ["LoadedCheckpoint", "Parts", "TrainConfig", "load_checkpoint", "load_train_config",
           "run_training"]
