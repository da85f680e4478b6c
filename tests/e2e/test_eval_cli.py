"""`protobench eval` on real files (one-line errors, exit 2) and `protobench sample` from a real tiny run."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from protobench_datasets.digits import DigitsDataset

from protobench.cli import main


@pytest.fixture(scope="module")
def test_split():
    _train, test = DigitsDataset().load()
    return test.images.numpy(), test.labels.numpy()


def cli(args, env):
    return subprocess.run(["protobench", *args],
                          capture_output=True, text=True, env=env, timeout=300)


BAD = {
    "wrong dtype": lambda p, x: np.savez(p, images=x.astype(np.float32)),
    "wrong rank": lambda p, x: np.savez(p, images=x[:, 0]),
    "no images key": lambda p, x: np.savez(p, pictures=x),
    "empty": lambda p, x: np.savez(p, images=x[:0]),
    "labels length": lambda p, x: np.savez(p, images=x, labels=np.arange(3)),
    "not npz": lambda p, x: p.write_text("not an archive"),
    "missing": lambda p, x: None,
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_eval_bad_file_is_one_line_and_exit_2(case, tmp_path, test_split):
    images, _labels = test_split
    path = tmp_path / "samples.npz"
    BAD[case](path, images[:10])
    result = CliRunner().invoke(main, ["eval", "--samples", str(path), "--dataset", "digits", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output


@pytest.mark.slow
def test_eval_scores_real_samples_in_either_layout_and_any_size(tmp_path, env, test_split):
    images, labels = test_split
    nchw, nhwc = tmp_path / "nchw.npz", tmp_path / "nhwc.npz"
    np.savez(nchw, images=images, labels=labels)
    np.savez(nhwc, images=images.transpose(0, 2, 3, 1))
    first = cli(["eval", "--samples", str(nchw), "--dataset", "digits", "--metric", "fid", "--metric",
                 "class-accuracy", "--json", "--quiet"], env)
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout)
    assert record["n"] == len(images) and record["labels"] is True
    assert record["metrics"]["class-accuracy[digits-evaluator]"] > 0.9
    assert 0.9 < record["evaluator"]["test_accuracy"] <= 1.0
    second = cli(["eval", "--samples", str(nhwc), "--metric", "fid", "--json", "--quiet"], env)
    assert second.returncode == 0, second.stderr
    fid = json.loads(second.stdout)["metrics"]["fid[digits-evaluator]"]
    assert fid == pytest.approx(record["metrics"]["fid[digits-evaluator]"], rel=1e-9)
    # 24×24 RGB noise is resized and converted to the dataset's 8×8 grey, and scores far worse
    noise = np.random.default_rng(0).integers(0, 256, (100, 24, 24, 3), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", images=noise)
    third = cli(["eval", "--samples", str(tmp_path / "noise.npz"), "--metric", "fid", "--json", "--quiet"], env)
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["metrics"]["fid[digits-evaluator]"] > 10 * fid
    # a labelled metric on a file without labels is a usage error
    fourth = cli(["eval", "--samples", str(nhwc), "--metric", "class-accuracy"], env)
    assert fourth.returncode == 2 and fourth.stderr.strip().startswith("error: ") and "labels" in fourth.stderr


def test_sample_unknown_run_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["sample", "no-such-run", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: no run 'no-such-run'") and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_sample_from_a_trained_run_then_eval(tmp_path, env):
    out = tmp_path / "runs-out"
    run = cli(["run", "--budget", "256", "--eval-every", "256", "--eval-samples", "20", "-o", "denoiser.base_channels=8",
               "-o", "sampler.steps=3", "--out", str(out), "--json", "--quiet"], env)
    assert run.returncode == 0, run.stderr
    run_id = json.loads(run.stdout)["run_id"]
    npz = tmp_path / "s.npz"
    drawn = cli(["sample", run_id, "--class", "3", "--n", "12", "--output", str(npz), "--out", str(out), "--json"], env)
    assert drawn.returncode == 0, drawn.stderr
    with np.load(npz) as data:
        assert data["images"].shape == (12, 8, 8, 1) and data["images"].dtype == np.uint8
        assert (data["labels"] == 3).all()
    png = tmp_path / "grid.png"
    grid = cli(["sample", run_id, "--output", str(png), "--out", str(out)], env)
    assert grid.returncode == 0, grid.stderr
    from PIL import Image

    assert Image.open(png).size[0] > 0
    scored = cli(["eval", "--samples", str(npz), "--metric", "fid", "--metric", "class-accuracy", "--json", "--quiet"], env)
    assert scored.returncode == 0, scored.stderr
    assert "class-accuracy[digits-evaluator]/3" in json.loads(scored.stdout)["metrics"]


@pytest.mark.slow
def test_intra_fid_sees_labels_that_fid_cannot(tmp_path, env, test_split):
    """The headline metric: the real test split scores far worse under shuffled labels; FID does not move."""
    images, labels = test_split
    shuffled = np.random.default_rng(0).permutation(labels)
    assert (shuffled != labels).mean() > 0.8
    scores = {}
    for name, y in (("true", labels), ("shuffled", shuffled)):
        np.savez(tmp_path / f"{name}.npz", images=images, labels=y)
        done = cli(["eval", "--samples", str(tmp_path / f"{name}.npz"), "--dataset", "digits", "--metric", "intra-fid",
                    "--metric", "fid", "--json", "--quiet"], env)
        assert done.returncode == 0, done.stderr
        scores[name] = json.loads(done.stdout)["metrics"]
    assert scores["shuffled"]["fid[digits-evaluator]"] == pytest.approx(scores["true"]["fid[digits-evaluator]"])
    assert scores["shuffled"]["intra-fid[digits-evaluator]"] > 5 * scores["true"]["intra-fid[digits-evaluator]"]
