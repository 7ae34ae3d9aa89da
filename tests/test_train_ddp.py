"""Scale-out smoke test: `torchrun --nproc_per_node 2` trains on CPU with gloo through the
`python -m microturn.train` entry point; the replicas stay equal, process 0 alone logs,
evaluates and writes checkpoints, and a 1-process run resumes from what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from microturn.model import from_pretrained
from microturn.stream.layout import Layout
from microturn.train.data import write_shards
from microturn.train.evaluate import write_eval_set

TINY = Layout.preset("tiny")
pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    env["MASTER_ADDR"] = "127.0.0.1"
    root = str(Path(__file__).resolve().parents[1])  # the driver script lives elsewhere
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _train_cli(data, out, *extra: str) -> list[str]:
    return [
        "-m",
        "microturn.train",
        str(data),
        str(out),
        "--batch",
        "1",
        "--device",
        "cpu",
        "--log-every",
        "1",
        "--save-every",
        "3",
        "--warmup",
        "1",
        *extra,
    ]


def _torchrun(*args: str) -> list[str]:
    """Two local processes running `args` (a script or -m module, then its flags)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        *args,
    ]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-shards")
    write_shards(out, ["time_awareness", "turn_taking"], 4, TINY, per_shard=2, workers=1)
    return out


# `python -m microturn.train` with one addition: after training, every process saves the
# weights of its own replica (rank<r>.pt), so the test can see that DDP kept them equal.
DRIVER = """
import shutil, sys, torch, torch.distributed as dist
from pathlib import Path
import microturn.train.loop as loop
from microturn.train.__main__ import main

replicas = []
class Recording(loop.DistributedDataParallel):
    def __init__(self, module, *args, **kwargs):
        super().__init__(module, *args, **kwargs)
        replicas.append(module)

loop.DistributedDataParallel = Recording

# A shard that appears mid-run (as `microturn data` writing beside the run would put
# it): process 0 copies it in during step 2; --grow-data must give it to both processes.
late, folder = sys.argv[-2:]
sys.argv = sys.argv[:-2]
real_augment, calls = loop.augment_batch, [0]

def augment_then_write(*args):
    calls[0] += 1
    if calls[0] == 2 and dist.get_rank() == 0:
        shutil.copy(late, Path(folder) / Path(late).name)
    real_augment(*args)

loop.augment_batch = augment_then_write
real_load, loaded = loop._load_episodes, [0]

def counting_load(*args):
    episodes = real_load(*args)
    loaded[0] += len(episodes)
    return episodes

loop._load_episodes = counting_load
code = main(sys.argv[1:])
(Path(sys.argv[2]) / f"rank{dist.get_rank()}-episodes").write_text(str(loaded[0]))
assert len(replicas) == 1, replicas
torch.save(replicas[0].state_dict(), Path(sys.argv[2]) / f"rank{dist.get_rank()}.pt")
sys.exit(code)
"""


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    return write_eval_set(tmp_path_factory.mktemp("ddp-eval"), ["delegation"], 1, TINY)


@pytest.fixture(scope="module")
def ddp_run(shards, eval_set, tmp_path_factory):
    """One 2-process run of 3 steps; (completed process, output folder)."""
    out = tmp_path_factory.mktemp("ddp-out")
    driver = tmp_path_factory.mktemp("ddp-driver") / "driver.py"
    driver.write_text(DRIVER)
    # --grow-data: the data folder starts with one shard, the driver adds the other
    growing = tmp_path_factory.mktemp("ddp-growing")
    first, late = sorted(shards.glob("shard-*.npz"))
    shutil.copy(first, growing / first.name)
    cli = _train_cli(growing, out, "--steps", "3", "--eval-data", str(eval_set), "--grow-data")
    # the driver instead of "-m microturn.train": it calls its main()
    cmd = _torchrun(str(driver), *cli[2:], str(late), str(growing))
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    return proc, out


