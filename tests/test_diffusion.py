"""DiT diffusion: schedule closed forms, forward process vs posterior (Monte Carlo), the learned-variance loss,
respacing, DDPM / DDIM sampling against an exact epsilon model for Gaussian data, and DiT+SRA training on the CPU."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.testing import assert_close

import sra
from sra.process.ddpm_loss import diffusion_terms, vb_bits_per_dim
from sra.process.ddpm_samplers import sample
from sra.process.ddpm_schedule import Diffusion, get_diffusion, linear_betas, space_timesteps
from sra.objectives import AlignConfig, Objective, combine
from sra.process import DDPMProcess

T = 1000
F64 = torch.float64



def closed_form_betas() -> torch.Tensor:
    return 1e-4 + torch.arange(T, dtype=F64) * (0.02 - 1e-4) / (T - 1)


def closed_form_abar() -> torch.Tensor:
    return torch.exp(torch.cumsum(torch.log1p(-closed_form_betas()), 0))  # prod (1 - beta) via a log-sum


# ----------------------------------------------------------------------------------------------------------------
# Schedule and posterior
# ----------------------------------------------------------------------------------------------------------------

def test_schedule_matches_closed_forms():
    d = get_diffusion()
    beta, abar = closed_form_betas(), closed_form_abar()
    assert d.num_timesteps == T and d.betas.dtype == F64
    assert_close(linear_betas(T), beta, rtol=0, atol=1e-15)
    assert_close(linear_betas(250), 4 * (1e-4 + torch.arange(250, dtype=F64) * (0.02 - 1e-4) / 249))  # scaled by T
    assert_close(d.betas, beta, rtol=0, atol=1e-15)
    assert_close(d.alphas_cumprod, abar, rtol=1e-12, atol=0)
    for t in (0, 1, 500, 999):
        assert math.isclose(float(d.alphas_cumprod[t]), math.prod(1 - b for b in beta[: t + 1].tolist()), rel_tol=1e-12)
    assert math.isclose(float(d.alphas_cumprod[-1]), 4.0358e-5, rel_tol=1e-3)  # DDPM's abar_T
    abar_prev = torch.cat([torch.ones(1, dtype=F64), abar[:-1]])
    post_var = beta * (1 - abar_prev) / (1 - abar)
    assert_close(d.posterior_variance, post_var, rtol=1e-10, atol=0)
    assert d.posterior_variance[0] == 0
    assert_close(d.posterior_log_variance_clipped[0], post_var[1].log())
    assert_close(d.posterior_log_variance_clipped[1:], post_var[1:].log())
    assert_close(d.posterior_mean_coef1, beta * abar_prev.sqrt() / (1 - abar), rtol=1e-10, atol=0)
    assert_close(d.posterior_mean_coef2, (1 - abar_prev) * (1 - beta).sqrt() / (1 - abar), rtol=1e-10, atol=0)
    # Consistency of the posterior with the marginals: E and Var of x_{t-1} | x_0 by the tower rule.
    c1, c2 = d.posterior_mean_coef1, d.posterior_mean_coef2
    assert_close(c1 + c2 * abar.sqrt(), abar_prev.sqrt(), rtol=1e-12, atol=1e-12)
    assert_close(post_var + c2 ** 2 * (1 - abar), 1 - abar_prev, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t", [1, 40, 500, 999])
def test_q_sample_and_posterior_agree_monte_carlo(t):
    """x_{t-1} ~ q(x_{t-1} | x_0), then one forward step to x_t: x_t must follow q_sample's marginal, and x_{t-1}
    given (x_t, x_0) must be the posterior: residual mean 0, uncorrelated with x_t and x_0, posterior variance."""
    d, g, n = get_diffusion(), torch.Generator().manual_seed(t), 200_000
    x0 = torch.rand((n, 1), generator=g, dtype=F64) * 2 - 1
    tt, tp = torch.full((n,), t), torch.full((n,), t - 1)
    x_prev = d.q_sample(x0, tp, torch.randn((n, 1), generator=g, dtype=F64))
    beta = float(closed_form_betas()[t])
    xt = math.sqrt(1 - beta) * x_prev + math.sqrt(beta) * torch.randn((n, 1), generator=g, dtype=F64)
    abar = float(closed_form_abar()[t])
    z = (xt - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.var()) - 1) < 0.02
    # q_sample itself has the same marginal
    z2 = (d.q_sample(x0, tt, torch.randn((n, 1), generator=g, dtype=F64)) - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
    assert abs(float(z2.mean())) < 0.01 and abs(float(z2.var()) - 1) < 0.02
    mean, logvar = d.q_posterior(x0, xt, tt)
    r = (x_prev - mean).squeeze(1)
    var = math.exp(float(logvar[0]))
    assert abs(float(r.mean())) < 0.01 * math.sqrt(var)
    assert abs(float(torch.corrcoef(torch.stack([r, xt.squeeze(1)]))[0, 1])) < 0.01
    assert abs(float(torch.corrcoef(torch.stack([r, x0.squeeze(1)]))[0, 1])) < 0.01
    assert abs(float(r.var()) / var - 1) < 0.02


# ----------------------------------------------------------------------------------------------------------------
# The learned-variance loss
# ----------------------------------------------------------------------------------------------------------------

def _noisy_batch(seed=0, shape=(6, 2, 4, 4), t_low=1):
    g = torch.Generator().manual_seed(seed)
    x0 = (torch.rand(shape, generator=g, dtype=F64) * 1.8 - 0.9)
    noise = torch.randn(shape, generator=g, dtype=F64)
    t = torch.randint(t_low, T, (shape[0],), generator=g)
    return x0, noise, t, get_diffusion().q_sample(x0, t, noise)


def test_vb_is_zero_for_true_mean_and_variance():
    d = get_diffusion()
    x0, noise, t, xt = _noisy_batch()
    true_out = torch.cat([noise, -torch.ones_like(noise)], dim=1)  # true eps; v = -1: posterior variance
    assert_close(vb_bits_per_dim(d, true_out, x0, xt, t), torch.zeros(len(t), dtype=F64), rtol=0, atol=1e-9)
    terms = diffusion_terms(d, true_out.float(), x0.float(), xt.float(), t, noise.float())  # the training precision
    assert_close(terms["vb"], torch.zeros(len(t)), rtol=0, atol=1e-4)
    assert_close(terms["denoise"], torch.zeros(len(t)), rtol=0, atol=1e-10)


def test_vb_matches_independent_gaussian_kl():
    """v = +1 (variance beta_t) and a shifted mean: the bound term is KL(q || p) in bits per dimension."""
    d = get_diffusion()
    x0, noise, t, xt = _noisy_batch(seed=1)
    beta, abar = closed_form_betas()[t], closed_form_abar()[t]
    abar_prev = closed_form_abar()[(t - 1).clamp(min=0)]
    eps = noise + 0.3
    view = (-1, 1, 1, 1)
    x0_pred = (xt - (1 - abar).sqrt().view(view) * eps) / abar.sqrt().view(view)

    def post_mean(x_start):  # posterior mean written as the Gaussian product of q(x_t|x_{t-1}) and q(x_{t-1}|x_0)
        prec = (1 - beta) / beta + 1 / (1 - abar_prev)
        from_xt = ((1 - beta).sqrt() / beta).view(view) * xt
        from_x0 = (abar_prev.sqrt() / (1 - abar_prev)).view(view) * x_start
        return (from_xt + from_x0) / prec.view(view)

    post_var = beta * (1 - abar_prev) / (1 - abar)
    q = torch.distributions.Normal(post_mean(x0), post_var.sqrt().view(view).expand_as(x0))
    p = torch.distributions.Normal(post_mean(x0_pred), beta.sqrt().view(view).expand_as(x0))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).mean(1) / math.log(2)
    out = torch.cat([eps, torch.ones_like(eps)], dim=1)
    got = vb_bits_per_dim(d, out, x0, xt, t)
    assert_close(got, expected, rtol=1e-6, atol=1e-9)
    assert (got > 0).all()


def test_vb_at_step_zero_is_the_discretized_decoder_nll():
    d = get_diffusion()
    g = torch.Generator().manual_seed(2)
    x0 = torch.randint(0, 256, (4, 1, 4, 4), generator=g).to(F64) / 127.5 - 1  # 8-bit levels, edges included
    x0[0, 0, 0, :2] = torch.tensor([-1.0, 1.0], dtype=F64)
    noise = torch.randn(x0.shape, generator=g, dtype=F64)
    t = torch.zeros(4, dtype=torch.long)
    xt = d.q_sample(x0, t, noise)
    v = torch.rand(x0.shape, generator=g, dtype=F64) * 2 - 1
    out = torch.cat([noise, v], dim=1)
    mean = x0  # eps is the true noise, and at t = 0 the posterior mean is x_0 itself
    logvar = (v + 1) / 2 * closed_form_betas()[0].log() + (1 - v) / 2 * d.posterior_variance[1].log()
    std = (0.5 * logvar).exp()
    hi = torch.where(x0 > 0.999, torch.ones_like(x0), torch.special.ndtr((x0 + 1 / 255 - mean) / std))
    lo = torch.where(x0 < -0.999, torch.zeros_like(x0), torch.special.ndtr((x0 - 1 / 255 - mean) / std))
    expected = -torch.log2(hi - lo).flatten(1).mean(1)
    assert_close(vb_bits_per_dim(d, out, x0, xt, t), expected, rtol=0, atol=2e-3)  # ADM's tanh approximation of Phi


def test_loss_gradients_are_split_between_mean_and_variance():
    x0, noise, t, xt = _noisy_batch(seed=3)
    out = torch.randn(x0.shape[0], 4, 4, 4, requires_grad=True)
    terms = diffusion_terms(get_diffusion(), out, x0.float(), xt.float(), t, noise.float())
    (g_vb,) = torch.autograd.grad(terms["vb"].sum(), out, retain_graph=True)
    (g_mse,) = torch.autograd.grad(terms["denoise"].sum(), out)
    assert (g_vb[:, :2] == 0).all() and (g_vb[:, 2:] != 0).any()  # stop-gradient on the mean
    assert (g_mse[:, 2:] == 0).all()
    assert_close(terms["denoise"], ((out[:, :2] - noise.float()) ** 2).flatten(1).mean(1))


# ----------------------------------------------------------------------------------------------------------------
# Respacing
# ----------------------------------------------------------------------------------------------------------------

def test_respacing_all_steps_is_the_identity():
    base = get_diffusion()
    assert space_timesteps(T, "1000") == list(range(T)) == space_timesteps(T, 1000)
    for spaced in (base.respaced(range(T)), get_diffusion(1000)):
        assert torch.equal(spaced.timestep_map, torch.arange(T))
        for name in Diffusion.TABLES:
            assert_close(getattr(spaced, name), getattr(base, name), rtol=1e-9, atol=1e-12, msg=name)


def test_respacing_250_keeps_the_marginals():
    steps = space_timesteps(T, "250")
    assert steps == [round(i * 999 / 249) for i in range(250)] and steps[0] == 0 and steps[-1] == 999
    spaced = get_diffusion(250)
    assert spaced.num_timesteps == 250 and spaced.timestep_map.tolist() == steps
    assert_close(spaced.alphas_cumprod, closed_form_abar()[steps], rtol=1e-12, atol=0)
    assert space_timesteps(T, "ddim50") == list(range(0, T, 20))
    assert len(space_timesteps(T, "10,15")) == 25 and space_timesteps(T, "10,15")[10] == 500
    with pytest.raises(ValueError):
        space_timesteps(T, "1001")


# ----------------------------------------------------------------------------------------------------------------
# Sampling against an exact model: data x_0 ~ N(mu_y, s^2) elementwise, so E[eps | x_t] is known in closed form
# ----------------------------------------------------------------------------------------------------------------

class GaussianEps(torch.nn.Module):
    """Exact epsilon for Gaussian data; class y has mean mus[y] (the last entry belongs to the null label). With
    `late=(mus2, t_max)`, steps t <= t_max use mus2 instead (to emulate a guidance interval). `v`: a constant, or a
    dict from original step to value."""

    def __init__(self, mus, s: float, v: float = -1.0, late=None):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=F64))
        self.mus, self.s, self.v, self.late = torch.as_tensor(mus, dtype=F64), s, v, late
        self.num_classes = len(mus) - 1
        self.abar = closed_form_abar()

    def forward(self, x, t, y):
        t = t.long()
        mu = self.mus[y]
        if self.late is not None:
            mu = torch.where(t <= self.late[1], torch.as_tensor(self.late[0], dtype=F64)[y], mu)
        a, mu = self.abar[t].view(-1, 1, 1, 1), mu.view(-1, 1, 1, 1)
        eps = (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * self.s ** 2 + 1 - a)
        if isinstance(self.v, dict):
            v = torch.tensor([self.v[int(i)] for i in t], dtype=F64)
        else:
            v = torch.full((len(t),), self.v, dtype=F64)
        return torch.cat([eps, v.view(-1, 1, 1, 1).expand_as(eps)], dim=1)


def _noise(n=64, seed=0):
    return torch.randn((n, 2, 4, 4), generator=torch.Generator().manual_seed(seed), dtype=F64)


def _ddim_invert(model, x0, y, num_steps):
    """Deterministic DDIM run forwards in time (x_0 -> x_T) on the same grid, with abar = 1 before its first step."""
    d = get_diffusion(num_steps)
    x = x0.clone()
    abar_prev = 1.0
    for i in range(d.num_timesteps):
        step = int(d.timestep_map[i])
        eps = model(x, torch.full((len(x),), step), y)[:, : x.shape[1]]  # eps at the current point: explicit step
        x0_pred = (x - math.sqrt(1 - abar_prev) * eps) / math.sqrt(abar_prev)
        a = float(d.alphas_cumprod[i])
        x, abar_prev = math.sqrt(a) * x0_pred + math.sqrt(1 - a) * eps, a
    return x


@pytest.mark.parametrize("num_steps, tol", [(1000, 1e-2), (250, 4e-2)])
def test_ddim_is_deterministic_solves_the_ode_and_inverts(num_steps, tol):
    mu, s = 0.3, 0.5
    model, y, noise = GaussianEps([mu, 0.0], s), torch.zeros(64, dtype=torch.long), _noise()
    x = sample(model, noise, y, method="ddim", num_steps=num_steps)
    assert torch.equal(x, sample(model, noise, y, method="ddim", num_steps=num_steps))
    # The probability-flow ODE keeps (x_t - sqrt(abar) mu) / sqrt(abar s^2 + 1 - abar) constant for Gaussian data;
    # DDIM is a first-order solver of it (measured max errors: 0.0054 at 1000 steps, 0.020 at 250).
    a = float(closed_form_abar()[-1])
    exact = mu + s * (noise - math.sqrt(a) * mu) / math.sqrt(a * s * s + 1 - a)
    assert_close(x, exact, rtol=0, atol=tol)
    assert_close(_ddim_invert(model, x, y, num_steps), noise, rtol=0, atol=2 * tol)  # measured 0.011, 0.045


def exact_v(num_steps: int, s: float) -> dict[int, float]:
    """v per original step such that the learned-range variance on the respaced grid is the true reverse variance
    Var[x_{t-1} | x_t] = posterior variance + coef1^2 Var[x_0 | x_t] for data N(mu, s^2), from closed forms."""
    steps = space_timesteps(T, num_steps)
    abar = closed_form_abar()[steps]
    abar_prev = torch.cat([torch.ones(1, dtype=F64), abar[:-1]])
    beta = 1 - abar / abar_prev
    post = beta * (1 - abar_prev) / (1 - abar)
    post_clipped = torch.cat([post[1:2], post[1:]])
    coef1 = beta * abar_prev.sqrt() / (1 - abar)
    true = post + coef1 ** 2 * s ** 2 * (1 - abar) / (abar * s ** 2 + 1 - abar)
    v = 2 * (true.log() - post_clipped.log()) / (beta.log() - post_clipped.log()) - 1
    return dict(zip(steps, v.tolist()))


def test_ddpm_with_the_true_variance_samples_the_data_distribution():
    """For Gaussian data every reverse step is exactly Gaussian, so DDPM with the true learned variance samples
    N(mu, s^2) exactly on any grid; v = -1 (posterior variance) is too narrow and v = +1 (beta) too wide."""
    mu, s, n_steps = 0.3, 0.5, 50
    noise, y = _noise(n=1024, seed=1), torch.zeros(1024, dtype=torch.long)
    stds = {}
    for v in ("exact", -1.0, 1.0):
        model = GaussianEps([mu, 0.0], s, v=exact_v(n_steps, s) if v == "exact" else v)
        x = sample(model, noise, y, method="ddpm", num_steps=n_steps, generator=torch.Generator().manual_seed(0))
        assert abs(float(x.mean()) - mu) < 0.01
        stds[v] = float(x.std())
    assert abs(stds["exact"] - s) < 0.01 and stds[-1.0] < s - 0.03 and stds[1.0] > s + 0.01, stds
    again = sample(model, noise, y, method="ddpm", num_steps=n_steps, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    assert not torch.equal(x, sample(model, noise, y, method="ddpm", num_steps=n_steps,
                                     generator=torch.Generator().manual_seed(1)))


def test_ddpm_per_image_generators_make_images_independent_of_the_batch():
    model, s = GaussianEps([0.3, 0.0], 0.5), dict(method="ddpm", num_steps=20)
    noise, y = _noise(6, seed=2), torch.zeros(6, dtype=torch.long)
    gens = lambda idx: [torch.Generator().manual_seed(100 + i) for i in idx]  # noqa: E731
    full = sample(model, noise, y, generator=gens(range(6)), **s)
    part = sample(model, noise[3:], y[3:], generator=gens(range(3, 6)), **s)
    assert_close(full[3:], part, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        sample(model, noise, y, generator=gens(range(5)), **s)


def test_guidance_on_eps_and_interval():
    """For Gaussian data eps is affine in mu, so guidance with scale w equals the unguided model with
    mu' = mu_null + w (mu_y - mu_null); with an interval, only steps with t / 1000 in it get mu'."""
    mus, w, s = [0.5, -0.4, 0.1], 3.0, 0.5  # classes 0, 1; null = 0.1
    guided_mus = [mus[2] + w * (m - mus[2]) for m in mus[:2]] + [mus[2]]
    y, noise = torch.tensor([0, 1] * 8), _noise(16)
    model = GaussianEps(mus, s)
    kw = dict(method="ddim", num_steps=50)
    assert_close(sample(model, noise, y, cfg_scale=w, **kw), sample(GaussianEps(guided_mus, s), noise, y, **kw))
    assert_close(sample(model, noise, y, cfg_scale=w, guidance_low=1.0, guidance_high=1.0, **kw),  # t / 1000 < 1
                 sample(model, noise, y, **kw))
    late = GaussianEps(mus, s, late=(guided_mus, 500))
    assert_close(sample(model, noise, y, cfg_scale=w, guidance_low=0.0, guidance_high=0.5, **kw),
                 sample(late, noise, y, **kw))
    with pytest.raises(ValueError):
        sample(model, noise, y, method="euler")


# ----------------------------------------------------------------------------------------------------------------
# DiT + SRA objective
# ----------------------------------------------------------------------------------------------------------------

def tiny_dit(seed=0):
    torch.manual_seed(seed)
    return sra.build_model("DiT-T/4", input_size=8, in_channels=1, num_classes=3, depth=2)


def test_draws_and_teacher_offsets():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    draws = {iv: Objective(DDPMProcess(), {"align": AlignConfig(interval=iv)}).draw(4096, (1, 8, 8), "cpu", g())
             for iv in ("uniform", "fixed", "none")}
    u = draws["uniform"]
    assert u["t"].dtype == torch.long and int(u["t"].min()) == 0 and int(u["t"].max()) == T - 1
    assert int(u["k"].min()) == 0 and int(u["k"].max()) == 199  # k ~ U{0..floor(1000 t_max) - 1}
    assert (draws["fixed"]["k"] == 200).all() and (draws["none"]["k"] == 0).all()
    for iv in ("fixed", "none"):  # the options do not shift the RNG stream
        assert torch.equal(draws[iv]["t"], u["t"]) and torch.equal(draws[iv]["noise"], u["noise"])


class RecordingTeacher:
    def __init__(self, model):
        self.model, self.calls = model, []

    def forward_features(self, x, t, y, depth):
        self.calls.append((x, t, y, depth))
        return self.model.forward_features(x, t, y, depth)


def test_objective_terms_and_teacher_inputs():
    model = tiny_dit()
    torch.nn.init.normal_(model.final_layer.linear.weight, std=0.1)  # nonzero outputs
    teacher = RecordingTeacher(copy.deepcopy(model).eval())
    obj = Objective(DDPMProcess(), {"align": AlignConfig(block_out_s=1, block_out_t=2, teacher_bf16=False)})
    g = torch.Generator().manual_seed(0)
    x0, y = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 3, (8,), generator=g)
    draws = obj.draw(8, (1, 8, 8), "cpu", g)
    draws["t"][:2] = torch.tensor([0, 5])
    draws["k"][:2] = torch.tensor([3, 150])  # both clamp to step 1
    terms = obj(model, teacher, x0, y, draws=draws)
    assert set(terms) == {"denoise", "vb", "align"} and all(v.shape == (8,) for v in terms.values())
    abar = closed_form_abar().float()
    a = abar[draws["t"]].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * draws["noise"]
    y_used = torch.where(draws["drop"] < 0.1, torch.full_like(y, 3), y)
    with torch.no_grad():
        out, h = model(xt, draws["t"], y_used, feature_depth=1)
    assert_close(terms["denoise"], ((out[:, :1] - draws["noise"]) ** 2).flatten(1).mean(1), rtol=1e-5, atol=1e-6)
    (xs, ts, ys, depth), = teacher.calls
    t_expected = torch.maximum(draws["t"] - draws["k"], torch.ones_like(draws["t"]))
    assert torch.equal(ts, t_expected) and ts[:2].tolist() == [1, 1] and depth == 2 and torch.equal(ys, y_used)
    a = abar[ts].view(-1, 1, 1, 1)
    x_teacher = a.sqrt() * x0 + (1 - a).sqrt() * draws["noise"]
    assert_close(xs, x_teacher, rtol=1e-5, atol=1e-6)
    g_tok = teacher.model.forward_features(x_teacher, ts, y_used, 2)
    cos = torch.nn.functional.cosine_similarity(model.ap_head(h), g_tok, dim=-1)
    assert_close(terms["align"], (1 - cos).mean(1), rtol=1e-4, atol=1e-5)


def test_no_alignment_means_no_teacher():
    class NoTeacher:
        def __getattr__(self, name):
            raise AssertionError("teacher used with alignment weight 0")

    obj = Objective(DDPMProcess(), {"align": AlignConfig(weight=0.0)})
    terms = obj(tiny_dit(), NoTeacher(), torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]),
                generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"denoise", "vb"}


def test_a_few_cpu_steps_of_dit_sra_lower_the_loss():
    model = tiny_dit()
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    obj = Objective(DDPMProcess(), {"align": AlignConfig(block_out_s=1, block_out_t=2, teacher_bf16=False)})
    g = torch.Generator().manual_seed(0)
    y = torch.arange(16) % 3
    x0 = (y.view(-1, 1, 1, 1).float() - 1) * 0.6 + 0.1 * torch.randn(16, 1, 8, 8, generator=g)  # class-coded
    draws = obj.draw(16, (1, 8, 8), "cpu", g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)

    def loss_now():
        with torch.no_grad():
            terms = obj(model, ema, x0, y, draws=draws)
        return float(combine(terms, {"denoise": 1.0, "vb": 1.0, "align": 0.5})), float(terms["denoise"].mean())

    before, denoise_before = loss_now()
    for step in range(25):
        terms = obj(model, ema, x0, y, draws=draws)
        loss = combine(terms, {"denoise": 1.0, "vb": 1.0, "align": 0.5})
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.lerp_(p, 0.1)
        assert torch.isfinite(loss)
    after, denoise_after = loss_now()
    assert after < 0.8 * before and denoise_after < denoise_before, (before, after)
    x = sample(ema, torch.randn(3, 1, 8, 8), torch.arange(3), method="ddim", num_steps=10)
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()
