"""Quantisation-aware distillation and byte budgets: the loop's images are the file's, the file fits."""

import dataclasses

import pytest
import torch
from click.testing import CliRunner

from fredset import FredDataset, FredsetError, load, load_bytes, save_bytes
from fredset.data import hold_out
from fredset.distill.budget import DEFAULT_BUDGET_BITS, budget_k, fit_within, plan_instances
from fredset.distill.config import DistillConfig
from fredset.distill.loop import distill
from fredset.distill.synset import init_frequency_synset
from fredset.quantize import Quantization, code_limit, codes_of, dequantize, fake_quantize, grid_steps
from fredset_cli.main import cli

from test_distill import SMALL, fashion_subset


def test_fake_quantize_forward_is_the_grid_and_backward_the_identity():
    block = torch.randn(5, 2, 7, generator=torch.Generator().manual_seed(0)) * 3
    block.requires_grad_(True)
    quantized = fake_quantize(block, 4)
    steps = grid_steps(block, 4)
    assert torch.equal(quantized, dequantize(codes_of(block, steps, 4), steps))
    assert quantized.unique().numel() < block.numel()  # it really moved the values to a grid
    codes = codes_of(block, steps, 4)
    assert int(codes.abs().max()) == code_limit(4) == 7
    assert float((quantized - block).detach().abs().max()) <= float(steps.max()) / 2 * 1.01
    (quantized * torch.arange(block.numel()).view_as(block)).sum().backward()
    assert torch.equal(block.grad, torch.arange(block.numel()).view_as(block).float())


def test_steps_are_float16_values_and_zero_columns_get_code_zero():
    block = torch.zeros(3, 1, 4)
    block[:, 0, 1] = torch.tensor([0.1, -0.3, 0.2])
    steps = grid_steps(block, 6)
    assert torch.equal(steps.half().float(), steps) and steps[0, 0] == 0 and steps[0, 1] > 0
    assert torch.equal(codes_of(block, steps, 6)[:, 0, 0], torch.zeros(3, dtype=torch.int8))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_steps_keep_two_fraction_bits_and_clip_at_most_half_a_step(bits):
    scales = torch.logspace(-3, 2, 300)  # frequencies of very different sizes, as in a DCT
    block = torch.randn(40, 2, 300, generator=torch.Generator().manual_seed(bits)) * scales
    steps = grid_steps(block, bits)
    significand, _ = torch.frexp(steps)
    assert torch.equal(significand * 8, torch.round(significand * 8))  # 1, 1.25, 1.5 or 1.75 times 2^e
    largest = block.abs().amax(dim=0)
    ratio = steps / (largest / code_limit(bits))
    assert float(ratio.min()) >= 0.85 and float(ratio.max()) <= 1.25
    error = (dequantize(codes_of(block, steps, bits), steps) - block).abs() / steps
    assert float(error.max()) <= 0.5 + 1e-5  # the largest value lies at most half a step past the last code


def test_artifact_refuses_coefficients_off_their_grid(artifact):
    grid = Quantization.of(artifact.coefficients, 4)
    on_grid = dataclasses.replace(artifact, coefficients=grid.apply(artifact.coefficients), quantization=grid)
    assert on_grid.quantization is grid
    with pytest.raises(FredsetError, match="not on their 4-bit quantization grid"):
        dataclasses.replace(artifact, quantization=grid)  # the original values are between grid points
    with pytest.raises(FredsetError, match="bits must be one of"):
        Quantization(9, grid.steps)
    with pytest.raises(FredsetError, match="float16 values"):
        Quantization(4, [s + 1e-4 for s in grid.steps])


def test_quantised_synset_decodes_through_the_grid():
    real = fashion_subset()
    synset = init_frequency_synset(real, None, 16, instances=5, bits=3, generator=torch.Generator().manual_seed(0))
    for block, raw in zip(synset.coefficients(), synset.unquantized()):
        levels = [block.detach()[:, 0, j].unique().numel() for j in range(block.shape[-1])]
        assert max(levels) <= 2 * code_limit(3) + 1  # at most 7 levels per frequency
        assert not torch.equal(block, raw)
    artifact = synset.to_artifact(classes=real.classes, mean=real.mean, std=real.std, dataset=real.name)
    assert artifact.quantization.bits == 3
    assert torch.equal(artifact.decode(), synset.decode().detach())


@pytest.mark.parametrize("objective", ["dm", "dc"])
def test_loop_images_equal_the_written_file_bit_for_bit(objective, tmp_path):
    real = fashion_subset()
    config = DistillConfig(dataset=real.name, objective=objective, instances=4, k=16, bits=4, iterations=2,
                           seed=3, **SMALL)
    seen = {}

    def keep(synset, iteration, lr=None):
        seen["images"] = synset.decode().detach().clone()

    artifact = distill(config, real, evaluate_every=2, evaluate=keep)
    path = tmp_path / "q.fredset"
    path.write_bytes(save_bytes(artifact))
    assert load(path).quantization.bits == 4
    assert torch.equal(FredDataset(path, device="cpu").images, seen["images"])


