"""Data parallelism and multi-host runs, with JAX's own sharding and ``jax.distributed``.

One process (the usual case): the batch is split over a one-axis mesh of the local devices
and the state is replicated; the jitted step is the same whatever the device count.

Several processes (multi-host): every process runs ``ggdsl compile-and-train`` with the
same spec and ``--coordinator HOST:PORT --num-processes N --process-id I`` (or calls
:func:`initialize` first from Python). The mesh then spans the devices of all processes.
Every process reads the same global batch (the data order is a function of the seed) and
hands JAX only the rows its own devices hold; the state is replicated on every device.
Process 0 alone writes the run folder (spec, metrics, checkpoints, figures, evaluation);
the others compute, so ``--out`` must be a folder every process can read (a shared file
system, or one machine).

>>> parallel = DataParallel("auto", batch_size=64)  # doctest: +SKIP
>>> state, batch = parallel.state(state), parallel.batch(batch)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ggdsl.errors import TrainError


def initialize(coordinator: str, num_processes: int, process_id: int) -> None:
    """Joins a multi-process run through ``jax.distributed.initialize``.

    Call it once, before any other JAX call, in every process. On CPU, collectives go
    through Gloo.

    Args:
        coordinator: ``HOST:PORT`` of process 0, reachable from every process.
        num_processes: How many processes take part.
        process_id: This process's index, 0 to ``num_processes - 1``.

    Raises:
        TrainError: Bad arguments, or the coordinator could not be reached.
    """
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise TrainError(
            f"--process-id must lie in 0..{num_processes - 1} for --num-processes {num_processes}, got {process_id}"
        )
    if ":" not in coordinator:
        raise TrainError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
    try:
        # Process 0 alone evaluates at the end while the others wait: allow that time.
        jax.distributed.initialize(
            coordinator, num_processes=num_processes, process_id=process_id, shutdown_timeout_seconds=3600
        )
    except Exception as error:  # jax raises RuntimeError or XlaRuntimeError, by version
        raise TrainError(f"could not join the run at {coordinator} as process {process_id}: {error}") from error


def is_primary() -> bool:
    """True in the process that writes the run folder (process 0; the only one, usually)."""
    return jax.process_index() == 0


def put(value: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    """A host value (the same in every process) as a global array with ``sharding``.

    Works across processes, where ``jax.device_put`` accepts only local devices; typed PRNG
    keys keep their implementation.
    """
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = put(jax.random.key_data(value), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    array = np.asarray(value)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def to_host(tree: Any) -> Any:
    """A replicated state as local arrays of this process (for evaluation on one process)."""
    if jax.process_count() == 1:
        return tree

    def local(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return leaf.addressable_data(0)
        return leaf

    return jax.tree.map(local, tree)


def broadcast_text(text: str) -> str:
    """Process 0's ``text`` in every process (e.g. the run folder it created)."""
    if jax.process_count() == 1:
        return text
    from jax.experimental import multihost_utils

    raw = np.zeros(4096, np.uint8)
    encoded = text.encode("utf-8")[: raw.size]
    raw[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    raw = np.asarray(multihost_utils.broadcast_one_to_all(raw))
    return bytes(raw).rstrip(b"\0").decode("utf-8")


def wait_for_primary(name: str) -> None:
    """In a multi-process run, every process waits here until process 0 arrives (e.g. after it evaluated)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"ggdsl-{name}")


class DataParallel:
    """Data parallelism with JAX's own sharding: the batch is split over a 1-D device mesh
    (axis ``data``), the state is replicated, and the same jitted step runs on all devices.

    ``train.devices: auto`` uses every device (of every process, in a multi-process run),
    an integer N the first N local devices (one process only).
    """

    def __init__(self, devices: str | int, batch_size: int):
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        processes = jax.process_count()
        pool = jax.devices() if processes > 1 else jax.local_devices()
        count = len(pool) if devices == "auto" else int(devices)
        if processes > 1 and count != len(pool):
            raise TrainError(
                f"train.devices: a run over {processes} processes uses all {len(pool)} devices; "
                f"set train.devices to auto (got {devices})"
            )
        if count > len(pool):
            raise TrainError(f"train.devices: {count} devices asked for, {len(pool)} available ({pool[0].platform})")
        if batch_size % count:
            raise TrainError(
                f"train.batch_size {batch_size} does not split over {count} devices; use a multiple of {count} "
                f"or set train.devices"
            )
        self.count = count
        self.processes = processes
        mesh = Mesh(np.array(pool[:count]), ("data",))
        self.batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
        self.replicated = NamedSharding(mesh, PartitionSpec())

    def state(self, state: Any) -> Any:
        """The state replicated on every device of the mesh."""
        if self.count == 1:
            return state
        if self.processes == 1:
            return jax.device_put(state, self.replicated)
        return jax.tree.map(lambda leaf: put(leaf, self.replicated), state)

    def batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The global batch split along its first axis; each process places only its own rows."""
        if self.count == 1:
            return dict(batch)
        if self.processes == 1:
            return {k: jax.device_put(v, self.batch_sharding) for k, v in batch.items()}
        return {k: put(v, self.batch_sharding) for k, v in batch.items()}
