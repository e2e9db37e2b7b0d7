"""`sra export`: safetensors round trip through load_model; diffusers' DiTPipeline and the SiT export's own pipeline
(loaded offline through diffusers) give sra's samples for the same noise; every export has a model card."""
import json

import pytest
import torch

from sra.cli import main
from sra.models import build_model, load_model
from sra.checkpoint import save_checkpoint


def random_model(name, **kw):
    """A preset with every parameter random (adaLN-Zero init would make blocks identities and hide mapping bugs)."""
    torch.manual_seed(0)
    model = build_model(name, input_size=8, in_channels=4, num_classes=10, **kw)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n != "pos_embed":
                p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def checkpoint(tmp_path, model, step=7):
    path = tmp_path / "run" / "checkpoints" / f"{step:07d}.pt"
    ema = model.state_dict()
    online = {k: v + 1 for k, v in ema.items()}  # different online weights: the export must take the EMA
    save_checkpoint({"model": online, "ema": ema, "step": step, "config": {"model": "x"}}, path)
    return path


def test_safetensors_export_loads_back_strictly_with_equal_outputs(tmp_path):
    model = random_model("SiT-T/2")
    path = checkpoint(tmp_path, model)
    assert main(["export", str(tmp_path / "run"), "--output", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architecture"]["num_heads"] == 4 and cfg["step"] == 7 and cfg["process"] == {"name": "flow", "path": "linear"}
    loaded = load_model(tmp_path / "out")
    assert loaded.step == 7 and loaded.config == {"model": "x"} and loaded.process == {"name": "flow", "path": "linear"}
    for k, v in model.state_dict().items():  # the EMA weights, strictly (load_model loads strictly)
        assert torch.equal(loaded.model.state_dict()[k], v), k
    x, t, y = torch.randn(3, 4, 8, 8), torch.rand(3), torch.tensor([0, 5, 10])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, t, y), model(x, t, y), rtol=0, atol=0)
    assert path.exists()


def test_safetensors_config_carries_what_shapes_cannot(tmp_path):
    from sra.models.export import export_safetensors
    from sra.models.loading import LoadedModel

    # 8 heads at width 128: the shapes alone suggest 4 (the T preset's), so the JSON config must carry it.
    model = random_model("DiT-T/2", num_heads=8)
    export_safetensors(LoadedModel(model, {"name": "ddpm"}, None, tmp_path, 3), tmp_path / "out")
    for source in (tmp_path / "out", tmp_path / "out" / "model.safetensors"):
        loaded = load_model(source)
        assert loaded.model.num_heads == 8 and loaded.process == {"name": "ddpm"} and loaded.step == 3
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, t, y), model(x, t, y), rtol=0, atol=0)


def test_diffusers_transformer_matches_our_dit(tmp_path):
    pytest.importorskip("diffusers")
    from sra.models.export import DIFFUSERS_NULL_CLASS, load_diffusers_dit, to_diffusers

    model = random_model("DiT-T/2")
    to_diffusers(model).save_pretrained(tmp_path / "hf")
    theirs = load_diffusers_dit(tmp_path / "hf")
    x = torch.randn(4, 4, 8, 8)
    t = torch.tensor([0, 1, 500, 999])
    with torch.no_grad():
        ours = model(x, t, torch.tensor([0, 3, 9, 10]))  # 10 = our null label of classifier-free guidance
        # diffusers' DiTPipeline guides with class 1000: the export keeps our null embedding there
        out = theirs(x, timestep=t, class_labels=torch.tensor([0, 3, 9, DIFFUSERS_NULL_CLASS])).sample
        assert out.shape == ours.shape == (4, 8, 8, 8)
        assert (out - ours).abs().max() < 1e-4
        # classes the model never learned give NaN, not plausible images
        assert theirs(x[:1], timestep=t[:1], class_labels=torch.tensor([11])).sample.isnan().all()
        # diffusers' stock time projection (downscale_freq_shift=1) is measurably different: the fix matters.
        for block in theirs.transformer_blocks:
            block.norm1.emb.time_proj.downscale_freq_shift = 1
        assert (theirs(x, timestep=t, class_labels=torch.tensor([0, 3, 9, 1000])).sample - ours).abs().max() > 1e-3


