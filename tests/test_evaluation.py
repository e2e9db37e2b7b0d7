"""Evaluation: Fréchet distance, running statistics, IS, precision/recall, the FID Inception network's layout, image
sets and their bad inputs, the FD-FMNIST classifier and sample generation."""
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from sra.cli import main
from sra.evaluation import InceptionV3Features, frechet_distance, inception_score, precision_recall
from sra.evaluation import fmnist
from sra.evaluation.images import open_images
from sra.evaluation.metrics import RunningStats, gaussian_stats


# ----------------------------------------------------------------------------------------------------------------
# Fréchet distance and statistics
# ----------------------------------------------------------------------------------------------------------------

def test_frechet_distance_of_a_distribution_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(400, 16)) @ np.random.default_rng(1).normal(size=(16, 16))
    mu, sigma = gaussian_stats(x)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_equals_the_sqrtm_formula_of_adm_and_pytorch_fid():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 64)) @ rng.normal(size=(64, 64))
    b = rng.normal(size=(500, 64)) @ rng.normal(size=(64, 64)) * 0.5 + 1
    (mu1, s1), (mu2, s2) = gaussian_stats(a), gaussian_stats(b)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real  # evaluator.py / pytorch-fid: Tr(S1 + S2 - 2 sqrtm(S1 S2))
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-10)


def test_frechet_distance_of_few_samples_equals_the_small_exact_form():
    # With S1 = X^T X / (n - 1) (X the n centred samples), S1 S2 has the nonzero eigenvalues of X S2 X^T / (n - 1),
    # an n x n matrix: the trace of the root exactly, without any D x D root.
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 40)) @ rng.normal(size=(40, 40)), rng.normal(size=(9, 40))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (mu1, s1), (mu2, s2) = gaussian_stats(a), gaussian_stats(b)
    x = a - a.mean(0)
    root = np.sqrt(np.clip(np.linalg.eigvalsh(x @ s2 @ x.T / 5), 0, None)).sum()
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * root
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)


def test_frechet_distance_survives_singular_covariances_and_rejects_mismatches():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 10)), rng.normal(size=(4, 10))  # rank 2 and 3 in 10 dimensions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    assert np.isfinite(d) and d > 0
    s2 = np.cov(b, rowvar=False)  # a point mass (zero covariance) against a Gaussian: |mu1 - mu2|^2 + Tr(S2)
    assert frechet_distance(np.ones(10), np.zeros((10, 10)), np.zeros(10), s2) == pytest.approx(10 + np.trace(s2))
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.full((3, 3), np.nan))


def test_running_stats_equal_numpy_in_one_pass_even_far_from_the_origin():
    x = np.random.default_rng(0).normal(size=(1000, 5)) + 1e5
    stats = RunningStats(5)
    for i in range(0, 1000, 97):
        stats.update(torch.from_numpy(x[i:i + 97]).float() if i == 0 else x[i:i + 97])
    x[:97] = torch.from_numpy(x[:97]).float().double().numpy()  # the first batch went in as float32
    mu, sigma = stats.mean_cov()
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-7, atol=1e-9)


def test_too_few_samples_for_the_covariance_warn():
    with pytest.warns(UserWarning, match="rank-deficient"):
        gaussian_stats(np.random.default_rng(0).normal(size=(5, 8)))


# ----------------------------------------------------------------------------------------------------------------
# Inception Score, precision / recall
# ----------------------------------------------------------------------------------------------------------------

def test_inception_score_of_uniform_logits_is_one_and_of_confident_balanced_logits_is_the_class_count():
    assert inception_score(np.zeros((100, 1008)))[0] == pytest.approx(1.0, abs=1e-12)
    logits = np.full((100, 1008), -50.0)
    logits[np.arange(100), np.arange(100) % 10] = 50.0  # every split holds classes 0..9 once, each predicted surely
    assert inception_score(logits, splits=10)[0] == pytest.approx(10.0, rel=1e-9)


