"""Expert buffers for trajectory matching: training, reading back, resuming, locks, options, CLI, concurrency."""

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from fredset import FredsetError
from fredset.data import load_dataset
from fredset.augment import DSA, STRATEGY
from fredset.experts import ExpertBuffer, expert_path, train_experts, write_expert
from fredset.models import build_model, init_parameters
from fredset.training import test_accuracy as accuracy_of
from fredset_cli.main import cli

EPOCHS = 2
BATCH = 16
OPTIONS = dict(epochs=EPOCHS, batch_size=BATCH)


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    """48 train and 24 test 8x8 grey images, 3 classes, whose class shows in the mean brightness."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "toy.npz"

    def images(count):
        labels = np.arange(count) % 3
        pixels = rng.integers(0, 120, (count, 8, 8)) + 60 * labels[:, None, None]
        return pixels.astype(np.uint8), labels

    train_images, train_labels = images(48)
    test_images, test_labels = images(24)
    np.savez(path, train_images=train_images, train_labels=train_labels, test_images=test_images,
             test_labels=test_labels)
    return path


@pytest.fixture(scope="module")
def real(npz):
    return load_dataset(npz, split="train")


@pytest.fixture(scope="module")
def test_set(npz):
    return load_dataset(npz, split="test")


@pytest.fixture(scope="module")
def trained(real, test_set, tmp_path_factory):
    """A buffer of 2 experts x 2 epochs, all snapshots kept, test accuracy recorded; the epochs reported."""
    directory = tmp_path_factory.mktemp("buffer") / "experts"
    reported = []
    finished = train_experts(real, directory, experts=2, test=test_set,
                             on_epoch=lambda expert, epoch, loss: reported.append((expert, epoch, loss)), **OPTIONS)
    assert finished == [0, 1]
    return directory, reported


def copy_of(trained, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(trained[0], target)
    return target


def names_of(model):
    return [name for name, _ in model.named_parameters()]


def replay(real, index, epochs):
    """Expert ``index`` trained by hand from the documented recipe (seed 0)."""
    generator = torch.Generator().manual_seed(index)
    net = init_parameters(build_model("convnet", real.channels, real.num_classes, real.image_size), generator)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    augment = DSA(STRATEGY, align_corners=True)
    for _ in range(epochs):
        order = torch.randperm(len(real), generator=generator)
        for start in range(0, len(real), BATCH):
            index_batch = order[start:start + BATCH]
            batch = augment(real.images[index_batch], generator=generator, siamese=False)
            loss = F.cross_entropy(net(batch), real.labels[index_batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return [parameter.detach() for parameter in net.parameters()]


def test_snapshots_are_the_trained_parameters(trained, real, test_set):
    directory, reported = trained
    buffer = ExpertBuffer(directory)
    assert len(buffer) == 2 and buffer.experts == [0, 1] and buffer.epochs == [0, 1, 2]
    model = build_model("convnet", 1, 3, (8, 8))
    assert buffer.parameter_names == names_of(model)
    assert [(expert, epoch) for expert, epoch, _ in reported] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for expert in (0, 1):
        init = init_parameters(build_model("convnet", 1, 3, (8, 8)), torch.Generator().manual_seed(expert))
        loaded = buffer.load(expert, 0)
        assert all(a.dtype == torch.float32 and torch.equal(a, b) for a, b in zip(loaded, init.parameters()))
    for got, expected in zip(buffer.load(1, 2), replay(real, 1, 2)):
        torch.testing.assert_close(got, expected)
    assert not all(torch.equal(a, b) for a, b in zip(buffer.load(0, 1), buffer.load(0, 2)))
    meta = buffer.meta(0)
    assert meta["train_loss"] == pytest.approx([loss for expert, _, loss in reported if expert == 0], abs=1e-5)
    # the recorded test accuracy is that of the final snapshot (the network after the last epoch) on the test set;
    # expert 1's snapshots 0, 1 and 2 score differently (0.625, 0.833, 1.0), so another snapshot would show
    for expert in (0, 1):
        final = build_model("convnet", 1, 3, (8, 8))
        assert not list(final.buffers())  # the parameters are the whole network
        with torch.no_grad():
            for parameter, saved in zip(final.parameters(), buffer.load(expert, EPOCHS)):
                parameter.copy_(saved)
        assert buffer.meta(expert)["test_accuracy"] == round(
            accuracy_of(final.eval(), test_set.images, test_set.labels), 6)
    assert meta["test_dataset"] == {"name": test_set.name, "split": "test", "images": 24}
    manifest = buffer.manifest
    assert (manifest["lr"], manifest["batch_size"], manifest["dsa"], manifest["epochs"], manifest["keep_epochs"],
            manifest["dsa_align_corners"]) == (0.01, BATCH, STRATEGY, 2, 2, True)
    assert manifest["source"]["files"] and manifest["image_size"] == [8, 8]
    with pytest.raises(FredsetError, match="no snapshot 3"):
        buffer.load(0, 3)
    with pytest.raises(FredsetError, match="no finished expert 2"):
        buffer.load(2, 0)


def test_keep_epochs_keeps_only_the_first_snapshots(trained, real, tmp_path):
    finished = train_experts(real, tmp_path / "short", experts=1, keep_epochs=1, **OPTIONS)
    buffer = ExpertBuffer(tmp_path / "short")
    assert finished == [0] and buffer.epochs == [0, 1] and buffer.manifest["keep_epochs"] == 1
    full = ExpertBuffer(trained[0])
    for epoch in (0, 1):
        for a, b in zip(buffer.load(0, epoch), full.load(0, epoch)):
            torch.testing.assert_close(a, b)
    with h5py.File(expert_path(tmp_path / "short", 0), "r") as handle:
        assert handle["epochs"][()].tolist() == [0, 1]
        assert handle["parameters/classifier.weight"].shape == (2, 3, 128)
    assert len(buffer.meta(0)["train_loss"]) == EPOCHS  # all epochs trained, fewer kept
    with pytest.raises(FredsetError, match="no snapshot 2"):
        buffer.load(0, 2)


def test_resume_keeps_finished_experts_and_trains_the_rest(trained, real, tmp_path):
    directory = copy_of(trained, tmp_path)
    before = {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in directory.glob("expert_*.h5")}
    assert train_experts(real, directory, experts=3, **OPTIONS) == [2]
    after = {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in directory.glob("expert_*.h5")}
    assert {name: after[name] for name in before} == before and set(after) == set(before) | {"expert_00002.h5"}
    buffer = ExpertBuffer(directory)
    assert buffer.experts == [0, 1, 2] and buffer.manifest["experts"] == 3
    assert "test_accuracy" not in buffer.meta(2)
    assert train_experts(real, directory, experts=3, **OPTIONS) == []
    assert train_experts(real, directory, experts=2, **OPTIONS) == []
    assert ExpertBuffer(directory).manifest["experts"] == 3


def test_locks_stale_live_and_foreign(real, tmp_path):
    directory = tmp_path / "locked"
    directory.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    sleeper = subprocess.Popen(["sleep", "30"])
    host = socket.gethostname()
    try:
        locks = {1: {"host": host, "pid": dead.pid, "time": 0}, 2: {"host": host, "pid": sleeper.pid, "time": 0},
                 3: {"host": host + "-elsewhere", "pid": 1, "time": 0}}
        for index, holder in locks.items():
            (directory / f"expert_{index:05d}.lock").write_text(json.dumps(holder))
        held = {index: (directory / f"expert_{index:05d}.lock").read_bytes() for index in (2, 3)}
        assert train_experts(real, directory, experts=4, **OPTIONS) == [0, 1]  # 1: stale lock taken over
        assert not (directory / "expert_00001.lock").exists() and not (directory / "expert_00000.lock").exists()
        assert {index: (directory / f"expert_{index:05d}.lock").read_bytes() for index in (2, 3)} == held
        summary = ExpertBuffer(directory).summary()
        assert summary["finished"] == [0, 1] and summary["in_progress"] == [2, 3]
    finally:
        sleeper.kill()
        sleeper.wait()
    summary = ExpertBuffer(directory).summary()
    assert summary["in_progress"] == [3] and summary["stale_locks"] == [2]
    assert train_experts(real, directory, experts=4, **OPTIONS) == [2]  # its holder died; 3 is another host's
    assert ExpertBuffer(directory).experts == [0, 1, 2]


def test_interrupt_removes_the_lock_and_leaves_no_partial_file(trained, real, tmp_path):
    directory = copy_of(trained, tmp_path)

    def interrupt(expert, epoch, loss):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_experts(real, directory, experts=3, on_epoch=interrupt, **OPTIONS)
    assert sorted(path.name for path in directory.iterdir() if not path.name.startswith(".")) == [
        "buffer.json", "expert_00000.h5", "expert_00001.h5"]
    assert not [path for path in directory.iterdir() if path.name.endswith(".tmp")]
    assert train_experts(real, directory, experts=3, **OPTIONS) == [2]


def test_different_options_are_refused(trained, real, tmp_path):
    directory = copy_of(trained, tmp_path)
    with pytest.raises(FredsetError, match=r"was made with different options \(epochs, keep_epochs\)"):
        train_experts(real, directory, experts=3, epochs=3, batch_size=BATCH)
    with pytest.raises(FredsetError, match=r"different options \(seed\)"):
        train_experts(real, directory, experts=3, seed=1, **OPTIONS)
    with pytest.raises(FredsetError, match=r"different options \(dsa\)"):
        train_experts(real, directory, experts=3, dsa="none", **OPTIONS)
    assert sorted(path.name for path in directory.glob("expert_*")) == ["expert_00000.h5", "expert_00001.h5"]


@pytest.mark.parametrize("options, message", [
    (dict(experts=0), "experts must be"),
    (dict(epochs=0), "epochs must be"),
    (dict(keep_epochs=3), "keep_epochs .3. cannot exceed epochs"),
    (dict(keep_epochs=-1), "keep_epochs must be"),
    (dict(batch_size=0), "batch_size must be"),
    (dict(lr=0.0), "lr must be"),
    (dict(seed=-1), "seed must be"),
    (dict(model="lenet"), "unknown model"),
    (dict(dsa="crop_blur"), "unknown DSA family"),
    (dict(device="gpu0"), "device"),
])
def test_bad_options_raise_one_fredset_error(real, tmp_path, options, message):
    arguments = dict(experts=1, epochs=2, batch_size=BATCH)
    arguments.update(options)
    with pytest.raises(FredsetError, match=message):
        train_experts(real, tmp_path / "d", **arguments)


def test_directory_that_is_a_file_is_refused(real, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FredsetError, match="cannot create the buffer directory"):
        train_experts(real, tmp_path / "file", experts=1, **OPTIONS)


def test_expert_buffer_refuses_what_is_not_a_buffer(trained, tmp_path):
    with pytest.raises(FredsetError, match="no buffer.json"):
        ExpertBuffer(tmp_path)
    with pytest.raises(FredsetError, match="not a directory"):
        ExpertBuffer(tmp_path / "missing")
    directory = copy_of(trained, tmp_path)
    manifest = json.loads((directory / "buffer.json").read_text())
    (directory / "buffer.json").write_text(json.dumps({**manifest, "version": 2}))
    with pytest.raises(FredsetError, match="version 2 not understood"):
        ExpertBuffer(directory)
    (directory / "buffer.json").write_text("{not json")
    with pytest.raises(FredsetError, match="buffer.json: not valid JSON"):
        ExpertBuffer(directory)
    (directory / "buffer.json").write_text(json.dumps(manifest))
    ExpertBuffer(directory)
    expert_path(directory, 1).write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(FredsetError, match="expert_00001.h5: not a readable expert file"):
        ExpertBuffer(directory)
    names = manifest["parameter_names"]
    wrong = {epoch: [torch.zeros(2) for _ in names] for epoch in (0, 1, 2)}
    write_expert(directory, 1, wrong, names, {})
    with pytest.raises(FredsetError, match="expert_00001.h5: parameter features.0.weight is float32"):
        ExpertBuffer(directory)
    right = {epoch: [torch.zeros(shape) for shape in manifest["parameter_shapes"]] for epoch in (0, 1)}
    write_expert(directory, 1, right, names, {})
    with pytest.raises(FredsetError, match=r"expert_00001.h5: expert keeps snapshots \[0, 1\]"):
        ExpertBuffer(directory)


def test_write_expert_checks_its_snapshots(tmp_path):
    with pytest.raises(FredsetError, match="snapshot 1 does not have"):
        write_expert(tmp_path, 0, {0: [torch.zeros(2)], 1: [torch.zeros(3)]}, ["w"], {})
    with pytest.raises(FredsetError, match="no snapshot"):
        write_expert(tmp_path, 0, {}, ["w"], {})
    assert list(tmp_path.iterdir()) == []


def test_fingerprint_follows_its_definition(trained, real, tmp_path):
    directory = copy_of(trained, tmp_path)
    buffer = ExpertBuffer(directory)
    lines = sorted(f"{name} {hashlib.sha256((directory / name).read_bytes()).hexdigest()}\n"
                   for name in ("buffer.json", "expert_00000.h5", "expert_00001.h5"))
    assert buffer.fingerprint == hashlib.sha256("".join(lines).encode()).hexdigest()
    assert ExpertBuffer(trained[0]).fingerprint == buffer.fingerprint  # copies of the same files
    (directory / "expert_00007.lock").write_text("{}")  # locks and temporary files do not count
    assert ExpertBuffer(directory).fingerprint == buffer.fingerprint
    train_experts(real, directory, experts=3, **OPTIONS)
    assert ExpertBuffer(directory).fingerprint != buffer.fingerprint
    summary = ExpertBuffer(directory).summary()
    assert summary["experts_finished"] == 3 and summary["experts_asked"] == 3 and summary["keep_epochs"] == 2
    assert summary["experts"][0]["test_accuracy"] is not None and summary["experts"][2]["test_accuracy"] is None
    assert summary["bytes"] == sum((directory / name).stat().st_size for name in
                                   ("buffer.json", "expert_00000.h5", "expert_00001.h5", "expert_00002.h5"))
    json.dumps(summary)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_buffer_and_inspect(npz, tmp_path):
    directory = tmp_path / "cli-buffer"
    result = run("buffer", "--dataset", npz, "--experts", 2, "--epochs", 2, "--keep-epochs", 1, "--batch-size", BATCH,
                 "--device", "cpu", "--out", directory)
    assert result.exit_code == 0, result.output
    assert "trained 2 expert(s)" in result.stdout and "2/2 finished" in result.stdout
    assert "expert 1  2/2 epochs  100%" in result.stderr and "loss" in result.stderr
    buffer = ExpertBuffer(directory)
    assert buffer.experts == [0, 1] and buffer.epochs == [0, 1] and buffer.meta(0)["test_accuracy"] is not None

    result = run("inspect", directory, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["fingerprint"] == buffer.fingerprint and report["experts_finished"] == 2
    text = run("inspect", directory)
    assert text.exit_code == 0 and "expert buffer" in text.stdout and buffer.fingerprint in text.stdout

    again = run("buffer", "--dataset", npz, "--experts", 3, "--epochs", 2, "--keep-epochs", 1, "--batch-size", BATCH,
                "--device", "cpu", "--no-test", "--out", directory)
    assert again.exit_code == 0 and "trained 1 expert(s)" in again.stdout and "2 already there" in again.stdout

    refused = run("buffer", "--dataset", npz, "--experts", 3, "--epochs", 3, "--batch-size", BATCH, "--device", "cpu",
                  "--out", directory)
    assert refused.exit_code == 2 and refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: buffer ") and "different options" in lines[0]

    grid = run("inspect", directory, "--grid", tmp_path / "g.png")
    assert grid.exit_code == 2 and grid.stderr.startswith("error: ")


@pytest.mark.parametrize("content", [None, b"\x00not an h5 file"])
def test_cli_inspect_of_a_non_buffer_directory(tmp_path, trained, content):
    directory = tmp_path / "d"
    if content is None:
        directory.mkdir()
    else:
        directory = copy_of(trained, tmp_path)
        expert_path(directory, 0).write_bytes(content)
    result = run("inspect", directory, "--json")
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(directory) in lines[0]


WORKER = textwrap.dedent("""
    import json, sys
    import torch
    torch.set_num_threads(1)
    from fredset.data import load_dataset
    from fredset.experts import train_experts
    real = load_dataset(sys.argv[1], split="train")
    print(json.dumps(train_experts(real, sys.argv[2], experts=6, epochs=2, batch_size=16)))
""")


def test_two_processes_fill_one_buffer_together(npz, trained, tmp_path):
    directory = tmp_path / "shared"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(npz), str(directory)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(results[0] + results[1]) == list(range(6))  # every expert once, none twice
    buffer = ExpertBuffer(directory)
    assert buffer.experts == list(range(6))
    assert not list(directory.glob("*.lock")) and not list(directory.glob("*.tmp"))
    for expert in range(6):
        assert len(buffer.load(expert, 2)) == len(buffer.parameter_names)
    reference = ExpertBuffer(trained[0])  # the same options in this process: the same experts
    for expert in (0, 1):
        for a, b in zip(buffer.load(expert, 2), reference.load(expert, 2)):
            torch.testing.assert_close(a, b)
