"""Discrete Gaussian diffusion as in DiT / ADM (Ho et al. 2020; Nichol & Dhariwal 2021): the linear beta schedule,
the forward process q(x_t | x_0), its posterior q(x_{t-1} | x_t, x_0), the learned-range variance, and respacing.

Time convention (DiT): integer steps t = 0..T-1 with T = 1000. Step t has abar_t = prod_{s <= t} (1 - beta_s), so
t = 0 is already one noising step and t = T - 1 is nearly pure noise. The model always sees the step of the ORIGINAL
1000-step process, also when sampling on a respaced grid (`Diffusion.timestep_map`).
All tables are float64 (as in ADM); `extract` casts them to the dtype of the tensor they multiply.
"""
from __future__ import annotations

import functools

import torch

NUM_TIMESTEPS = 1000


def linear_betas(num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    """Ho et al.'s linear schedule, beta from 1e-4 to 0.02 over 1000 steps (both scaled by 1000 / T otherwise)."""
    scale = 1000 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)


def space_timesteps(num_timesteps: int, section_counts: int | str | list[int]) -> list[int]:
    """Steps of the original process kept by ADM's respacing, sorted ascending.

    `section_counts`: 250 or "250" (250 steps evenly spread over 0..T-1, both ends included), "10,15,20" (T split into
    equal sections, each strided to its own count), or "ddimN" (the DDIM paper's integer stride giving exactly N)."""
    if isinstance(section_counts, int):
        section_counts = [section_counts]
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            want = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == want:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"cannot take exactly {want} of {num_timesteps} steps with an integer stride")
        section_counts = [int(c) for c in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    steps, start = [], 0
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if not 1 <= count <= size:
            raise ValueError(f"cannot take {count} steps from a section of {size} (of {num_timesteps} steps)")
        stride = (size - 1) / (count - 1) if count > 1 else 1
        cur = 0.0
        for _ in range(count):  # accumulated (not j * stride) so that the grid matches ADM's exactly
            steps.append(start + round(cur))
            cur += stride
        start += size
    return sorted(set(steps))


class Diffusion:
    """Closed-form pieces of a discrete Gaussian diffusion with betas (T,), in float64.

    q(x_t | x_0)          = N(sqrt(abar_t) x_0, (1 - abar_t) I)
    q(x_{t-1} | x_t, x_0) = N(coef1_t x_0 + coef2_t x_t, beta_t (1 - abar_{t-1}) / (1 - abar_t) I)
    """

    TABLES = ("betas", "log_betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
              "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
              "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")

    def __init__(self, betas: torch.Tensor, timestep_map: torch.Tensor | None = None):
        b = torch.as_tensor(betas, dtype=torch.float64)
        if b.ndim != 1 or len(b) == 0 or not bool(((b > 0) & (b <= 1)).all()):
            raise ValueError("betas must be a non-empty 1-D tensor with values in (0, 1]")
        self.num_timesteps = len(b)
        # model step for each step of this process (the identity unless respaced)
        self.timestep_map = torch.arange(len(b)) if timestep_map is None else torch.as_tensor(timestep_map).long()
        abar = torch.cumprod(1 - b, 0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        self.betas, self.log_betas = b, b.log()
        self.alphas_cumprod, self.alphas_cumprod_prev = abar, abar_prev
        self.sqrt_alphas_cumprod, self.sqrt_one_minus_alphas_cumprod = abar.sqrt(), (1 - abar).sqrt()
        self.sqrt_recip_alphas_cumprod, self.sqrt_recipm1_alphas_cumprod = (1 / abar).sqrt(), (1 / abar - 1).sqrt()
        self.posterior_variance = b * (1 - abar_prev) / (1 - abar)
        # The posterior variance is 0 at t = 0, so its log is clipped to the t = 1 value there (ADM); a 1-step process
        # never adds noise at t = 0, any finite value does.
        first = self.posterior_variance[1:2] if len(b) > 1 else b[:1]
        self.posterior_log_variance_clipped = torch.cat([first, self.posterior_variance[1:]]).log()
        self.posterior_mean_coef1 = b * abar_prev.sqrt() / (1 - abar)
        self.posterior_mean_coef2 = (1 - abar_prev) * (1 - b).sqrt() / (1 - abar)
        self._on_device: dict = {}

    def respaced(self, use_timesteps) -> "Diffusion":
        """The process that visits only `use_timesteps` (ADM's SpacedDiffusion): same abar at those steps, with
        beta'_i = 1 - abar_{s_i} / abar_{s_{i-1}}; the model keeps seeing the original steps."""
        keep = torch.as_tensor(sorted(set(int(s) for s in use_timesteps)), dtype=torch.long)
        if len(keep) == 0 or keep[0] < 0 or keep[-1] >= self.num_timesteps:
            raise ValueError(f"respaced steps must lie in 0..{self.num_timesteps - 1}")
        abar = self.alphas_cumprod[keep]
        betas = 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
        return Diffusion(betas, timestep_map=self.timestep_map[keep])

    # -- table look-up ---------------------------------------------------------------------------------------------

    def extract(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table `name` at steps t (N,), shaped (N, 1, ..., 1) to broadcast against `like`, in its dtype; a t of more
        dimensions (one step per pixel, (N, 1, H, W), for token groups) is looked up elementwise and kept in shape."""
        key = (name, t.device)
        table = self._on_device.get(key)
        if table is None:  # one copy per device; MPS has no float64
            dtype = torch.float32 if t.device.type == "mps" else torch.float64
            table = self._on_device[key] = getattr(self, name).to(t.device, dtype)
        values = table[t.long()].to(like.dtype)
        return values if t.ndim > 1 else values.reshape(-1, *([1] * (like.ndim - 1)))

    # -- the forward process and its posterior ---------------------------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        a, b = self.extract("sqrt_alphas_cumprod", t, x0), self.extract("sqrt_one_minus_alphas_cumprod", t, x0)
        return a * x0 + b * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self.extract("posterior_mean_coef1", t, xt) * x0 + self.extract("posterior_mean_coef2", t, xt) * xt
        return mean, self.extract("posterior_log_variance_clipped", t, xt)

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        a, b = self.extract("sqrt_recip_alphas_cumprod", t, xt), self.extract("sqrt_recipm1_alphas_cumprod", t, xt)
        return a * xt - b * eps

    def model_log_variance(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Learned range (Nichol & Dhariwal, Eq. 15): v in [-1, 1] interpolates log posterior variance (v = -1) and
        log beta (v = +1)."""
        frac = (v + 1) / 2
        max_log, min_log = self.extract("log_betas", t, v), self.extract("posterior_log_variance_clipped", t, v)
        return frac * max_log + (1 - frac) * min_log

    def p_mean_variance(self, out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Mean, log-variance of p(x_{t-1} | x_t) and the x_0 prediction from a model output (N, 2C, ...) = (eps, v)."""
        c = xt.shape[1]
        if out.shape[1] != 2 * c:
            raise ValueError(f"expected a learned-sigma output with {2 * c} channels, got {out.shape[1]}")
        eps, v = out[:, :c], out[:, c:]
        x0 = self.predict_x0(xt, t, eps)
        mean, _ = self.q_posterior(x0, xt, t)
        return mean, self.model_log_variance(v, t), x0


@functools.lru_cache(maxsize=8)
def get_diffusion(respacing: int | str | None = None) -> Diffusion:
    """DiT's 1000-step linear diffusion, respaced to `respacing` (e.g. 250 or "250"; None: all steps). Cached."""
    base = Diffusion(linear_betas(NUM_TIMESTEPS))
    if respacing is None or respacing == "":
        return base
    return base.respaced(space_timesteps(NUM_TIMESTEPS, respacing))
