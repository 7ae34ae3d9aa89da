"""Streaming state: each stream's key/value cache in one preallocated buffer.

Following moshi's streaming modules, the state is a small object handed to the same
attention modules the training forward uses; unlike a growing list, the buffer is
allocated once for `capacity` positions, and a micro-turn only writes into it. Streams
of different lengths share one batch: each row keeps its own length and position, and
`select(rows)` steps a subset of the streams in place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass
class StreamState:
    keys: list[Tensor]  # per layer [B, capacity, kv_heads, head_dim]
    values: list[Tensor]
    lengths: Tensor  # [B] cached positions per stream
    turns: Tensor  # [B] micro-turns completed per stream (positions derive from it)
    all_generators: list[torch.Generator]  # one per stream of the whole state
    slots_per_turn: int
    rows: Tensor | None = None  # the streams this view steps; None = all
    _mask: Tensor | None = None
    _pending: int = 0

    @classmethod
    def allocate(
        cls,
        *,
        batch_size: int,
        n_layers: int,
        capacity: int,
        n_kv_heads: int,
        head_dim: int,
        slots_per_turn: int,
        dtype: torch.dtype,
        device: torch.device,
        seeds: list[int] | None = None,
    ) -> StreamState:
        if batch_size < 1 or capacity < slots_per_turn:
            raise ValueError("need at least one stream and room for one micro-turn")
        seeds = list(range(batch_size)) if seeds is None else list(seeds)
        if len(seeds) != batch_size:
            raise ValueError(f"{len(seeds)} seeds for {batch_size} streams")
        shape = (batch_size, capacity, n_kv_heads, head_dim)
        gens = []
        for s in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(s))
            gens.append(g)
        return cls(
            keys=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)],
            values=[torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)],
            lengths=torch.zeros(batch_size, dtype=torch.long, device=device),
            turns=torch.zeros(batch_size, dtype=torch.long, device=device),
            all_generators=gens,
            slots_per_turn=slots_per_turn,
        )

    def select(self, rows: list[int] | Tensor) -> StreamState:
        """A view that steps only `rows`; it writes into this state's buffers."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.lengths.device).flatten()
        if self.rows is not None:
            idx = self.rows[idx]
        if idx.numel() == 0 or idx.unique().numel() != idx.numel():
            raise ValueError("select needs distinct stream rows")
        if int(idx.min()) < 0 or int(idx.max()) >= self.lengths.shape[0]:
            raise ValueError(
                f"stream rows {idx.tolist()} out of range 0..{self.lengths.shape[0] - 1}"
            )
        return replace(self, rows=idx)

    @property
    def generators(self) -> list[torch.Generator]:
        """The sampling generators of the streams this view steps, in row order."""
        if self.rows is None:
            return self.all_generators
        return [self.all_generators[i] for i in self.rows.tolist()]

    @property
    def batch_size(self) -> int:
        return int(self.lengths.shape[0] if self.rows is None else self.rows.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.keys[0].shape[1])

    def current_lengths(self) -> Tensor:
        return self.lengths if self.rows is None else self.lengths[self.rows]

    def current_turns(self) -> Tensor:
        return self.turns if self.rows is None else self.turns[self.rows]

    def check_room(self, n: int) -> None:
        longest = int(self.current_lengths().max())
        if longest + n > self.capacity:
            raise ValueError(
                f"stream cache full: {longest} of {self.capacity} positions used, "
                f"{n} more needed (allocate more micro-turns)"
            )

    def turn_positions(self, first_slot: int, t: int) -> Tensor:
        """Positions [B, t] of slots first_slot.. of each stream's current micro-turn."""
        base = self.current_turns() * self.slots_per_turn + first_slot
        return base[:, None] + torch.arange(t, device=base.device)

    def begin(self, t: int) -> StreamState:
        """Prepare one forward of t new positions per stream (the mask is shared by layers)."""
        lengths = self.current_lengths()
        self._pending = t
        span = int(lengths.max()) + t
        query = lengths[:, None] + torch.arange(t, device=lengths.device)  # [B, t]
        key = torch.arange(span, device=lengths.device)
        self._mask = (key[None, None, :] <= query[:, :, None])[:, None]  # [B, 1, t, span]
        return self

    def attend(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Write this forward's keys / values, return everything a query may see."""
        t = self._pending
        if k.shape[1] != t or self._mask is None:
            raise RuntimeError("attend() called outside begin() / commit()")
        rows = self.rows if self.rows is not None else torch.arange(k.shape[0], device=k.device)
        cols = self.current_lengths()[:, None] + torch.arange(t, device=k.device)
        self.keys[layer][rows[:, None], cols] = k.to(self.keys[layer].dtype)
        self.values[layer][rows[:, None], cols] = v.to(self.values[layer].dtype)
        span = self._mask.shape[-1]
        if self.rows is None:  # views, no copy
            return self.keys[layer][:, :span], self.values[layer][:, :span], self._mask
        return self.keys[layer][self.rows, :span], self.values[layer][self.rows, :span], self._mask

    def commit(self, t: int) -> None:
        if self.rows is None:
            self.lengths += t
        else:
            self.lengths[self.rows] += t
        self._pending = 0
        self._mask = None

    def end_turn(self) -> None:
        if self.rows is None:
            self.turns += 1
        else:
            self.turns[self.rows] += 1

    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in self.keys + self.values)
