"""Node ranks under every launcher. The processes of one node share its shard cache, so each must know the same
ranks as its node's (pipeline.options.node_ranks) and plan the same shards for a pass; the cores of the node are
shared by them too (default_workers). Both come from common.placement: torch's launchers' variables, then mpirun's,
then srun's, else a single process. Rows of variables first, then the real launchers: torchrun,
torch.distributed.launch, the trainer's --multiprocessing-distributed spawn, and srun's variables on processes
started here."""
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from common.placement import launcher_placement
from pipeline import options
from trainer import distributed

ROOT = Path(__file__).resolve().parents[1]
TORCH_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCHED_TIMEOUT_S = 90


def launcher_free(environ):
    """`environ` without any launcher's variables: the tests may themselves run under torchrun, srun or mpirun."""
    return {name: value for name, value in environ.items()
            if name not in TORCH_NAMES and not name.startswith(("SLURM_", "OMPI_"))}


@pytest.fixture
def launched(monkeypatch):
    """launched(variables): this process's environment as a launcher with these variables would leave it."""
    for name in set(os.environ) - set(launcher_free(os.environ)):
        monkeypatch.delenv(name)

    def put(variables):
        for name, value in variables.items():
            monkeypatch.setenv(name, str(value))
    return put


def torch_env(rank, world, local_rank, local_world):
    """What torchrun, torch.distributed.launch (with --use_env or without) and the trainer's spawn set."""
    return {"RANK": rank, "WORLD_SIZE": world, "LOCAL_RANK": local_rank, "LOCAL_WORLD_SIZE": local_world}


def srun_env(rank, node, local_rank, tasks_per_node, tasks, **more):
    """What srun gives each task of its step (SLURM_NTASKS and SLURM_TASKS_PER_NODE are the step's too, unless
    --preserve-env keeps the allocation's)."""
    return {"SLURM_PROCID": rank, "SLURM_NODEID": node, "SLURM_LOCALID": local_rank, "SLURM_STEP_ID": 0,
            "SLURM_STEP_TASKS_PER_NODE": tasks_per_node, "SLURM_TASKS_PER_NODE": tasks_per_node,
            "SLURM_STEP_NUM_TASKS": tasks, "SLURM_NTASKS": tasks, **more}


def mpirun_env(rank, world, local_rank, local_world):
    return {"OMPI_COMM_WORLD_RANK": rank, "OMPI_COMM_WORLD_SIZE": world, "OMPI_COMM_WORLD_LOCAL_RANK": local_rank,
            "OMPI_COMM_WORLD_LOCAL_SIZE": local_world}


BATCH_SCRIPT = {"SLURM_PROCID": 0, "SLURM_NODEID": 0, "SLURM_LOCALID": 0, "SLURM_NTASKS": 8,
                "SLURM_TASKS_PER_NODE": "4(x2)", "SLURM_JOB_ID": 7}

# variables -> rank, world, local rank, local world (None: not known), node ranks
PLACEMENTS = {
    "none": ({}, (0, 1, 0, None, (0,))),
    "torchrun, node 1 of 2x4": (torch_env(5, 8, 1, 4), (5, 8, 1, 4, (4, 5, 6, 7))),
    "torchrun, node 0 of 2x4": (torch_env(0, 8, 0, 4), (0, 8, 0, 4, (0, 1, 2, 3))),
    "torch.distributed.launch, one node of 3": (torch_env(2, 3, 2, 3), (2, 3, 2, 3, (0, 1, 2))),
    "spawn, node 1 of 2x3": (torch_env(4, 6, 1, 3), (4, 6, 1, 3, (3, 4, 5))),
    "RANK and WORLD_SIZE by hand": ({"RANK": 1, "WORLD_SIZE": 2}, (1, 2, 0, None, (0, 1))),
    "srun 4(x2), node 1": (srun_env(6, 1, 2, "4(x2)", 8), (6, 8, 2, 4, (4, 5, 6, 7))),
    "srun 4(x2),3, last node": (srun_env(9, 2, 1, "4(x2),3", 11), (9, 11, 1, 3, (8, 9, 10))),
    "srun 3,2, node 1": (srun_env(4, 1, 1, "3,2", 5), (4, 5, 1, 2, (3, 4))),
    "srun 2(x3), node 0": (srun_env(1, 0, 1, "2(x3)", 6), (1, 6, 1, 2, (0, 1))),
    "srun -m block:cyclic": (srun_env(3, 1, 0, "3(x2)", 6, SLURM_DISTRIBUTION="block:cyclic"),
                             (3, 6, 0, 3, (3, 4, 5))),
    "srun -m cyclic: a node's ranks not consecutive": (srun_env(2, 0, 1, "2(x2)", 4, SLURM_DISTRIBUTION="cyclic"),
                                                       (2, 4, 1, 2, (0, 1, 2, 3))),
    "srun -m cyclic, one task per node": (srun_env(2, 2, 0, "1(x3)", 3, SLURM_DISTRIBUTION="cyclic"),
                                          (2, 3, 0, 1, (2,))),
    "srun --preserve-env": ({**srun_env(1, 0, 1, "2", 2), "SLURM_NTASKS": 16, "SLURM_TASKS_PER_NODE": "8(x2)"},
                            (1, 2, 1, 2, (0, 1))),
    "an sbatch script itself, no step": (BATCH_SCRIPT, (0, 1, 0, None, (0,))),
    "torchrun inside an srun step": ({**srun_env(1, 1, 0, "1(x2)", 2), **torch_env(5, 8, 1, 4)},
                                     (5, 8, 1, 4, (4, 5, 6, 7))),
    "mpirun, 2 nodes x 2": (mpirun_env(3, 4, 1, 2), (3, 4, 1, 2, (0, 1, 2, 3))),
    "mpirun, one per node": (mpirun_env(1, 2, 0, 1), (1, 2, 0, 1, (1,))),
    "mpirun under SLURM, its daemons' step around it": ({**srun_env(1, 1, 0, "1(x2)", 2), **mpirun_env(3, 4, 1, 2)},
                                                       (3, 4, 1, 2, (0, 1, 2, 3))),
}


