"""torchrun with two gloo processes on a tiny data set: rank 0 alone writes, ranks see disjoint data,
metrics are global, and a failing rank brings the whole job down with its error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vgg_deploy.batches import load_batches, run_batches
from vgg_deploy.runfolder import open_run
from vgg_deploy.runners import TorchRunner

EPOCHS = 2


def torchrun(*args, timeout=600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "vgg_deploy", *map(str, args)]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("case", ["small-similar", "small-different"])
def test_two_gloo_ranks(tiny_data, tmp_path, case):
    out = tmp_path / "run"
    result = torchrun("finetune", tiny_data, "--out", out, "--weights", "none", "--case", case, "--image-size", 32,
                      "--epochs", EPOCHS, "--batch-size", 8, "--precision", "fp32", "--workers", 0, "--patience", 9)
    assert result.returncode == 0, result.stderr[-3000:]

    # Complete, and written once (not once per rank).
    for name in ("model.json", "model.safetensors", "split.json", "config.json", "epochs.jsonl", "curves.png",
                 "distributed.json"):
        assert (out / name).is_file(), name
    assert not (out / "resume.pt").exists()
    assert not list(out.glob(".*.tmp"))
    assert len((out / "epochs.jsonl").read_text().splitlines()) == EPOCHS
    assert result.stdout.count("kept epoch") == 1

    info = json.loads((out / "model.json").read_text())
    assert info["training"]["world_size"] == 2 and info["training"]["global_batch_size"] == 8

    # Disjoint shards that together cover the training set (less a tail smaller than the world size).
    shards = json.loads((out / "distributed.json").read_text())["epoch1_train_indices"]
    a, b = (set(s["indices"]) for s in shards)
    n_train = len(json.loads((out / "split.json").read_text())["train"])
    assert not a & b and len(a) == len(b) and len(a | b) > n_train - 2

    # The recorded metrics are the global ones: the kept model on the whole val split gives them back.
    run = open_run(out)
    split = run.split()
    batches, labels = load_batches(split.absolute(split.val), run.preprocessing, batch_size=8)
    with TorchRunner(run.load_model()) as runner:
        logits = run_batches(runner, batches)
    assert float((logits.argmax(1) == labels).mean()) == pytest.approx(info["metrics"]["val"]["top1"])
    log_softmax = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    loss = float(-log_softmax[np.arange(len(labels)), labels].mean())
    assert loss == pytest.approx(info["metrics"]["val"]["loss"], rel=1e-3, abs=1e-3)


def test_two_ranks_stay_close_to_one_process(tiny_data, tmp_path):
    """Same global batch and seed: only the order the ranks draw samples in differs."""
    from vgg_deploy.finetune import FinetuneConfig, finetune

    args = dict(weights="none", case="small-similar", image_size=32, epochs=4, batch_size=8, precision="fp32",
                workers=0, patience=9)
    single = finetune(FinetuneConfig(data=str(tiny_data), out=str(tmp_path / "one"), **args))
    result = torchrun("finetune", tiny_data, "--out", tmp_path / "two", *[
        token for key, value in args.items() for token in (f"--{key.replace('_', '-')}", value)])
    assert result.returncode == 0, result.stderr[-3000:]
    double = json.loads((tmp_path / "two" / "model.json").read_text())
    assert abs(double["metrics"]["val"]["loss"] - single["metrics"]["val"]["loss"]) < 0.25 * single["metrics"]["val"]["loss"]
    assert abs(double["metrics"]["val"]["top1"] - single["metrics"]["val"]["top1"]) <= 0.34


def test_a_failing_rank_brings_the_job_down_with_its_error(tmp_path):
    result = torchrun("finetune", tmp_path / "missing", "--out", tmp_path / "run", "--weights", "none", timeout=300)
    assert result.returncode != 0
    # Every rank raises rank 0's typed error as its one line; the only traceback is torchrun's own summary.
    assert result.stderr.count("error: data folder") == 2 and "does not exist" in result.stderr
    assert "vgg_deploy/" not in result.stderr


def _heartbeat_rank(rank: int, init_file: str, out_dir: str, fail: bool) -> None:
    import time

    import torch.distributed

    from vgg_deploy.errors import DataError
    from vgg_deploy.finetune import distributed

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    said: list[str] = []
    distributed.error_console.print = said.append

    def slow_check():
        time.sleep(1.5)  # far longer than the heartbeat, as a 1M-image check is than the collective timeout
        if fail:
            raise DataError("3 bad image(s)")
        return {"train": 12}

    dist = distributed.Distributed(rank, 2, rank, "gloo")
    try:
        outcome = dist.on_main(slow_check, waiting_for="its image check", heartbeat_s=0.1)
    except DataError as err:
        outcome = f"error: {err}"
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"outcome": outcome, "said": said}))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("fail", [False, True])
def test_ranks_wait_for_a_long_rank0_step_on_a_heartbeat(tmp_path, fail):
    import torch.multiprocessing

    torch.multiprocessing.spawn(_heartbeat_rank, args=(str(tmp_path / "init"), str(tmp_path), fail), nprocs=2)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    expected = "error: 3 bad image(s)" if fail else {"train": 12}
    assert rank0["outcome"] == rank1["outcome"] == expected
    # The waiting rank said what it waits for, again and again, instead of hanging silently.
    assert len(rank1["said"]) >= 5 and all("waiting for rank 0 (its image check)" in s for s in rank1["said"])
    assert rank0["said"] == []
