"""ODE samplers for velocity models (t from 1 = noise to 0 = data), with classifier-free guidance in an interval."""
from __future__ import annotations

import torch


def guided_velocity(model, x: torch.Tensor, t: float, y: torch.Tensor, cfg_scale: float,
                    guidance_low: float, guidance_high: float) -> torch.Tensor:
    """Model velocity at scalar time t, in float64. Guidance with the null label only where cfg_scale > 1 and
    guidance_low <= t <= guidance_high; elsewhere one plain conditional forward."""
    dtype = next(model.parameters()).dtype
    n = x.shape[0]
    if cfg_scale > 1.0 and guidance_low <= t <= guidance_high:
        null = torch.full_like(y, model.num_classes)
        tt = torch.full((2 * n,), t, device=x.device, dtype=torch.float32)
        out = model(torch.cat([x, x]).to(dtype), tt, torch.cat([y, null])).double()
        out = out[:, : x.shape[1]]
        cond, uncond = out[:n], out[n:]
        return uncond + cfg_scale * (cond - uncond)
    tt = torch.full((n,), t, device=x.device, dtype=torch.float32)
    return model(x.to(dtype), tt, y).double()[:, : x.shape[1]]


@torch.no_grad()
def euler_sampler(model, noise: torch.Tensor, y: torch.Tensor, num_steps: int = 50, heun: bool = False,
                  cfg_scale: float = 1.0, guidance_low: float = 0.0, guidance_high: float = 1.0) -> torch.Tensor:
    """Euler (or Heun) integration of dx/dt = v(x, t) on linspace(1, 0, num_steps + 1); state in float64.
    Heun corrects every step but the last (whose end point t = 0 the model never sees)."""
    if cfg_scale < 1.0:
        raise ValueError(f"cfg_scale must be >= 1 (got {cfg_scale})")
    grid = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64).tolist()
    x = noise.double()
    guide = (cfg_scale, guidance_low, guidance_high)
    for i, (t_cur, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        d_cur = guided_velocity(model, x, t_cur, y, *guide)
        x_next = x + (t_next - t_cur) * d_cur
        if heun and i < num_steps - 1:
            d_next = guided_velocity(model, x_next, t_next, y, *guide)
            x_next = x + (t_next - t_cur) * 0.5 * (d_cur + d_next)
        x = x_next
    return x.to(noise.dtype)
