"""Engine: configuration, the Fabric training loop, checkpoints and run directories."""

from unipair.engine.config import RunConfig, load_config
from unipair.engine.run_dir import RunResult
from unipair.engine.state import TrainState
from unipair.engine.trainer import train

__all__ = ["RunConfig", "RunResult", "TrainState", "load_config", "train"]
