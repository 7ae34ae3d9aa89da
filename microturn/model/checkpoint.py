"""Save and load: safetensors weights plus a JSON config, written atomically.

A checkpoint folder holds `config.json` (ModelConfig, layout included, and how the model
samples by default: SamplingConfig) and `model.safetensors`. Loading checks everything
it can and says what is wrong: missing files, unreadable JSON, unknown fields, corrupt
tensors, missing or unexpected weights, shapes that do not match the config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from microturn.model.config import ModelConfig
from microturn.model.sampling import SamplingConfig
from microturn.model.transformer import InteractionModel

# The shipped model (`make demo`, `microturn run`, `bench interact --system default`).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "default"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def default_checkpoint() -> Path:
    """The shipped model's folder, or a clear error where a checkout lacks it."""
    if not (DEFAULT_CHECKPOINT / CONFIG_FILE).is_file():
        raise ValueError(
            f"no trained model at {DEFAULT_CHECKPOINT}: train one (microturn train) "
            "or pass a checkpoint folder (--model DIR)"
        )
    return DEFAULT_CHECKPOINT


def save_pretrained(
    model: InteractionModel,
    directory: str | Path,
    *,
    dtype: torch.dtype | None = None,
    lossless: bool = False,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write config and weights (optionally cast, e.g. float16 to halve the size; with
    `lossless`, only the tensors the cast leaves unchanged, e.g. a float16 model's
    frozen part beside a part trained in float32: the loaded model is the same).
    `state`: the weights to write instead of model.state_dict(), e.g. a sharded
    model's gathered full weights."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, tensor in (model.state_dict() if state is None else state).items():
        t = tensor.detach().cpu().contiguous()
        if dtype is not None and t.is_floating_point():
            cast = t.to(dtype)
            if not lossless or torch.equal(cast.to(t.dtype), t):
                t = cast
        tensors[name] = t
    _atomic(directory / WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
    _write_config(directory, model.cfg, model.sampling)
    return directory


def save_sampling(directory: str | Path, sampling: SamplingConfig) -> None:
    """Set a checkpoint's default sampling (config.json only; the weights stay as they
    are), so every user of the folder (bench, demo, server) samples this way."""
    _write_config(Path(directory), load_config(directory), sampling)


def _write_config(directory: Path, cfg: ModelConfig, sampling: SamplingConfig) -> None:
    text = json.dumps(
        {"model": cfg.to_dict(), "sampling": sampling.to_dict(), "format": "microturn.model/1"},
        indent=1,
    )
    _atomic(directory / CONFIG_FILE, lambda p: p.write_text(text))


def _read_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{directory}: not a microturn checkpoint (no {CONFIG_FILE})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: corrupt config ({err})") from err
    if not isinstance(data, dict) or data.get("format") != "microturn.model/1":
        raise ValueError(f"{path}: not a microturn.model/1 config")
    return data


def _load_configs(directory: str | Path) -> tuple[ModelConfig, SamplingConfig]:
    """config.json, read once: the model config and its default sampling
    (SamplingConfig() where the file has none)."""
    data = _read_config(directory)
    cfg = ModelConfig.from_dict(data.get("model"))
    try:
        sampling = SamplingConfig.from_dict(data.get("sampling"))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{Path(directory) / CONFIG_FILE}: bad sampling ({err})") from err
    return cfg, sampling


def load_config(directory: str | Path) -> ModelConfig:
    return _load_configs(directory)[0]


def load_sampling(directory: str | Path) -> SamplingConfig:
    """The checkpoint's default sampling (the whole config.json checked on the way)."""
    return _load_configs(directory)[1]


def from_pretrained(
    directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> InteractionModel:
    """Build the model a checkpoint folder describes and load its weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg, sampling = _load_configs(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"{directory}: no {WEIGHTS_FILE}")
    try:
        tensors = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights}: corrupt weights ({err})") from err
    with torch.device(device):
        model = InteractionModel(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{weights} does not match its config: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
        )
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise ValueError(
                f"{weights}: {name} has shape {tuple(t.shape)}, config needs "
                f"{tuple(expected[name].shape)}"
            )
        if not torch.isfinite(t.float()).all():
            raise ValueError(f"{weights}: {name} holds NaN or Inf")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    model.sampling = sampling
    return model.to(dtype)


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
