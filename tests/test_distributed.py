"""Ranks from the launchers' environments, and each rank's share of the data."""

from itertools import islice

import pytest
import torch

from resnet_repro.data.sampling import EpochPlan, shard
from resnet_repro.errors import UserError
from resnet_repro.training.distributed import (
    ALONE,
    World,
    first_host,
    rendezvous_env,
    world_from_env,
)


def test_no_launcher_is_one_process():
    assert world_from_env({}) == ALONE and not ALONE.distributed and ALONE.is_main


def test_torchrun_environment():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n1"}
    w = world_from_env(env)
    assert (w.rank, w.size, w.local_rank, w.launcher) == (5, 8, 1, "torchrun")
    assert rendezvous_env(w, env) == {"MASTER_ADDR": "n1"}  # torchrun's own values stay


def test_srun_environment_maps_to_ranks():
    env = {
        "SLURM_PROCID": "6",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "2",
        "SLURM_STEP_ID": "0",
        "SLURM_JOB_ID": "123456",
        "SLURM_JOB_NODELIST": "gpu[07-08],cpu3",
    }
    w = world_from_env(env)
    assert (w.rank, w.size, w.local_rank, w.launcher) == (6, 8, 2, "slurm")
    # Every task computes the same rendezvous without talking to the others.
    assert rendezvous_env(w, env) == {"MASTER_ADDR": "gpu07", "MASTER_PORT": str(20000 + 3456)}
    # torchrun started inside an srun step: torchrun's variables win.
    both = env | {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    assert world_from_env(both).launcher == "torchrun"


def test_a_batch_script_outside_srun_trains_alone():
    # sbatch's own shell has SLURM_NTASKS but is one process: it must not wait for others.
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "7"}
    assert world_from_env(env) == ALONE
    assert world_from_env(env | {"SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"}) == ALONE


@pytest.mark.parametrize(
    ("nodes", "first"),
    [("node1", "node1"), ("gpu[07-09,12]", "gpu07"), ("a[3],b[1-2]", "a3"), ("x-1,y", "x-1")],
)
def test_first_host_of_a_slurm_node_list(nodes, first):
    assert first_host(nodes) == first


@pytest.mark.parametrize("size", [2, 3, 4])
def test_ranks_split_every_global_batch_of_the_one_plan(size):
    n, batch = 50, 12  # 5 steps an epoch, the last one of 2 images... too few for 3 and 4
    if n % batch < size:
        with pytest.raises(UserError, match="last batch"):
            EpochPlan(n, batch, 0, World(0, size))
        n = 52  # a last batch of 4
    alone = EpochPlan(n, batch, 0, ALONE)
    plans = [EpochPlan(n, batch, 0, World(r, size)) for r in range(size)]
    walks = [list(zip(range(12), p.steps(3), strict=False)) for p in [alone, *plans]]
    for step in range(12):
        epoch, lo, hi = walks[0][step][1]
        parts = [w[step][1] for w in walks[1:]]
        assert all(e == epoch for e, _, _ in parts)
        assert [p[1:] for p in parts] == sorted(p[1:] for p in parts)  # rank order
        assert parts[0][1] == lo and parts[-1][2] == hi  # together, exactly the batch
        assert all(a[2] == b[1] for a, b in zip(parts, parts[1:], strict=False))
        sizes = [hi - lo for _, lo, hi in parts]
        assert max(sizes) - min(sizes) <= 1
    assert plans[0].rank_batch == batch // size


def test_a_batch_the_ranks_do_not_divide_is_refused():
    with pytest.raises(UserError, match="data.batch_size=128 is the global batch.*multiple of 3"):
        EpochPlan(50000, 128, 0, World(0, 3))


def test_evaluation_shards_count_every_image_once():
    for n, size in [(10000, 2), (10000, 3), (7, 4)]:
        parts = [shard(n, World(r, size)) for r in range(size)]
        assert [i for p in parts for i in p] == list(range(n))


def test_plan_order_is_the_single_process_order():
    # What rank r trains on at a step is its slice of what one process trains on then: the same
    # order, each plan drawing it from its own generator, and the ranks' slices tile the batch.
    alone = EpochPlan(40, 8, 3, ALONE)
    ranks = [EpochPlan(40, 8, 3, World(r, 2)) for r in range(2)]
    for epoch in (0, 1):
        order = alone.order(alone.generator(epoch))
        for plan in ranks:
            assert torch.equal(order, plan.order(plan.generator(epoch)))
    steps = [list(islice(plan.steps(0), 12)) for plan in (alone, *ranks)]
    for (e, lo, hi), (e0, lo0, hi0), (e1, lo1, hi1) in zip(*steps, strict=True):
        assert e == e0 == e1 and (lo0, hi0, lo1, hi1) == (lo, (lo + hi) // 2, (lo + hi) // 2, hi)
