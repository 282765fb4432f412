"""TM, trajectory matching: the unrolled update, its two ways of differentiating, the learned step size,
defaults, buffer checks, resume and the command line."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from fredset import FredDataset, FredsetError, load
from fredset.data import load_dataset
from fredset.data.realdata import RealData
from fredset.augment import DSA
from fredset.experts import ExpertBuffer, train_experts
from fredset.distill.loop import DistillConfig, distill
from fredset.distill.objectives import TMOptions, TrajectoryMatching
from fredset.distill.objectives.tm import SYN_LR_MIN, tm_defaults
from fredset.distill.synset import init_frequency_synset
from fredset.models import build_model
from fredset_cli.main import cli

SIZE = (12, 12)


@pytest.fixture(scope="module")
def real() -> RealData:
    """Fashion-MNIST-like toy data: 3 classes of 12x12 images whose class shows in their brightness."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    images = torch.randn(90, 1, *SIZE, generator=generator) * 0.5 + (labels.float() - 1).view(-1, 1, 1, 1)
    return RealData("toy-tensors", images, labels, ["a", "b", "c"], (0.5,), (0.25,), {"dataset": "toy", "split": "train"})


@pytest.fixture(scope="module")
def buffer_dir(real, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tm") / "buffer"
    train_experts(real, directory, experts=2, epochs=4, batch_size=16)
    return directory


@pytest.fixture(scope="module")
def buffer(buffer_dir) -> ExpertBuffer:
    return ExpertBuffer(buffer_dir)


def objective(buffer, **options) -> TrajectoryMatching:
    settings = dict(syn_steps=2, max_start_epoch=2, lr_lr=1e-5, lr_teacher=0.01, batch_syn=0)
    settings.update(options)
    return TrajectoryMatching(buffer, **settings)


def synthetic(real, seed=0):
    return init_frequency_synset(real, 1, 16, generator=torch.Generator().manual_seed(seed))  # 9 per class


def test_unrolled_update_equals_hand_written_sgd(real, buffer):
    """Two steps of the functional unroll == two plain SGD steps of an nn.Module on the same batches."""
    tm = objective(buffer, batch_syn=10, lr_teacher=0.05)
    images = torch.randn(20, 1, *SIZE, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(20) % 3
    plan = tm.plan(20, SIZE, torch.Generator().manual_seed(2))
    assert [len(step.indices) for step in plan] == [10, 10]
    assert set(torch.cat([step.indices for step in plan]).tolist()) == set(range(20))  # one permutation
    start = buffer.load(0, 1)
    unrolled = tm.unroll(start, images, labels, plan)

    net = build_model("convnet", 1, 3, SIZE)
    with torch.no_grad():
        for parameter, value in zip(net.parameters(), start):
            parameter.copy_(value)
    for step in plan:
        net.zero_grad()
        F.cross_entropy(net(images[step.indices]), labels[step.indices]).backward()
        with torch.no_grad():
            for parameter in net.parameters():
                parameter -= 0.05 * parameter.grad
    for got, expected in zip(unrolled, net.parameters()):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert unrolled[0].grad_fn is not None  # differentiable: the graph reaches syn_lr and the images


def test_checkpointed_steps_give_the_same_gradients(real, buffer):
    """Recomputing steps in the backward pass == keeping the whole unrolled graph."""
    results = []
    for checkpoint_steps in (False, True):
        tm = objective(buffer, syn_steps=3, batch_syn=12, dsa=DSA(align_corners=True),
                       checkpoint_steps=checkpoint_steps)
        synset = synthetic(real)
        optimizer = torch.optim.SGD(synset.parameters(), lr=0.0)  # lr 0: we only look at the gradients
        tm.lr_optimizer.param_groups[0]["lr"] = 0.0
        loss = tm.iteration(synset, optimizer, torch.Generator().manual_seed(3))
        results.append((loss, [p.grad.clone() for p in synset.parameters()], tm.syn_lr.grad.clone()))
    (loss_full, grads_full, lr_full), (loss_ckpt, grads_ckpt, lr_ckpt) = results
    assert loss_full == pytest.approx(loss_ckpt, rel=1e-5)
    for full, ckpt in zip(grads_full, grads_ckpt):
        assert float(full.abs().max()) > 0
        torch.testing.assert_close(ckpt, full, rtol=1e-3, atol=1e-6 * float(full.abs().max()))
    torch.testing.assert_close(lr_ckpt, lr_full, rtol=1e-3, atol=0)


def test_matching_loss_is_the_normalised_distance(buffer):
    tm = objective(buffer)
    start = [torch.zeros(2), torch.zeros(3)]
    target = [torch.ones(2), torch.ones(3)]  # ||start - target||^2 = 5
    end = [torch.full((2,), 0.5), torch.ones(3)]  # ||end - target||^2 = 0.5
    assert float(tm.matching_loss(end, start, target)) == pytest.approx(0.1)


def test_tm_lowers_its_loss(buffer_dir, real):
    """A few iterations lower the loss of a fixed expert segment and batch plan."""
    tm = objective(ExpertBuffer(buffer_dir), syn_steps=3, lr_lr=0.0)
    synset = synthetic(real)

    def fixed_loss():
        generator = torch.Generator().manual_seed(42)
        start, target = tm.sample_segment(generator)
        images = synset.decode().detach()
        plan = tm.plan(len(images), SIZE, generator)
        end = tm.unroll(start, images, synset.labels, plan, create_graph=False)
        return float(tm.matching_loss(end, start, target).detach())

    before = fixed_loss()
    optimizer = torch.optim.SGD(synset.parameters(), lr=1e4, momentum=0.5)
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        tm.iteration(synset, optimizer, generator)
    assert fixed_loss() < before


def test_syn_lr_is_learned_clipped_and_stored(real, buffer_dir, tmp_path):
    config = DistillConfig(dataset="toy-tensors", objective="tm", ipc=1, k=16, iterations=2, lr=1e4,
                           options=dict(buffer=str(buffer_dir), syn_steps=2, max_start_epoch=2, lr_lr=1e-4))
    artifact = distill(config, real)
    learned = artifact.provenance["recommended_lr"]
    assert learned != 0.01 and learned >= SYN_LR_MIN  # moved by its own optimiser
    # A step that would take syn_lr below the floor (here: momentum carried from a huge earlier gradient)
    # leaves it on the floor.
    tm = objective(ExpertBuffer(buffer_dir), lr_lr=1e-4)
    tm.lr_optimizer.state[tm.syn_lr]["momentum_buffer"] = torch.tensor(1e6)
    synset = synthetic(real)
    tm.iteration(synset, torch.optim.SGD(synset.parameters(), lr=1e4), torch.Generator().manual_seed(0))
    assert tm.recommended_lr() == pytest.approx(SYN_LR_MIN)
    # Stored in the file; FredDataset exposes it and evaluate uses it by default.
    from fredset import save

    path = tmp_path / "tm.fredset"
    save(artifact, path)
    assert load(path).provenance["recommended_lr"] == learned
    assert FredDataset(path).recommended_lr == learned


def test_evaluate_trains_with_the_learned_lr(tmp_path, npz_toy):
    train = load_dataset(npz_toy, split="train")
    config = DistillConfig(dataset=train.name, objective="tm", ipc=1, k=16, iterations=1, lr=1e4,
                           options=TMOptions(buffer=str(npz_buffer(train, tmp_path)), syn_steps=1, max_start_epoch=1,
                                             lr_lr=1e-4))
    from fredset import save

    artifact = distill(config, train)
    save(artifact, tmp_path / "tm.fredset")
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "tm.fredset"), "--dataset", str(npz_toy),
                                      "--runs", "1", "--epochs", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["protocol"]["lr"] == artifact.provenance["recommended_lr"]


def npz_buffer(train, tmp_path) -> Path:
    directory = tmp_path / "npz-buffer"
    train_experts(train, directory, experts=1, epochs=2, batch_size=16)
    return directory


@pytest.fixture
def npz_toy(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "toy.npz"
    labels = np.arange(60) % 3
    pixels = (rng.integers(0, 120, (60, 12, 12)) + 60 * labels[:, None, None]).astype(np.uint8)
    np.savez(path, train_images=pixels, train_labels=labels, test_images=pixels[:30], test_labels=labels[:30])
    return path


def test_resume_continues_and_refuses_another_buffer(real, buffer_dir, tmp_path):
    options = TMOptions(buffer=str(buffer_dir), syn_steps=2, max_start_epoch=2)
    config = DistillConfig(dataset="toy-tensors", objective="tm", ipc=1, k=16, iterations=2, lr=1e4, options=options)
    checkpoint = tmp_path / "run.ckpt"
    distill(config, real, checkpoint=checkpoint)
    longer = dataclasses.replace(config, iterations=3)
    resumed = distill(longer, real, checkpoint=checkpoint, resume=True)
    straight = distill(longer, real)
    assert all(torch.equal(a, b) for a, b in zip(resumed.coefficients, straight.coefficients))
    assert resumed.provenance["recommended_lr"] == straight.provenance["recommended_lr"]
    fingerprint = resumed.provenance["hyperparameters"]["buffer"]["fingerprint"]
    assert fingerprint == ExpertBuffer(buffer_dir).fingerprint

    grown = tmp_path / "grown"  # the same path now holds a buffer with one more expert
    shutil.copytree(buffer_dir, grown)
    on_grown = dataclasses.replace(options, buffer=str(grown))
    distill(dataclasses.replace(config, options=on_grown), real, checkpoint=tmp_path / "g.ckpt")
    train_experts(real, grown, experts=3, epochs=4, batch_size=16)
    with pytest.raises(FredsetError, match="another expert buffer"):
        distill(dataclasses.replace(longer, options=on_grown), real, checkpoint=tmp_path / "g.ckpt", resume=True)


def test_defaults_follow_the_reference_table(real, buffer_dir):
    assert tm_defaults("fashion-mnist", 1) == {"syn_steps": 50, "max_start_epoch": 5, "lr_lr": 1e-7,
                                                "lr_teacher": 0.01, "expert_epochs": 2,
                                                "defaults_from": "fashion-mnist ipc 1"}
    assert tm_defaults("fashion-mnist", 10)["syn_steps"] == 60
    assert tm_defaults("cifar10", 50)["lr_teacher"] == 1e-3
    assert tm_defaults("cifar100", 2)["max_start_epoch"] == 15  # the row of the largest ipc below
    assert tm_defaults("my-folder", 1)["defaults_from"] == "cifar10 ipc 1"
    run = DistillConfig(dataset="toy-tensors", objective="tm",
                        options=dict(buffer=str(buffer_dir), max_start_epoch=2)).resolve(real)  # no row: CIFAR-10's
    resolved, options = run.config, run.config.options
    assert (resolved.lr, resolved.k, options.syn_steps, options.lr_lr, options.lr_teacher, options.expert_epochs,
            options.batch_syn, options.checkpoint_steps, resolved.precision) == (
        1e8, 9, 50, 1e-7, 0.01, 2, 0, False, "fp32")  # k: H*W/16, 12x12 has no room for the reference k 64
    assert run.prepared.directory == buffer_dir and len(run.prepared) == len(ExpertBuffer(buffer_dir))
    with pytest.raises(FredsetError, match="does not fit fashion-mnist"):  # 12x12 experts, 28x28 data
        DistillConfig(dataset="fashion-mnist", objective="tm", options={"buffer": str(buffer_dir)}).resolve(
            load_dataset("fashion-mnist"))
    with pytest.raises(FredsetError, match="--syn-steps only applies to --objective tm"):
        DistillConfig(dataset="toy", objective="dm", k=16, options={"syn_steps": 3}).resolve(real)
    with pytest.raises(FredsetError, match="--no-such-option does not apply to --objective tm"):
        DistillConfig(dataset="toy", objective="tm", options={"no_such_option": 3}).resolve(real)
    with pytest.raises(FredsetError, match="--syn-steps must be >= 1"):
        DistillConfig(dataset="toy", objective="tm", options={"syn_steps": 0}).resolve(real)


def test_buffer_must_hold_the_needed_snapshots(real, buffer):
    with pytest.raises(FredsetError, match="needs expert snapshots 0..5"):
        objective(buffer, max_start_epoch=4)  # the buffer keeps epochs 0..4


def test_tm_from_the_command_line(buffer_dir, npz_toy, tmp_path):
    train = load_dataset(npz_toy, split="train")
    buffer = npz_buffer(train, tmp_path)
    out = tmp_path / "tm.fredset"
    result = CliRunner().invoke(cli, ["distill", "--dataset", str(npz_toy), "--objective", "tm", "--buffer",
                                      str(buffer), "--k", "16", "--iterations", "2", "--syn-steps", "2",
                                      "--max-start-epoch", "1", "--lr", "1e4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    provenance = load(out).provenance
    assert provenance["objective"] == "tm" and provenance["recommended_lr"] > 0
    assert provenance["hyperparameters"]["buffer"]["fingerprint"] == ExpertBuffer(buffer).fingerprint
    shown = CliRunner().invoke(cli, ["inspect", str(out)])
    assert "recommended lr" in shown.output and "expert buffer   1 experts of toy" in shown.output
    missing = CliRunner().invoke(cli, ["distill", "--dataset", str(npz_toy), "--objective", "tm", "--k", "16",
                                       "--out", str(tmp_path / "x.fredset")])
    assert missing.exit_code == 2 and "needs --buffer" in missing.output
    wrong = CliRunner().invoke(cli, ["distill", "--dataset", str(npz_toy), "--syn-steps", "3", "--k", "16",
                                     "--out", str(tmp_path / "y.fredset")])
    assert wrong.exit_code == 2 and "only applies to --objective tm" in wrong.output
    other = CliRunner().invoke(cli, ["distill", "--dataset", str(npz_toy), "--objective", "tm", "--buffer",
                                     str(buffer_dir), "--k", "16", "--out", str(tmp_path / "z.fredset")])
    assert other.output.count("\n") == 1  # one line, nothing before it
    assert other.exit_code == 2 and "trained on toy-tensors, not toy" in other.output
    assert not (tmp_path / "z.fredset").exists()


def test_a_tm_run_opens_its_buffer_once(npz_toy, tmp_path, monkeypatch):
    train = load_dataset(npz_toy, split="train")
    buffer = npz_buffer(train, tmp_path)
    opened = []
    original = ExpertBuffer.__init__

    def counting(self, directory):
        opened.append(directory)
        original(self, directory)

    monkeypatch.setattr(ExpertBuffer, "__init__", counting)
    result = CliRunner().invoke(cli, ["distill", "--dataset", str(npz_toy), "--objective", "tm", "--buffer",
                                      str(buffer), "--k", "16", "--iterations", "1", "--syn-steps", "1",
                                      "--max-start-epoch", "1", "--out", str(tmp_path / "once.fredset")])
    assert result.exit_code == 0, result.output
    assert len(opened) == 1
