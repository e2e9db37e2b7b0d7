"""`sra export`: safetensors round trip through load_model; diffusers' DiTTransformer2DModel gives our outputs."""
import json

import pytest
import torch

from sra.cli import main
from sra.models import build_model, load_model
from sra.train import save_checkpoint


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
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architecture"]["num_heads"] == 4 and cfg["step"] == 7 and cfg["family"] == "SiT"
    loaded = load_model(tmp_path / "out")
    assert loaded.step == 7 and loaded.config == {"model": "x"} and loaded.family == "SiT"
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
    export_safetensors(LoadedModel(model, "DiT", None, tmp_path, 3), tmp_path / "out")
    for source in (tmp_path / "out", tmp_path / "out" / "model.safetensors"):
        loaded = load_model(source)
        assert loaded.model.num_heads == 8 and loaded.family == "DiT" and loaded.step == 3
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x, t, y), model(x, t, y), rtol=0, atol=0)


def test_diffusers_export_matches_our_dit(tmp_path):
    pytest.importorskip("diffusers")
    from sra.models.export import load_diffusers_dit

    model = random_model("DiT-T/2")
    checkpoint(tmp_path, model)
    assert main(["export", str(tmp_path / "run"), "--format", "diffusers", "--output", str(tmp_path / "hf")]) == 0
    theirs = load_diffusers_dit(tmp_path / "hf")
    x = torch.randn(4, 4, 8, 8)
    t = torch.tensor([0, 1, 500, 999])
    y = torch.tensor([0, 3, 9, 10])  # 10 = the null label of classifier-free guidance
    with torch.no_grad():
        ours = model(x, t, y)
        out = theirs(x, timestep=t, class_labels=y).sample
        assert out.shape == ours.shape == (4, 8, 8, 8)
        assert (out - ours).abs().max() < 1e-4
        # diffusers' stock time projection (downscale_freq_shift=1) is measurably different: the fix matters.
        for block in theirs.transformer_blocks:
            block.norm1.emb.time_proj.downscale_freq_shift = 1
        assert (theirs(x, timestep=t, class_labels=y).sample - ours).abs().max() > 1e-3


def test_diffusers_export_of_a_sit_is_refused(tmp_path, capsys):
    checkpoint(tmp_path, random_model("SiT-T/2"))
    assert main(["export", str(tmp_path / "run"), "--format", "diffusers"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--format safetensors" in err[0]
