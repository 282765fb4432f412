"""Several processes (fredset.distributed): torchrun with the gloo backend, 2-3 processes, a tiny .npz dataset.

Equivalences checked, each with its tolerance:
- DM and DC over N processes write what one process writes: masks and counts equal, coefficients within rtol 1e-5 /
  atol 1e-5 (on this CPU DM's are bit for bit equal, and so are its files), the final loss within 1e-6;
- TM's meta-gradients of one iteration (coefficients and syn_lr) over N processes equal one process's within
  rtol 1e-5 plus 1e-5 of the tensor's largest magnitude (the split batches' gradients are summed in another order;
  measured: 1e-7 of the largest); a whole TM run, and one resumed over two
  processes, within 1e-5 of the largest coefficient (a few iterations at TM's lr amplify float rounding);
- a checkpoint of one process resumes over two; `fredset evaluate` over two processes reports the same JSON as one
  (timings aside); `fredset buffer` over two processes writes the experts one process writes (equal snapshots).
Failures: a rank that raises ends the job with one line, a rank that hangs makes the others time out.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fredset import load
from fredset.augment import DSA
from fredset.data import load_dataset
from fredset.distill.objectives import DistributionMatching, GradientMatching
from fredset.distill.objectives.base import Objective
from fredset.distill.synset import init_frequency_synset, init_pixel_synset
from fredset.distributed import Context, init_from_environment, owned_classes, owned_rows, timeout
from fredset.errors import FredsetError
from fredset.experts import ExpertBuffer, train_experts
from fredset.training import fresh_network
from fredset_cli.main import cli

from tm_gradients import gradients as tm_gradients

TESTS = Path(__file__).resolve().parent

DISTILL = ["--model", "convnetd1", "--batch-real", "8", "--device", "cpu"]
RTOL = ATOL = 1e-5
LAUNCH_LIMIT = 120  # seconds a launched job may take before the test fails (each takes ~5-15 s here)
DIST_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                  "TORCHELASTIC_RUN_ID")


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """3 classes (uneven over 2 ranks) of 16x16 grayscale images, 60 train and 10 test images each."""
    rng = np.random.default_rng(0)

    def images(count, label):
        base = np.zeros((16, 16))
        base[5 * label:5 * label + 5, :] = 0.8
        return np.clip(base + 0.3 * rng.random((count, 16, 16)), 0, 1).astype(np.float32)

    path = tmp_path_factory.mktemp("data") / "toy.npz"
    np.savez(path, train_images=np.concatenate([images(60, c) for c in range(3)]),
             train_labels=np.repeat(np.arange(3), 60), test_images=np.concatenate([images(10, c) for c in range(3)]),
             test_labels=np.repeat(np.arange(3), 10), classes=np.array(["a", "b", "c"]))
    return path


def child_environment(**extra: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key not in DIST_VARIABLES}
    environment.update({"OMP_NUM_THREADS": "1", "SOURCE_DATE_EPOCH": "1767225600", "FREDSET_DIST_TIMEOUT": "60", **extra})
    return environment


def fredset(*args, cwd: Path) -> subprocess.CompletedProcess:
    """One process: ``python -m fredset_cli ARGS`` (the entry point torchrun starts)."""
    return subprocess.run([sys.executable, "-m", "fredset_cli", *map(str, args)], cwd=cwd, env=child_environment(),
                          capture_output=True, text=True, timeout=LAUNCH_LIMIT)


def torchrun(processes: int, *args, cwd: Path, module: bool = True) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m fredset_cli ARGS`` (or a script when not ``module``)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    return subprocess.run(launcher + (["-m", "fredset_cli"] if module else []) + [str(a) for a in args], cwd=cwd,
                          env=child_environment(), capture_output=True, text=True, timeout=LAUNCH_LIMIT)


def assert_same_distillation(mine: Path, reference: Path) -> None:
    ours, theirs = load(mine), load(reference)
    assert torch.equal(ours.masks, theirs.masks) and ours.counts == theirs.counts
    for block, expected in zip(ours.coefficients, theirs.coefficients):
        torch.testing.assert_close(block, expected, rtol=RTOL, atol=ATOL)
    assert ours.provenance["final_loss"] == pytest.approx(theirs.provenance["final_loss"], rel=1e-6)


def checkpoint_arrays(path: Path) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}

    def keep(name: str, item) -> None:
        if isinstance(item, h5py.Dataset):
            arrays[name] = item[()]

    with h5py.File(path, "r") as handle:
        handle.visititems(keep)
    arrays.pop("state")  # holds wall-clock seconds
    return arrays


# -- DM over several processes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("processes, extra", [
    (2, []),                                              # one micro-batch: one process takes the batched loss
    (3, ["--instances", "30", "--k", "16", "--seed", "2"]),  # larger than a micro-batch: the per-class path
])
def test_dm_over_several_processes_writes_what_one_process_writes(toy, tmp_path, processes, extra):
    options = ["--dataset", toy, *DISTILL, "--iterations", 3, *extra]
    single = fredset("distill", *options, "--out", tmp_path / "one.fredset", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    (tmp_path / "many").mkdir()
    job = torchrun(processes, "distill", *options, "--out", "many/x.fredset", cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert_same_distillation(tmp_path / "many" / "x.fredset", tmp_path / "one.fredset")
    # rank 0 alone prints and writes: one result line, one progress report, one file and its checkpoint
    assert job.stdout.count("wrote many/x.fredset") == 1 and len(job.stdout.strip().splitlines()) == 1
    assert job.stderr.count("distilling  3/3 it  100%") == 1 and "error" not in job.stderr
    assert sorted(path.name for path in (tmp_path / "many").iterdir()) == ["x.fredset", "x.fredset.ckpt"]
    ours, theirs = checkpoint_arrays(tmp_path / "many" / "x.fredset.ckpt"), checkpoint_arrays(tmp_path / "one.fredset.ckpt")
    assert ours.keys() == theirs.keys()  # the whole set, momentum buffers and the generator, gathered by rank 0
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("processes, extra", [
    (2, ["--ipc", 10, "--k", 256]),                                           # 10 outer steps, 9 inner trainings
    (3, ["--parameterization", "pixel", "--ipc", 1, "--dsa", "color_crop"]),  # one outer step, siamese DSA
])
def test_dc_over_several_processes_writes_what_one_process_writes(toy, tmp_path, processes, extra):
    options = ["--dataset", toy, *DISTILL, "--objective", "dc", "--iterations", 1, *extra]
    single = fredset("distill", *options, "--out", "one.fredset", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    job = torchrun(processes, "distill", *options, "--out", "many.fredset", cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert_same_distillation(tmp_path / "many.fredset", tmp_path / "one.fredset")


def test_a_rank_replays_every_dc_draw_and_computes_its_own_classes_gradients(toy):
    real = load_dataset(str(toy))

    def gradients(context):
        generator = torch.Generator().manual_seed(0)
        synset = init_frequency_synset(real, 1, 16, generator=generator)
        objective = GradientMatching(real, outer=1, inner=1, model="convnetd1", batch_real=8, dsa=DSA())
        net = fresh_network("convnetd1", 1, 3, (16, 16), torch.Generator().manual_seed(5), "cpu")
        if context is None:
            objective.loss(synset, net, generator).backward()
        else:
            objective.distribute(context)
            objective._backward_owned_classes(synset, net, generator)
        return [None if p.grad is None else p.grad.clone() for p in synset.parameters()], generator.get_state()

    whole, state = gradients(None)
    for rank in range(2):
        mine, rank_state = gradients(Context(rank=rank, world_size=2))
        assert torch.equal(rank_state, state)
        for label in range(3):
            if label % 2 == rank:
                torch.testing.assert_close(mine[label], whole[label], rtol=RTOL, atol=ATOL)
            else:  # the whole set is decoded at once (as one process does), so others' classes get zeros
                assert not mine[label].any()


# -- TM over several processes ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def experts(toy, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("experts") / "buffer"
    train_experts(load_dataset(str(toy)), directory, experts=2, epochs=4, model="convnetd1", batch_size=16)
    return directory


def torchrun_script(processes: int, script: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    return torchrun(processes, script, *args, cwd=cwd, module=False)


@pytest.mark.parametrize("processes, batch_syn, checkpoint_steps", [
    (2, 0, False),  # the whole set (9 images per step) split 5 + 4, the whole graph kept
    (2, 1, True),   # one image per step: one rank has none (it still takes part), steps recomputed
    (3, 5, False),  # 5 images over 3 ranks: 1 + 2 + 2
])
def test_tm_meta_gradients_over_several_processes_equal_one_process(toy, experts, tmp_path, processes, batch_syn,
                                                                     checkpoint_steps):
    expected = tm_gradients(str(toy), str(experts), batch_syn, checkpoint_steps)
    job = torchrun_script(processes, TESTS / "tm_gradients.py", toy, experts, batch_syn, int(checkpoint_steps),
                          tmp_path / "grads.pt", cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    found = torch.load(tmp_path / "grads.pt")
    assert found.keys() == expected.keys()
    assert float(expected["syn_lr"]) != 0 and any(float(value.abs().max()) > 0 for name, value in expected.items()
                                                  if name.startswith("coefficients/"))
    for name in expected:
        scale = float(expected[name].abs().max())  # small entries are sums that cancel: an absolute part too
        torch.testing.assert_close(found[name], expected[name], rtol=RTOL, atol=RTOL * scale, msg=name)


def test_tm_over_two_processes_and_resumed_equals_one_process(toy, experts, tmp_path):
    options = ["--dataset", toy, *DISTILL, "--objective", "tm", "--buffer", experts, "--syn-steps", 3,
               "--max-start-epoch", 2, "--lr-lr", 1e-5]
    single = fredset("distill", *options, "--iterations", 3, "--out", "one.fredset", cwd=tmp_path)
    part = torchrun(2, "distill", *options, "--iterations", 2, "--out", "part.fredset", cwd=tmp_path)
    assert single.returncode == 0 and part.returncode == 0, single.stderr + part.stderr
    resumed = torchrun(2, "distill", *options, "--iterations", 3, "--resume", "--checkpoint", "part.fredset.ckpt",
                       "--out", "resumed.fredset", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    ours, theirs = load(tmp_path / "resumed.fredset"), load(tmp_path / "one.fredset")
    assert torch.equal(ours.masks, theirs.masks) and ours.counts == theirs.counts
    scale = max(float(block.abs().max()) for block in theirs.coefficients)
    for block, expected in zip(ours.coefficients, theirs.coefficients):
        torch.testing.assert_close(block, expected, rtol=0, atol=1e-5 * scale)
    assert ours.provenance["iterations"] == 3
    assert ours.provenance["recommended_lr"] == pytest.approx(theirs.provenance["recommended_lr"], rel=1e-6)
    assert ours.provenance["final_loss"] == pytest.approx(theirs.provenance["final_loss"], rel=1e-5)


def test_shares_of_a_batch_cover_it_once():
    for count in (0, 1, 5, 9):
        for world_size in (1, 2, 3):
            shares = [owned_rows(count, Context(rank=rank, world_size=world_size)) for rank in range(world_size)]
            covered = [row for share in shares for row in range(count)[share]]
            assert covered == list(range(count))
            assert max(len(range(count)[share]) for share in shares) - min(
                len(range(count)[share]) for share in shares) <= 1


# -- expert buffers ----------------------------------------------------------------------------------------------

def test_buffer_over_two_processes_writes_the_experts_one_process_writes(toy, tmp_path):
    options = ["--dataset", toy, "--experts", 3, "--epochs", 2, "--model", "convnetd1", "--batch-size", 16,
               "--device", "cpu", "--no-test"]
    single = fredset("buffer", *options, "--out", "one", cwd=tmp_path)
    job = torchrun(2, "buffer", *options, "--out", "two", cwd=tmp_path)
    assert single.returncode == 0 and job.returncode == 0, single.stderr + job.stderr
    assert "trained 3 expert(s)" in job.stdout and len(job.stdout.strip().splitlines()) == 1  # rank 0 reports all
    ours, theirs = ExpertBuffer(tmp_path / "two"), ExpertBuffer(tmp_path / "one")
    assert list(ours.experts) == list(theirs.experts) == [0, 1, 2]
    for expert in range(3):
        for epoch in ours.epochs:
            for mine, expected in zip(ours.load(expert, epoch), theirs.load(expert, epoch)):
                assert torch.equal(mine, expected)
    assert not list((tmp_path / "two").glob("*.lock"))


def test_a_checkpoint_of_one_process_resumes_over_two(toy, tmp_path):
    options = ["--dataset", toy, *DISTILL, "--parameterization", "pixel", "--ipc", 2]
    whole = fredset("distill", *options, "--iterations", 4, "--out", "whole.fredset", cwd=tmp_path)
    part = fredset("distill", *options, "--iterations", 2, "--out", "part.fredset", cwd=tmp_path)
    assert whole.returncode == 0 and part.returncode == 0, whole.stderr + part.stderr
    job = torchrun(2, "distill", *options, "--iterations", 4, "--resume", "--checkpoint", "part.fredset.ckpt",
                   "--out", "resumed.fredset", cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert_same_distillation(tmp_path / "resumed.fredset", tmp_path / "whole.fredset")
    assert load(tmp_path / "resumed.fredset").provenance["iterations"] == 4


def test_evaluate_over_two_processes_reports_what_one_process_reports(toy, tmp_path):
    made = fredset("distill", "--dataset", toy, *DISTILL, "--iterations", 1, "--out", "x.fredset", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    options = ["evaluate", "x.fredset", "--dataset", toy, "--runs", 3, "--epochs", 2, "--device", "cpu", "--json",
               "--corruptions", "gaussian_noise", "--baseline", "raw"]
    single = fredset(*options, cwd=tmp_path)
    job = torchrun(2, *options, cwd=tmp_path)
    assert single.returncode == 0 and job.returncode == 0, single.stderr + job.stderr
    ours, theirs = json.loads(job.stdout), json.loads(single.stdout)  # rank 0 alone printed: one JSON document
    assert without_seconds(ours) == without_seconds(theirs)
    assert len(ours["results"]["convnet"]["accuracies"]) == 3 and "gaussian_noise" in ours["corruptions"]["families"]
    assert len(ours["baselines"]["raw"]["results"]["convnet"]["accuracies"]) == 3


def without_seconds(report):
    if isinstance(report, dict):
        return {key: without_seconds(value) for key, value in report.items() if key != "seconds"}
    return [without_seconds(value) for value in report] if isinstance(report, list) else report


# -- failures ----------------------------------------------------------------------------------------------------

FAILING = """
import os, sys, time
from fredset.distill.objectives import DistributionMatching
from fredset_cli.main import cli

