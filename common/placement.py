"""Where the launcher put this process: its rank in the run and its place among the processes of its node.

One launcher describes a process, the innermost first: torch's (torchrun, torch.distributed.launch, the trainer's
--multiprocessing-distributed spawn, or RANK set by hand), then mpirun (OpenMPI), then srun, else a single process.
Their variables are never mixed: torchrun started in an srun step describes its own processes, and so does mpirun,
whose processes under SLURM inherit the srun step of its daemons, one per node.
"""
import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """This process's place, as its launcher set it."""
    rank: int
    world: int
    local_rank: int           # this process's index among local_world on its node
    local_world: int | None   # None: not known (processes started by hand, or none)
    consecutive: bool         # the node's ranks are rank - local_rank onwards, local_world of them
    may_bind_cores: bool      # the launcher may give each process only its own cores (srun's and mpirun's binding)


def launcher_placement(env=os.environ):
    """The place the first launcher of the order above gives this process in `env`."""
    return _torch(env) or _mpirun(env) or _srun(env) or Placement(0, 1, 0, None, False, False)


def _torch(env):
    """torch's launchers number a node's ranks consecutively and set all four variables; a process started by hand
    may set RANK and WORLD_SIZE alone."""
    if "RANK" not in env:
        return None
    local_world = int(env["LOCAL_WORLD_SIZE"]) if "LOCAL_WORLD_SIZE" in env else None
    return Placement(int(env["RANK"]), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                     local_world, local_world is not None, False)


def _mpirun(env):
    """OpenMPI's mpirun says not how it mapped ranks to nodes (--map-by node deals them round-robin)."""
    if "OMPI_COMM_WORLD_LOCAL_RANK" not in env:
        return None
    local_world = int(env["OMPI_COMM_WORLD_LOCAL_SIZE"])
    return Placement(int(env["OMPI_COMM_WORLD_RANK"]), int(env["OMPI_COMM_WORLD_SIZE"]),
                     int(env["OMPI_COMM_WORLD_LOCAL_RANK"]), local_world, local_world == 1, True)


def _srun(env):
    """A task of an srun step: the SLURM_STEP_ variables mark one (the batch script itself has SLURM_NTASKS,
    SLURM_PROCID=0 and SLURM_TASKS_PER_NODE for the whole allocation, but is one process) and stay the step's under
    --preserve-env. Only the block distribution (srun's default) numbers a node's tasks consecutively."""
    if "SLURM_STEP_TASKS_PER_NODE" not in env:
        return None
    local_world = _tasks_per_node(env["SLURM_STEP_TASKS_PER_NODE"])[int(env["SLURM_NODEID"])]
    distribution = re.split("[:,]", env.get("SLURM_DISTRIBUTION", "block"))[0]
    return Placement(int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]), int(env["SLURM_LOCALID"]),
                     local_world, local_world == 1 or distribution == "block", True)


def _tasks_per_node(text):
    """SLURM's compressed task counts, one per node: "4(x2),3" -> [4, 4, 3]."""
    counts = []
    for part in text.split(","):
        count, repeat = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip()).groups()
        counts += [int(count)] * int(repeat or 1)
    return counts