def test_byte_budget_file_fits_and_records_what_it_chose(tmp_path):
    real = fashion_subset()
    budget = 12000
    config = DistillConfig(dataset=real.name, objective="dm", max_bytes=budget, iterations=1, seed=0, **SMALL)
    run = config.resolve(real)
    bits = DEFAULT_BUDGET_BITS
    assert run.config.bits == bits and run.config.k == budget_k(28, 28) and run.config.instances >= 2
    # the budget's own tuned lr; --ipc keeps the published one
    assert run.config.lr == 1e5 and dataclasses.replace(config, max_bytes=None).resolve(real).config.lr == 1e6
    artifact = distill(run, real)
    artifact, data = fit_within(artifact, budget)
    assert len(data) <= budget
    assert load_bytes(data).quantization.bits == bits
    recorded = artifact.provenance["budget"]
    assert recorded["max_bytes"] == budget and recorded["bits"] == bits and recorded["k"] == artifact.k
    # one more instance per class would not have fitted the plan
    bigger = plan_instances(real, budget + 400, artifact.k, bits, 0, provenance={})
    assert bigger > run.config.instances - 1


def test_fit_within_drops_the_fewest_instances(artifact):
    grid = Quantization.of(artifact.coefficients, 8)
    quantized = dataclasses.replace(artifact, coefficients=grid.apply(artifact.coefficients), quantization=grid)
    full = len(save_bytes(quantized))
    fitted, data = fit_within(quantized, full - 1)
    assert len(data) <= full - 1 and fitted.num_instances == quantized.num_instances - 1
    assert fitted.provenance["budget"]["dropped_to_fit"] == 1
    kept = fitted.coefficients[fitted.counts.index(min(fitted.counts))]
    assert torch.equal(kept, quantized.coefficients[fitted.counts.index(min(fitted.counts))][:len(kept)])
    with pytest.raises(FredsetError, match="one instance per class"):
        fit_within(quantized, 100)


def test_budget_refusals():
    real = fashion_subset()
    with pytest.raises(FredsetError, match="give one budget: --ipc and --bytes-per-class"):
        DistillConfig(dataset=real.name, ipc=1, bytes_per_class=3000).resolve(real)
    with pytest.raises(FredsetError, match="--instances and --max-bytes"):
        DistillConfig(dataset=real.name, instances=4, max_bytes=3000).resolve(real)
    with pytest.raises(FredsetError, match="does not hold 2 instances per class"):
        DistillConfig(dataset=real.name, max_bytes=900).resolve(real)
    with pytest.raises(FredsetError, match="freq parameterization only"):
        DistillConfig(dataset=real.name, parameterization="pixel", bits=4).resolve(real)
    with pytest.raises(FredsetError, match="--bits must be one of"):
        DistillConfig(dataset=real.name, bits=12).resolve(real)


def test_float_budget_path_is_unchanged():
    real = fashion_subset()
    run = DistillConfig(dataset=real.name, k=64).resolve(real)
    assert run.config.ipc == 1.0 and run.config.instances == 12 and run.config.bits is None


def test_cli_bytes_per_class(tmp_path):
    out = tmp_path / "small.fredset"
    result = CliRunner().invoke(cli, ["distill", "--dataset", "fashion-mnist", "--bytes-per-class", "2000",
                                      "--iterations", "1", "--batch-real", "8", "--model", "convnetd1",
                                      "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size <= 20000
    assert f"{DEFAULT_BUDGET_BITS}-bit codes" in result.output and "budget 20,000" in result.output
    assert load(out).quantization.bits == DEFAULT_BUDGET_BITS and load(out).k == budget_k(28, 28)


def test_hold_out_is_disjoint_and_seeded():
    real = fashion_subset()
    rest, validation = hold_out(real, 5, seed=1)
    assert len(validation) == 5 * real.num_classes and len(rest) + len(validation) == len(real)
    assert torch.bincount(validation.labels).tolist() == [5] * real.num_classes
    rows = {tuple(x.flatten()[:50].tolist()) for x in rest.images}
    assert not any(tuple(x.flatten()[:50].tolist()) in rows for x in validation.images)
    again = hold_out(real, 5, seed=1)[1]
    assert torch.equal(again.images, validation.images)
    assert not torch.equal(hold_out(real, 5, seed=2)[1].images, validation.images)
    with pytest.raises(FredsetError, match="cannot hold out 40"):
        hold_out(real, 40)
