"""Reproducible, resumable minibatches, and a background prefetcher.

:class:`Batches` walks a :class:`~ggdsl.data.dataset.Dataset` epoch after epoch, each epoch in
the order ``np.random.default_rng([seed, epoch]).permutation(num_examples)``, dropping the
last incomplete batch. Its :meth:`Batches.state` after a batch is a small JSON-serialisable
dict; a new :class:`Batches` built with that state yields exactly the batches that would
have followed.

:func:`prefetch` moves batch production to a daemon thread; the prefetcher's
:meth:`Prefetcher.state` is the state after the last batch the CONSUMER received, not after
the last one the thread produced, so it is what a checkpoint must store.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ggdsl.data.dataset import EPOCH_FEATURES, Dataset
from ggdsl.errors import DataError

__all__ = ["LABELS_KEY", "Batches", "Prefetcher", "prefetch"]

#: Batch key under which the ``labels`` feature travels (not a model variable).
LABELS_KEY = "_labels"

_STATE_VERSION = 1


class Batches(Iterator[dict[str, np.ndarray]]):
    """An endless iterator of minibatches keyed by model variable name.

    Args:
        dataset: The data.
        observe: Model variable -> dataset feature (the spec's ``data.observe``).
        batch_size: Examples per batch; the last incomplete batch of an epoch is dropped.
        seed: Shuffling seed; epoch ``e`` uses ``default_rng([seed, e]).permutation(n)``.
        labels: Optional feature also put in each batch, under :data:`LABELS_KEY`.
        state: A :meth:`state` from an earlier run, to continue where it stopped.

    Raises:
        DataError: Unknown feature, non-positive batch size, or a batch larger than the
            dataset.

    Example:
        >>> batches = Batches(dataset, {"x": "image"}, 64, seed=0)   # doctest: +SKIP
        >>> batch = next(batches); saved = batches.state()          # doctest: +SKIP
    """

    def __init__(
        self,
        dataset: Dataset,
        observe: Mapping[str, str],
        batch_size: int,
        *,
        seed: int,
        labels: str | None = None,
        state: Mapping[str, Any] | None = None,
    ):
        where = f"{dataset.name} ({dataset.split})"
        known = ", ".join(dataset.features)
        if not observe:
            raise DataError(f"{where}: no observed variables (data.observe is empty)")
        for variable, feature in observe.items():
            if feature not in dataset.features:
                raise DataError(f"{where}: data.observe.{variable}: unknown feature {feature!r} (features: {known})")
        if labels is not None and labels not in dataset.features:
            raise DataError(f"{where}: labels feature {labels!r} does not exist (features: {known})")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > dataset.num_examples:
            raise DataError(
                f"{where}: batch_size {batch_size} is larger than the dataset ({dataset.num_examples} examples)"
            )
        self.dataset = dataset
        self.observe = dict(observe)
        self.batch_size = batch_size
        self.seed = int(seed)
        self.labels = labels
        self._epoch = 0
        self._position = 0
        self._order: np.ndarray | None = None
        self._order_epoch = -1
        self._drawn: dict[str, np.ndarray] = {}
        self._drawn_epoch = -1
        if state is not None:
            self.restore(state)

    @property
    def batches_per_epoch(self) -> int:
        """Full batches in one epoch (``num_examples // batch_size``)."""
        return self.dataset.num_examples // self.batch_size

    def order(self, epoch: int) -> np.ndarray:
        """The example order of an epoch (a permutation of ``range(num_examples)``)."""
        if epoch != self._order_epoch or self._order is None:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = rng.permutation(self.dataset.num_examples)
            self._order_epoch = epoch
        return self._order

    def features(self, epoch: int) -> dict[str, np.ndarray]:
        """The examples of an epoch: the dataset's own, or, for a source that draws new
        ones each epoch (``moving_digits``), its draw for ``epoch`` (epoch 0: the dataset's)."""
        redraw = self.dataset.info.get(EPOCH_FEATURES)
        if redraw is None or epoch == 0:
            return self.dataset.features
        if self._drawn_epoch != epoch:
            self._drawn, self._drawn_epoch = redraw(epoch), epoch
        return self._drawn

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._position + self.batch_size > self.dataset.num_examples:
            self._epoch += 1
            self._position = 0
        index = self.order(self._epoch)[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        features = self.features(self._epoch)
        batch = {variable: features[feature][index] for variable, feature in self.observe.items()}
        if self.labels is not None:
            batch[LABELS_KEY] = features[self.labels][index]
        return batch

    def state(self) -> dict[str, Any]:
        """The position after the last batch returned, as a JSON-serialisable dict.

        ``epoch`` and ``position`` (examples consumed in that epoch) locate the next
        batch; ``seed``, ``batch_size`` and ``num_examples`` let :meth:`restore` refuse a
        state that belongs to different data or settings.
        """
        return {
            "version": _STATE_VERSION,
            "epoch": self._epoch,
            "position": self._position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_examples": self.dataset.num_examples,
        }

    def restore(self, state: Mapping[str, Any]) -> Batches:
        """Continues from a :meth:`state`: the next batch is the one that followed it.

        Args:
            state: A dict returned by :meth:`state` (possibly through JSON).

        Returns:
            ``self``.

        Raises:
            DataError: If the state is malformed or was saved with another seed, batch
                size or dataset size.
        """
        try:
            epoch, position = int(state["epoch"]), int(state["position"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"invalid data iterator state {dict(state)!r}: {exc}") from exc
        for name, mine in (
            ("seed", self.seed),
            ("batch_size", self.batch_size),
            ("num_examples", self.dataset.num_examples),
        ):
            if name in state and int(state[name]) != mine:
                raise DataError(f"cannot resume the data iterator: saved {name} {state[name]}, now {mine}")
        if epoch < 0 or not 0 <= position <= self.dataset.num_examples:
            raise DataError(f"invalid data iterator state: epoch {epoch}, position {position}")
        self._epoch, self._position = epoch, position
        return self


_END = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher(Iterator[dict[str, np.ndarray]]):
    """Fills a bounded queue from a daemon thread; see :func:`prefetch`.

    Args:
        iterator: The source of items; if it has ``state()``, the state after each item is
            recorded with it in the producer thread.
        size: Queue capacity (items produced ahead).
    """

    def __init__(self, iterator: Iterator[Any], size: int = 2):
        if size < 1:
            raise ValueError(f"prefetch size must be >= 1, got {size}")
        self._iterator = iterator
        self._has_state = callable(getattr(iterator, "state", None))
        self._state = iterator.state() if self._has_state else None  # type: ignore[attr-defined]
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self._closed = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, name="ggdsl-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            while not self._closed.is_set():
                try:
                    item = next(self._iterator)
                except StopIteration:
                    self._put(_END)
                    return
                state = self._iterator.state() if self._has_state else None  # type: ignore[attr-defined]
                if not self._put((state, item)):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            self._put(_Failure(error))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        if self._finished or self._closed.is_set():
            raise StopIteration
        while True:
            try:
                entry = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if self._closed.is_set():
                    raise StopIteration from None
        if entry is _END:
            self._finished = True
            raise StopIteration
        if isinstance(entry, _Failure):
            self._finished = True
            raise entry.error
        self._state, item = entry
        return item

    def state(self) -> dict[str, Any] | None:
        """The wrapped iterator's state after the last item CONSUMED from this prefetcher
        (its state at construction before the first), or ``None`` if it has none."""
        return None if self._state is None else dict(self._state)

    def close(self, timeout: float = 5.0) -> None:
        """Stops the producer thread and drops the queued items; idempotent."""
        self._closed.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def prefetch(iterator: Iterator[Any], size: int = 2) -> Prefetcher:
    """Produces items of ``iterator`` ahead of time in a daemon thread.

    Exceptions raised by the iterator reach the consumer at the point where the failed
    item would have been returned. Use as a context manager or call ``close()`` to stop the
    thread. Once it has started, do not advance or restore the wrapped iterator directly.

    Args:
        iterator: E.g. a :class:`Batches`.
        size: How many items to produce ahead.

    Returns:
        A :class:`Prefetcher`; its ``state()`` is the wrapped iterator's state after the
        last item consumed.
    """
    return Prefetcher(iterator, size)
