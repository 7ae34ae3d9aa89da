"""The interaction model: one decoder-only transformer over interleaved micro-turns.

Readable top to bottom (after nanoGPT's model.py): encoder-free embeddings of every
track, rotary attention with an optional streaming cache, a mixture-of-experts
feed-forward, and a small depth decoder that writes each micro-turn's output slots.

The main transformer reads the whole interleaved sequence (input 0, output 0, input 1,
...). Its state at the last input slot of micro-turn t summarises everything heard and
said so far; from it the depth decoder (moshi's depth-transformer idea, here over one
micro-turn's output slots: action, text, audio) writes output t slot by slot. Live, that
costs one long-context forward per micro-turn (the previous micro-turn's outputs and this
one's inputs together) plus a few tiny depth forwards, instead of one long-context forward
per output slot. The same modules run the training forward (whole episodes) and the
streaming `step`; a test holds the two to the same logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from microturn.codecs import dmel
from microturn.codecs.text import VOCAB_SIZE, Special
from microturn.model.cache import StreamState, window_mask
from microturn.model.config import ModelConfig
from microturn.model.rope import rotary, rotary_angles
from microturn.model.sampling import (
    SamplingConfig,
    since_onset_before,
    text_onsets,
    turns_since_onset,
)
from microturn.stream.layout import (
    INPUT_TRACKS,
    OUTPUT_TRACKS,
    TRACK_KIND,
    Layout,
    SlotKind,
    Track,
)

AUDIO_VALUES = dmel.N_MELS * dmel.N_BINS  # one bag-embedding row per (channel, bin)


# ---------------------------------------------------------------------------------
# Embeddings: no pretrained encoder anywhere
# ---------------------------------------------------------------------------------


class HMLPStem(nn.Module):
    """Hierarchical MLP patch stem (Touvron et al. 2022): a 40x40 patch is read as an
    8x8 grid of 5x5 pixels, each mapped by a linear layer, then merged 2x2 three times
    (8 -> 4 -> 2 -> 1) with a linear layer per merge. No mixing across patches."""

    def __init__(self, width: int, d_model: int) -> None:
        super().__init__()
        self.pixel = nn.Linear(5 * 5 * 3, width)
        self.merges = nn.ModuleList([nn.Linear(4 * width, width) for _ in range(2)])
        self.out = nn.Linear(4 * width, d_model)
        self.norms = nn.ModuleList([nn.LayerNorm(width) for _ in range(3)])

    @staticmethod
    def _merge(x: Tensor) -> Tensor:
        """[..., G, G, C] -> [..., G/2, G/2, 4C]: concatenate 2x2 neighbours."""
        *lead, g, _, c = x.shape
        x = x.reshape(*lead, g // 2, 2, g // 2, 2, c).transpose(-4, -3)
        return x.reshape(*lead, g // 2, g // 2, 4 * c)

    def forward(self, patches: Tensor) -> Tensor:
        """uint8 [..., 40, 40, 3] -> [..., d_model]."""
        x = patches.float() / 127.5 - 1.0
        *lead, _, _, _ = x.shape
        x = x.reshape(*lead, 8, 5, 8, 5, 3).transpose(-4, -3).reshape(*lead, 8, 8, 75)
        x = F.gelu(self.norms[0](self.pixel(x)))
        for merge, norm in zip(self.merges, self.norms[1:], strict=True):
            x = F.gelu(norm(merge(self._merge(x))))
        return self.out(self._merge(x)).reshape(*lead, -1)


class Embedder(nn.Module):
    """Every track to vectors: dMel through a bag of embeddings, patches through the
    hMLP stem, tokens through a table; plus one learned embedding per slot of the
    micro-turn (which tells tracks and slots apart)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        lay = cfg.layout
        self.layout = lay
        self.audio_group = lay.audio_group
        # One table over (frame offset, channel, bin); a slot's vector is the sum of its
        # k * 80 rows, scaled so its size does not grow with k * 80.
        self.audio_bag = nn.EmbeddingBag(lay.audio_group * AUDIO_VALUES, cfg.d_model, mode="sum")
        self.audio_scale = 1.0 / math.sqrt(lay.audio_group * dmel.N_MELS)
        offsets = torch.arange(lay.audio_group * dmel.N_MELS) * dmel.N_BINS
        self.register_buffer("audio_offsets", offsets, persistent=False)
        self.tokens = nn.Embedding(VOCAB_SIZE, cfg.d_model)
        self.hmlp = HMLPStem(cfg.hmlp_width, cfg.d_model) if lay.video_size else None
        self.slots = nn.Embedding(lay.slots_per_turn, cfg.d_model)
        self.absent_audio = nn.Parameter(torch.zeros(cfg.d_model))
        self.absent_video = nn.Parameter(torch.zeros(cfg.d_model))

    def audio(self, bins: Tensor) -> Tensor:
        """Bins [..., k, 80] -> [..., d]."""
        lead = bins.shape[:-2]
        idx = bins.reshape(-1, self.audio_group * dmel.N_MELS).long() + self.audio_offsets
        return (self.audio_bag(idx) * self.audio_scale).reshape(*lead, -1)

    def track(self, track: Track, values: Tensor, present: Tensor | None = None) -> Tensor:
        """Values of one track [B, N, slots, ...] -> [B, N, slots, d] (no slot embedding)."""
        kind = TRACK_KIND[track]
        if kind is SlotKind.TOKEN:
            return self.tokens(values.long())
        if kind is SlotKind.AUDIO:
            x = self.audio(values)
            if present is not None:  # [B, N]: a lost micro-turn gets the "absent" vector
                x = torch.where(present[..., None, None], x, self.absent_audio)
            return x
        assert self.hmlp is not None
        x = self.hmlp(values)
        if present is not None:  # [B, N, frames] -> per patch
            per_patch = present.repeat_interleave(self.layout.patches_per_frame, dim=-1)
            x = torch.where(per_patch[..., None], x, self.absent_video)
        return x

    def inputs(self, batch: dict[str, Tensor]) -> dict[Track, Tensor]:
        out = {}
        for t in INPUT_TRACKS:
            if self.layout.slots(t) == 0:
                continue
            present = batch.get(f"{t.value}_present")
            out[t] = self.track(t, batch[t.value], present)
        return out

    def add_slots(self, x: Tensor) -> Tensor:
        """Add each slot's embedding to whole micro-turns x [B, N * slots_per_turn, d]."""
        idx = torch.arange(x.shape[1], device=x.device) % self.layout.slots_per_turn
        return x + self.slots(idx)