def export_with_vae(tmp_path, name, **kw):
    """A random model's run, a tiny local VAE (16 px images <-> 4 x 8 x 8 latents) and its diffusers export."""
    from conftest import save_tiny_vae

    model = random_model(name, **kw)
    checkpoint(tmp_path, model)
    vae = save_tiny_vae(tmp_path / "vae", sample_size=16)
    assert main(["export", str(tmp_path / "run"), "--format", "diffusers", "--output", str(tmp_path / "hf"),
                 "--vae", str(vae)]) == 0
    return model, vae


def test_dit_export_loads_with_ditpipeline_and_samples_as_sra_ddim(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    from diffusers import DiTPipeline

    from sra.data.vae import decode_latents
    from sra.process.ddpm_samplers import ddim_step, guided_output
    from sra.process.ddpm_schedule import get_diffusion
    from sra.generate import image_generators, latent_decoding

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, vae = export_with_vae(tmp_path, "DiT-T/2")
    out = tmp_path / "hf"
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DiTPipeline"
    pipe = DiTPipeline.from_pretrained(str(out))  # as is: transformer, DDIM scheduler, VAE
    pipe.set_progress_bar_config(disable=True)
    for block in pipe.transformer.transformer_blocks:  # the model card's fix (diffusers hard-codes the shift)
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    loaded = load_model(tmp_path / "run")
    net, unnormalize, latent_map = latent_decoding(loaded, None, str(vae))
    assert pipe.vae.config.scaling_factor == latent_map["scale"]
    y = torch.tensor([0, 3, 9])
    for cfg in (1.0, 3.0):  # 3: guidance with diffusers' null class 1000, on every epsilon channel
        noise = torch.stack([torch.randn(4, 8, 8, generator=g) for g in image_generators(5, range(3))])
        diffusion, x = get_diffusion("ddim10"), noise.double()  # DDIM on the stride grid 0, 100, ..., 900
        with torch.no_grad():
            for i in reversed(range(diffusion.num_timesteps)):
                eps, _ = guided_output(model, x, int(diffusion.timestep_map[i]), y, cfg, 0.0, 1.0, "all")
                x = ddim_step(diffusion, x, i, eps)
            ours = ((decode_latents(net, unnormalize(x.float())) + 1) / 2).clamp(0, 1)
        theirs = pipe(class_labels=y.tolist(), num_inference_steps=10, guidance_scale=cfg,
                      generator=image_generators(5, range(3)), output_type="pt").images
        assert theirs.shape == (3, 3, 16, 16)
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: diffusers\nlicense: mit\n") and "arxiv:2505.02831" in card
    assert "downscale_freq_shift = 0" in card and "step\n7" in card.replace(" ", "\n")


@pytest.mark.parametrize("name,channels", [("SiT-T/2", 4), ("SiT-T/4", 1)])
def test_sit_export_loads_through_diffusers_offline_and_equals_sra_sample(tmp_path, monkeypatch, name, channels):
    """The export's own pipeline, loaded by diffusers with trust_remote_code and no network, samples what sra's
    samplers (`sra sample`'s sample_images) give for the same per-image generators: SDE with guidance in an interval
    and Heun's ODE, through a latent model's VAE and a pixel model."""
    pytest.importorskip("diffusers")
    from diffusers import DiffusionPipeline

    from sra.generate import SamplerOptions, image_generators, make_decoder, process_of, sample_images

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if channels == 4:
        export_with_vae(tmp_path, name)
    else:
        torch.manual_seed(0)
        model = build_model(name, input_size=16, in_channels=1, num_classes=10)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n != "pos_embed":
                    p.copy_(torch.randn_like(p) * 0.2)
        checkpoint(tmp_path, model)
        assert main(["export", str(tmp_path / "run"), "--format", "diffusers", "--output", str(tmp_path / "hf")]) == 0
    out = tmp_path / "hf"
    assert (out / "pipeline_sit.py").is_file() and (out / "transformer" / "modeling_sit.py").is_file()
    pipe = DiffusionPipeline.from_pretrained(str(out), trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == "SiTPipeline" and (pipe.vae is None) == (channels == 1)
    loaded = load_model(tmp_path / "run")
    process = process_of(loaded)
    decode = make_decoder(loaded, None, str(tmp_path / "vae") if channels == 4 else None)
    y = torch.tensor([0, 3, 9])
    for mode, cfg, heun in (("sde", 1.8, False), ("ode", 2.5, True)):
        opts = SamplerOptions(mode=mode, num_steps=6, cfg_scale=cfg, guidance_low=0.2, guidance_high=0.7,
                              heun=heun).resolve(process)
        ours = ((sample_images(loaded, process, opts, 3, range(3), y, decode) + 1) / 2).clamp(0, 1)
        theirs = pipe(class_labels=y.tolist(), num_inference_steps=6, mode=mode, guidance_scale=cfg, heun=heun,
                      guidance_low=0.2, guidance_high=0.7, generator=image_generators(3, range(3)),
                      output_type="pt").images
        assert theirs.shape == ours.shape
        torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    card = (out / "README.md").read_text()
    assert "trust_remote_code=True" in card and "library_name: diffusers" in card


def test_model_card_carries_the_logged_evaluations(tmp_path):
    model = random_model("SiT-T/2")
    checkpoint(tmp_path, model)
    rows = [{"step": 5, "loss": 0.5}, {"step": 5, "fd_fmnist": 301.25, "class_acc": 0.25},
            {"step": 7, "fd_fmnist": 123.5, "class_acc": 0.625}]
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["export", str(tmp_path / "run"), "--output", str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| 7 | FD-FMNIST | 123.5000 |" in card and "| 7 | class accuracy (FD-FMNIST classifier) | 0.6250 |" in card
    assert "301.25" not in card and "https://arxiv.org/abs/2505.02831" in card
    assert '"model": "x"' in card  # the training config


def test_diffusers_export_of_a_dit_with_over_1000_classes_is_refused(tmp_path, capsys):
    torch.manual_seed(0)
    checkpoint(tmp_path, build_model("DiT-T/2", input_size=8, in_channels=3, num_classes=1001))
    assert main(["export", str(tmp_path / "run"), "--format", "diffusers"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "null label" in err[0]


@pytest.mark.parametrize("channels", [1, 3])
def test_diffusers_export_of_a_pixel_dit_is_refused_before_anything_is_written(tmp_path, capsys, channels):
    """DiTPipeline always decodes through a VAE, so a folder without one would not load."""
    pytest.importorskip("diffusers")
    torch.manual_seed(0)
    checkpoint(tmp_path, build_model("DiT-T/2", input_size=8, in_channels=channels, num_classes=10))
    assert main(["export", str(tmp_path / "run"), "--format", "diffusers", "--output", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "use --format safetensors" in err[0]
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["022", "027"])
def test_exported_and_atomically_written_files_get_the_mode_open_gives(tmp_path, umask):
    """safetensors writes its files 0600; exports and run files get 0666 less the umask, as open() would make them."""
    import os
    import stat

    from sra.runfolder import atomic_write

    checkpoint(tmp_path, random_model("SiT-T/2"))
    old = os.umask(umask)
    try:
        assert main(["export", str(tmp_path / "run"), "--output", str(tmp_path / "out")]) == 0
        atomic_write(tmp_path / "private", lambda tmp: os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)))
    finally:
        os.umask(old)
    files = [*(tmp_path / "out").iterdir(), tmp_path / "private"]
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o666 & ~umask for f in files}