calls = []
original = DistributionMatching._backward_owned_classes

def sometimes(self, synset, generator):
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 2:
        if sys.argv[1] == "hang":
            time.sleep(600)
        raise RuntimeError("injected failure on this rank")
    return original(self, synset, generator)

DistributionMatching._backward_owned_classes = sometimes
cli(sys.argv[2:], prog_name="fredset")
"""


def test_a_rank_that_raises_ends_the_job_with_one_line(toy, tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    started = time.monotonic()
    job = torchrun(2, script, "raise", "distill", "--dataset", toy, *DISTILL, "--iterations", 5,
                   "--out", "x.fredset", cwd=tmp_path, module=False)
    assert time.monotonic() - started < 60
    assert job.returncode != 0
    ours = [line for line in job.stderr.splitlines() if line.startswith("error")]
    assert "error (rank 1): RuntimeError: injected failure on this rank" in ours
    # rank 0 either saw its peer go (one line of its own) or was stopped by torchrun first
    assert len(ours) <= 2 and all(line.startswith("error (rank 0): ") for line in ours if "rank 1" not in line)
    assert "fredset/distill" not in job.stderr  # no worker traceback (torchrun prints its own summary)
    assert not (tmp_path / "x.fredset").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_rank_that_hangs_makes_the_others_time_out(toy, tmp_path):
    """Launched without torchrun (which would stop the job when a rank exits), so only the timeout can end it."""
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    port = str(free_port())
    ranks = []
    for rank in range(2):
        environment = child_environment(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                        MASTER_PORT=port, FREDSET_DIST_TIMEOUT="5")
        ranks.append(subprocess.Popen([sys.executable, str(script), "hang", "distill", "--dataset", str(toy), *DISTILL,
                                       "--iterations", "5", "--out", "x.fredset"], cwd=tmp_path, env=environment,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        started = time.monotonic()
        out, err = ranks[0].communicate(timeout=LAUNCH_LIMIT)
        assert time.monotonic() - started < 60
    finally:
        for process in ranks:
            process.kill()
            process.communicate()
    assert ranks[0].returncode == 1
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error (rank 0): RuntimeError: "), err
    assert "timed out" in errors[0].lower() and "Traceback" not in err
    assert not (tmp_path / "x.fredset").exists()


# -- one process: the code path of before --------------------------------------------------------------------------

@pytest.mark.parametrize("world_size", [None, "1"])
def test_one_process_never_joins_a_process_group(toy, tmp_path, monkeypatch, world_size):
    for name in DIST_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if world_size is not None:
        monkeypatch.setenv("WORLD_SIZE", world_size)

    def refuse(*args, **kwargs):
        raise AssertionError("a single process joined a process group")

    monkeypatch.setattr(torch.distributed, "init_process_group", refuse)
    monkeypatch.setattr(torch.distributed, "new_group", refuse)
    result = CliRunner().invoke(cli, ["distill", "--dataset", str(toy), *DISTILL, "--iterations", "1",
                                      "--out", str(tmp_path / "x.fredset")])
    assert result.exit_code == 0, result.output
    assert not torch.distributed.is_initialized()
    assert init_from_environment("cpu") == Context()


def test_an_objective_that_cannot_be_sharded_refuses_several_processes():
    class Serial(Objective):
        name = "serial"

    Serial.check_distributed(Context())  # one process: fine
    with pytest.raises(FredsetError, match="--objective serial is not distributed yet"):
        Serial.check_distributed(Context(rank=0, world_size=2))
    for objective in (DistributionMatching, GradientMatching):
        objective.check_distributed(Context(rank=0, world_size=2))


def test_context_from_the_environment(monkeypatch):
    assert Context.from_environment({}) == Context() and not Context().distributed
    assert Context.from_environment({"WORLD_SIZE": "1", "RANK": "5"}) == Context()
    context = Context.from_environment({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (context.rank, context.world_size, context.local_rank, context.is_main) == (2, 4, 0, False)
    for environment, needle in [({"WORLD_SIZE": "2"}, "RANK is not set"), ({"WORLD_SIZE": "x"}, "integer"),
                                ({"WORLD_SIZE": "2", "RANK": "2"}, "outside 0..1"), ({"WORLD_SIZE": "0"}, "at least 1")]:
        with pytest.raises(FredsetError, match=needle):
            Context.from_environment(environment)
    assert timeout({"FREDSET_DIST_TIMEOUT": "2.5"}).total_seconds() == 2.5
    with pytest.raises(FredsetError, match="FREDSET_DIST_TIMEOUT"):
        timeout({"FREDSET_DIST_TIMEOUT": "-1"})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(FredsetError, match="cuda:1 names one device"):
        init_from_environment("cuda:1")
    with pytest.raises(FredsetError, match="cpu \\(gloo\\) or cuda"):
        init_from_environment("meta")


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_every_class_has_one_owner(world_size):
    owners = [owned_classes(10, Context(rank=rank, world_size=world_size)) for rank in range(world_size)]
    assert sorted(label for mine in owners for label in mine) == list(range(10))


def test_a_rank_replays_every_draw_and_computes_its_own_classes_gradients(toy):
    """In one process, without collectives: each rank's gradients are the whole loss's for its classes, and its
    generator ends where the single-process run's does."""
    real = load_dataset(str(toy))

    def gradients(context, pixel=False):
        generator = torch.Generator().manual_seed(0)
        synset = (init_pixel_synset(real, 2, generator=generator) if pixel
                  else init_frequency_synset(real, 1, 16, generator=generator))
        objective = DistributionMatching(real, model="convnetd1", batch_real=8, dsa=DSA())
        if context is None:
            objective._backward_per_class(synset, generator)
        else:
            objective.distribute(context)
            objective._backward_owned_classes(synset, generator)
        grads = [None if p.grad is None else p.grad.clone() for p in synset.parameters()]
        return grads, generator.get_state()

    for pixel in (False, True):
        whole, state = gradients(None, pixel)
        for rank in range(2):
            mine, rank_state = gradients(Context(rank=rank, world_size=2), pixel)
            assert torch.equal(rank_state, state)
            if pixel:  # one tensor: this rank's classes' rows
                rows = torch.cat([torch.arange(2 * c, 2 * c + 2) for c in owned_classes(3, Context(rank, 2))])
                torch.testing.assert_close(mine[0][rows], whole[0][rows], rtol=RTOL, atol=ATOL)
            else:
                for label in range(3):
                    if label % 2 == rank:
                        torch.testing.assert_close(mine[label], whole[label], rtol=RTOL, atol=ATOL)
                    else:
                        assert mine[label] is None


def test_sample_indices_are_the_draws_of_sample(toy):
    real = load_dataset(str(toy))
    for count in (5, 80):  # without and with replacement
        first, second = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        images = real.sample(1, count, generator=first)
        indices = real.sample_indices(1, count, generator=second)
        assert torch.equal(images, real.images[indices]) and torch.equal(first.get_state(), second.get_state())