@pytest.mark.parametrize("variables, expected", PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_each_launcher_places_the_process_and_names_its_nodes_ranks(launched, variables, expected):
    launched(variables)
    place = launcher_placement()
    assert (place.rank, place.world, place.local_rank, place.local_world,
            options.node_ranks(place.rank, place.world)) == expected


def test_node_ranks_before_the_group_exists_are_rank_0_alone(launched):
    launched(torch_env(1, 3, 1, 3))
    assert options.node_ranks(0, 1) == (0,)  # no group yet: rank 0 of 1, whatever the variables say


# variables, cores this process may use, CPUs of the node -> default loader workers
WORKERS = {
    "none": ({}, 64, 64, 64),
    "torchrun, 8 per node": (torch_env(3, 8, 3, 8), 64, 64, 8),
    "torchrun in a 16-core container of a 128-core node": (torch_env(3, 8, 3, 8), 16, 128, 2),
    "spawn, 3 per node": (torch_env(1, 3, 1, 3), 64, 64, 21),
    "srun, 8 tasks unbound": (srun_env(3, 0, 3, "8", 8), 64, 64, 8),
    "srun, 8 tasks bound to 8 cores each": (srun_env(3, 0, 3, "8", 8), 8, 64, 8),
    "srun, 4 tasks in a 64-core job of a 128-core node": (srun_env(3, 0, 3, "4", 4), 64, 128, 16),
    "mpirun, 2 per node bound to a core each": (mpirun_env(1, 2, 1, 2), 1, 64, 1),
}


@pytest.mark.parametrize("variables, cores, cpus, expected", WORKERS.values(), ids=WORKERS.keys())
def test_default_workers_share_the_nodes_cores_among_its_processes(launched, monkeypatch, variables, cores, cpus,
                                                                   expected):
    launched(variables)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert options.default_workers() == expected


def test_setup_under_a_one_task_srun_is_a_single_process(launched):
    launched(srun_env(0, 0, 0, "1", 1))
    assert distributed.setup("cpu") == distributed.Context(0, 0, 1, torch.device("cpu"))
    assert not dist.is_initialized()


@pytest.mark.parametrize("master, missing", [({}, "MASTER_ADDR and MASTER_PORT"),
                                             ({"MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT")])
def test_setup_under_srun_without_master_stops_in_one_line(launched, capsys, master, missing):
    launched({**srun_env(1, 0, 1, "2", 2), **master})
    with pytest.raises(SystemExit) as stopped:
        distributed.setup("cpu")
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"needs {missing} " in err and "rank 1 of 2" in err, err
    assert not dist.is_initialized()


# --- real launchers: each process records its place, its node's ranks and the shards its node plans ---------------

LAUNCHED = textwrap.dedent('''
    """Records where its launcher put it: python launched.py OUT, or python launched.py --spawn OUT TRAINER-FLAGS."""
    import json
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    import numpy as np

    from common.placement import launcher_placement
    from pipeline import options, sampling

    WINDOWS = sampling.ShardWindows((5,) * 20 + (3,), 3)  # 103 samples in 21 shards
    SHARD_OF = np.repeat(np.arange(21), WINDOWS.shard_samples)


    def node_shards(world, ranks):
        """The shards a node holding `ranks` fetches for a train pass (pipeline.reading's start_pass plans so)."""
        o = SimpleNamespace(train=True, batch_size=2, world=world, seed=0, accumulate=1, shard_order=WINDOWS,
                            max_steps=2)
        plan = sampling.ranks_batches(103, o, 1, ranks=ranks)
        return sorted(set(SHARD_OF[np.concatenate([batches.ravel() for batches in plan])].tolist()))


    def record(out, ctx):
        rank, world = options.distributed_rank_world()
        node = options.node_ranks(rank, world)
        (Path(out) / f"rank-{rank}.json").write_text(json.dumps({
            "rank": rank, "world": world, "local_rank": ctx.local_rank,
            "local_world": launcher_placement().local_world, "node_ranks": list(node),
            "node_shards": node_shards(world, node), "workers": options.default_workers()}))


    def train(config, ctx):  # --multiprocessing-distributed's, in each spawned process
        record(config.output_dir, ctx)
        if ctx.main:
            (Path(config.output_dir) / "report.json").write_text("{}")


    if __name__ == "__main__":
        if sys.argv[1] == "--spawn":
            from trainer.args import parse_args
            from trainer.launch import run
            run(parse_args(["--output-dir", *sys.argv[2:]]), train)
        else:
            from trainer import distributed
            record(sys.argv[1], distributed.setup("cpu"))
            distributed.cleanup()
''')


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "launched.py"
    path.write_text(LAUNCHED)
    return path


@pytest.fixture
def out(tmp_path):
    path = tmp_path / "out"
    path.mkdir()
    return path


def bare_env(**variables):
    """This environment without any launcher's, this checkout importable, and `variables`."""
    return {**launcher_free(os.environ), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            **{name: str(value) for name, value in variables.items()}}


def started(command, env=None):
    """`command` running in its own process group, so that a test can end it with everything it started."""
    return subprocess.Popen(command, cwd=ROOT, env=env or bare_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finished(*processes):
    """Wait for every one of `processes` to exit 0; past the timeout (a group that never meets), end them all."""
    try:
        for process in processes:
            output = process.communicate(timeout=LAUNCHED_TIMEOUT_S)[0]
            assert process.returncode == 0, f"{process.args} exited {process.returncode}\n{output}"
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def records(out, world):
    found = {int(path.stem.split("-")[1]): json.loads(path.read_text()) for path in out.glob("rank-*.json")}
    assert sorted(found) == list(range(world)), found
    return [found[rank] for rank in range(world)]


def expect_one_node(out, script):
    """Every one of the 3 processes on this node: its own local rank, the same node ranks (0, 1, 2), the same
    shards planned (every rank's), and a third of this node's cores."""
    every_rank = runpy.run_path(str(script))["node_shards"](3, [0, 1, 2])
    cores = len(os.sched_getaffinity(0))
    for rank, seen in enumerate(records(out, 3)):
        assert seen == {"rank": rank, "world": 3, "local_rank": rank, "local_world": 3, "node_ranks": [0, 1, 2],
                        "node_shards": every_rank, "workers": max(1, cores // 3)}


def test_torchrun_standalone(script, out):
    finished(started([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "3",
                      str(script), str(out)]))
    expect_one_node(out, script)


def test_torch_distributed_launch_use_env(script, out):
    pytest.importorskip("torch.distributed.launch")
    finished(started([sys.executable, "-W", "ignore::FutureWarning", "-m", "torch.distributed.launch", "--use_env",
                      "--standalone", "--nproc_per_node", "3", str(script), str(out)]))
    expect_one_node(out, script)


def test_multiprocessing_distributed_spawn(script, out):
    finished(started([sys.executable, str(script), "--spawn", str(out), "--loader", "synthetic", "--device", "cpu",
                      "--multiprocessing-distributed", "--device-list", "0,1,2", "--batch-size", "6"]))
    expect_one_node(out, script)


def test_srun_two_nodes_of_2_and_1_tasks(script, out):
    """srun's variables for 3 tasks on 2 nodes ("2,1"), on processes started here: node 0 (ranks 0, 1) plans its
    ranks' shards, node 1 (rank 2) its own."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    placed = [(0, 0, 0), (1, 0, 1), (2, 1, 0)]  # rank, node, local rank
    finished(*(started([sys.executable, str(script), str(out)],
                       bare_env(**srun_env(rank, node, local, "2,1", 3), MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
               for rank, node, local in placed))
    node_shards = runpy.run_path(str(script))["node_shards"]
    nodes = {0: [0, 1], 1: [2]}
    for (rank, node, local), seen in zip(placed, records(out, 3)):
        assert (seen["rank"], seen["world"], seen["local_rank"], seen["local_world"]) == (rank, 3, local,
                                                                                          len(nodes[node]))
        assert seen["node_ranks"] == nodes[node]
        assert seen["node_shards"] == node_shards(3, nodes[node])
    assert records(out, 3)[0]["node_shards"] != records(out, 3)[2]["node_shards"]
