"""Hostile but valid files: decode working memory is bounded and every path is exact; save keeps the
file's mode and cleans temporary files that killed writes left."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest
import scipy.fft
import torch
from click.testing import CliRunner

import fredset.dct as dct
from fredset import Artifact, FredDataset, FredsetError, load, save
from fredset.files import STALE_TEMPORARY_SECONDS, remove_stale_temporaries, write_atomically
from fredset.pictures import MAX_PICTURE_BYTES, class_grid, mask_grid
from fredset_cli.main import cli

from conftest import make_artifact

MiB = 2**20


def diagonal_artifact(side: int, counts=(1,), channels: int = 1, seed: int = 0) -> Artifact:
    """k = side coefficients on the diagonal of a side x side plane: every row and column is used, so
    the separable plane is the whole plane and the basis is k*H*W floats (4 GiB at 1024)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.arange(side) * side + torch.arange(side)
    return Artifact(coefficients=[torch.randn(n, channels, side, generator=generator) for n in counts],
                    masks=torch.stack([mask] * len(counts)), classes=[f"c{i}" for i in range(len(counts))],
                    image_size=(side, side), mean=(0.5,) * channels, std=(0.25,) * channels, dataset="hostile")


def reference(coefficients, masks, height, width) -> np.ndarray:
    """The definition, in float64 with scipy: scatter into a dense plane, then idctn(norm="ortho")."""
    decoded = []
    for block, mask in zip(coefficients, masks):
        plane = np.zeros((block.shape[0], block.shape[1], height * width))
        plane[..., np.asarray(mask)] = block.detach().double().numpy()
        decoded.append(scipy.fft.idctn(plane.reshape(*plane.shape[:2], height, width), axes=(-2, -1), norm="ortho"))
    return np.concatenate(decoded)


def numpy_peak(function):
    """(result, peak bytes numpy and Python allocated while ``function`` ran)."""
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def diagonal_1024(tmp_path_factory):
    artifact = diagonal_artifact(1024)
    path = tmp_path_factory.mktemp("hostile") / "diagonal.fredset"
    save(artifact, path)
    return artifact, path


# -- class 1: working memory ---------------------------------------------------------------------

def test_diagonal_1024_plans_the_cheap_bounded_way():
    artifact = diagonal_artifact(1024)
    plan = dct._plan(artifact.masks[0].numpy(), 1024, 1024, 1)
    assert plan.separable  # the basis would be 4 GiB and streams through memory: ~40x slower
    assert plan.working <= dct.WORKING_CHUNK_BYTES


def test_diagonal_1024_file_decodes_within_bounded_memory(diagonal_1024):
    artifact, path = diagonal_1024
    data = path.read_bytes()  # (reading a path, the reader asks for a max_file_bytes buffer it never touches)
    dataset, peak = numpy_peak(lambda: FredDataset(data, max_decoded_bytes=64 * MiB))
    output = 1024 * 1024 * 4
    assert peak < output + 48 * MiB, f"peak {peak / MiB:.1f} MiB"
    expected = reference(artifact.coefficients, artifact.masks, 1024, 1024)
    assert np.abs(dataset.images.numpy() - expected).max() < 1e-5


