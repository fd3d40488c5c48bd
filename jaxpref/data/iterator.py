"""A deterministic, resumable, host-sharded iterator over fixed-shape batches.

Order: epoch ``e`` visits the dataset in the permutation drawn from
``np.random.default_rng([seed, e])`` (or in dataset order with ``shuffle=False``), so the
seed alone fixes every batch. Each *global* batch takes ``batch_size`` rows (one example
each, or several when packing) from that order; with ``drop_remainder=True`` the examples
left at the end of an epoch that cannot fill a batch are skipped that epoch, otherwise the
last batch is padded (``example_mask`` False). Batches never straddle epochs.

State: ``get_state()`` returns ``{"epoch": int, "index": int}``, the epoch and the position
in that epoch's order of the next example to read. It is a small pytree a checkpoint
stores next to the model (Orbax saves it as two scalars); ``set_state(state)`` accepts it
back (Python ints, NumPy or JAX scalars). An iterator restored to a state yields exactly
the batches the original yielded after that state.

Multi-host: every process plans the same global batch (lengths only, so the bucket ``T``
and packing agree everywhere) and builds only its ``batch_size / process_count`` rows:
process ``p`` gets rows ``p * L .. (p + 1) * L - 1``. Together the processes see the global
batch, each row exactly once; the state is the same on every process.

>>> import numpy as np
>>> from jaxpref.data.tokenize import TokenizedExample
>>> def ex(n):
...     ids = np.arange(n, dtype=np.int32)
...     return TokenizedExample("pairwise", (ids, ids), (ids > 1, ids > 1), 2, {})
>>> it = BatchIterator([ex(n) for n in (5, 9, 7, 3)], batch_size=2, buckets=(8, 16), seed=1)
>>> batch = next(it)
>>> batch["input_ids"].shape, batch["example_index"].tolist(), it.get_state()
((2, 2, 16), [0, 1], {'epoch': 0, 'index': 2})
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from jaxpref.data.batching import batch_features, bucket_length, collate, length_buckets
from jaxpref.data.tokenize import TokenizedExample

__all__ = ["BatchIterator"]

_Row = list[int]


class BatchIterator(Iterator[dict[str, np.ndarray]]):
    """Yields this process's slice of each global batch (layout: :mod:`jaxpref.data.batching`).

    Args:
      examples: tokenised examples of one record kind (a
        :class:`~jaxpref.data.tokenize.TokenizedDataset` or any sequence of
        :class:`~jaxpref.data.tokenize.TokenizedExample`).
      batch_size: global batch size (rows), a multiple of ``process_count``.
      seed: fixes the shuffle of every epoch.
      shuffle: False visits the dataset in order every epoch.
      num_epochs: stop after this many epochs (None: never stop).
      drop_remainder: skip the end of an epoch that cannot fill a global batch (True), or
        pad the last batch with ``example_mask`` False rows (False).
      buckets: the allowed lengths ``T`` (default :func:`length_buckets` of the longest
        sequence): each batch is padded to the smallest bucket that fits it.
      max_segments: pack up to this many examples per row (None: no packing). Rows are
        filled in order, next-fit: an example that does not fit the current row (in the
        largest bucket) starts the next one. With ``drop_remainder``, the end of an epoch
        that cannot start all ``batch_size`` rows is skipped.
      list_size: ranked data: the item axis ``K`` (default: the longest list).
      pad_id: token id of padding.
      process_index: this process (``jax.process_index()``).
      process_count: number of processes (``jax.process_count()``).
    """

    def __init__(
        self,
        examples: Sequence[TokenizedExample],
        *,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        num_epochs: int | None = None,
        drop_remainder: bool = True,
        buckets: Sequence[int] | None = None,
        max_segments: int | None = None,
        list_size: int | None = None,
        pad_id: int = 0,
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        if len(examples) == 0:
            raise ValueError("no examples")
        if batch_size < 1 or batch_size % process_count:
            raise ValueError(
                f"batch_size ({batch_size}) must be a positive multiple of "
                f"process_count ({process_count})"
            )
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        if max_segments is not None and max_segments < 1:
            raise ValueError(f"max_segments must be >= 1 or None, got {max_segments}")
        kinds = {e.kind for e in examples}
        if len(kinds) != 1:
            raise ValueError(f"examples of several kinds: {sorted(kinds)}")
        self.kind = kinds.pop()
        self.examples = examples
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.num_epochs, self.drop_remainder = num_epochs, drop_remainder
        self.max_segments, self.pad_id = max_segments, pad_id
        self.process_index, self.process_count = process_index, process_count
        longest_list = max(e.num_sequences for e in examples)
        if self.kind == "ranked":
            self.num_items = longest_list if list_size is None else list_size
            if longest_list > self.num_items:
                raise ValueError(f"a list has {longest_list} items, more than {list_size=}")
        else:
            self.num_items = longest_list
        self._lengths = np.zeros((len(examples), self.num_items), np.int64)
        for i, example in enumerate(examples):
            self._lengths[i, : example.num_sequences] = example.lengths
        longest = int(self._lengths.max())
        self.buckets = tuple(sorted(length_buckets(longest) if buckets is None else buckets))
        bucket_length(longest, self.buckets)  # every example fits the largest bucket
        self.features = batch_features(self.kind, examples)
        self._epoch, self._index = 0, 0
        self._order_cache: tuple[int, np.ndarray] | None = None

    # ------------------------------------------------------------------ state

    def get_state(self) -> dict[str, int]:
        """``{"epoch": e, "index": i}``: where the next batch starts."""
        return {"epoch": self._epoch, "index": self._index}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a state from :meth:`get_state` (ints, NumPy or JAX scalars)."""
        epoch, index = int(np.asarray(state["epoch"])), int(np.asarray(state["index"]))
        if epoch < 0 or not 0 <= index <= len(self.examples):
            raise ValueError(
                f"invalid iterator state {dict(state)} for {len(self.examples)} examples"
            )
        self._epoch, self._index = epoch, index

    # ------------------------------------------------------------------ planning

    def order(self, epoch: int) -> np.ndarray:
        """The dataset indices in epoch ``epoch``'s visiting order."""
        if self._order_cache is None or self._order_cache[0] != epoch:
            n = len(self.examples)
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(n)
            else:
                order = np.arange(n)
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def _plan(self, epoch: int, index: int) -> tuple[list[_Row], int, int] | None:
        """Rows of dataset indices of the global batch at (epoch, index), its length ``T``
        and the index after it; None when the epoch has no further batch."""
        order, n, size = self.order(epoch), len(self.examples), self.batch_size
        if self.max_segments is None:
            take = order[index : index + size]
            if len(take) == 0 or (len(take) < size and self.drop_remainder):
                return None
            rows = [[int(i)] for i in take]
            length = bucket_length(int(self._lengths[take].max()), self.buckets)
            return rows + [[] for _ in range(size - len(rows))], length, index + len(take)
        limit = self.buckets[-1]
        rows: list[_Row] = [[]]
        fill = np.zeros(self.num_items, np.int64)
        longest = 0
        while index < n:
            i = int(order[index])
            lengths = self._lengths[i]
            if len(rows[-1]) == self.max_segments or np.any(fill + lengths > limit):
                if len(rows) == size:
                    break
                rows.append([])
                fill[:] = 0
            rows[-1].append(i)
            fill += lengths
            longest = max(longest, int(fill.max()))
            index += 1
        if longest == 0 or (len(rows) < size and self.drop_remainder):
            return None
        rows += [[] for _ in range(size - len(rows))]
        return rows, bucket_length(longest, self.buckets), index

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        while True:
            if self.num_epochs is not None and self._epoch >= self.num_epochs:
                raise StopIteration
            plan = self._plan(self._epoch, self._index)
            if plan is not None:
                break
            if self._index == 0:  # an epoch without a single batch
                raise ValueError(
                    f"{len(self.examples)} examples cannot fill one global batch of "
                    f"{self.batch_size} rows (use drop_remainder=False or a smaller batch)"
                )
            self._epoch, self._index = self._epoch + 1, 0
        rows, length, next_index = plan
        local = self.batch_size // self.process_count
        mine = rows[self.process_index * local : (self.process_index + 1) * local]
        batch = collate(
            [[(i, self.examples[i]) for i in row] for row in mine],
            kind=self.kind,
            length=length,
            num_items=self.num_items,
            features=self.features,
            pad_id=self.pad_id,
            max_segments=self.max_segments,
        )
        self._index = next_index
        return batch

    def batch_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Every shape ``input_ids`` of this process's batches can take (one per bucket)."""
        local = self.batch_size // self.process_count
        items = () if self.kind == "unpaired" else (self.num_items,)
        return tuple((local, *items, t) for t in self.buckets)
