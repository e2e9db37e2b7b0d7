import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One intra-op thread for the whole session (module fixtures included): the tensors here are tiny, and on a
    shared 2-core machine OpenMP threads only contend (measured up to 17x slower with 2 threads under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_model(name="SiT-T/2", **kw):
    """A very small model on 8x8 single-channel inputs with 3 classes."""
    import sra

    args = dict(input_size=8, in_channels=1, num_classes=3, depth=3, hidden_size=32, num_heads=2)
    args.update(kw)
    return sra.build_model(name, **args)


def randomize_zero_layers(model, seed=0):
    """adaLN-Zero makes a fresh model output 0; give every parameter a random value for tests that need signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def save_tiny_vae(path, sample_size: int = 32):
    """A tiny diffusers AutoencoderKL (3 -> 4 latent channels, downsampling 2, seed 0) saved as a folder at `path`."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                  norm_num_groups=4, sample_size=sample_size, layers_per_block=1).save_pretrained(path)
    return path


def estimate_of(out: str) -> tuple[float, float]:
    """(seconds left, seconds in all) of the one `estimate: ...` line (sra.estimate) in a command's output; durations
    as sra.estimate.duration writes them: '0.013 s', '4 min 10 s', '3 h 05 min'."""
    import re

    lines = [line for line in out.splitlines() if line.startswith("estimate: ")]
    assert len(lines) == 1, out
    m = re.search(r"about (.+) left, (.+) in all", lines[0])
    units = {"h": 3600, "min": 60, "s": 1}

    def seconds(text: str) -> float:
        parts = text.split()
        return sum(float(v) * units[u] for v, u in zip(parts[::2], parts[1::2]))

    return seconds(m[1]), seconds(m[2])


def assert_three_step_reference(ckpt: dict, model: str) -> None:
    """A 3-step run's checkpoint against tests/data/three_step_weights.json, made by the commit before the run-spec
    change (eadcb9e) with the same command: bit-identical (sha256 of every tensor's bytes) where the CPU takes the
    same kernels (the file records its capability); elsewhere every tensor's sum agrees to float32 rounding."""
    import hashlib
    import json
    from pathlib import Path

    ref = json.loads((Path(__file__).parent / "data" / "three_step_weights.json").read_text())
    h, sums = hashlib.sha256(), {}
    for part in ("model", "ema"):
        for k in sorted(ckpt[part]):
            v = ckpt[part][k].contiguous()
            h.update(k.encode())
            h.update(v.numpy().tobytes())
            sums[f"{part}.{k}"] = float(v.double().sum())
    expected = ref["runs"][model]
    assert sums.keys() == expected["sums"].keys()
    if torch.backends.cpu.get_cpu_capability() == ref["cpu_capability"]:
        assert h.hexdigest() == expected["sha256"]
    for k, v in sums.items():
        assert v == pytest.approx(expected["sums"][k], rel=1e-4, abs=1e-5), k
