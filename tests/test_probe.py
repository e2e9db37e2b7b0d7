"""Linear probes and PCA maps (issue 10): the math on known structure, the pictures' sizes, the CLI end to end."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import estimate_of
from sra.cli import main
from sra.data import TensorImageDataset
from sra.analysis.pca import grid_size, model_input, pca_maps, principal_components, render_grid, to_rgb
from sra.process import DDPMProcess, FlowProcess
from sra.process.flow import FlowConfig
from sra.analysis.probe import (block_tokens, fit_linear_classifier, linear_probe,
                                  null_labels, per_image_noise, plot_probe, probe_accuracy)
from sra.models import build_model


def tiny_model(**kw):
    torch.manual_seed(0)
    return build_model("SiT-T/4", input_size=8, in_channels=1, num_classes=3, depth=2, **kw).eval()


def test_block_tokens_match_forward_features():
    model = tiny_model()
    for b in model.blocks:  # non-zero adaLN so that the blocks do something
        torch.nn.init.normal_(b.adaLN_modulation[-1].weight, std=0.02)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor(0.3), null_labels(model, 4)
    tokens = block_tokens(model, x, t, y, [0, 1, 2])
    for d in (0, 1, 2):
        torch.testing.assert_close(tokens[d], model.forward_features(x, t.expand(4), y, d))


def test_noising_conventions():
    x0, noise = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    sit, dit = FlowProcess(FlowConfig(path="linear")), DDPMProcess()
    torch.testing.assert_close(sit.noisy(x0, noise, 0.0), x0)
    torch.testing.assert_close(sit.noisy(x0, noise, 0.25), 0.75 * x0 + 0.25 * noise)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    assert dit.model_time(0.5) == 500 and dit.model_time(1.0) == 999 and sit.model_time(0.3) == 0.3
    torch.testing.assert_close(dit.noisy(x0, noise, 0.5),
                               float(np.sqrt(abar[500])) * x0 + float(np.sqrt(1 - abar[500])) * noise)
    # per-image seeds: an image's noise does not depend on which batch it is in
    torch.testing.assert_close(per_image_noise([3, 5], (1, 4, 4), 7), per_image_noise([1, 3, 5], (1, 4, 4), 7)[1:])


def linear_classes(n: int, seed: int) -> TensorImageDataset:
    """Images whose class is argmax of a fixed linear map of the input (through its average 4x4 patch)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    a = torch.randn(3, 16, generator=torch.Generator().manual_seed(123))
    mean_patch = x.reshape(n, 2, 4, 2, 4).mean(dim=(1, 3)).reshape(n, 16)
    return TensorImageDataset(x, (mean_patch @ a.T).argmax(1), ["a", "b", "c"], "linear")


@pytest.mark.parametrize("classifier", ["logistic", "ridge"])
def test_probe_reads_linear_classes_from_block_0(classifier):
    model = tiny_model()
    train, test = linear_classes(600, 1), linear_classes(300, 2)
    r = linear_probe(model, FlowProcess(), train, test, train_indices=torch.arange(600), test_indices=torch.arange(300),
                     blocks=[0], times=[0.0, 0.9], classifier=classifier, progress=False)
    assert r.blocks == [0] and len(r.accuracy) == 1 and len(r.accuracy[0]) == 2
    assert r.accuracy[0][0] > 0.9, r.accuracy  # clean inputs: the class is linear in the pooled embedding
    assert r.accuracy[0][1] < r.accuracy[0][0]  # t = 0.9 is mostly noise
    assert r.num_classes == 3 and 0.33 < r.chance < 0.6


