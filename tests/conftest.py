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
