"""SiTPipeline: class-conditional sampling of a SiT (flow matching) with sra's samplers, written out by
`sra export --format diffusers` so that diffusers loads the export without sra:

    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    images = pipe(class_labels=[0, 1, 2], num_inference_steps=50, mode="ode", guidance_scale=1.0).images

Time runs from t = 1 (noise) to t = 0 (data); the state is kept in float64.
- mode "ode": Euler (or Heun, `heun=True`) on dx/dt = v(x, t) over linspace(1, 0, steps + 1).
- mode "sde": Euler-Maruyama on dx = [v - w_t s] dt + sqrt(2 w_t) dW with w_t = t (the released REPA/SRA samplers),
  s the score read off the velocity through the training path, on linspace(1, 0.04, steps), then one noise-free step
  to t = 0.
Classifier-free guidance uses the null label `num_classes`, only in steps starting at t in [guidance_low,
guidance_high] (the defaults, SDE 250 steps, CFG 1.8 in [0, 0.7], are the authors' ImageNet protocol and `sra sample`'s).
`generator`: one torch.Generator, or one per image (image i's initial and SDE noise from generator[i], so an image does
not depend on its batch); with the same generators the samples equal `sra sample`'s.
"""
import math

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

SDE_LAST_TIME = 0.04


def path_coefficients(path, t):
    """(alpha, sigma, d_alpha/dt, d_sigma/dt) of x_t = alpha x0 + sigma eps; linear (1 - t, t) or cosine."""
    if path == "linear":
        return 1 - t, t, -torch.ones_like(t), torch.ones_like(t)
    a = t * (math.pi / 2)
    return torch.cos(a), torch.sin(a), -(math.pi / 2) * torch.sin(a), (math.pi / 2) * torch.cos(a)


class SiTPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]  # None for pixel-space models

    def __init__(self, transformer, vae, path_type="linear", latent_scale=None, latent_mean=None,
                 latent_std=None, id2label=None):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae)  # vae None: a pixel-space model
        # model space -> VAE latents: x / latent_scale, or x * latent_std + latent_mean per channel
        self.register_to_config(path_type=path_type, latent_scale=latent_scale, latent_mean=latent_mean,
                                latent_std=latent_std, id2label=id2label)

    # -- sampling --------------------------------------------------------------------------------------------------

    def velocity(self, x, t, y, scale):
        """The model's velocity at scalar time t as float64, guided with the null label when scale > 1."""
        model = self.transformer
        n, c = x.shape[0], x.shape[1]
        if scale > 1.0:
            null = torch.full_like(y, model.config.num_classes)
            tt = torch.full((2 * n,), t, device=x.device, dtype=torch.float32)
            out = model(torch.cat([x, x]).to(model.dtype), tt, torch.cat([y, null]))[:, :c].double()
            cond, uncond = out[:n], out[n:]
            return uncond + scale * (cond - uncond)
        tt = torch.full((n,), t, device=x.device, dtype=torch.float32)
        return model(x.to(model.dtype), tt, y)[:, :c].double()

    def score(self, v, x, t):
        tt = torch.full((x.shape[0],), float(t), dtype=torch.float64, device=x.device)
        alpha, sigma, d_alpha, d_sigma = (c.reshape(-1, 1, 1, 1) for c in path_coefficients(self.config.path_type, tt))
        ratio = alpha / d_alpha
        return (ratio * v - x) / (sigma ** 2 - ratio * d_sigma * sigma)

    @staticmethod
    def randn(shape, generator, device):
        """Standard normal noise (float64 on `device`), row i from generator[i] when given a list."""
        if isinstance(generator, (list, tuple)):
            if len(generator) != shape[0]:
                raise ValueError(f"{len(generator)} generators for {shape[0]} images")
            z = torch.stack([torch.randn(shape[1:], generator=g, device=g.device) for g in generator])
        else:
            z = torch.randn(shape, generator=generator, device=generator.device if generator is not None else device)
        return z.to(device, torch.float64)

    @torch.no_grad()
    def __call__(self, class_labels, num_inference_steps=250, mode="sde", guidance_scale=1.8, guidance_low=0.0,
                 guidance_high=0.7, heun=False, generator=None, latents=None, output_type="pil", return_dict=True):
        """class_labels: list of ints. output_type: "pil", "np" (N, H, W, C) in [0, 1], "pt" (N, C, H, W) in [0, 1],
        or "latent" (the model-space samples before decoding, float32)."""
        model, device = self.transformer, self._execution_device
        cfg = model.config
        if mode not in ("ode", "sde"):
            raise ValueError(f"mode must be 'ode' or 'sde', got {mode!r}")
        if num_inference_steps < 1 or guidance_scale < 1 or not 0 <= guidance_low <= guidance_high <= 1:
            raise ValueError("need num_inference_steps >= 1, guidance_scale >= 1, 0 <= guidance_low <= "
                             "guidance_high <= 1")
        if guidance_scale > 1 and cfg.class_dropout_prob <= 0:
            raise ValueError("this model was trained without label dropout: it has no null label to guide with")
        y = torch.as_tensor(class_labels, device=device).reshape(-1).long()
        if ((y < 0) | (y >= cfg.num_classes)).any():
            raise ValueError(f"class labels must lie in 0..{cfg.num_classes - 1}")
        shape = (len(y), cfg.in_channels, cfg.input_size, cfg.input_size)
        x = self.randn(shape, generator, device) if latents is None else latents.to(device, torch.float64)

        def scale_at(t):  # guidance only inside the interval
            return guidance_scale if guidance_low <= t <= guidance_high else 1.0

        if mode == "ode":
            grid = torch.linspace(1.0, 0.0, num_inference_steps + 1, dtype=torch.float64).tolist()
            for i, (t_cur, t_next) in enumerate(self.progress_bar(list(zip(grid[:-1], grid[1:])))):
                d_cur = self.velocity(x, t_cur, y, scale_at(t_cur))
                x_next = x + (t_next - t_cur) * d_cur
                if heun and i < num_inference_steps - 1:
                    d_next = self.velocity(x_next, t_next, y, scale_at(t_cur))
                    x_next = x + (t_next - t_cur) * 0.5 * (d_cur + d_next)
                x = x_next
        else:
            grid = torch.linspace(1.0, SDE_LAST_TIME, num_inference_steps, dtype=torch.float64).tolist() + [0.0]
            last = len(grid) - 2
            for i, (t_cur, t_next) in enumerate(self.progress_bar(list(zip(grid[:-1], grid[1:])))):
                dt = t_next - t_cur
                v = self.velocity(x, t_cur, y, scale_at(t_cur))
                x = x + dt * (v - t_cur * self.score(v, x, t_cur))  # w_t = t
                if i < last:
                    x = x + (2 * t_cur * abs(dt)) ** 0.5 * self.randn(x.shape, generator, device)
        x = x.float()
        if output_type == "latent":
            images = x
        else:
            if self.vae is not None:
                if self.config.latent_mean is not None:
                    mean = torch.tensor(self.config.latent_mean, device=device).view(1, -1, 1, 1)
                    std = torch.tensor(self.config.latent_std, device=device).view(1, -1, 1, 1)
                    z = x * std + mean
                else:
                    z = x / (self.config.latent_scale or self.vae.config.scaling_factor)
                x = self.vae.decode(z.to(self.vae.dtype)).sample.float()
            images = ((x.clamp(-1, 1) + 1) / 2).clamp(0, 1)
            if output_type != "pt":
                images = images.cpu().permute(0, 2, 3, 1).numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)