def test_softmax_regression_matches_scikit_learn():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    x, y = torch.tensor(d.data).float(), torch.tensor(d.target)
    predict = fit_linear_classifier(x[:1000], y[:1000], 10, "logistic")
    # the same objective, solved by scikit-learn: PCA-whitened features, mean CE + l2 |W|^2 <=> C = 1 / (2 l2 N)
    train = x[:1000].double().numpy()
    var, vec = np.linalg.eigh(np.cov(train - train.mean(0), rowvar=False))
    keep = var > 1e-6 * var[-1]
    whiten = lambda f: (f.double().numpy() - train.mean(0)) @ (vec[:, keep] / np.sqrt(var[keep]))
    ref = LogisticRegression(C=1 / (2 * 1e-4 * 1000), tol=1e-8, max_iter=5000).fit(whiten(x[:1000]), y[:1000].numpy())
    agree = (predict(x[1000:]).numpy() == ref.predict(whiten(x[1000:]))).mean()
    assert agree > 0.98, agree


def test_probe_at_chance_on_random_labels():
    x = torch.randn(400, 8)
    y = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(0))
    assert probe_accuracy(x[:300], y[:300], x[300:], y[300:], 4, "ridge") < 0.45


def test_pca_recovers_rank_3_structure():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(64, 3, generator=g, dtype=torch.float64))[0]  # (D, 3) orthonormal
    coords = torch.randn(100, 3, generator=g, dtype=torch.float64) * torch.tensor([5.0, 3.0, 2.0], dtype=torch.float64)
    tokens = coords @ basis.T + torch.randn(64, generator=g, dtype=torch.float64)  # rank 3 plus a common offset
    v, proj = principal_components(tokens.float())
    torch.testing.assert_close(v.T @ v, basis @ basis.T, atol=1e-5, rtol=0)  # same subspace: same projector
    torch.testing.assert_close(v @ v.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert proj.var(0)[0] > proj.var(0)[1] > proj.var(0)[2]  # ordered by variance
    rgb = to_rgb(proj)
    assert rgb.shape == (100, 3) and rgb.min() == 0 and torch.allclose(rgb.max(0).values, torch.ones(3))


def test_pca_maps_and_grid_size(tmp_path):
    model = tiny_model(patch_size=2)  # 4x4 tokens
    maps, inputs = pca_maps(model, FlowProcess(), torch.rand(1, 1, 8, 8) * 2 - 1, times=[0.0, 0.5], blocks=[0, 2])
    assert maps.shape == (2, 2, 4, 4, 3) and maps.min() >= 0 and maps.max() <= 1
    assert inputs.shape == (2, 1, 1, 8, 8)
    size = render_grid(maps, tmp_path / "g.png", row_labels=["a", "b"], col_labels=["c", "d"], cell=20, inputs=inputs)
    assert size == grid_size(2, 3, 20)
    assert Image.open(tmp_path / "g.png").size == size


def test_latent_model_without_vae_is_a_clear_error(tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    model = build_model("SiT-T/4", input_size=8, in_channels=4, num_classes=3, depth=1)
    with pytest.raises(ValueError, match="--vae"):
        model_input(model, tmp_path / "a.png")
    torch.save(torch.randn(4, 8, 8), tmp_path / "z.pt")  # a latent file goes straight in
    assert model_input(model, tmp_path / "z.pt")[0].shape == (1, 4, 8, 8)


def test_cli_pca_on_a_latent_model_encodes_with_the_vae(tmp_path):
    pytest.importorskip("diffusers")
    from conftest import save_tiny_vae

    save_tiny_vae(tmp_path / "vae", sample_size=16)
    model = build_model("DiT-T/4", input_size=8, in_channels=4, num_classes=3, depth=2)  # latents 4x8x8 <- 16 px
    torch.save({"ema": model.state_dict()}, tmp_path / "dit.pt")
    Image.new("RGB", (40, 30), "orange").save(tmp_path / "a.jpg")
    assert main(["pca", str(tmp_path / "dit.pt"), "--image", str(tmp_path / "a.jpg"), "--vae", str(tmp_path / "vae"),
                 "--times", "0,1", "--output-dir", str(tmp_path), "--cell-size", "16"]) == 0
    assert Image.open(tmp_path / "pca_a.png").size == grid_size(2, 3, 16)  # no x_t column for latents


def test_probe_heat_map_size(tmp_path):
    from sra.analysis.probe import ProbeResult

    r = ProbeResult(blocks=[0, 1, 2], times=[0.0, 0.5], model_times=[0.0, 0.5], accuracy=[[0.9, 0.5]] * 3,
                    process="flow", time_axis="t (0 = data)", classifier="ridge", num_train=10, num_test=10, num_classes=2, chance=0.5, seed=0)
    size = plot_probe(r, tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").size == size == (220 + 80 * 2, 110 + 34 * 3)


@pytest.fixture
def saved_model(tmp_path):
    model = tiny_model()
    torch.save({"ema": model.state_dict()}, tmp_path / "model.pt")
    return tmp_path / "model.pt"


def test_cli_probe_end_to_end(tmp_path, saved_model, capsys):
    out = tmp_path / "out"
    rc = main(["probe", str(saved_model), "--data-dir", "digits", "--max-train", "200", "--max-test", "100",
               "--blocks", "0,2", "--times", "0,0.5", "--output-dir", str(out), "--no-progress", "--batch-size", "50"])
    assert rc == 0
    record = json.loads((out / "probe.json").read_text())
    assert record["blocks"] == [0, 2] and record["times"] == [0.0, 0.5] and record["num_train"] == 200
    assert np.array(record["accuracy"]).shape == (2, 2) and record["accuracy"][0][0] > 0.5  # digits, clean, 10 way
    assert Image.open(out / "probe.png").size == (220 + 80 * 2, 110 + 34 * 2)
    text = capsys.readouterr().out
    assert "embed" in text
    # the cost after the first batch of 50: 2 times x (200 + 100) images in all, 550 left
    assert "the first batch of 50 images took" in text and "(600 images;" in text
    left, total = estimate_of(text)
    assert 0 < left < total and left == pytest.approx(total * 550 / 600, rel=0.2, abs=0.01)
    # chance is the commonest test class's share, and says so (not 1 / classes)
    assert record["chance"] >= 0.1
    assert f"chance: {100 * record['chance']:.1f} % = the commonest class's share of the 100 test images" in text
    assert "uniform guessing among 10 classes: 10.0 %" in text


def test_cli_probe_image_folder_and_pca(tmp_path, saved_model, capsys):
    rng = np.random.default_rng(0)
    for c in range(3):  # class = brightness: separable, and no test split -> held-out 20 %
        (tmp_path / "data" / f"c{c}").mkdir(parents=True)
        for i in range(8):
            a = np.clip(rng.normal(60 + 60 * c, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(tmp_path / "data" / f"c{c}" / f"{i}.png")
    out = tmp_path / "out"
    assert main(["probe", str(saved_model), "--data-dir", str(tmp_path / "data"), "--times", "0",
                 "--classifier", "ridge", "--output-dir", str(out), "--no-progress"]) == 0
    record = json.loads((out / "probe.json").read_text())
    assert record["num_train"] + record["num_test"] == 24 and record["blocks"] == [0, 1, 2]
    assert "holding out" in capsys.readouterr().out

    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    assert main(["pca", str(saved_model), "--image", str(tmp_path / "photo.png"), "--output-dir", str(out),
                 "--cell-size", "16", "--label", "1"]) == 0
    assert Image.open(out / "pca_photo.png").size == grid_size(5, 1 + 3, 16)  # 5 times; x_t + 3 depths


def test_cli_bad_flags_are_one_line_errors(saved_model, capsys):
    assert main(["pca", str(saved_model), "--image", "x.png", "--blocks", "7"]) == 2
    assert "depths 0..2" in capsys.readouterr().err
    assert main(["probe", str(saved_model), "--times", "0,2"]) == 2
