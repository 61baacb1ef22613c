"""Devices and processes: joining a multi-process job, and the data mesh the inversion shards over.

  data_mesh()              a 1-D `jax.sharding.Mesh` over all devices with the axis "data"; each process's
                           devices are contiguous, so a process's rows are one contiguous block.
  shard_batch(tree, mesh)  this process's rows [B_local, ...] -> global arrays [B, ...] whose leading
                           axis is split over "data" (`jax.make_array_from_process_local_data`).
  replicate(tree, mesh)    the same value on every device (generator, LPIPS and mask-source params).
  local_rows(tree)         global arrays -> numpy, only the rows this process holds (inverse of shard_batch).
Images never interact (the loss is a sum over images and Adam is elementwise), so the jitted step needs
no communication: B x n segment images go through the generator, each device doing its own rows.
"""

from __future__ import annotations

import glob
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .errors import ConfigError

DATA_AXIS = "data"


# ------------------------------------------------------------------------------------------ processes
def _multi_host_environment() -> bool:
    """True where `jax.distributed.initialize()` can find its arguments itself: a Cloud TPU VM (TPU
    chips present), or a Slurm / Open MPI launch with more than one task."""
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return True
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_JOB_ID" in os.environ:
        return True
    return "OMPI_MCA_orte_hnp_uri" in os.environ and int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the multi-process job before any other JAX call.

    With explicit arguments (all three, as on GPU nodes or CPU hosts) they go to
    `jax.distributed.initialize`; without them, the cluster is auto-detected on Cloud TPU (and under
    Slurm / Open MPI), and anywhere else this is a single-process run and nothing happens."""
    given = [coordinator_address, num_processes, process_id]
    if jax.distributed.is_initialized():
        return
    if any(v is not None for v in given):
        if any(v is None for v in given):
            raise ConfigError("--coordinator_address, --num_processes and --process_id go together")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ConfigError(f"process_id must lie in [0, {num_processes}), got {process_id}")
        if num_processes == 1:
            return
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    elif _multi_host_environment():
        jax.distributed.initialize()


# ------------------------------------------------------------------------------------------ sharding
def data_mesh(devices=None, axis: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process), ordered by process so that
    each process's rows form one contiguous block of the global batch."""
    devices = list(jax.devices() if devices is None else devices)
    devices.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (axis,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(mesh.axis_names[0]))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, jax.Array))


def shard_batch(tree, mesh: Mesh):
    """This process's rows (numpy, leading axis B_local) -> global jax Arrays with the leading axis
    split over the data axis (global B = B_local x number of processes). B_local must be a multiple of
    this process's device count."""
    sharding = data_sharding(mesh)
    local = len(mesh.local_devices)

    def put(x):
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % local:
            raise ConfigError(f"a batch of {x.shape[0] if x.ndim else 'a scalar'} rows cannot be split "
                              f"evenly over this process's {local} devices")
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map(put, tree)


def replicate(tree, mesh: Mesh):
    """Every array leaf of `tree` (a generator, LPIPS, a mask source: any pytree) -> a global array
    holding the same value on every device of the mesh. All processes must pass the same values."""
    sharding = replicated_sharding(mesh)

    def put(x):
        if not _is_array(x):
            return x
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, x.shape)

    return jax.tree_util.tree_map(put, tree)


def local_rows(tree):
    """Global arrays -> numpy with only the rows this process holds (the inverse of `shard_batch`);
    replicated arrays come back whole. Fully addressable arrays (one process) come back whole."""

    def get(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.ndim == 0:
            return np.asarray(x)
        blocks = {}
        for shard in x.addressable_shards:
            start = shard.index[0].start or 0
            if start not in blocks:
                blocks[start] = np.asarray(shard.data)
        return np.concatenate([blocks[k] for k in sorted(blocks)], axis=0)

    return jax.tree_util.tree_map(get, tree)


def constrain_batch(tree, mesh: Mesh, batch_size: int):
    """Inside jit: leaves whose leading axis is the batch go on the data axis, the rest are replicated
    (keeps latents, optimiser state and history sharded between jitted calls)."""
    data, rep = data_sharding(mesh), replicated_sharding(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.lax.with_sharding_constraint(x, data if x.ndim and x.shape[0] == batch_size else rep),
        tree)


def allgather_ints(values) -> np.ndarray:
    """[process_count, len(values)] int32: every process's `values` (one process: no communication)."""
    values = np.asarray(values, np.int32)[None]
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values, tiled=True)).reshape(jax.process_count(), -1)


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