def test_precision_recall_of_a_set_with_itself_are_one_and_of_far_sets_zero():
    x = np.random.default_rng(0).normal(size=(300, 32))
    assert precision_recall(x, x, batch_size=128, device="cpu") == (1.0, 1.0)
    assert precision_recall(x, x + 100.0, device="cpu") == (0.0, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# The FID Inception network (random weights: the real file cannot be downloaded here)
# ----------------------------------------------------------------------------------------------------------------

PYTORCH_FID_KEYS = {  # names in pytorch-fid's pt_inception-2015-12-05-6726825d.pth, with shapes
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Conv2d_4a_3x3.bn.running_mean": (192,),
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5), "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7), "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1), "Mixed_7c.branch_pool.bn.running_var": (192,),
    "fc.weight": (1008, 2048), "fc.bias": (1008,),
}


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return InceptionV3Features(pretrained=False)


def test_inception_layout_matches_pytorch_fid(inception):
    state = inception.state_dict()
    for key, shape in PYTORCH_FID_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)
    # torchvision's Inception3 has 27,161,264 parameters; without AuxLogits (3,326,696) and with 1008 classes
    # (+8 x 2049): 23,850,960. An independent check that no branch is missing or mis-sized.
    assert sum(p.numel() for p in inception.parameters()) == 23_850_960


