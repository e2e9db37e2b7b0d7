"""Samplers against fields whose flows are known in closed form (sra.process.flow_samplers, sra.generate)."""
import math

import pytest
import torch
import torch.nn as nn

import sra
from sra.generate import SamplerOptions, image_labels, process_of, sample_images
from sra.models import LoadedModel
from sra.process.flow_samplers import euler_maruyama_sampler, euler_sampler
from sra.process.flow_path import path_coefficients
from sra.process.flow_samplers import score_from_velocity



class Field(nn.Module):
    """A fake velocity model with the real call signature: v = fn(x, t, y), t (N,) float32, y (N,) long."""

    def __init__(self, fn, num_classes=3):
        super().__init__()
        self.fn, self.num_classes = fn, num_classes
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))  # fixes the dtype the sampler feeds
        self.calls = []

    def forward(self, x, t, y):
        self.calls.append((x.clone(), t.clone(), y.clone()))
        return self.fn(x, t.double(), y)


def bcast(v, x):
    return v.reshape(-1, *([1] * (x.ndim - 1)))


# Targets per label; row 3 is what the null label points at.
X0 = torch.tensor([[-1.0, 0.5], [2.0, 0.0], [0.25, -3.0], [10.0, 10.0]], dtype=torch.float64)


def point_field(x, t, y):
    """Exact flow-matching velocity of the linear path towards the single point X0[y]: (x - x0) / t. Its flow lines
    are straight, so Euler on any grid lands exactly on x0."""
    return (x - X0[y].reshape(x.shape)) / bcast(t, x)


