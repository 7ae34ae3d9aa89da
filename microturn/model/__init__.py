"""The interaction model: early-fusion MoE transformer, streaming state, checkpoints."""

from microturn.model.batch import to_batch, validate_batch
from microturn.model.cache import StreamState
from microturn.model.checkpoint import from_pretrained, load_config, save_pretrained
from microturn.model.config import PRESETS, ModelConfig
from microturn.model.loss import output_losses
from microturn.model.sampling import HeadSampling, SamplingConfig
from microturn.model.transformer import InteractionModel, Logits, StepResult, count_parameters

__all__ = [
    "PRESETS",
    "HeadSampling",
    "InteractionModel",
    "Logits",
    "ModelConfig",
    "SamplingConfig",
    "StepResult",
    "StreamState",
    "count_parameters",
    "from_pretrained",
    "load_config",
    "output_losses",
    "save_pretrained",
    "to_batch",
    "validate_batch",
]
