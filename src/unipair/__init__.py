"""unipair: multimodal learning that trains every modality, not just the dominant one."""

from unipair.engine import RunConfig, RunResult, load_config, train
from unipair.evaluation.evaluate import evaluate

__all__ = ["RunConfig", "RunResult", "evaluate", "load_config", "train"]
__version__ = "0.1.0"
