"""DSA (fredset.augment): each family as defined, siamese sharing, determinism, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from fredset.augment import FAMILIES, STRATEGY, DSA, AugmentParams, parse_strategy
from fredset.errors import FredsetError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def images(batch: int = 6, channels: int = 3, size=(12, 10), seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Strictly positive random images, so zeroed pixels are recognisable."""
    return torch.rand(batch, channels, *size, generator=gen(seed), dtype=dtype) + 0.5


def params(family: str, **values) -> AugmentParams:
    return AugmentParams(family, {key: torch.as_tensor(value).reshape(-1) for key, value in values.items()})


# --------------------------------------------------------------------------- strategy parsing


def test_parse_strategy():
    assert parse_strategy(STRATEGY) == list(FAMILIES)
    assert parse_strategy("flip_crop") == ["flip", "crop"]
    for empty in ("none", "None", "NONE", ""):
        assert parse_strategy(empty) == []


@pytest.mark.parametrize("bad", ["colour", "color_", "color__crop", "crop_zoom", "_flip"])
def test_parse_strategy_errors(bad):
    with pytest.raises(FredsetError) as info:
        parse_strategy(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(FredsetError):
        DSA(bad)


@pytest.mark.parametrize("option", [dict(scale=0.9), dict(rotate=-1.0), dict(crop_pad=1.0), dict(cutout=1.5),
                                    dict(contrast=-0.1)])
def test_bad_options(option):
    with pytest.raises(FredsetError):
        DSA(**option)


@pytest.mark.parametrize("strategy", ["none", ""])
def test_none_is_identity(strategy):
    dsa = DSA(strategy)
    x = images()
    assert dsa(x, generator=gen()) is x
    p = dsa.sample(6, (12, 10), generator=gen(), siamese=True)
    assert p.family == "none" and p.values == {}
    assert dsa.apply(x, p) is x


# --------------------------------------------------------------------------- each family as defined


def test_color_matches_definition():
    dsa = DSA("color")
    x = images(batch=4)
    p = dsa.sample(4, (12, 10), generator=gen(3), siamese=False)
    assert p.family == "color" and set(p.values) == {"brightness", "saturation", "contrast"}
    out = dsa.apply(x, p)
    for i in range(4):
        b, s, c = (float(p.values[k][i]) for k in ("brightness", "saturation", "contrast"))
        y = x[i] + (b - 0.5) * 1.0
        y = (y - y.mean(0, keepdim=True)) * (s * 2.0) + y.mean(0, keepdim=True)
        y = (y - y.mean()) * (c + 0.5) + y.mean()
        torch.testing.assert_close(out[i], y)


def test_color_saturation_has_no_effect_on_one_channel():
    dsa = DSA("color")
    x = images(batch=3, channels=1)
    out = dsa.apply(x, params("color", brightness=[0.7], saturation=[0.0], contrast=[0.5]))
    y = x + 0.2  # saturation 0 would flatten a colour image; on one channel it must do nothing
    torch.testing.assert_close(out, y)  # contrast factor 0.5 + 0.5 = 1: identity


def reference_crop(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    _, height, width = x.shape
    for i in range(height):
        for j in range(width):
            if 0 <= i + dy < height and 0 <= j + dx < width:
                out[:, i, j] = x[:, i + dy, j + dx]
    return out


def test_crop_shifts_with_zero_fill():
    dsa = DSA("crop")
    x = images(batch=5)
    p = params("crop", dy=[-2, 0, 1, 2, -1], dx=[1, -2, 0, 2, -1])
    out = dsa.apply(x, p)
    for i in range(5):
        torch.testing.assert_close(out[i], reference_crop(x[i], int(p.values["dy"][i]), int(p.values["dx"][i])))
    # siamese (one shift for all): the fast path gives the same result
    out = dsa.apply(x, params("crop", dy=[2], dx=[-1]))
    for i in range(5):
        torch.testing.assert_close(out[i], reference_crop(x[i], 2, -1))
    # shift (0, 0) is the identity
    torch.testing.assert_close(dsa.apply(x, params("crop", dy=[0], dx=[0])), x)


def test_crop_range():
    dsa = DSA("crop")
    p = dsa.sample(4000, (32, 24), generator=gen(1), siamese=False)
    pad_h, pad_w = int(0.125 * 32 + 0.5), int(0.125 * 24 + 0.5)
    assert set(p.values["dy"].tolist()) == set(range(-pad_h, pad_h + 1))
    assert set(p.values["dx"].tolist()) == set(range(-pad_w, pad_w + 1))


def test_cutout_zeros_a_clipped_square():
    dsa = DSA("cutout")
    x = images(batch=4, size=(12, 10))
    side_h, side_w = int(0.5 * 12 + 0.5), int(0.5 * 10 + 0.5)  # 6, 5
    p = params("cutout", cy=[6, 0, 12, 3], cx=[5, 10, 0, 4])
    out = dsa.apply(x, p)
    for i in range(4):
        cy, cx = int(p.values["cy"][i]), int(p.values["cx"][i])
        expected = x[i].clone()
        rows = [r for r in range(cy - side_h // 2, cy - side_h // 2 + side_h) if 0 <= r < 12]
        cols = [c for c in range(cx - side_w // 2, cx - side_w // 2 + side_w) if 0 <= c < 10]
        for r in rows:
            for c in cols:
                expected[:, r, c] = 0
        torch.testing.assert_close(out[i], expected)
    # away from the borders exactly side_h x side_w pixels per channel are zeroed
    assert int((out[0, 0] == 0).sum()) == side_h * side_w
    # at a corner it is clipped
    assert 0 < int((out[1, 0] == 0).sum()) < side_h * side_w


def test_cutout_range():
    dsa = DSA("cutout")
    p = dsa.sample(4000, (32, 31), generator=gen(2), siamese=False)
    # side 16 (even) -> centres 0..32; side int(15.5 + 0.5) = 16 -> 0..31
    assert set(p.values["cy"].tolist()) == set(range(0, 33))
    assert set(p.values["cx"].tolist()) == set(range(0, 32))


def test_flip_equals_torch_flip_where_set():
    dsa = DSA("flip")
    x = images(batch=64)
    p = dsa.sample(64, (12, 10), generator=gen(4), siamese=False)
    flags = p.values["flip"]
    assert flags.dtype == torch.bool and 10 < int(flags.sum()) < 54
    out = dsa.apply(x, p)
    torch.testing.assert_close(out[flags], torch.flip(x[flags], dims=[3]), rtol=0, atol=0)
    torch.testing.assert_close(out[~flags], x[~flags], rtol=0, atol=0)


@pytest.mark.parametrize("align_corners", [False, True])
def test_scale_and_rotate_identity(align_corners):
    dsa = DSA(align_corners=align_corners)
    x = images(batch=3)
    torch.testing.assert_close(dsa.apply(x, params("scale", sx=[1.0], sy=[1.0])), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(dsa.apply(x, params("rotate", degrees=[0.0, 0.0, 0.0])), x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("align_corners", [False, True])
def test_rotate_90_is_rot90(align_corners):
    dsa = DSA("rotate", rotate=90.0, align_corners=align_corners)
    x = images(batch=2, size=(9, 9))
    out = dsa.apply(x, params("rotate", degrees=[90.0]))
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(2, 3)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["scale", "rotate"])
def test_affine_matches_per_image_affine_grid(family):
    dsa = DSA(family)
    x = images(batch=5)
    p = dsa.sample(5, (12, 10), generator=gen(5), siamese=False)
    out = dsa.apply(x, p)
    for i in range(5):
        if family == "scale":
            sx, sy = float(p.values["sx"][i]), float(p.values["sy"][i])
            assert 1 / 1.2 <= sx <= 1.2 and 1 / 1.2 <= sy <= 1.2
            theta = torch.tensor([[[sx, 0.0, 0.0], [0.0, sy, 0.0]]])
        else:
            angle = float(p.values["degrees"][i])
            assert -15.0 <= angle <= 15.0
            a = math.radians(angle)
            theta = torch.tensor([[[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]])
        grid = torch.nn.functional.affine_grid(theta, [1, *x.shape[1:]], align_corners=False)
        expected = torch.nn.functional.grid_sample(x[i:i + 1], grid, align_corners=False)
        torch.testing.assert_close(out[i:i + 1], expected, rtol=0, atol=1e-5)
    assert not torch.allclose(out, x)


# --------------------------------------------------------------------------- family choice, siamese


def test_one_family_per_call_uniform():
    dsa = DSA()
    g = gen(6)
    counts = dict.fromkeys(FAMILIES, 0)
    for _ in range(600):
        counts[dsa.sample(8, (12, 10), generator=g, siamese=True).family] += 1
    assert all(60 <= count <= 140 for count in counts.values()), counts


@pytest.mark.parametrize("family", FAMILIES)
def test_siamese_same_transform_on_batches_of_different_sizes(family):
    dsa = DSA(family)
    big, small = images(batch=7, seed=1), images(batch=3, seed=2)
    small[0] = big[4]  # a shared image
    for seed in range(5):
        p = dsa.sample(7, (12, 10), generator=gen(seed), siamese=True)
        assert p.family == family and p.siamese and all(v.shape == (1,) for v in p.values.values())
        out_big, out_small = dsa.apply(big, p), dsa.apply(small, p)
        assert out_big.shape == big.shape and out_small.shape == small.shape
        torch.testing.assert_close(out_big[4], out_small[0], rtol=0, atol=0)


def test_siamese_full_strategy_via_call_and_sample():
    dsa = DSA()
    x = images(batch=7)
    for seed in range(12):
        p = dsa.sample(7, (12, 10), generator=gen(seed), siamese=True)
        direct = dsa(x, generator=gen(seed), siamese=True)
        torch.testing.assert_close(direct, dsa.apply(x, p), rtol=0, atol=0)
        # every image sees the same transform: a batch of copies stays a batch of copies
        same = x[:1].expand(5, -1, -1, -1)
        out = dsa.apply(same, p)
        torch.testing.assert_close(out, out[:1].expand_as(out), rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_non_siamese_samples_per_sample_values(family):
    dsa = DSA(family)
    p = dsa.sample(32, (12, 10), generator=gen(7), siamese=False)
    assert not p.siamese
    for value in p.values.values():
        assert value.shape == (32,)
        assert len(set(value.tolist())) > 1
    x = images(batch=32)
    same = x[:1].expand(32, -1, -1, -1).contiguous()
    out = dsa.apply(same, p)
    assert not torch.equal(out, out[:1].expand_as(out))


def test_per_sample_params_reject_other_batch_sizes():
    dsa = DSA("rotate")
    p = dsa.sample(4, (12, 10), generator=gen(), siamese=False)
    with pytest.raises(FredsetError):
        dsa.apply(images(batch=3), p)
    with pytest.raises(FredsetError):
        dsa.apply(images(batch=4)[0], p)


# --------------------------------------------------------------------------- determinism, global RNG


def test_same_seed_same_params_and_outputs():
    dsa = DSA()
    x = images(batch=6)
    for siamese in (True, False):
        g1, g2 = gen(11), gen(11)
        for _ in range(10):
            p1 = dsa.sample(6, (12, 10), generator=g1, siamese=siamese)
            p2 = dsa.sample(6, (12, 10), generator=g2, siamese=siamese)
            assert p1.family == p2.family and p1.values.keys() == p2.values.keys()
            for key in p1.values:
                assert torch.equal(p1.values[key], p2.values[key])
            torch.testing.assert_close(dsa.apply(x, p1), dsa.apply(x, p2), rtol=0, atol=0)
        torch.testing.assert_close(dsa(x, generator=gen(3)), dsa(x, generator=gen(3)), rtol=0, atol=0)


def test_different_seeds_differ():
    dsa = DSA()
    x = images(batch=6)
    outs = [torch.cat([dsa(x, generator=g) for _ in range(4)]) for g in (gen(1), gen(2))]
    assert not torch.allclose(outs[0], outs[1])


def test_global_rng_is_never_used():
    dsa = DSA()
    x = images(batch=6)
    torch.manual_seed(0)
    p1 = [dsa.sample(6, (12, 10), generator=g, siamese=False) for g in [gen(5)] for _ in range(8)]
    o1 = dsa(x, generator=gen(9))
    torch.manual_seed(1)
    p2 = [dsa.sample(6, (12, 10), generator=g, siamese=False) for g in [gen(5)] for _ in range(8)]
    o2 = dsa(x, generator=gen(9))
    for a, b in zip(p1, p2):
        assert a.family == b.family and all(torch.equal(a.values[k], b.values[k]) for k in a.values)
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)
    # and the global state is left untouched
    state = torch.get_rng_state()
    for seed in range(6):
        dsa(x, generator=gen(seed))
    assert torch.equal(state, torch.get_rng_state())


def test_generator_required():
    with pytest.raises(FredsetError):
        DSA().sample(2, (4, 4), generator=None, siamese=True)


# --------------------------------------------------------------------------- gradients, devices


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("siamese", [True, False])
def test_gradients_flow(family, siamese):
    dsa = DSA(family)
    x = images(batch=4).requires_grad_(True)
    weights = torch.rand(4, 3, 12, 10, generator=gen(8))
    for seed in range(3):
        (dsa(x, generator=gen(seed), siamese=siamese) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_gradcheck(family):
    dsa = DSA(family)
    x = images(batch=2, size=(5, 6), dtype=torch.float64).requires_grad_(True)
    p = dsa.sample(2, (5, 6), generator=gen(1), siamese=False)
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, p), (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_device_argument_and_generator_device(device):
    dsa = DSA()
    x = images(batch=4).to(device)
    p = dsa.sample(4, (12, 10), generator=gen(0), siamese=False, device=device)
    assert all(v.device.type == device for v in p.values.values())
    out = dsa.apply(x, p)
    assert out.device.type == device
    # CPU-drawn params give the same result whichever device they are applied on
    p_cpu = dsa.sample(4, (12, 10), generator=gen(0), siamese=False)
    torch.testing.assert_close(dsa.apply(x, p_cpu).cpu(), out.cpu())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generator():
    dsa = DSA()
    x = images(batch=4).cuda().requires_grad_(True)
    for seed in range(8):
        out = dsa(x, generator=gen(seed, "cuda"))
        assert out.is_cuda
        out.sum().backward()
    assert x.grad is not None