def test_euler_integrates_straight_field_exactly():
    y = torch.tensor([0, 1, 2, 1])
    noise = torch.randn(4, 2, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for steps in (1, 4, 16):  # dyadic grids: the float32 times the model sees are exact
        out = euler_sampler(Field(point_field), noise, y, num_steps=steps)
        torch.testing.assert_close(out, X0[y].reshape(4, 2, 1, 1), rtol=0, atol=1e-12)


def test_euler_grid_and_guidance_formula():
    """The model sees t = 1, 1 - 1/N, ..., 1/N; guided steps combine cond and null outputs as u + s (c - u)."""
    model = Field(point_field)
    y = torch.tensor([0, 2])
    noise = torch.randn(2, 2, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = euler_sampler(model, noise, y, num_steps=4, cfg_scale=3.0)
    assert [round(float(c[1][0]), 6) for c in model.calls] == [1.0, 0.75, 0.5, 0.25]
    assert all(c[2].tolist() == [0, 2, 3, 3] for c in model.calls)  # cond then null labels in one batch
    # Independent: guided field = (x - x0_u - 3 (x0_c - x0_u)) / t, again straight -> lands on that point.
    target = X0[3] + 3.0 * (X0[y] - X0[3])
    torch.testing.assert_close(out, target.reshape(2, 2, 1, 1), rtol=0, atol=1e-12)


def exp_field(x, t, y):
    return -(1 + bcast(t, x)) * x  # dx/dt = -(1 + t) x  ->  x(0) = x(1) exp(1.5)


def test_heun_is_second_order_and_euler_first():
    noise = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    exact = math.exp(1.5)
    err = {h: [abs(float(euler_sampler(Field(exp_field), noise, torch.zeros(1, dtype=torch.long), num_steps=n,
                                       heun=h)) - exact) for n in (16, 32, 64)] for h in (False, True)}
    for e in (err[True],):
        assert 3.6 < e[0] / e[1] < 4.4 and 3.6 < e[1] / e[2] < 4.4, e
    assert 1.8 < err[False][1] / err[False][2] < 2.2, err[False]
    assert err[True][2] < err[False][2] / 20


def gaussian_field(path, m=1.0, s0=0.5):
    """Exact velocity for data x0 ~ N(m, s0^2) under a path: E[d_alpha x0 + d_sigma e | x_t]."""
    def fn(x, t, y):
        a, s, da, ds = (bcast(c, x) for c in path_coefficients(path, t))
        var = a ** 2 * s0 ** 2 + s ** 2
        r = x - a * m
        return da * (m + a * s0 ** 2 / var * r) + ds * (s / var * r)
    return fn


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_score_from_velocity_matches_gaussian_score(path):
    m, s0 = 1.0, 0.5
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).reshape(7, 1, 1, 1)
    for t in (0.9, 0.5, 0.1):
        tt = torch.full((7,), t, dtype=torch.float64)
        v = gaussian_field(path, m, s0)(x, tt, None)
        a, s, _, _ = path_coefficients(path, torch.tensor(t, dtype=torch.float64))
        expected = -(x - a * m) / (a ** 2 * s0 ** 2 + s ** 2)
        torch.testing.assert_close(score_from_velocity(v, x, t, path), expected)


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_sde_and_ode_sample_the_data_distribution(path):
    """With the exact field of a Gaussian, both samplers end at N(1, 0.5^2) (20000 draws: SE of the mean 0.004)."""
    noise = torch.randn(20000, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.zeros(20000, dtype=torch.long)
    sde = euler_maruyama_sampler(Field(gaussian_field(path)), noise, y, num_steps=100, path_type=path,
                                 generator=torch.Generator().manual_seed(1))
    ode = euler_sampler(Field(gaussian_field(path)), noise, y, num_steps=100)
    for x in (sde, ode):
        assert abs(x.mean().item() - 1.0) < 0.02 and abs(x.std().item() - 0.5) < 0.02, (x.mean(), x.std())
    assert not torch.allclose(sde, ode, atol=1e-2)  # the SDE really injected noise


def test_sde_grid_and_deterministic_last_step():
    model = Field(gaussian_field("linear"))
    noise = torch.randn(5, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.zeros(5, dtype=torch.long)
    out = euler_maruyama_sampler(model, noise, y, num_steps=6, generator=torch.Generator().manual_seed(3))
    times = [float(c[1][0]) for c in model.calls]
    torch.testing.assert_close(torch.tensor(times, dtype=torch.float64),
                               torch.linspace(1, 0.04, 6, dtype=torch.float64), atol=1e-7, rtol=0)
    # Last step from its recorded input, by hand: x + (0 - 0.04) (v - w s), w = sigma = 0.04, no noise.
    x, t = model.calls[-1][0], 0.04
    v = gaussian_field("linear")(x, torch.full((5,), t, dtype=torch.float64), y)
    score = -(x - (1 - t) * 1.0) / ((1 - t) ** 2 * 0.25 + t ** 2)
    torch.testing.assert_close(out, x - t * (v - t * score))
    # Other generators change the stochastic steps; a 1-step SDE has none and ignores the generator.
    again = euler_maruyama_sampler(model, noise, y, num_steps=6, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(out, again)
    one = [euler_maruyama_sampler(model, noise, y, num_steps=1, generator=torch.Generator().manual_seed(s))
           for s in (5, 6)]
    torch.testing.assert_close(one[0], one[1], rtol=0, atol=0)


def class_gaussian_field(path, mus=(1.0, -0.5, 0.3, 0.0), s0=0.5):
    """Exact velocity for data of class y ~ N(mus[y], s0^2) (the last mean belongs to the null label)."""
    mus = torch.tensor(mus, dtype=torch.float64)

    def fn(x, t, y):
        a, s, da, ds = (bcast(c, x) for c in path_coefficients(path, t))
        m = bcast(mus[y], x)
        var = a ** 2 * s0 ** 2 + s ** 2
        r = x - a * m
        return da * (m + a * s0 ** 2 / var * r) + ds * (s / var * r)
    return fn


def reference_sde(fn, path, noise, y, num_steps, cfg_scale, high, generator, g_of_t):
    """The released SRA/REPA Euler-Maruyama sampler written out: diffusion g = g_of_t(t) (theirs: 2 t), drift
    d = v - g/2 * score per branch, CFG on d inside [0, high], x += d dt + sqrt(g) sqrt(|dt|) eps; last step d dt."""
    t_steps = torch.linspace(1.0, 0.04, num_steps, dtype=torch.float64).tolist() + [0.0]
    null = torch.full_like(y, 3)
    x = noise.double()
    for i in range(num_steps):
        t_cur, t_next = float(t_steps[i]), float(t_steps[i + 1])
        dt, g = t_next - t_cur, g_of_t(t_cur)
        guided = cfg_scale > 1 and t_cur <= high
        xs, ys = (torch.cat([x, x]), torch.cat([y, null])) if guided else (x, y)
        tt = torch.full((len(xs),), t_cur, dtype=torch.float64)
        v = fn(xs, tt.float().double(), ys)  # the model sees a float32 time (the reference: latents' dtype)
        a, s, da, ds = (bcast(c, xs) for c in path_coefficients(path, tt))
        score = (a / da * v - xs) / (s ** 2 - a / da * ds * s)
        d = v - 0.5 * g * score
        if guided:
            d_c, d_u = d.chunk(2)
            d = d_u + cfg_scale * (d_c - d_u)
        if i < num_steps - 1:
            eps = torch.randn(x.shape, generator=generator).double()
            x = x + d * dt + math.sqrt(g) * math.sqrt(abs(dt)) * eps
        else:
            x = x + d * dt
    return x


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_sde_diffusion_is_the_released_samplers_2t_and_sigma_is_an_option(path):
    noise = torch.randn(6, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    kw = dict(num_steps=8, cfg_scale=1.8, guidance_high=0.7, path_type=path)

    def ours(**extra):
        return euler_maruyama_sampler(Field(class_gaussian_field(path)), noise, y,
                                      generator=torch.Generator().manual_seed(1), **kw, **extra)

    def ref(g_of_t):
        return reference_sde(class_gaussian_field(path), path, noise, y, 8, 1.8, 0.7, torch.Generator().manual_seed(1),
                             g_of_t)

    two_t = ref(lambda t: 2 * t)
    two_sigma = ref(lambda t: 2 * math.sin(math.pi * t / 2) if path == "cosine" else 2 * t)
    torch.testing.assert_close(ours(), two_t, rtol=1e-12, atol=1e-12)  # default: w_t = t
    torch.testing.assert_close(ours(diffusion_form="sigma"), two_sigma, rtol=1e-12, atol=1e-12)
    if path == "cosine":  # sigma_t = sin(pi t / 2) != t: the forms really differ there
        assert (two_t - two_sigma).abs().max() > 1e-2
    with pytest.raises(ValueError, match="diffusion form"):
        ours(diffusion_form="sbdm")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    m = sra.build_model("SiT-T/4", input_size=8, in_channels=1, num_classes=3, depth=2)
    for p in m.final_layer.parameters():  # zero-initialised otherwise: make the output depend on x, t and y
        nn.init.normal_(p, std=0.1)
    for b in m.blocks:
        nn.init.normal_(b.adaLN_modulation[-1].weight, std=0.02)
    return m.eval()


@pytest.mark.parametrize("sampler", [euler_sampler, euler_maruyama_sampler])
def test_guidance_outside_the_interval_is_no_guidance(sampler):
    m = tiny_model()
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])

    def run(**kw):
        return sampler(m, noise, y, num_steps=5, generator=torch.Generator().manual_seed(9), **kw)

    plain = run()
    # No step starts in [0, 0.03] (ODE starts: 1 .. 0.2; SDE: 1 .. 0.04): guidance never applies.
    torch.testing.assert_close(run(cfg_scale=4.0, guidance_low=0.0, guidance_high=0.03), plain, rtol=0, atol=0)
    assert not torch.allclose(run(cfg_scale=4.0, guidance_low=0.0, guidance_high=0.7), plain, atol=1e-4)


def test_cfg_below_one_and_bad_interval_refused():
    m = Field(point_field)
    noise, y = torch.zeros(1, 2, 1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="cfg_scale"):
        euler_sampler(m, noise, y, cfg_scale=0.5)
    with pytest.raises(ValueError, match="guidance interval"):
        euler_maruyama_sampler(m, noise, y, guidance_low=0.8, guidance_high=0.2)


def test_per_image_seeds_independent_of_batch_size():
    loaded = LoadedModel(tiny_model(), {"name": "flow", "path": "linear"}, None, None, None)
    process = process_of(loaded)
    opts = SamplerOptions(num_steps=8, cfg_scale=2.0, guidance_high=0.6).resolve(process)  # SDE: per-step noise
    idx = list(range(7))
    y = image_labels(11, idx, 3)
    assert y.tolist() == [image_labels(11, [i], 3).item() for i in idx]
    whole = sample_images(loaded, process, opts, 11, idx, y, lambda x: x)
    ones = torch.cat([sample_images(loaded, process, opts, 11, [i], y[i:i + 1], lambda x: x) for i in idx])
    torch.testing.assert_close(whole, ones, rtol=0, atol=1e-5)
    assert (whole[0] - whole[1]).abs().max() > 1e-2  # images differ from one another
    other = sample_images(loaded, process, opts, 12, idx, y, lambda x: x)
    assert (other - whole).abs().max() > 1e-2  # and from another seed's
