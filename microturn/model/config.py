"""Model configuration and presets: one dataclass, no framework magic."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from microturn.stream.layout import Layout


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the early-fusion transformer. The micro-turn layout is part of it: a
    checkpoint only understands the slots it was trained on."""

    layout: Layout = field(default_factory=Layout)
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2  # grouped-query attention: fewer K/V heads keep the cache small
    ffn: str = "moe"  # "moe" or "dense"
    d_ff: int = 1024  # dense feed-forward width (ffn="dense")
    n_experts: int = 4
    top_k: int = 2
    d_expert: int = 384
    n_shared_experts: int = 0  # always-on experts beside the routed ones
    aux_loss_weight: float = 0.01  # load-balancing loss (Switch Transformer style)
    hmlp_width: int = 64  # channels inside the hMLP patch stem
    # The depth decoder writes one micro-turn's output slots from the main model's state
    # (moshi's depth transformer idea): one long-context forward per micro-turn.
    depth_layers: int = 2
    depth_d_model: int = 192
    depth_heads: int = 4
    depth_d_ff: int = 512
    # Streaming memory: a window of recent micro-turns plus the first ones as sinks.
    window_turns: int = 150  # 30 s at 200 ms; training masks attention the same way
    sink_turns: int = 1
    rope_theta: float = 10_000.0
    # A clock: sinusoids of each micro-turn's time (periods 2 micro-turns x 2^k, k <
    # clock_octaves) projected into every slot. 0 = none (the models shipped so far).
    clock_octaves: int = 0
    # The depth decoder also reads the previous micro-turn's output slots (action, text,
    # audio) before its context. Without them, what was just written reaches the first
    # slots of a micro-turn only through the main model's one context vector, and that is
    # where the models shipped so far (False) misspell and their audio jumps.
    output_history: bool = False
    # The depth decoder also reads how many micro-turns have passed since the model last
    # started a message (one learned vector per count; onset_clock_turns or more share
    # the last). Reminders, countdowns and "say it in N seconds" are timed from the
    # model's own last start, a count the main model would otherwise have to find by
    # attention. 0 = none (the models shipped so far).
    onset_clock_turns: int = 0
    norm_eps: float = 1e-5
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.layout, dict):  # from JSON
            object.__setattr__(self, "layout", Layout.from_dict(self.layout))
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("head dimension must be even for rotary embeddings")
        if self.ffn not in ("moe", "dense"):
            raise ValueError(f"ffn must be 'moe' or 'dense', got {self.ffn!r}")
        if self.ffn == "moe" and not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k={self.top_k} must lie in 1..n_experts={self.n_experts}")
        if self.depth_d_model % self.depth_heads or (self.depth_d_model // self.depth_heads) % 2:
            raise ValueError("depth_d_model must split into depth_heads even-sized heads")
        for name in (
            "d_model",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "d_ff",
            "d_expert",
            "depth_layers",
            "depth_d_model",
            "depth_heads",
            "depth_d_ff",
            "window_turns",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if not 0 <= self.clock_octaves <= 16:
            raise ValueError(f"clock_octaves must lie in 0..16, got {self.clock_octaves}")
        if not 0 <= self.onset_clock_turns <= 10_000:
            raise ValueError(
                f"onset_clock_turns must lie in 0..10000, got {self.onset_clock_turns}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["layout"] = self.layout.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        checked_fields(cls, d, "model config")
        try:
            return cls(**d)
        except TypeError as err:
            raise ValueError(f"bad model config: {err}") from err

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


PRESETS: dict[str, ModelConfig] = {
    # Trains on 2 CPU cores: ~8M parameters, ~5M active per token.
    "tiny": ModelConfig(output_history=True),
    # A step up for a GPU or patient CPU: ~100M parameters.
    "small": ModelConfig(
        layout=Layout.preset("base"),
        d_model=512,
        n_layers=8,
        n_heads=8,
        n_kv_heads=4,
        n_experts=8,
        top_k=2,
        d_expert=1024,
        n_shared_experts=1,
        hmlp_width=128,
        depth_d_model=256,
        depth_d_ff=1024,
        output_history=True,
    ),
    # The published scale of TML-Interaction-Small: ~276B parameters, ~12B active per
    # token. Only ever instantiated on the meta device here.
    "tml-small": ModelConfig(
        layout=Layout.preset("base"),
        d_model=5120,
        n_layers=54,
        n_heads=40,
        n_kv_heads=8,
        n_experts=128,
        top_k=4,
        d_expert=2560,
        hmlp_width=512,
        depth_layers=4,
        depth_d_model=1024,
        depth_heads=8,
        depth_d_ff=4096,
    ),
}


def checked_fields(cls: type, d: Any, what: str) -> dict[str, Any]:
    """`d` from a JSON file, once it is an object whose keys all name fields of the
    dataclass `cls`: a clear error for what a hand-edited config gets wrong."""
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} fields: {unknown}")
    return d
