"""Streaming state: each stream's keys and values in one preallocated buffer, bounded.

Following moshi's streaming modules, the state is a small object handed to the same
attention modules the training forward uses. Unlike a growing list, the buffer is
allocated once and a micro-turn only writes into it, so a conversation can run for
hours in fixed memory:

- **sinks**: the first `sink` positions of a conversation (its first micro-turn) stay
  forever. Their keys are kept unrotated and re-rotated every forward to sit just
  before the window, so their distance to any query is one the model saw in training.
- **window**: a ring of the most recent positions; a query at position q sees keys at
  positions (q - window, q]. The ring holds `window + slots_per_turn` entries so the
  writes of one micro-turn never evict a key any of its queries may see.

Until a conversation is longer than the window (60 s for the presets), attention is
exactly the training forward's full causal attention. Streams of different lengths share
one batch: each row keeps its own length and positions; a forward may hold left-padding
tokens (`valid` False) that are neither stored nor seen.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from microturn.model.rope import rotary, rotary_angles
from microturn.model.sampling import NO_ONSET


@dataclass
class StreamState:
    keys: list[Tensor]  # per layer [B, sink + ring + 1, kv_heads, head_dim]; last = trash
    values: list[Tensor]
    raw_sink_keys: list[Tensor]  # per layer [B, sink, kv_heads, head_dim], unrotated
    slot_pos: Tensor  # [B, sink + ring + 1] absolute position held by each entry, -1 = none
    lengths: Tensor  # [B] positions written so far (= the next position)
    turns: Tensor  # [B] micro-turns completed
    since_onset: Tensor  # [B] micro-turns since the stream's last message start (NO_ONSET)
    all_generators: list[torch.Generator]  # one sampling generator per stream
    slots_per_turn: int
    sink: int
    window: int
    head_dim: int
    rope_theta: float
    pending: dict[str, Tensor]  # last micro-turn's outputs per track, fed in the next step
    rows: Tensor | None = None  # the streams this view steps; None = all
    _fwd: dict[str, Any] | None = None

    @classmethod
    def allocate(
        cls,
        *,
        batch_size: int,
        n_layers: int,
        n_kv_heads: int,
        head_dim: int,
        slots_per_turn: int,
        window_turns: int,
        sink_turns: int,
        rope_theta: float,
        pending: dict[str, Tensor],
        dtype: torch.dtype,
        device: torch.device,
        seeds: list[int] | None = None,
    ) -> StreamState:
        if batch_size < 1:
            raise ValueError("need at least one stream")
        if window_turns < 1 or sink_turns < 0:
            raise ValueError("window_turns must be >= 1 and sink_turns >= 0")
        seeds = list(range(batch_size)) if seeds is None else list(seeds)
        if len(seeds) != batch_size:
            raise ValueError(f"{len(seeds)} seeds for {batch_size} streams")
        sink = sink_turns * slots_per_turn
        window = window_turns * slots_per_turn
        ring = window + slots_per_turn
        total = sink + ring + 1
        shape = (batch_size, total, n_kv_heads, head_dim)
        gens = []
        for s in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(s))
            gens.append(g)

        def zeros(*s: int) -> Tensor:
            return torch.zeros(s, dtype=dtype, device=device)

        return cls(
            keys=[zeros(*shape) for _ in range(n_layers)],
            values=[zeros(*shape) for _ in range(n_layers)],
            raw_sink_keys=[zeros(batch_size, sink, n_kv_heads, head_dim) for _ in range(n_layers)],
            slot_pos=torch.full((batch_size, total), -1, dtype=torch.long, device=device),
            lengths=torch.zeros(batch_size, dtype=torch.long, device=device),
            turns=torch.zeros(batch_size, dtype=torch.long, device=device),
            since_onset=torch.full((batch_size,), NO_ONSET, dtype=torch.long, device=device),
            all_generators=gens,
            slots_per_turn=slots_per_turn,
            sink=sink,
            window=window,
            head_dim=head_dim,
            rope_theta=rope_theta,
            pending={k: v.expand(batch_size, *v.shape[1:]).clone() for k, v in pending.items()},
        )

    # ---- views and bookkeeping -----------------------------------------------------
    def select(self, rows: list[int] | Tensor) -> StreamState:
        """A view that steps only `rows`. It writes into this state's buffers but reads
        them through a gather (a copy): step all rows together where you can."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.lengths.device).flatten()
        if self.rows is not None:
            idx = self.rows[idx]
        if idx.numel() == 0 or idx.unique().numel() != idx.numel():
            raise ValueError("select needs distinct stream rows")
        if int(idx.min()) < 0 or int(idx.max()) >= self.lengths.shape[0]:
            raise ValueError(
                f"stream rows {idx.tolist()} out of range 0..{self.lengths.shape[0] - 1}"
            )
        return replace(self, rows=idx, _fwd=None)

    def prefix(self, n: int) -> StreamState:
        """The first n streams as a view of the same storage (no copy): an engine keeps
        its live streams in rows 0..n-1 and steps exactly those."""
        if self.rows is not None:
            raise ValueError("prefix() of a select() view")
        if not 1 <= n <= self.lengths.shape[0]:
            raise ValueError(f"prefix of {n} streams out of {self.lengths.shape[0]}")
        return replace(
            self,
            keys=[k[:n] for k in self.keys],
            values=[v[:n] for v in self.values],
            raw_sink_keys=[r[:n] for r in self.raw_sink_keys],
            slot_pos=self.slot_pos[:n],
            lengths=self.lengths[:n],
            turns=self.turns[:n],
            since_onset=self.since_onset[:n],
            all_generators=self.all_generators[:n],
            pending={k: v[:n] for k, v in self.pending.items()},
            _fwd=None,
        )

    def move_row(self, src: int, dst: int) -> None:
        """Copy stream `src` into row `dst` (to keep live streams contiguous)."""
        for tensors in (self.keys, self.values, self.raw_sink_keys):
            for t in tensors:
                t[dst] = t[src]
        for t in (
            self.slot_pos,
            self.lengths,
            self.turns,
            self.since_onset,
            *self.pending.values(),
        ):
            t[dst] = t[src]
        self.all_generators[dst].set_state(self.all_generators[src].get_state())

    def seed_row(self, row: int, seed: int) -> None:
        self.all_generators[row].manual_seed(int(seed))

    @property
    def generators(self) -> list[torch.Generator]:
        if self.rows is None:
            return self.all_generators
        return [self.all_generators[i] for i in self.rows.tolist()]

    @property
    def batch_size(self) -> int:
        return int(self.lengths.shape[0] if self.rows is None else self.rows.shape[0])

    @property
    def ring(self) -> int:
        return self.window + self.slots_per_turn

    def _get(self, t: Tensor) -> Tensor:
        return t if self.rows is None else t[self.rows]

    def _put(self, t: Tensor, value: Tensor) -> None:
        if self.rows is None:
            t.copy_(value)
        else:
            t[self.rows] = value

    def current_lengths(self) -> Tensor:
        return self._get(self.lengths)

    def current_turns(self) -> Tensor:
        return self._get(self.turns)

    def get_pending(self) -> dict[str, Tensor]:
        return {k: self._get(v) for k, v in self.pending.items()}

    def set_pending(self, values: dict[str, Tensor]) -> None:
        for k, v in values.items():
            self._put(self.pending[k], v.to(self.pending[k].dtype))

    def current_since_onset(self) -> Tensor:
        return self._get(self.since_onset)

    def set_since_onset(self, value: Tensor) -> None:
        self._put(self.since_onset, value)

    def end_turn(self) -> None:
        self._put(self.turns, self.current_turns() + 1)

    def reset_rows(self, rows: list[int]) -> None:
        """Forget the conversations in `rows` (a freed slot ready for a new stream)."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.lengths.device)
        self.lengths[idx] = 0
        self.turns[idx] = 0
        self.since_onset[idx] = NO_ONSET
        self.slot_pos[idx] = -1

    def snapshot(self) -> dict[str, Any]:
        """What a failed micro-turn must put back. Keys and values need no copy: the
        entries a micro-turn overwrites are outside every later query's window, and the
        ones it adds are masked again once lengths and positions are restored."""
        return {
            "lengths": self.lengths.clone(),
            "turns": self.turns.clone(),
            "since_onset": self.since_onset.clone(),
            "slot_pos": self.slot_pos.clone(),
            "pending": {k: v.clone() for k, v in self.pending.items()},
            "raw_sinks": [r.clone() for r in self.raw_sink_keys] if self.sink else [],
            "generators": [g.get_state() for g in self.all_generators],
        }

    def restore(self, snap: dict[str, Any]) -> None:
        self.lengths.copy_(snap["lengths"])
        self.turns.copy_(snap["turns"])
        self.since_onset.copy_(snap["since_onset"])
        self.slot_pos.copy_(snap["slot_pos"])
        for k, v in snap["pending"].items():
            self.pending[k].copy_(v)
        for raw, saved in zip(self.raw_sink_keys, snap["raw_sinks"], strict=False):
            raw.copy_(saved)
        for g, s in zip(self.all_generators, snap["generators"], strict=True):
            g.set_state(s)
        self._fwd = None

    def nbytes(self) -> int:
        tensors = self.keys + self.values + self.raw_sink_keys
        return sum(x.numel() * x.element_size() for x in tensors)

    # ---- one forward ---------------------------------------------------------------
    def begin(self, valid: Tensor) -> Tensor:
        """Prepare a forward of T tokens per stream; `valid` [B, T] (bool, left padding
        False). Returns the tokens' positions [B, T] and fixes where each is written and
        what each may see (shared by all layers)."""
        lengths = self.current_lengths()
        b = valid.shape[0]
        pos = lengths[:, None] + valid.long().cumsum(1) - 1
        pos = torch.where(valid, pos, torch.zeros_like(pos))
        trash = self.sink + self.ring
        in_sink = valid & (pos < self.sink)
        idx = torch.where(in_sink, pos, self.sink + (pos - self.sink) % self.ring)
        idx = torch.where(valid, idx, torch.full_like(idx, trash))
        rows = self.rows if self.rows is not None else torch.arange(b, device=valid.device)
        slot_pos = self._get(self.slot_pos).clone()
        slot_pos.scatter_(1, idx, torch.where(valid, pos, torch.full_like(pos, -1)))
        self.slot_pos[rows] = slot_pos
        kp = slot_pos[:, None, :]  # [B, 1, K]
        q = pos[:, :, None]  # [B, T, 1]
        visible = (kp >= 0) & (kp <= q) & ((kp < self.sink) | (kp > q - self.window))
        visible = visible & valid[:, :, None]
        visible[:, :, trash] = ~valid  # a padding query sees only the trash entry
        # Sinks sit just before the oldest position the first query can see.
        first_visible = lengths - self.window + 1
        shift = (first_visible - self.sink).clamp(min=0)
        sink_pos = shift[:, None] + torch.arange(self.sink, device=valid.device)
        self._fwd = {
            "rows": rows,
            "idx": idx,
            "pos": pos,
            "sink_write": in_sink,
            "mask": visible[:, None],
            "sink_rope": rotary_angles(sink_pos, self.head_dim, self.rope_theta, self.keys[0].dtype)
            if self.sink
            else None,
        }
        return pos

    def attend(
        self, layer: int, k_raw: Tensor, k: Tensor, v: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Store this forward's keys / values; return all keys, values and the mask."""
        f = self._fwd
        if f is None:
            raise RuntimeError("attend() outside begin() / commit()")
        rows, idx = f["rows"], f["idx"]
        keys, values = self.keys[layer], self.values[layer]
        keys[rows[:, None], idx] = k.to(keys.dtype)
        values[rows[:, None], idx] = v.to(values.dtype)
        if self.sink:
            raw = self.raw_sink_keys[layer]
            b_i, t_i = f["sink_write"].nonzero(as_tuple=True)
            if b_i.numel():
                raw[rows[b_i], f["pos"][b_i, t_i]] = k_raw[b_i, t_i].to(raw.dtype)
            keys[rows, : self.sink] = rotary(raw[rows], *f["sink_rope"])
        if self.rows is None:
            return keys, values, f["mask"]
        return keys[rows], values[rows], f["mask"]

    def commit(self, valid: Tensor) -> None:
        self._put(self.lengths, self.current_lengths() + valid.sum(1))
        self._fwd = None


def window_mask(length: int, sink: int, window: int, device: torch.device) -> Tensor | None:
    """The streaming attention pattern for a whole sequence in training: position q sees
    the sinks and (q - window, q]. None while that is plain causal attention."""
    if length <= window:
        return None
    q = torch.arange(length, device=device)[:, None]
    k = torch.arange(length, device=device)[None, :]
    return (k <= q) & ((k < sink) | (k > q - window))