def test_diagonal_1024_peak_resident_size_in_a_fresh_process(diagonal_1024):
    _, path = diagonal_1024
    script = textwrap.dedent(f"""
        import resource, torch, fredset

        def status(field):
            with open("/proc/self/status") as stream:
                return next(int(line.split()[1]) for line in stream if line.startswith(field + ":"))

        torch.zeros(1) @ torch.zeros(1)  # first torch operation done before measuring
        with open("/proc/self/clear_refs", "w") as stream:  # resets the peak (VmHWM) to the current size
            stream.write("5")
        before = status("VmRSS")
        images = fredset.FredDataset({str(path)!r}, max_decoded_bytes=64 * 2**20).images
        print(status("VmHWM") - before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    grown = int(result.stdout.split()[0])
    assert grown < 160 * 1024, f"peak resident size grew by {grown} KiB (4 MiB of output)"


def test_diagonal_1024_small_limit_is_one_fredset_error(diagonal_1024):
    _, path = diagonal_1024
    with pytest.raises(FredsetError) as caught:  # 4 MiB of output fits; 32 MiB of intermediates do not
        FredDataset(path, max_decoded_bytes=8 * MiB)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)) and "max_decoded_bytes" in message
    assert "working memory" in message
    artifact = diagonal_artifact(1024)
    tracemalloc.start()  # refused before anything large is allocated
    try:
        with pytest.raises(FredsetError):
            artifact.decode(max_working_bytes=8 * MiB)
        assert tracemalloc.get_traced_memory()[1] < MiB
    finally:
        tracemalloc.stop()


def test_640_diagonal_peak_is_a_small_multiple_of_its_output():
    artifact = diagonal_artifact(640)
    images, peak = numpy_peak(artifact.decode)
    output = 640 * 640 * 4
    plan = dct._plan(artifact.masks[0].numpy(), 640, 640, 1)
    assert peak <= output + plan.working + MiB, (peak, plan.working)
    assert peak < 12 * output  # was 1.2 GB (750x)
    assert np.abs(images.numpy() - reference(artifact.coefficients, artifact.masks, 640, 640)).max() < 1e-5


def test_many_instances_are_chunked_and_the_peak_follows_the_plan(monkeypatch):
    monkeypatch.setattr(dct, "WORKING_CHUNK_BYTES", 4 * MiB)
    artifact = diagonal_artifact(300, counts=(7, 5), channels=2)
    plan = dct._plan(artifact.masks[0].numpy(), 300, 300, 14)
    assert plan.separable and 1 < plan.chunk < 14 and plan.working <= 4 * MiB
    images, peak = numpy_peak(artifact.decode)
    assert peak <= artifact.decoded_bytes + plan.working + MiB
    assert np.abs(images.numpy() - reference(artifact.coefficients, artifact.masks, 300, 300)).max() < 1e-5


def test_class_grid_decodes_only_what_it_shows(diagonal_1024, monkeypatch):
    artifact = diagonal_artifact(1024, counts=(3,), channels=2)
    shapes = []
    original = dct.decode_classes

    def spy(blocks, *args, **kwargs):
        shapes.extend(tuple(b.shape) for b in blocks)
        return original(blocks, *args, **kwargs)
    monkeypatch.setattr("fredset.pictures.decode_classes", spy)
    grid, peak = numpy_peak(lambda: class_grid(artifact, per_class=1))
    assert shapes == [(1, 1, 1024)] and grid.shape == (1026, 1026, 1)
    assert peak < 4 * 1024 * 1024 * 4 + 48 * MiB
    with pytest.raises(FredsetError, match="working memory"):
        class_grid(artifact, per_class=1, max_working_bytes=4 * MiB)


def test_class_grid_matches_the_full_decode():
    artifact = make_artifact(counts=(4, 1, 3), channels=3, size=(9, 7), k=20)
    grid = class_grid(artifact, per_class=2, scale=2)
    images = artifact.decode(pixel_space=True)
    starts = np.cumsum([0] + artifact.counts)
    for label, count in enumerate(artifact.counts):
        for column in range(min(count, 2)):
            picture = (images[starts[label] + column] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            top, left = 1 + label * 19, 1 + column * 15
            assert np.array_equal(grid[top:top + 18:2, left:left + 14:2], picture)


# -- every path is exact, chunked or not, in numpy, in torch and with autograd ----------------------

PATH_CASES = {
    # name: (height, width, mask maker, expected way)
    "separable, compact mask": (24, 20, lambda h, w: np.array([0, 1, 2, 20, 21, 40, 41, 43, 62, 81]), True),
    "basis, spread mask": (32, 32, lambda h, w: np.array([0, 300, 700, 1000]), False),
    "separable, large side (rows computed)": (300, 260, lambda h, w: np.arange(40) * w + np.arange(40) * 3, True),
    "basis, large side (rows computed)": (200, 300, lambda h, w: np.array([5, 300 * 199 + 2]), False),
}


@pytest.mark.parametrize("mode", ["numpy", "torch", "autograd"])
@pytest.mark.parametrize("chunk_bytes", [dct.WORKING_CHUNK_BYTES, 1])
@pytest.mark.parametrize("case", sorted(PATH_CASES))
def test_each_path_equals_the_reference_inverse_dct(case, chunk_bytes, mode, monkeypatch):
    height, width, make_mask, separable = PATH_CASES[case]
    monkeypatch.setattr(dct, "WORKING_CHUNK_BYTES", chunk_bytes)  # 1: one plane or one image row per chunk
    if mode == "torch":
        monkeypatch.setattr(dct, "_NUMPY_DTYPES", {})  # the torch path, as on a GPU
    mask = torch.from_numpy(make_mask(height, width).astype(np.int64))
    generator = torch.Generator().manual_seed(3)
    coefficients = [torch.randn(n, 2, len(mask), dtype=torch.float64, generator=generator) for n in (3, 2)]
    masks = torch.stack([mask, mask])
    plan = dct._plan(mask.numpy(), height, width, 6, 8, in_torch=mode != "numpy", differentiable=mode == "autograd")
    assert plan.separable == separable
    if chunk_bytes == 1 and mode != "autograd":
        assert plan.chunk == 1
    if mode == "autograd":
        coefficients = [c.requires_grad_() for c in coefficients]
    decoded = dct.decode_classes(coefficients, masks, height, width)
    expected = reference(coefficients, masks, height, width)
    assert np.abs(decoded.detach().numpy() - expected).max() < 1e-10
    if mode == "autograd":
        weights = torch.randn(decoded.shape, dtype=torch.float64, generator=generator)
        (decoded * weights).sum().backward()
        for block, grad_block in zip(coefficients, weights.split([3, 2])):  # the adjoint: the forward DCT
            expected_grad = scipy.fft.dctn(grad_block.numpy(), axes=(-2, -1), norm="ortho").reshape(
                *grad_block.shape[:2], -1)[..., mask.numpy()]
            assert np.abs(block.grad.numpy() - expected_grad).max() < 1e-10


def test_chunked_decode_gradient_is_correct(monkeypatch):
    monkeypatch.setattr(dct, "WORKING_CHUNK_BYTES", 1)
    coefficients = [torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)]
    masks = torch.tensor([[0, 3, 7, 12]])
    assert torch.autograd.gradcheck(lambda c: dct.decode_classes([c], masks, 4, 5), coefficients)


def test_large_side_rows_equal_the_cached_matrix():
    frequencies = np.array([0, 1, 17, 299])
    for dtype in (np.float32, np.float64):
        rows = dct._matrix_rows(300, frequencies).astype(dtype)
        assert np.array_equal(rows, dct._numpy_matrix(300, np.dtype(dtype))[frequencies])


def test_no_way_fits_is_refused_before_allocating():
    with pytest.raises(FredsetError, match="working memory.*max_decoded_bytes"):
        dct.decode_classes([torch.randn(2, 1, 3)], torch.tensor([[0, 5, 9]]), 4, 4, max_working_bytes=16)


@pytest.mark.parametrize("seed", range(6))
def test_plans_respect_the_chunk_bound_and_the_limit(seed):
    rng = np.random.default_rng(seed)
    height, width = (int(s) for s in rng.integers(1, 700, size=2))
    k = int(rng.integers(1, min(height * width, 5000) + 1))
    mask = np.sort(rng.choice(height * width, k, replace=False))
    planes = int(rng.integers(1, 2000))
    for limit in (dct.DEFAULT_MAX_WORKING_BYTES, 8 * MiB):
        try:
            plan = dct._plan(mask, height, width, planes, 4, limit)
        except FredsetError:
            assert limit < dct.DEFAULT_MAX_WORKING_BYTES
            continue
        assert plan.working <= limit
        smallest = dct._plan(mask, height, width, 1, 4, limit)
        assert plan.working <= max(dct.WORKING_CHUNK_BYTES, smallest.working)


# -- class 2: save keeps the mode and cleans stale temporary files --------------------------------

def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(value):
        os.umask(value)
    yield set_umask
    os.umask(previous)


def test_save_keeps_an_existing_files_mode(tmp_path, umask):
    umask(0o077)  # the mode of an existing file wins over the umask
    artifact = make_artifact()
    path = tmp_path / "shared.fredset"
    for mode in (0o644, 0o600, 0o664):
        save(artifact, path)
        os.chmod(path, mode)
        save(artifact, path)
        assert mode_of(path) == mode


@pytest.mark.parametrize("mask_bits", [0o022, 0o027, 0o002])
def test_a_new_file_gets_the_umask_default(tmp_path, umask, mask_bits):
    umask(mask_bits)
    path = tmp_path / "new.fredset"
    save(make_artifact(), path)
    assert mode_of(path) == 0o666 & ~mask_bits
    write_atomically(tmp_path / "new.bin", b"x")
    assert mode_of(tmp_path / "new.bin") == 0o666 & ~mask_bits


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def make_temporary(folder, name: str, age: float) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as stream:
        stream.write(b"partial")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return name


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    old = STALE_TEMPORARY_SECONDS + 60
    gone = dead_pid()
    stale = {make_temporary(tmp_path, f".data.fredset.{gone}.0badf00d.tmp", old),
             make_temporary(tmp_path, ".data.fredset.ab_12xyz.tmp", old)}  # mkstemp's name, earlier versions
    kept = {
        make_temporary(tmp_path, f".data.fredset.{gone}.1badf00d.tmp", 5),  # fresh: a writer still at work
        make_temporary(tmp_path, f".data.fredset.{os.getppid()}.2badf00d.tmp", old),  # its writer is alive
        make_temporary(tmp_path, ".data.fredset.cd_34xyz.tmp", 5),
        make_temporary(tmp_path, f".other.fredset.{gone}.3badf00d.tmp", old),  # another file's
        make_temporary(tmp_path, f".data.fredset.bak.{gone}.4badf00d.tmp", old),  # data.fredset.bak's
        make_temporary(tmp_path, ".data.fredset.notes", old),
    }
    save(make_artifact(), tmp_path / "data.fredset")
    assert {p.name for p in tmp_path.iterdir()} == kept | {"data.fredset"}
    assert not stale & {p.name for p in tmp_path.iterdir()}
    assert remove_stale_temporaries(tmp_path / "data.fredset") == []


def test_a_killed_save_leaves_the_old_file_and_a_temporary_the_next_save_removes(tmp_path):
    path = tmp_path / "data.fredset"
    artifact = make_artifact()
    save(artifact, path)
    os.chmod(path, 0o644)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal, fredset
        from conftest import make_artifact
        os.fsync = lambda descriptor: os.kill(os.getpid(), signal.SIGKILL)  # killed mid-save
        fredset.save(make_artifact(seed=1), {str(path)!r})
    """)
    child = subprocess.run([sys.executable, "-c", script], cwd=os.path.dirname(__file__), timeout=120,
                           capture_output=True)
    assert child.returncode == -9
    assert path.read_bytes() == before
    leftovers = [p for p in tmp_path.iterdir() if p.name != "data.fredset"]
    assert len(leftovers) == 1 and leftovers[0].name.endswith(".tmp") and leftovers[0].stat().st_size > 0
    save(artifact, path)  # fresh: kept
    assert leftovers[0].exists()
    stamp = time.time() - STALE_TEMPORARY_SECONDS - 1
    os.utime(leftovers[0], (stamp, stamp))
    save(artifact, path)  # stale and its writer gone: removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.fredset"]
    assert mode_of(path) == 0o644
    assert torch.equal(load(path).coefficients[0], artifact.coefficients[0])


def test_pictures_too_large_to_look_at_are_refused_before_allocating(tmp_path):
    artifact = make_artifact(counts=(2,) * 20, size=(1024, 1024), k=1, low_frequency=True)
    with pytest.raises(FredsetError, match="mask picture would be .* more than the 256 MiB allowed"):
        mask_grid(artifact, scale=4)  # 2 rows x 10 columns of 4096x4096 cells: 1.3 GB
    with pytest.raises(FredsetError, match="image grid picture would be"):
        class_grid(artifact, per_class=2, scale=4)
    assert mask_grid(artifact, scale=1).nbytes <= MAX_PICTURE_BYTES
    path = tmp_path / "wide.fredset"
    save(artifact, path)
    result = CliRunner().invoke(cli, ["inspect", str(path), "--masks", str(tmp_path / "m.png")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "--scale" in result.stderr
    assert not (tmp_path / "m.png").exists()
