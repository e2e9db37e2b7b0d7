"""DiT sampling against the authors' DiT-SRA protocol written out independently: ADM respacing, DDIM (eta 0) in
float32 with float64 tables cast per step, and DiT's forward_with_cfg (guidance on epsilon channels 0-2 only)."""
import numpy as np
import pytest
import torch

import sra
from conftest import randomize_zero_layers
from sra.process.ddpm_samplers import sample


def adm_respaced_tables(num_steps: int):
    """ADM's space_timesteps(1000, str(num_steps)) + SpacedDiffusion: the kept steps and the new process's tables."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    stride, cur, keep = (1000 - 1) / (num_steps - 1), 0.0, []
    for _ in range(num_steps):
        keep.append(round(cur))
        cur += stride
    new_betas, last = [], 1.0
    for i, a in enumerate(abar):
        if i in keep:
            new_betas.append(1 - a / last)
            last = a
    new_abar = np.cumprod(1.0 - np.array(new_betas))
    return keep, dict(abar_prev=np.append(1.0, new_abar[:-1]), recip=np.sqrt(1.0 / new_abar),
                      recipm1=np.sqrt(1.0 / new_abar - 1))


def reference_ddim(model, z, y, num_steps, cfg_scale, guided_channels=3):
    """The released DiT-SRA generate path with DDIM: z doubled, labels [y, null], model.forward_with_cfg (guidance on
    model_out[:, :3], the rest of each half unguided, the guided eps written into both halves), p_mean_variance with
    clip_denoised=False, eps re-derived from x0, then the cond half."""
    keep, tab = adm_respaced_tables(num_steps)
    n, c = z.shape[:2]
    guided = cfg_scale > 1
    x = torch.cat([z, z]) if guided else z.clone()
    labels = torch.cat([y, torch.full_like(y, model.num_classes)]) if guided else y

    def ext(name, i):  # _extract_into_tensor: float64 table -> float32
        return torch.from_numpy(tab[name])[torch.full((len(x),), i)].float().view(-1, 1, 1, 1)

    for i in reversed(range(num_steps)):
        t = torch.full((len(x),), keep[i], dtype=torch.long)  # _WrappedModel: respaced index -> original step
        if guided:
            half = x[: len(x) // 2]
            out = model(torch.cat([half, half]), t, labels)
            eps, rest = out[:, :guided_channels], out[:, guided_channels:]
            cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
            half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
            out = torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)
        else:
            out = model(x, t, labels)
        eps = out[:, :c]
        x0 = ext("recip", i) * x - ext("recipm1", i) * eps
        eps = (ext("recip", i) * x - x0) / ext("recipm1", i)
        x = x0 * ext("abar_prev", i).sqrt() + (1 - ext("abar_prev", i)).sqrt() * eps
    return x.chunk(2)[0] if guided else x


@pytest.fixture(scope="module")
def dit():
    m = sra.build_model("DiT-T/4", input_size=8, in_channels=4, num_classes=5, depth=2)
    return randomize_zero_layers(m, seed=3).eval()


@pytest.mark.parametrize("cfg_scale", [4.0, 1.0])
def test_ddim_10_steps_matches_the_authors_dit_protocol(dit, cfg_scale):
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(6, 4, 8, 8, generator=g), torch.tensor([0, 1, 2, 3, 4, 0])
    with torch.no_grad():
        ref = reference_ddim(dit, z, y, 10, cfg_scale)
        ours = sample(dit, z, y, method="ddim", num_steps=10, cfg_scale=cfg_scale)
    assert ((ours - ref).norm() / ref.norm()).item() < 1e-5
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_all_channel_guidance_is_the_standard_rule_and_differs(dit):
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(4, 4, 8, 8, generator=g), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        ref_all = reference_ddim(dit, z, y, 10, 4.0, guided_channels=4)  # DiT's commented-out line
        ours_all = sample(dit, z, y, method="ddim", num_steps=10, cfg_scale=4.0, cfg_channels="all")
        ours_dit = sample(dit, z, y, method="ddim", num_steps=10, cfg_scale=4.0)
    torch.testing.assert_close(ours_all, ref_all, rtol=1e-5, atol=1e-5 * ref_all.abs().max().item())
    assert (ours_all - ours_dit)[:, 3].abs().max() > 1e-2  # channel 3 is where the two rules differ
    with pytest.raises(ValueError, match="cfg_channels"):
        sample(dit, z, y, method="ddim", num_steps=10, cfg_scale=4.0, cfg_channels="eps")


# ----------------------------------------------------------------------------------------------------------------
# Training defaults per family and the released epoch decay
# ----------------------------------------------------------------------------------------------------------------

def released_align_factor(family, distance, epoch, resolution):
    """The factor on the mean alignment loss in the released train.py files, written out: SiT-SRA multiplies cos by
    0.5 and every other distance by 2 * 0.1 ** (...), DiT-SRA (smooth-L1 only) by 0.4 * 0.1 ** (...)."""
    if family == "SiT" and distance == "cos":
        return 0.5
    base = 2 if family == "SiT" else 0.4
    if resolution == 256:
        return base * (0.1 ** (((epoch - 149) / 1000 + 1) if epoch > 149 else 1))
    return base * (0.1 ** (((epoch - 99) / 800 + 1) if epoch > 99 else 1))


@pytest.mark.parametrize("model, distance", [("DiT-XL/2", None), ("SiT-XL/2", None), ("SiT-XL/2", "sml1")])
@pytest.mark.parametrize("latent_side, resolution", [(32, 256), (64, 512)])
def test_family_defaults_and_epoch_decay_are_the_released_codes(model, distance, latent_side, resolution):
    import dataclasses

    from sra.train.config import TrainConfig, resolve

    cfg = TrainConfig(model=model)
    if distance:
        cfg = dataclasses.replace(cfg, terms={"align": dataclasses.replace(cfg.term("align"), distance=distance)})
    cfg = resolve(cfg, (4, latent_side, latent_side), 1000, "cpu")
    family = model[:3]
    want_distance = distance or ("sml1" if family == "DiT" else "cos")
    assert cfg.term("align").distance == want_distance
    for epoch in list(range(0, 1700, 37)) + [99, 100, 149, 150]:
        want = released_align_factor(family, want_distance, epoch, resolution)
        got = cfg.term("align").effective_weight(epoch, cfg.input_size)
        assert got == pytest.approx(want, rel=1e-12), (epoch, got, want)


def test_explicit_alignment_options_win_over_the_family_defaults():
    import dataclasses

    from sra.train.config import TrainConfig, resolve

    def with_align(**given):
        cfg = TrainConfig(model="DiT-B/2")
        return dataclasses.replace(cfg, terms={"align": dataclasses.replace(cfg.term("align"), **given)})

    a = resolve(with_align(distance="cos", legacy_epoch_decay=None), (4, 32, 32), 1000, "cpu").term("align")
    assert (a.distance, a.weight, a.legacy_epoch_decay) == ("cos", 0.5, False)
    a = resolve(with_align(weight=0.1, legacy_epoch_decay=False), (4, 32, 32), 1000, "cpu").term("align")
    assert (a.distance, a.weight, a.legacy_epoch_decay) == ("sml1", 0.1, False)
    assert a.effective_weight(900, 32) == 0.1


def test_cli_dry_run_shows_dit_defaults(capsys):
    import json

    from sra.cli import main

    assert main(["train", "--model", "DiT-T/4", "--data-dir", "digits", "--dry-run"]) == 0
    align = json.loads(capsys.readouterr().out)["align"]
    assert (align["distance"], align["weight"], align["legacy_epoch_decay"]) == ("sml1", 0.04, True)
    assert main(["train", "--model", "DiT-T/4", "--data-dir", "digits", "--no-legacy-epoch-decay", "--loss-type",
                 "l2", "--dry-run"]) == 0
    align = json.loads(capsys.readouterr().out)["align"]
    assert (align["distance"], align["weight"], align["legacy_epoch_decay"]) == ("l2", 0.04, False)