def test_inception_feature_shapes_and_strict_reload(inception, tmp_path):
    out = inception.features(torch.rand(2, 3, 32, 32))
    assert out["pool"].shape == (2, 2048) and out["spatial"].shape == (2, 7 * 17 * 17)
    assert out["logits"].shape == (2, 1008)
    assert torch.isfinite(out["pool"]).all()
    x = inception.preprocess(torch.rand(1, 1, 16, 16))  # grey repeated; bilinear to 299; [0, 1] -> [-1, 1]
    assert x.shape == (1, 3, 299, 299) and x.min() >= -1 and x.max() <= 1
    path = tmp_path / "pt_inception.pth"
    torch.save({k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    reloaded = InceptionV3Features(path)
    for k, v in inception.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v), k


def test_adm_preprocessing_resizes_like_tensorflow_1():
    from sra.evaluation.inception import resize_bilinear_tf1

    x = torch.tensor([[[[0.0, 8.0], [16.0, 24.0]]]])
    # TF 1.x (align_corners=False, no half-pixel centres) samples output i at input i * 2 / 4: 0, 0.5, 1, 1 (clamped)
    expected = torch.tensor([[0.0, 4.0, 8.0, 8.0], [8.0, 12.0, 16.0, 16.0], [16.0, 20.0, 24.0, 24.0],
                             [16.0, 20.0, 24.0, 24.0]])
    torch.testing.assert_close(resize_bilinear_tf1(x, 4)[0, 0], expected)
    y = torch.rand(1, 3, 5, 5)
    torch.testing.assert_close(resize_bilinear_tf1(y, 5), y)


def test_inception_weights_of_the_wrong_shape_or_missing_are_one_clear_error(inception, tmp_path):
    state = dict(inception.state_dict())
    state["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"fc.weight has shape \(1000, 2048\)"):
        InceptionV3Features(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="pytorch-fid"):
        InceptionV3Features(tmp_path / "absent.pth")


def test_missing_inception_weights_at_the_default_place_name_it_once(tmp_path, monkeypatch):
    from sra.evaluation.inception import WEIGHTS_NAME, default_weights_path

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError) as e:
        InceptionV3Features()
    message = str(e.value)
    assert str(default_weights_path()) in message and message.count(str(tmp_path / "hub" / "checkpoints")) == 1
    with pytest.raises(FileNotFoundError) as e:  # another path: the default is offered beside it
        InceptionV3Features(tmp_path / WEIGHTS_NAME)
    assert f"in {tmp_path / 'hub' / 'checkpoints'}/" in str(e.value)


# ----------------------------------------------------------------------------------------------------------------
# Image sets and `sra eval` bad input
# ----------------------------------------------------------------------------------------------------------------

def test_npz_images_stream_in_batches(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(7, 5, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", arr_0=arr)
    images = open_images(tmp_path / "s.npz")
    assert images.num_images == 7 and images.image_shape == (5, 6, 3)
    np.testing.assert_array_equal(np.concatenate(list(images.batches(3))), arr)


@pytest.mark.parametrize("case, message", [
    ("no_arr_0", "has no arr_0"), ("float", "expected uint8"), ("mixed_sizes", "mixed sizes"),
    ("no_weights", "pytorch-fid"), ("missing_reference", "missing.npz does not exist"),
])
def test_sra_eval_bad_input_is_one_line_and_nonzero(tmp_path, capsys, case, message):
    from PIL import Image

    good = tmp_path / "good.npz"
    np.savez(good, arr_0=np.zeros((4, 8, 8, 3), np.uint8))
    if case == "no_arr_0":
        np.savez(tmp_path / "x.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
        argv = [str(tmp_path / "x.npz"), str(good)]
    elif case == "float":
        np.savez(tmp_path / "x.npz", arr_0=np.zeros((4, 8, 8, 3), np.float32))
        argv = [str(tmp_path / "x.npz"), str(good)]
    elif case == "mixed_sizes":
        (tmp_path / "pngs").mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / "pngs" / "a.png")
        Image.new("RGB", (9, 8)).save(tmp_path / "pngs" / "b.png")
        argv = [str(tmp_path / "pngs"), str(good)]
    elif case == "missing_reference":  # called missing, not "not a readable .npz file"
        argv = [str(good), str(tmp_path / "missing.npz")]
    else:
        argv = [str(good), str(good), "--inception-weights", str(tmp_path / "absent.pth")]
    assert main(["eval", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------------------------------------------
# FD-FMNIST
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_blob():
    """A classifier trained on 640 training images for 2 epochs (seconds), measured on 500 test images."""
    from sra.data.pixels import fashion_mnist_available, load_fashion_mnist

    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST is not installed")
    tx, ty = load_fashion_mnist(None, "train")
    vx, vy = load_fashion_mnist(None, "test")
    recipe = fmnist.ClassifierRecipe(epochs=2, batch_size=64, lr=3e-3)
    return fmnist.classifier_blob(tx[:640], ty[:640], vx[:500], vy[:500], recipe, progress=False), (vx, vy)


def scorer_from(blob):
    model = fmnist.FMNISTClassifier()
    model.load_state_dict(blob["state"])
    return fmnist.FMNISTScorer(model.eval(), blob["ref_mu"].numpy(), blob["ref_sigma"].numpy(),
                               blob["test_accuracy"], {})


def test_fmnist_classifier_trains_on_a_subset_and_beats_chance(small_blob):
    blob, (vx, vy) = small_blob
    assert blob["test_accuracy"] > 0.4  # chance is 0.1
    scorer = scorer_from(blob)
    real = fmnist.fmnist_scores(vx[500:1000], vy[500:1000], scorer=scorer)
    noise = fmnist.fmnist_scores(np.random.default_rng(0).integers(0, 256, (500, 28, 28), dtype=np.uint8),
                                 vy[500:1000], scorer=scorer)
    assert real["class_acc"] > 0.4 and noise["fd_fmnist"] > 3 * real["fd_fmnist"]


def test_fmnist_inputs_padded_float_and_uint8_agree():
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    padded = torch.nn.functional.pad(torch.from_numpy(x).float()[:, None] / 127.5 - 1, (2, 2, 2, 2), value=-1.0)
    torch.testing.assert_close(fmnist.to_classifier_input(padded + 1e-3), fmnist.to_classifier_input(x))
    with pytest.raises(ValueError, match="28x28 or 32x32"):
        fmnist.to_classifier_input(np.zeros((2, 30, 30), np.uint8))


def test_generate_samples_are_balanced_and_seeded():
    from sra import build_model
    from sra.process import FlowProcess

    torch.manual_seed(0)
    model = build_model("SiT-T/4", input_size=32, in_channels=1, num_classes=10)
    a, ya = fmnist.generate_samples(model, FlowProcess(), 12, "cpu", seed=3, num_steps=2, batch_size=5)
    b, _ = fmnist.generate_samples(model, FlowProcess(), 12, "cpu", seed=3, num_steps=2, batch_size=12)
    assert a.shape == (12, 32, 32, 1) and a.dtype == np.uint8 and list(ya) == [i % 10 for i in range(12)]
    np.testing.assert_array_equal(a, b)  # independent of the batch size
    assert model.training  # mode restored


def test_sra_eval_fmnist_on_an_npz_with_labels(small_blob, tmp_path, monkeypatch, capsys):
    blob, (vx, vy) = small_blob
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(fmnist, "_LOADED", {})
    (tmp_path / "cache" / "sra").mkdir(parents=True)
    key = fmnist.recipe_key(fmnist.ClassifierRecipe())
    torch.save(blob, tmp_path / "cache" / "sra" / f"fmnist-classifier-{key}.pt")
    np.savez(tmp_path / "s.npz", arr_0=np.repeat(vx[:300, :, :, None], 3, -1), labels=vy[:300])
    assert main(["eval", "--metric", "fmnist", str(tmp_path / "s.npz"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "FD-FMNIST" in out and "class accuracy" in out
    import json
    result = json.loads((tmp_path / "s_fmnist.json").read_text())
    assert result["num_samples"] == 300 and result["class_acc"] > 0.4


def test_resnet_classifier_is_independent_and_scores_through_the_cli(small_blob, tmp_path, monkeypatch, capsys):
    """The second FD-FMNIST classifier: its own architecture, seed and cache file; it learns the subset as the cnn does,
    and `sra eval --classifier resnet` scores with it (equal to scoring directly) and names it."""
    import json

    from sra.data.pixels import load_fashion_mnist

    blob, (vx, vy) = small_blob
    arch, recipe = fmnist.CLASSIFIERS["resnet"]
    assert arch is fmnist.FMNISTResNet and recipe.seed != fmnist.CLASSIFIERS["cnn"][1].seed
    assert fmnist.recipe_key(recipe, arch) != fmnist.recipe_key(fmnist.ClassifierRecipe())
    tx, ty = load_fashion_mnist(None, "train")
    small = fmnist.ClassifierRecipe(epochs=2, batch_size=64, lr=3e-3, seed=1)
    rblob = fmnist.classifier_blob(tx[:640], ty[:640], vx[:500], vy[:500], small, progress=False, arch=arch)
    assert rblob["test_accuracy"] > 0.4  # chance is 0.1

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(fmnist, "_LOADED", {})
    monkeypatch.setitem(fmnist.CLASSIFIERS, "resnet", (arch, small))
    (tmp_path / "cache" / "sra").mkdir(parents=True)
    torch.save(rblob, fmnist.cache_file("resnet", fmnist.recipe_key(small, arch)))
    np.savez(tmp_path / "s.npz", arr_0=vx[:300], labels=vy[:300])
    assert main(["eval", "--metric", "fmnist", "--classifier", "resnet", str(tmp_path / "s.npz"), "--no-progress"]) == 0
    assert "FD-FMNIST (resnet)" in capsys.readouterr().out
    result = json.loads((tmp_path / "s_fmnist-resnet.json").read_text())
    assert result["classifier"]["name"] == "resnet" and result["classifier"]["test_accuracy"] == rblob["test_accuracy"]
    expect = fmnist.fmnist_scores(vx[:300], vy[:300], scorer=fmnist.fmnist_scorer(classifier="resnet"))
    assert result["fd_fmnist"] == pytest.approx(expect["fd_fmnist"]) and result["class_acc"] == expect["class_acc"]
    assert main(["eval", str(tmp_path / "s.npz"), str(tmp_path / "s.npz"), "--classifier", "resnet"]) != 0
    assert "needs --metric fmnist" in capsys.readouterr().err


def test_the_docs_and_help_name_the_default_output_files(tmp_path, capsys):
    """docs/EVALUATION.md and `sra eval --help` name the files `sra eval` writes without --output."""
    from argparse import Namespace
    from pathlib import Path

    from sra.commands.eval import default_output

    (tmp_path / "RUN").mkdir()
    doc = (Path(__file__).parents[1] / "docs" / "EVALUATION.md").read_text()
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    help_text = capsys.readouterr().out
    for metric, samples in (("inception", "s.npz"), ("fmnist", "s.npz"), ("fmnist", "RUN")):
        args = Namespace(output=None, samples=str(tmp_path / samples), metric=metric, classifier="cnn")
        written = default_output(args, step=5).relative_to(tmp_path).as_posix()
        named = written.replace("s_", "<name>_", 1).replace("step5", "step<N>")
        assert f"`{named}`" in doc and named in help_text, named
