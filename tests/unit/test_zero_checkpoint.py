"""ZeRO-1/2 optimizer state saved as one consolidated safetensors file (protobench.training.checkpoints): gathered from
two real DeepSpeed processes (CPU, gloo), it holds whole fp32 tensors, and a fresh pair of processes that
loads it continues exactly as the saved pair does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.distributed

WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    import deepspeed
    from safetensors.torch import load_file, save_file
    from protobench.data_parallel import skip_inference_shm_op
    from protobench.training.checkpoints import consolidated_optimizer_state, load_consolidated_optimizer_state

    stage, out = int(sys.argv[1]), sys.argv[2]
    skip_inference_shm_op()  # as protobench's ranks do: no C++ build of an op training never uses
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    rank = int(os.environ["RANK"])

    def engine():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Flatten(),
                                    torch.nn.Linear(8 * 16, 3))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
        config = {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
                  "zero_optimization": {"stage": stage}, "steps_per_print": 10**9}
        return deepspeed.initialize(model=model, optimizer=optimizer, config=config)[0]

    def train(e, steps, seed):
        gen = torch.Generator().manual_seed(seed * 10 + rank)
        for _ in range(steps):
            loss = e(torch.randn(4, 2, 4, 4, generator=gen)).square().mean()
            e.backward(loss)
            e.step()

    a = engine()
    train(a, 3, seed=1)
    tensors, meta = consolidated_optimizer_state(a)
    if rank == 0:
        save_file(tensors, f"{out}/optim.safetensors")
        json.dump(meta, open(f"{out}/optim.json", "w"))
    torch.distributed.barrier()
    b = engine()  # a fresh pair of processes' engines, then the checkpoint
    load_consolidated_optimizer_state(b, load_file(f"{out}/optim.safetensors"), json.load(open(f"{out}/optim.json")))
    train(a, 2, seed=2)
    train(b, 2, seed=2)
    diff = max((pa - pb).abs().max().item() for pa, pb in zip(a.module.parameters(), b.module.parameters()))
    masters = [tensors[f"optim.{i}.master"] for i in range(len(list(a.module.parameters())))]
    if rank == 0:
        json.dump({"diff_after_resume": diff, "shapes": [list(m.shape) for m in masters],
                   "step": meta["step"]}, open(f"{out}/result.json", "w"))
''')


@pytest.mark.parametrize("stage", [1, 2])
def test_zero_state_is_consolidated_and_resumes(tmp_path, stage):
    pytest.importorskip("deepspeed")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(stage), str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    # whole tensors, not one rank's flat shard
    assert result["shapes"] == [[8, 2, 3, 3], [8], [3, 128], [3]]
    assert result["step"] >= 3
    assert result["diff_after_resume"] < 1e-6, "the resumed pair continues as the saved pair"
    saved = load_file(str(tmp_path / "optim.safetensors"))  # safetensors: nothing executable to unpickle
    assert sorted(saved) == sorted(f"optim.{i}.{k}" for i in range(4) for k in ("master", "exp_avg", "exp_avg_sq"))


def test_zero_on_one_process_runs_under_deepspeed_and_resumes(tmp_path):
    """`protobench run --gpus 1 -o zero_stage=2` (the GPU check's DeepSpeed stage, here on a CPU): DeepSpeed's
    engine in the one process, stopped at --stop-after (checkpoint, exit 130), resumed to completion."""
    pytest.importorskip("deepspeed")
    from pathlib import Path

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.resume_check", "--out", str(tmp_path),
                           "--stop-after", "1024", "--",
                           "--dataset", "digits", "--gpus", "1", "-o", "zero_stage=2", "--budget", "3072",
                           "--eval-every", "512", "--eval-samples", "50", "--metric", "fid",
                           "-o", "denoiser.base_channels=8"], capture_output=True, text=True, env=env, cwd=root,
                          timeout=600)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and result["ok"], proc.stderr[-3000:]
    assert result["first_exit"] == 130, "the first invocation stopped at --stop-after, resumable"
    assert result["resumed_at_images"] == 1024 and result["images_seen"] == 3072
    assert result["deepspeed_optimizer_state"], "the optimizer state was DeepSpeed's (consolidated ZeRO shards)"