class Clock(nn.Module):
    """Each slot's micro-turn time as sinusoids (periods 2 micro-turns, 4, 8, ...),
    projected into the residual stream.

    Why: rotary attention tells how far apart two slots are only through where a head
    looks; nothing it reads carries a time. With the clock in every slot, a head that
    finds a request (or the last reminder) by its content also reads *when* it was, and
    the layers above can compare that with now: "every 4 seconds" becomes arithmetic on
    what attention returns rather than a head tuned to look exactly 20 micro-turns back.
    Positions, not a wall clock: the same in training, streaming and prefill."""

    def __init__(self, octaves: int, layout: Layout, d_model: int) -> None:
        super().__init__()
        self.slots_per_turn = layout.slots_per_turn
        # In micro-turns; integers, so casting the model to half precision leaves them be.
        periods = 2 ** torch.arange(1, octaves + 1)
        self.register_buffer("periods", periods, persistent=False)
        self.proj = nn.Linear(2 * octaves, d_model, bias=False)

    def forward(self, positions: Tensor, dtype: torch.dtype) -> Tensor:
        """Positions [B, T] -> [B, T, d]; float64 phases stay exact hours into a session."""
        turns = torch.div(positions, self.slots_per_turn, rounding_mode="floor")
        angles = turns.to(torch.float64)[..., None] * (2 * math.pi / self.periods.double())
        features = torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)
        return self.proj(features)


class OnsetClock(nn.Module):
    """How long ago the model last started a message, added to a state: one learned
    vector per count of micro-turns, counts from `turns` on (and "never") sharing the
    last. See ModelConfig.onset_clock_turns."""

    def __init__(self, turns: int, d_model: int) -> None:
        super().__init__()
        self.turns = turns
        self.embed = nn.Embedding(turns + 1, d_model)

    def forward(self, context: Tensor, since: Tensor) -> Tensor:
        """States [..., d] plus the vector of `since` [...] (micro-turns)."""
        return context + self.embed(since.clamp(max=self.turns)).to(context.dtype)


