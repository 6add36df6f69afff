"""Differentiable siamese augmentation (kdbench.methods.dsa), and dd_dc, dd_dm, dd_dsa with it."""

from __future__ import annotations

import pytest
import torch

from kdbench.methods import MethodContext, dd_dc, method_class
from kdbench.methods.dsa import DSA, STRATEGY, DSAParams


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny images and networks: intra-op threads only add overhead, and on a shared 2-core
    machine they made a gradient-matching synthesis fifty times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


KINDS = ("color", "crop", "cutout", "flip", "scale", "rotate")
P = DSAParams()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 4, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=gen(seed))


def shifted(x: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """out[i, j] = x[i + th, j + tw], zero outside the image."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    rows, cols = slice(max(0, -th), min(h, h - th)), slice(max(0, -tw), min(w, w - tw))
    src_rows, src_cols = slice(max(0, th), min(h, h + th)), slice(max(0, tw), min(w, w + tw))
    out[..., rows, cols] = x[..., src_rows, src_cols]
    return out


def test_the_defaults_are_the_references():
    assert STRATEGY == "color_crop_cutout_flip_scale_rotate"
    assert (P.prob_flip, P.ratio_scale, P.ratio_rotate, P.ratio_crop_pad, P.ratio_cutout) == (
        0.5,
        1.2,
        15.0,
        0.125,
        0.5,
    )
    assert (P.brightness, P.saturation, P.contrast) == (1.0, 2.0, 0.5)


@pytest.mark.parametrize("strategy", [*KINDS, STRATEGY])
def test_the_same_generator_seed_gives_the_same_images_in_both_modes(strategy):
    dsa, x, y = DSA(strategy), images(), images(seed=1)
    for seed in range(6):
        assert torch.equal(dsa(x, gen(seed)), dsa(x, gen(seed)))
        assert all(
            torch.equal(a, b)
            for a, b in zip(
                dsa.siamese(x, y, gen=gen(seed)), dsa.siamese(x, y, gen=gen(seed)), strict=True
            )
        )
    outs = [dsa(x, gen(seed)) for seed in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("strategy", [*KINDS, STRATEGY])
def test_siamese_applies_one_transform_to_every_image_of_every_batch(strategy):
    dsa = DSA(strategy)
    x = images(n=5, c=3, h=10, w=12)
    same = images(n=1, c=3, h=10, w=12).expand(6, -1, -1, -1)
    for seed in range(12):
        a, b, s = dsa.siamese(x, x[:2], same, gen=gen(seed))
        assert a.shape == x.shape and b.shape == (2, 3, 10, 12)
        assert torch.equal(a[:2], b)  # identical images, batches of other sizes: identical out
        assert all(torch.equal(s[0], s[i]) for i in range(1, 6))


@pytest.mark.parametrize("strategy", KINDS)
def test_per_sample_mode_draws_each_images_parameters(strategy):
    dsa = DSA(strategy)
    same = images(n=1, c=3, h=16, w=16).expand(16, -1, -1, -1)
    out = dsa(same, gen(0))
    assert any(not torch.equal(out[0], out[i]) for i in range(1, 16))


def test_each_call_applies_one_augmentation_of_the_strategy():
    dsa = DSA("flip_cutout")
    x = 1.0 + torch.rand(8, 1, 8, 8, generator=gen(0))  # no zero anywhere
    kinds = []
    for seed in range(20):
        zeros = (dsa(x, gen(seed)) == 0).flatten(1).any(dim=1)
        assert zeros.all() or not zeros.any()  # all cut out, or none (flipped or not)
        kinds.append(bool(zeros.all()))
    assert set(kinds) == {True, False}


def test_flip_mirrors_along_the_width_or_leaves_the_image():
    x = images(n=32, c=3, h=8, w=8)
    out = DSA("flip")(x, gen(0))
    mirrored = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 4 <= sum(mirrored) <= 28  # prob_flip 0.5 of 32


@pytest.mark.parametrize("side", [8, 28, 32])
def test_crop_translates_by_at_most_the_pad_with_zero_fill(side):
    k = int(side * P.ratio_crop_pad + 0.5)  # 1 px at 8, 4 px at 28 and 32
    x = 1.0 + torch.rand(12, 1, side, side, generator=gen(side))
    out = DSA("crop")(x, gen(1))
    shifts = set()
    for o, xi in zip(out, x, strict=True):
        found = [
            (th, tw)
            for th in range(-k, k + 1)
            for tw in range(-k, k + 1)
            if torch.equal(o, shifted(xi, th, tw))
        ]
        assert len(found) == 1, "not a translation within the pad, with zero fill"
        shifts.add(found[0])
    assert len(shifts) > 1 and any(s != (0, 0) for s in shifts)


@pytest.mark.parametrize("side", [8, 9, 28])
def test_cutout_zeroes_a_square_of_half_the_side(side):
    s = int(side * P.ratio_cutout + 0.5)
    x = 1.0 + torch.rand(40, 2, side, side, generator=gen(0))
    out = DSA("cutout")(x, gen(2))
    inside = 0
    for o, xi in zip(out, x, strict=True):
        zero = o == 0
        assert torch.equal(zero[0], zero[1])  # one mask for every channel
        rows = zero[0].any(dim=1).nonzero().flatten()
        cols = zero[0].any(dim=0).nonzero().flatten()
        assert len(rows) and len(cols)
        box = zero[0][rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.all() and int(zero[0].sum()) == box.numel()  # one rectangle
        assert len(rows) <= s and len(cols) <= s  # the square, cropped by the border
        if rows[0] > 0 and rows[-1] < side - 1 and cols[0] > 0 and cols[-1] < side - 1:
            assert len(rows) == len(cols) == s  # away from the border: the whole square
            inside += 1
        assert torch.equal(o[~zero], xi[~zero])  # the rest untouched
    assert inside > 0


@pytest.mark.parametrize("kind", ["scale", "rotate"])
def test_scale_and_rotate_keep_the_centre_pixel_of_a_centred_blob(kind):
    x = torch.zeros(16, 1, 9, 9)
    x[:, :, 3:6, 3:6] = 1.0
    out = DSA(kind)(x, gen(0))
    assert torch.allclose(out[:, 0, 4, 4], torch.ones(16), atol=1e-5)
    assert all(not torch.allclose(o, x[0], atol=1e-3) for o in out)  # but they do transform
    # no mass comes from outside: at most 1.2x scale or 15 degrees keep the blob near the centre
    assert out[:, :, [0, -1], :].abs().max() < 1e-5 and out[:, :, :, [0, -1]].abs().max() < 1e-5


def test_rotate_turns_by_at_most_the_references_angle():
    # a thin horizontal bar through the centre of a 65 px image: its end moves by r·sin θ
    x = torch.zeros(64, 1, 65, 65)
    x[:, :, 32, 2:63] = 1.0
    out = DSA("rotate")(x, gen(0))
    angles = []
    for o in out:
        ys, xs = (o[0] > 0.25).nonzero(as_tuple=True)
        slope = torch.linalg.lstsq(
            torch.stack([xs.float() - 32, torch.ones_like(xs, dtype=torch.float)], 1),
            (ys.float() - 32)[:, None],
        ).solution[0, 0]
        angles.append(float(torch.rad2deg(torch.atan(slope)).abs()))
    assert max(angles) <= P.ratio_rotate + 0.5 and max(angles) > 0.6 * P.ratio_rotate


def test_color_on_one_channel_is_brightness_and_contrast_in_the_references_ranges():
    x = torch.randn(1, 1, 8, 8, generator=gen(0))
    x = ((x - x.mean()) / x.std()).expand(64, -1, -1, -1)  # mean 0, std 1
    out = DSA("color")(x, gen(0))
    # saturation is the identity on one channel; then out = x·c + b
    b = out.mean(dim=(1, 2, 3))
    c = out.std(dim=(1, 2, 3))
    assert torch.allclose(out, x * c.view(-1, 1, 1, 1) + b.view(-1, 1, 1, 1), atol=1e-5)
    half = P.brightness / 2
    assert b.min() >= -half and b.max() <= half and b.max() - b.min() > half
    assert c.min() >= P.contrast and c.max() <= P.contrast + 1 and c.max() - c.min() > 0.5


def test_color_saturation_scales_the_departure_from_the_channel_mean():
    # channels (v, -v, 0): channel mean 0 at every pixel, image mean 0
    v = torch.randn(1, 1, 8, 8, generator=gen(0))
    x = torch.cat([v, -v, torch.zeros_like(v)], dim=1).expand(64, -1, -1, -1)
    out = DSA("color")(x, gen(0))
    b = out.mean(dim=(1, 2, 3), keepdim=True)
    factor = ((out - b) * x).sum(dim=(1, 2, 3)) / (x * x).sum(dim=(1, 2, 3))
    assert torch.allclose(out, x * factor.view(-1, 1, 1, 1) + b, atol=1e-5)
    top = P.saturation * (P.contrast + 1)  # saturation · contrast
    assert factor.min() >= 0 and factor.max() <= top and factor.max() > P.contrast + 1


@pytest.mark.parametrize("strategy", [*KINDS, STRATEGY])
def test_gradients_reach_the_images_in_both_modes(strategy):
    dsa = DSA(strategy)
    for seed in range(4):
        x = images(n=3, c=3, h=8, w=8).requires_grad_(True)
        y = images(n=2, c=3, h=8, w=8, seed=1).requires_grad_(True)
        a, b = dsa.siamese(x, y, gen=gen(seed))
        gx, gy = torch.autograd.grad((a**2).sum() + (b**2).sum(), (x, y))
        (gp,) = torch.autograd.grad((dsa(x, gen(seed)) ** 2).sum(), x)
        for g in (gx, gy, gp):
            assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_an_unknown_augmentation_is_refused_naming_it_and_the_valid_ones():
    with pytest.raises(ValueError, match=r"'blur'.*color, crop, cutout, flip, scale, rotate"):
        DSA("color_blur")
    with pytest.raises(ValueError, match="one image shape"):
        DSA().siamese(images(h=8), images(h=9), gen=gen(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_same_transform_on_any_device():
    dsa, x = DSA(), images(n=6, c=3, h=32, w=32)
    for seed in range(8):
        cpu = dsa(x, gen(seed))
        gpu = dsa(x.cuda(), gen(seed))
        assert gpu.device.type == "cuda" and torch.allclose(cpu, gpu.cpu(), atol=1e-4)
        a, b = dsa.siamese(x.cuda(), x[:2].cuda(), gen=gen(seed))
        assert torch.allclose(a[:2], b) and torch.allclose(
            a.cpu(), dsa.siamese(x, gen=gen(seed))[0], atol=1e-4
        )


# -- the dd methods ------------------------------------------------------------------------

FAST = {"iterations": 2, "net_width": 8, "batch_real": 16, "ipc": 2}
MADE: dict[tuple[str, bool], torch.Tensor] = {}


def synthesize(name, data, dsa: bool, *, fresh: bool = False) -> torch.Tensor:
    """The set ``name`` makes on ``data`` at seed 0 (made once unless ``fresh``)."""
    if not fresh and (name, dsa) in MADE:
        return MADE[name, dsa]
    cls = method_class(name)
    params = {**cls.defaults(), **FAST, "dsa": dsa}
    if name != "dd_dm":
        params["iterations"] = 1
    ctx = MethodContext.for_data(None, None, data, torch.device("cpu"))  # type: ignore[arg-type]
    made = cls(params, ctx).synthesize(data, seed=0, device=torch.device("cpu"))
    MADE[name, dsa] = made.images
    return made.images


@pytest.fixture
def few_loops(monkeypatch):
    """Gradient matching's two matches with one epoch of the network's training between them
    (augmented when DSA is on), not ipc 2's 250 epochs."""
    monkeypatch.setattr(dd_dc, "loops", lambda ipc: (2, 1))


@pytest.mark.parametrize("name", ["dd_dc", "dd_dm", "dd_dsa"])
def test_matching_with_and_without_dsa_makes_different_sets(name, synthetic, few_loops):
    on, off = synthesize(name, synthetic, True), synthesize(name, synthetic, False)
    assert on.shape == off.shape == (20, 1, 8, 8)
    assert torch.isfinite(on).all()
    assert not torch.equal(on, off)
    cls = method_class(name)
    ctx = MethodContext.for_data(None, None, synthetic, torch.device("cpu"))  # type: ignore[arg-type]
    # DSA also augments the student's training on the set
    assert cls({**cls.defaults(), "dsa": True}, ctx).augmentation() is not None
    assert cls({**cls.defaults(), "dsa": False}, ctx).augmentation() is None


@pytest.mark.parametrize("name", ["dd_dm", "dd_dsa"])
def test_a_set_matched_with_dsa_is_the_same_for_a_seed(name, synthetic, few_loops):
    first = synthesize(name, synthetic, True)
    assert torch.equal(first, synthesize(name, synthetic, True, fresh=True))


def test_dd_dsa_is_gradient_matching_with_dsa_on():
    dc, dsa, dm = (method_class(n) for n in ("dd_dc", "dd_dsa", "dd_dm"))
    assert issubclass(dsa, dc)
    assert dsa.defaults()["dsa"] is True and not dsa.hparam("dsa").optional
    assert dm.defaults()["dsa"] is True and not dm.hparam("dsa").optional
    # dd_dc's trials keep their ids: dsa is optional and off
    assert "dsa" not in dc.defaults() and dc.hparam("dsa").default is False
    rest = {k: v for k, v in dsa.defaults().items() if k != "dsa"}
    assert rest == dc.defaults()  # the DSA paper's settings are DC's
