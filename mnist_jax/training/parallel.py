"""Data parallelism with JAX's own runtime: one mesh over every device of every process.

Batches are split along the mesh's "data" axis; the train state is replicated. Several hosts
join with `jax.distributed.initialize` (explicit coordinator address, process count and id,
or auto-detected on the clusters JAX knows); each process then feeds only its share of every
global batch. On one process with one device all of this reduces to plain single-device jit.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from mnist_jax.config import Config
from mnist_jax.errors import ClusterError, ConfigError

DATA_AXIS = "data"


@dataclasses.dataclass(frozen=True)
class Cluster:
    """How to join a multi-process run (all None: a single process, unless JAX detects a cluster)."""

    coordinator: str | None = None  # host:port of process 0
    num_processes: int | None = None
    process_id: int | None = None
    heartbeat_timeout: int = 100  # seconds without a heartbeat before a peer counts as dead

    @classmethod
    def from_environment(cls, **given) -> Cluster:
        """Fills fields not given (None) from MNIST_JAX_COORDINATOR, _NUM_PROCESSES and _PROCESS_ID."""
        env = os.environ
        return cls(
            coordinator=given.get("coordinator") or env.get("MNIST_JAX_COORDINATOR"),
            num_processes=_int(given.get("num_processes"), env.get("MNIST_JAX_NUM_PROCESSES")),
            process_id=_int(given.get("process_id"), env.get("MNIST_JAX_PROCESS_ID")),
            heartbeat_timeout=given.get("heartbeat_timeout") or cls.heartbeat_timeout,
        )

    @property
    def explicit(self) -> bool:
        return self.coordinator is not None or self.num_processes is not None or self.process_id is not None


def _int(value, fallback: str | None) -> int | None:
    if value is not None:
        return int(value)
    return int(fallback) if fallback not in (None, "") else None


def initialize(cluster: Cluster) -> None:
    """Joins the multi-process run `cluster` describes; a no-op for a single process.

    Must run before any JAX computation. On CPU, collectives between processes use gloo.
    """
    if not cluster.explicit:
        return
    if None in (cluster.coordinator, cluster.num_processes, cluster.process_id):
        raise ClusterError("a multi-process run needs all three of the coordinator's address, the number of "
                           "processes and this process's id", incomplete=True)
    if not 0 <= cluster.process_id < cluster.num_processes:
        raise ClusterError(f"process id {cluster.process_id} must be between 0 and {cluster.num_processes - 1}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(cluster.coordinator, cluster.num_processes, cluster.process_id,
                                   heartbeat_timeout_seconds=cluster.heartbeat_timeout)
    except Exception as error:  # noqa: BLE001 - the runtime reports a failed rendezvous as a bare error
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise ClusterError(f"cannot join the run at {cluster.coordinator} as process {cluster.process_id} of "
                           f"{cluster.num_processes} ({first_line}); every process must name the same "
                           "coordinator address and process count") from None


def usable_cores_set() -> set[int]:
    """The CPU cores this process may run on (its affinity: `taskset -c 0` makes it {0})."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many CPU cores this process may run on (see `usable_cores_set`)."""
    return len(usable_cores_set())


def cpu_device_count(config: Config, cluster: Cluster, cores: int) -> int:
    """How many CPU devices a process of `config` splits its batches over: `train.cpu_devices`, or for 0 one
    per core (one per process when several processes share the machine), as many as divide both batch sizes.

    XLA:CPU runs each device's program on its own thread, and a small net's convolutions keep more cores
    busy as halves of a batch on two devices than as one batch on intra-op threads (see docs/speed.md).
    """
    if config.train.cpu_devices:
        return config.train.cpu_devices
    if cluster.explicit:
        return 1
    sizes = (config.train.batch_size, config.train.eval_batch_size)
    return max(n for n in range(1, max(1, cores) + 1) if all(size % n == 0 for size in sizes))


def rows_are_independent(config: Config, devices: int) -> bool:
    """Whether a train step of `config` split over `devices` devices can take each device's rows through the
    model without the other devices' (and so average only the gradients, in one all-reduce): more than one
    device, no dropout (its masks are drawn for the whole batch) and, in a model with BatchNorm, statistics
    over groups (`model.norm_group`) that fit in each device's share of the batch.

    With one collective per step instead of one per BatchNorm layer and direction, the fast preset's step
    on two CPU devices trains 16k images/s instead of 13-15k (docs/speed.md).
    """
    model, share = config.model, config.train.batch_size // devices
    batch_norm = model.name == "resnet" or model.norm == "batch"
    groups_fit = bool(model.norm_group) and share % model.norm_group == 0
    return devices > 1 and model.dropout == 0 and (groups_fit or not batch_norm)


def use_cpu_devices(count: int) -> None:
    """Gives the CPU backend `count` devices, unless JAX_NUM_CPU_DEVICES names a count already.

    Must run before JAX starts its backends; on a GPU or TPU backend the CPU devices go unused.
    """
    if "JAX_NUM_CPU_DEVICES" not in os.environ:
        jax.config.update("jax_num_cpu_devices", count)


def is_lead() -> bool:
    """True in process 0, the one that logs and writes files."""
    return jax.process_index() == 0


def data_mesh() -> jax.sharding.Mesh:
    """Returns a 1-D mesh over all devices of all processes, its axis named "data"."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Splits an array's first (batch) axis over the mesh."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """A whole copy of an array on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(config: Config, mesh: jax.sharding.Mesh) -> None:
    """Raises ConfigError unless every batch splits evenly over the mesh's devices."""
    devices = mesh.devices.size
    for name, size in (("train.batch_size", config.train.batch_size),
                       ("train.eval_batch_size", config.train.eval_batch_size)):
        if size % devices:
            raise ConfigError(f"{name}={size} does not split over {devices} devices: it must be a multiple "
                              f"of {devices}")


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles each process's rows of a batch into one global array split over the mesh.

    local: this process's share of the batch: the rows process p of P holds are
    rows [p * B / P, (p + 1) * B / P) of the global batch B.
    """
    return {name: jax.make_array_from_process_local_data(sharding, rows) for name, rows in local.items()}


def local_share(rows: np.ndarray) -> np.ndarray:
    """Returns this process's share of a global batch (B, ...): its B / P rows (see `global_batch`)."""
    share = len(rows) // jax.process_count()
    return rows[jax.process_index() * share : (jax.process_index() + 1) * share]


def to_host(tree):
    """Explicitly fetches replicated results (metrics, sums) to numpy, also when they span several processes."""
    return jax.tree.map(lambda x: jax.device_get(x.addressable_data(0)), tree)