# ---------------------------------------------------------------------------------
# Attention with rotary positions and an optional streaming cache
# ---------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.q = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        self.kv = nn.Linear(d_model, 2 * n_kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(n_heads * self.head_dim, d_model, bias=False)
        self.dropout = dropout

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        cache: StreamState | DepthCache | None = None,
        layer: int = 0,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Self-attention; causal, or `mask` [T, T] (windowed), or against `cache`."""
        b, t, _ = x.shape
        q = rotary(self.q(x).view(b, t, self.n_heads, self.head_dim), *rope)
        k_raw, v = self.kv(x).view(b, t, 2, self.n_kv, self.head_dim).unbind(2)
        k = rotary(k_raw, *rope)
        if cache is None:
            causal = mask is None
        else:
            k, v, mask = cache.attend(layer, k_raw, k, v)
            causal = False
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_heads != self.n_kv,
        )
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


# ---------------------------------------------------------------------------------
# Feed-forward: dense SwiGLU or a mixture of experts
# ---------------------------------------------------------------------------------


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class MoE(nn.Module):
    """Top-k routed experts (+ optional shared experts), dropless: every token gets its
    k experts whatever the batch, so streaming and training compute the same thing.

    Experts run as gather + matmul per expert (the small-batch decode shape), and the
    Switch-style auxiliary loss pushes the router towards an even load.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, h, e = cfg.d_model, cfg.d_expert, cfg.n_experts
        self.top_k, self.n_experts = cfg.top_k, e
        self.router = nn.Linear(d, e, bias=False)
        self.w_gate = nn.Parameter(torch.empty(e, d, h))
        self.w_up = nn.Parameter(torch.empty(e, d, h))
        self.w_down = nn.Parameter(torch.empty(e, h, d))
        self.shared = SwiGLU(d, h * cfg.n_shared_experts) if cfg.n_shared_experts else None
        self.register_buffer("load", torch.zeros(e), persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs = self.router(flat).float().softmax(dim=-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
        # Sort the (token, choice) pairs by expert: each expert then reads one contiguous
        # run of tokens (gather), and only experts that got tokens run at all.
        order = chosen.flatten().argsort(stable=True)
        counts = torch.bincount(chosen.flatten(), minlength=self.n_experts)
        token_of = order // self.top_k
        gathered = flat[token_of]
        w = weights.flatten()[order, None]
        out = torch.zeros_like(flat)
        start = 0
        for e, n in enumerate(counts.tolist()):
            if n == 0:
                continue
            h = gathered[start : start + n]
            y = (F.silu(h @ self.w_gate[e]) * (h @ self.w_up[e])) @ self.w_down[e]
            out.index_add_(0, token_of[start : start + n], y * w[start : start + n])
            start += n
        if self.shared is not None:
            out = out + self.shared(flat)
        load = counts.float() / max(1, chosen.numel())
        self.load = load.detach()
        aux = self.n_experts * (load * probs.mean(0)).sum()
        return out.reshape(shape), aux


class Block(nn.Module):
    def __init__(
        self, d_model: int, n_heads: int, n_kv_heads: int, ffn: nn.Module, cfg: ModelConfig
    ) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(d_model, eps=cfg.norm_eps)
        self.attn = Attention(d_model, n_heads, n_kv_heads, cfg.dropout)
        self.norm2 = nn.RMSNorm(d_model, eps=cfg.norm_eps)
        self.ffn = ffn

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        cache: StreamState | DepthCache | None,
        layer: int,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        x = x + self.attn(self.norm1(x), rope, cache, layer, mask)
        h = self.norm2(x)
        if isinstance(self.ffn, MoE):
            y, aux = self.ffn(h)
        else:
            y, aux = self.ffn(h), h.new_zeros(())
        return x + y, aux


# ---------------------------------------------------------------------------------
# The depth decoder: one micro-turn's output slots
# ---------------------------------------------------------------------------------


class DepthCache:
    """The depth decoder's keys and values within one micro-turn while `step` writes it
    slot by slot: each new slot attends to them instead of re-running the prefix."""

    def __init__(self) -> None:
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        self.length = 0  # positions stored

    def attend(
        self, layer: int, k_raw: Tensor, k: Tensor, v: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Store this call's keys / values; return all so far, and the causal mask among
        the new positions (None for one new position, which sees everything)."""
        del k_raw  # the depth decoder has no attention sinks to re-rotate
        if layer < len(self.keys):
            self.keys[layer] = torch.cat([self.keys[layer], k], dim=1)
            self.values[layer] = torch.cat([self.values[layer], v], dim=1)
        else:
            self.keys.append(k)
            self.values.append(v)
        keys, values = self.keys[layer], self.values[layer]
        t, total = k.shape[1], keys.shape[1]
        if t == 1:
            return keys, values, None
        q = torch.arange(total - t, total, device=k.device)[:, None]
        return keys, values, torch.arange(total, device=k.device)[None, :] <= q


class DepthDecoder(nn.Module):
    """Writes one micro-turn's output slots, one after another, from the main model's
    state at the last input slot: a small causal transformer over [context, slot 0,
    slot 1, ...] whose position j predicts output slot j. With `output_history` the
    previous micro-turn's output slots come first: [outputs of t - 1, context, slot 0,
    ...]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        lay = cfg.layout
        dd = cfg.depth_d_model
        self.layout = lay
        self.n_out = sum(lay.slots(t) for t in OUTPUT_TRACKS)
        self.theta = cfg.rope_theta
        self.head_dim = dd // cfg.depth_heads
        self.context = nn.Linear(cfg.d_model, dd)
        self.slot_in = nn.Linear(cfg.d_model, dd, bias=False)
        self.slots = nn.Embedding(self.n_out, dd)
        self.history = nn.Embedding(self.n_out, dd) if cfg.output_history else None
        self.blocks = nn.ModuleList(
            [
                Block(dd, cfg.depth_heads, cfg.depth_heads, SwiGLU(dd, cfg.depth_d_ff), cfg)
                for _ in range(cfg.depth_layers)
            ]
        )
        self.norm = nn.RMSNorm(dd, eps=cfg.norm_eps)
        k = lay.audio_group
        self.heads = nn.ModuleDict(
            {
                Track.MODEL_ACTION.value: nn.Linear(dd, VOCAB_SIZE, bias=False),
                Track.MODEL_TEXT.value: nn.Linear(dd, VOCAB_SIZE, bias=False),
                Track.MODEL_AUDIO.value: nn.Linear(dd, k * AUDIO_VALUES, bias=False),
            }
        )

    def hidden(self, context: Tensor, previous: Tensor, history: Tensor | None = None) -> Tensor:
        """context [M, d_model], previous output-slot embeddings [M, j, d_model] ->
        depth states [M, j + 1, depth_d_model]; state j predicts output slot j.
        history: the previous micro-turn's output-slot embeddings [M, O, d_model], which
        a model with `output_history` needs."""
        x = torch.cat([self.context(context)[:, None], self.slot_in(previous)], dim=1)
        n = x.shape[1]
        x = self._with_history(x + self.slots.weight[:n], history)
        return self._run(x, None)[:, -n:]

    def start(self, context: Tensor, history: Tensor | None = None) -> tuple[DepthCache, Tensor]:
        """Streaming: the depth state that predicts slot 0 [M, dd], and the cache of the
        positions so far, which `extend` adds each written slot to (`hidden` would re-run
        the whole prefix for every slot)."""
        x = self._with_history((self.context(context) + self.slots.weight[0])[:, None], history)
        cache = DepthCache()
        return cache, self._run(x, cache)[:, -1]

    def extend(self, cache: DepthCache, written: Tensor) -> Tensor:
        """Streaming: the embedding [M, d_model] of the slot just written -> the depth
        state that predicts the next slot [M, dd]."""
        history = self.n_out if self.history is not None else 0
        j = cache.length - history  # the output slot this position predicts
        x = (self.slot_in(written) + self.slots.weight[j])[:, None]
        return self._run(x, cache)[:, -1]

    def _with_history(self, x: Tensor, history: Tensor | None) -> Tensor:
        if self.history is None:
            return x
        if history is None:
            raise ValueError("this depth decoder reads the previous outputs: pass history")
        return torch.cat([self.slot_in(history) + self.history.weight, x], dim=1)

    def _run(self, x: Tensor, cache: DepthCache | None) -> Tensor:
        """The blocks over x [M, t, dd], which follow the cache's positions (if any)."""
        start = cache.length if cache is not None else 0
        positions = torch.arange(start, start + x.shape[1], device=x.device).expand(x.shape[0], -1)
        rope = rotary_angles(positions, self.head_dim, self.theta, x.dtype)
        for i, block in enumerate(self.blocks):
            x, _ = block(x, rope, cache, i)
        if cache is not None:
            cache.length += x.shape[1]
        return self.norm(x)

    def head(self, track: Track, h: Tensor) -> Tensor:
        logits = self.heads[track.value](h)
        if track is Track.MODEL_AUDIO:
            logits = logits.unflatten(-1, (self.layout.audio_group, dmel.N_MELS, dmel.N_BINS))
        return logits

    def logits(self, h: Tensor) -> dict[str, Tensor]:
        """Depth states of all output slots [..., O, dd] -> logits per output track."""
        out, start = {}, 0
        for t in OUTPUT_TRACKS:
            n = self.layout.slots(t)
            out[t.value] = self.head(t, h[..., start : start + n, :])
            start += n
        return out


# ---------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------


@dataclass
class Logits:
    """Logits of every output slot: action / text [B, N, slots, vocab], audio
    [B, N, slots, k, 80, 16]."""

    model_action: Tensor
    model_text: Tensor
    model_audio: Tensor

    def track(self, track: Track) -> Tensor:
        return getattr(self, track.value)


class InteractionModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.layout = cfg.layout
        self.embed = Embedder(cfg)
        self.clock = (
            Clock(cfg.clock_octaves, cfg.layout, cfg.d_model) if cfg.clock_octaves else None
        )
        self.blocks = nn.ModuleList(
            [
                Block(
                    cfg.d_model,
                    cfg.n_heads,
                    cfg.n_kv_heads,
                    MoE(cfg) if cfg.ffn == "moe" else SwiGLU(cfg.d_model, cfg.d_ff),
                    cfg,
                )
                for _ in range(cfg.n_layers)
            ]
        )
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.onset_clock = (
            OnsetClock(cfg.onset_clock_turns, cfg.d_model) if cfg.onset_clock_turns else None
        )
        self.depth = DepthDecoder(cfg)
        # How this model samples unless a caller says otherwise: a checkpoint carries it
        # (config.json "sampling"), e.g. a start bias chosen by `microturn bench calibrate`.
        self.sampling = SamplingConfig()
        if not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style init: N(0, 0.02), residual projections scaled by depth."""
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() < 2 or "norm" in name:
                if name.endswith("absent_audio") or name.endswith("absent_video"):
                    nn.init.normal_(p, std=std)
                continue
            scale = std / math.sqrt(2 * self.cfg.n_layers) if _is_residual(name) else std
            nn.init.normal_(p, std=scale)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def _output_embeddings(self, values: dict[str, Tensor]) -> dict[Track, Tensor]:
        """Output tracks [B, N, slots, ...] -> embeddings [B, N, slots, d] per track."""
        return {t: self.embed.track(t, values[t.value]) for t in OUTPUT_TRACKS}

    def _output_history(self, before: Tensor, first: Tensor) -> Tensor | None:
        """What the depth decoder reads of the micro-turn before each one: the written
        output-slot embeddings [M, O, d] of the micro-turn before, with a blank micro-turn
        where `first` [M] (a stream's first; None without `output_history`)."""
        if not self.cfg.output_history:
            return None
        if not bool(first.any()):  # the common live case: no blank micro-turn to embed
            return before
        blank = {k: v[:, None] for k, v in blank_outputs(self.layout, before.device).items()}
        empty = self._in_slot_order(self._output_embeddings(blank), OUTPUT_TRACKS)
        return torch.where(first[:, None, None], empty.to(before.dtype), before)

    def _in_slot_order(self, per_track: dict[Track, Tensor], tracks: tuple[Track, ...]) -> Tensor:
        """{track: [B, N, slots, d]} -> [B, N * slots, d] in the layout's order."""
        b = next(iter(per_track.values())).shape[0]
        flat = {t: x.flatten(0, 1) for t, x in per_track.items()}
        return self.layout.interleave(flat, tracks).view(b, -1, self.cfg.d_model)

    # ---- training forward ----------------------------------------------------------
    def forward(self, batch: dict[str, Tensor]) -> tuple[Logits, Tensor]:
        """Whole micro-turn sequences from turn 0. batch: per-track tensors [B, N, ...]
        (see `microturn.model.batch`). Returns output-slot logits and the MoE aux loss."""
        context, written, aux = self.encode(batch)
        return self.decode(context, written, self.since_onset(batch)), aux

    def since_onset(self, batch: dict[str, Tensor]) -> Tensor | None:
        """Micro-turns since the model's last message start before each micro-turn [B,
        N] of a whole recorded sequence (None without an onset clock)."""
        if self.onset_clock is None:
            return None
        return since_onset_before(batch[Track.MODEL_TEXT.value])

    def _depth_context(self, context: Tensor, since: Tensor | None) -> Tensor:
        """What the depth decoder starts from: the main model's state [..., d], plus,
        with an onset clock, the vector of `since` [...] (micro-turns since the model
        last started a message)."""
        if self.onset_clock is None:
            return context
        if since is None:
            raise ValueError("this model reads the time since its last message start: pass since")
        return self.onset_clock(context, since)

    def _count_onsets(
        self, state: StreamState, previous: Tensor, text: Tensor, fresh: Tensor
    ) -> None:
        """Step each stream's count of micro-turns since its last message start over
        the text ids [B, N, slots] it just took in, after `previous` [B, slots] (the
        micro-turn before; nothing where `fresh`: a stream's first follows no outputs,
        whatever a reused row still holds). Only a model with an onset clock counts."""
        if self.onset_clock is None:
            return
        previous = previous.masked_fill(fresh[:, None], int(Special.PAD))
        onsets = text_onsets(text, previous)
        state.set_since_onset(turns_since_onset(onsets, state.current_since_onset())[:, -1])

    def encode(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The main model's half of `forward`: each micro-turn's state at its last input
        slot [B, N, d], the embeddings of its written output slots [B, N, O, d] (what the
        depth decoder reads) and the MoE aux loss. Apart so that a depth decoder can be
        trained or probed on a fixed main model's states."""
        from microturn.model.batch import validate_batch

        lay = self.layout
        validate_batch(batch, lay)
        b, n = batch[Track.USER_AUDIO.value].shape[:2]
        outputs = self._output_embeddings(batch)
        x = self._in_slot_order({**self.embed.inputs(batch), **outputs}, TRACK_ORDER_ALL)
        x = self.embed.add_slots(x)
        positions = torch.arange(x.shape[1], device=x.device).expand(b, -1)
        mask = window_mask(
            x.shape[1],
            self.cfg.sink_turns * lay.slots_per_turn,
            self.cfg.window_turns * lay.slots_per_turn,
            x.device,
        )
        h, aux = self._blocks(x, positions, None, mask)
        context = h.view(b, n, lay.slots_per_turn, -1)[:, :, lay.input_slots - 1]
        written = self._in_slot_order(outputs, OUTPUT_TRACKS).view(b, n, -1, self.cfg.d_model)
        return context, written, aux

    def decode(self, context: Tensor, written: Tensor, since: Tensor | None = None) -> Logits:
        """The depth decoder's half of `forward`, teacher-forced: states [B, N, d] and
        written output slots [B, N, O, d] (each micro-turn's history is the one before);
        `since` [B, N]: see `since_onset` (needed with an onset clock)."""
        b, n = context.shape[:2]
        context = self._depth_context(context, since)
        first = (torch.arange(n, device=context.device) == 0).repeat(b)
        history = self._output_history(written.roll(1, dims=1).flatten(0, 1), first)
        flat = written.flatten(0, 1)
        depth = self.depth.hidden(context.flatten(0, 1), flat[:, :-1], history)  # [B*N, O, dd]
        return Logits(**self.depth.logits(depth.view(b, n, *depth.shape[1:])))

    def _blocks(
        self,
        x: Tensor,
        positions: Tensor,
        cache: StreamState | None,
        mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        aux = x.new_zeros(())
        if self.clock is not None:
            x = x + self.clock(positions, x.dtype)
        rope = rotary_angles(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        for i, block in enumerate(self.blocks):
            x, a = block(x, rope, cache, i, mask)
            aux = aux + a
        return self.norm(x), aux / max(1, len(self.blocks))

    # ---- streaming -----------------------------------------------------------------
    def new_state(
        self,
        batch_size: int,
        *,
        window_turns: int | None = None,
        sink_turns: int | None = None,
        seeds: list[int] | None = None,
    ) -> StreamState:
        """Allocate the bounded cache of `batch_size` streams once (see `cache.py`)."""
        p = next(self.parameters())
        return StreamState.allocate(
            batch_size=batch_size,
            n_layers=self.cfg.n_layers,
            n_kv_heads=self.cfg.n_kv_heads,
            head_dim=self.cfg.head_dim,
            slots_per_turn=self.layout.slots_per_turn,
            window_turns=window_turns or self.cfg.window_turns,
            sink_turns=self.cfg.sink_turns if sink_turns is None else sink_turns,
            rope_theta=self.cfg.rope_theta,
            pending=blank_outputs(self.layout, p.device),
            dtype=p.dtype,
            device=p.device,
            seeds=seeds,
        )

    @torch.no_grad()
    def step(
        self,
        state: StreamState,
        inputs: dict[str, Tensor],
        *,
        sampling: SamplingConfig | None = None,
        teacher: dict[str, Tensor] | None = None,
    ) -> StepResult:
        """One micro-turn for every stream in `state`: one forward over the previous
        micro-turn's outputs and this one's inputs, then the depth decoder writes this
        micro-turn's output slots (sampled, or taken from `teacher`).

        inputs: input tracks [B, 1, ...]; teacher: output tracks [B, 1, ...].
        """
        from microturn.model.batch import validate_batch
        from microturn.model.sampling import (
            between_after,
            next_between,
            sample_slot,
            sample_text,
        )

        lay = self.layout
        b = state.batch_size
        validate_batch(inputs, lay, tracks=INPUT_TRACKS, batch_size=b, turns=1)
        if teacher is not None:
            validate_batch(teacher, lay, tracks=OUTPUT_TRACKS, batch_size=b, turns=1)
        sampling = sampling or self.sampling
        pending = {k: v[:, None] for k, v in state.get_pending().items()}
        previous = self._in_slot_order(self._output_embeddings(pending), OUTPUT_TRACKS)
        current = self._in_slot_order(self.embed.inputs(inputs), INPUT_TRACKS)
        n_out = previous.shape[1]
        slot_ids = torch.cat(
            [torch.arange(lay.input_slots, lay.slots_per_turn), torch.arange(lay.input_slots)]
        ).to(current.device)
        x = torch.cat([previous, current], dim=1) + self.embed.slots(slot_ids)
        valid = torch.ones(b, n_out + lay.input_slots, dtype=torch.bool, device=x.device)
        valid[:, :n_out] = (state.current_turns() > 0)[:, None]
        positions = state.begin(valid)
        h, _ = self._blocks(x, positions, state)
        state.commit(valid)
        # A stream's first micro-turn follows no outputs and is between messages, whatever
        # a reused row's pending outputs still hold.
        first = state.current_turns() == 0
        since = state.current_since_onset() if self.onset_clock is not None else None
        context = self._depth_context(h[:, -1], since)
        history = self._output_history(previous, first)
        values: dict[Track, list[Tensor]] = {t: [] for t in OUTPUT_TRACKS}
        logits: dict[Track, list[Tensor]] = {t: [] for t in OUTPUT_TRACKS}
        depth_cache, hidden = self.depth.start(context, history)
        # The start bias and rule act on text slots between messages (`sample_text`).
        deciding = teacher is None and sampling.decides_starts
        if deciding:
            between = between_after(pending[Track.MODEL_TEXT.value][:, 0]) | first
        slots = list(lay.output_slots())
        for n, (t, i) in enumerate(slots):
            logit = self.depth.head(t, hidden)
            if teacher is not None:
                value = teacher[t.value][:, 0, i]
            elif t is Track.MODEL_TEXT and deciding:
                value = sample_text(logit, between, sampling, state.generators)
                between = next_between(between, value)
            else:
                value = sample_slot(t, logit, sampling, state.generators)
            logits[t].append(logit)
            values[t].append(value)
            if n + 1 < len(slots):
                emb = self.embed.track(t, value[:, None, None])[:, 0, 0]
                hidden = self.depth.extend(depth_cache, emb)
        result = StepResult(
            **{t.value: torch.stack(values[t], 1) for t in OUTPUT_TRACKS},
            logits=Logits(**{t.value: torch.stack(logits[t], 1)[:, None] for t in OUTPUT_TRACKS}),
        )
        text = Track.MODEL_TEXT.value
        self._count_onsets(state, pending[text][:, 0], result.model_text[:, None], first)
        state.set_pending({t.value: getattr(result, t.value) for t in OUTPUT_TRACKS})
        state.end_turn()
        return result

    @torch.no_grad()
    def prefill(self, state: StreamState, batch: dict[str, Tensor]) -> None:
        """Feed whole recorded micro-turns [B, N, ...] (inputs and outputs) into the
        state in one forward: what a server without streaming sessions must redo for
        every new micro-turn, and a way to resume a conversation from its record."""
        from microturn.model.batch import validate_batch

        lay = self.layout
        validate_batch(batch, lay, batch_size=state.batch_size)
        b, n = batch[Track.USER_AUDIO.value].shape[:2]
        n_out = sum(lay.slots(t) for t in OUTPUT_TRACKS)
        pending = {k: v[:, None] for k, v in state.get_pending().items()}
        previous = self._in_slot_order(self._output_embeddings(pending), OUTPUT_TRACKS)
        previous = previous + self.embed.slots.weight[lay.input_slots :]
        outputs = self._output_embeddings(batch)
        x = self._in_slot_order({**self.embed.inputs(batch), **outputs}, TRACK_ORDER_ALL)
        x = torch.cat([previous, self.embed.add_slots(x)[:, :-n_out]], dim=1)
        valid = torch.ones(b, x.shape[1], dtype=torch.bool, device=x.device)
        valid[:, :n_out] = (state.current_turns() > 0)[:, None]
        positions = state.begin(valid)
        self._blocks(x, positions, state)
        state.commit(valid)
        text = Track.MODEL_TEXT.value
        self._count_onsets(state, pending[text][:, 0], batch[text], state.current_turns() == 0)
        state.set_pending({t.value: batch[t.value][:, -1] for t in OUTPUT_TRACKS})
        state._put(state.turns, state.current_turns() + n)

    def grow(
        self,
        *,
        clock_octaves: int | None = None,
        output_history: bool | None = None,
        onset_clock_turns: int | None = None,
    ) -> InteractionModel:
        """This model with a clock of `clock_octaves` (0: none), the depth decoder's
        output history and/or an onset clock of `onset_clock_turns` (0: none); None or
        the model's own setting changes nothing (no change at all: this model). A new
        clock or onset clock starts at zero, so a model grown from one without computes
        exactly what it did until training moves it: fine-tuning a trained model to read
        time keeps everything else it knows (one of another size is replaced). A new
        output history is read at once (the depth decoder's attention spreads over it):
        fine-tune before trusting the outputs."""
        wanted = {
            "clock_octaves": clock_octaves,
            "output_history": output_history,
            "onset_clock_turns": onset_clock_turns,
        }
        changes: dict[str, Any] = {
            k: v for k, v in wanted.items() if v is not None and v != getattr(self.cfg, k)
        }
        if not changes:
            return self
        prefix = {
            "clock_octaves": "clock.",
            "output_history": "depth.history.",
            "onset_clock_turns": "onset_clock.",
        }
        new_parts = tuple(prefix[name] for name in changes)
        p = next(self.parameters())
        with torch.device(p.device):
            grown = InteractionModel(replace(self.cfg, **changes)).to(p.dtype)
        kept = {k: v for k, v in self.state_dict().items() if not k.startswith(new_parts)}
        missing, unexpected = grown.load_state_dict(kept, strict=False)
        assert not unexpected and all(k.startswith(new_parts) for k in missing), missing
        if "clock_octaves" in changes and grown.clock is not None:
            nn.init.zeros_(grown.clock.proj.weight)
        if "onset_clock_turns" in changes and grown.onset_clock is not None:
            nn.init.zeros_(grown.onset_clock.embed.weight)
        return grown.train(self.training)

    def expert_load(self) -> Tensor | None:
        """Share of routed tokens per expert in each layer's last forward [L, E]."""
        loads = [b.ffn.load for b in self.blocks if isinstance(b.ffn, MoE)]
        return torch.stack(loads) if loads else None


TRACK_ORDER_ALL = INPUT_TRACKS + OUTPUT_TRACKS


def blank_outputs(layout: Layout, device: torch.device) -> dict[str, Tensor]:
    """Empty output slots [1, slots, ...]: what a stream "said" before its first turn."""
    pad = int(Special.PAD)
    return {
        Track.MODEL_ACTION.value: torch.full(
            (1, layout.slots(Track.MODEL_ACTION)), pad, device=device
        ),
        Track.MODEL_TEXT.value: torch.full((1, layout.slots(Track.MODEL_TEXT)), pad, device=device),
        Track.MODEL_AUDIO.value: torch.zeros(
            (1, layout.slots(Track.MODEL_AUDIO), layout.audio_group, dmel.N_MELS),
            dtype=torch.uint8,
            device=device,
        ),
    }


@dataclass
class StepResult:
    """What one micro-turn produced per stream: action / text ids [B, slots], audio bins
    [B, slots, k, 80], and the logits they came from ([B, 1, slots, ...])."""

    model_action: Tensor
    model_text: Tensor
    model_audio: Tensor
    logits: Logits


def _is_residual(name: str) -> bool:
    return name.endswith("attn.out.weight") or name.endswith("down.weight") or "w_down" in name


def count_parameters(model: InteractionModel) -> tuple[int, int]:
    """(total, active per token): active counts top_k of n_experts routed experts."""
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    cfg = model.cfg
    for block in model.blocks:
        if isinstance(block.ffn, MoE):
            per_expert = (
                block.ffn.w_gate.numel() + block.ffn.w_up.numel() + block.ffn.w_down.numel()
            ) // cfg.n_experts
            inactive += (cfg.n_experts - cfg.top_k) * per_expert
    return total, total - inactive