def test_two_processes_train_and_process_zero_writes(ddp_run) -> None:
    proc, out = ddp_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    model = from_pretrained(out)  # loadable weights and config
    assert all(torch.isfinite(p).all() for p in model.parameters())
    trainer = torch.load(out / "trainer.pt", map_location="cpu", weights_only=False)
    assert trainer["step"] == 3
    assert trainer["config"]["batch"] == 1
    # DDP kept the replicas equal: same initial weights, same averaged gradients
    rank0 = torch.load(out / "rank0.pt", map_location="cpu")
    rank1 = torch.load(out / "rank1.pt", map_location="cpu")
    assert rank0.keys() == rank1.keys()
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k
    # ... and what process 0 saved is that replica
    saved = model.state_dict()
    assert all(torch.equal(saved[k], rank0[k]) for k in rank0)
    # and it is trained: not the initial weights any more
    torch.manual_seed(0)
    initial = type(model)(model.cfg).state_dict()
    assert any(not torch.equal(initial[k], rank0[k]) for k in rank0)
    # one record per step and one evaluation at the end, all written by process 0 only
    # (two writers would double them)
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in lines if "eval" in r]
    records = [r for r in lines if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    # the shard that came during step 2 joined both processes' data at step 2's check
    # (a process without it would draw from fewer episodes: different batches, or none)
    assert [r for r in lines if "episodes" in r] == [
        {"step": 0, "shards": 1, "episodes": 2},
        {"step": 2, "shards": 2, "episodes": 4},
    ]
    assert [(out / f"rank{r}-episodes").read_text() for r in (0, 1)] == ["4", "4"]
    assert trainer["shards"] == [[0, "shard-00000.npz"], [0, "shard-00001.npz"]]
    assert [r["step"] for r in evals] == [3] and "delegation" in evals[0]["eval"]
    best = json.loads((out / "best" / "eval.json").read_text())
    assert best["step"] == 3 and best["score"] == evals[0]["eval_score"]
    for r in records:
        assert all(
            torch.isfinite(torch.tensor(r[k])) for k in ("loss", "model_text", "model_audio")
        )
        # process 0 trains its own slice of the global batch: one episode per step
        assert len(r["by_scenario"]) == 1
        assert set(r["by_scenario"]) <= {"time_awareness", "turn_taking"}
    # tokens/s counts the whole global batch, both processes
    assert records[-1]["tokens_per_s"] > 0
    # each process's CLI printed its summary (their lines may interleave on one pipe)
    assert proc.stdout.count('{"steps": 3,') == 2
    assert not list(out.glob("*.tmp"))  # atomic writes left nothing behind


def test_one_process_resumes_a_two_process_run(ddp_run, shards) -> None:
    proc, out = ddp_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    before = from_pretrained(out).state_dict()
    cmd = [sys.executable, *_train_cli(shards, out, "--steps", "5", "--resume")]
    resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    trainer = torch.load(out / "trainer.pt", map_location="cpu", weights_only=False)
    assert trainer["step"] == 5
    lines = (out / "log.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    after = from_pretrained(out).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # the warmup (1 step) and the schedule continue from step 3, not from 0
    assert records[3]["lr"] < records[0]["lr"]


def test_two_processes_train_sharded_and_one_process_resumes(shards, tmp_path) -> None:
    """--fsdp: each process holds a slice of the weights; the checkpoint gathers them
    whole, so it loads anywhere, and a single process resumes the run from it."""
    out = tmp_path / "fsdp"
    cli = _train_cli(shards, out, "--steps", "3", "--fsdp")
    proc = subprocess.run(_torchrun(*cli), env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    model = from_pretrained(out)
    torch.manual_seed(0)
    initial = type(model)(model.cfg).state_dict()
    trained = model.state_dict()
    assert initial.keys() == trained.keys()  # every weight, whole: none is a shard
    assert all(initial[k].shape == trained[k].shape for k in initial)
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)
    trainer = torch.load(out / "trainer.pt", map_location="cpu", weights_only=False)
    assert trainer["step"] == 3 and trainer["optimizer_format"] == "full_by_name"
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    resume = [sys.executable, *_train_cli(shards, out, "--steps", "5", "--resume")]
    resumed = subprocess.run(resume, env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert records[3]["lr"] < records[0]["lr"]  # the schedule went on from step 3
    # a sharded run needs several processes, and cannot evaluate in the loop
    alone = subprocess.run(
        [sys.executable, *_train_cli(shards, tmp_path / "x", "--steps", "1", "--fsdp")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert alone.returncode != 0 and "torchrun" in alone.stderr
