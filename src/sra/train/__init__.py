from ..checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_weights, model_state, save_checkpoint
from .config import TrainConfig
from .ema import ema_decay, update_ema
from .loop import BatchSchedule, train
from ..runfolder import RunFolderError, Stopped

__all__ = ["CheckpointError", "latest_checkpoint", "load_checkpoint", "load_weights", "model_state", "save_checkpoint",
           "TrainConfig", "ema_decay", "update_ema", "BatchSchedule", "RunFolderError", "Stopped", "train"]
