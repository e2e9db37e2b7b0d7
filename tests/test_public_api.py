"""The documented public API imports from `sra` itself, as the very objects of the modules that define them, and the
earlier re-export paths (sra.sampling, sra.diffusion, sra.transport) are gone."""
import importlib

import pytest

import sra
import sra.evaluation.inception
import sra.evaluation.metrics
import sra.models.presets
import sra.process.ddpm_samplers
import sra.process.flow_samplers

PUBLIC = {
    "build_model": sra.models.presets.build_model,
    "MODEL_NAMES": sra.models.presets.MODEL_NAMES,
    "euler_sampler": sra.process.flow_samplers.euler_sampler,
    "euler_maruyama_sampler": sra.process.flow_samplers.euler_maruyama_sampler,
    "ddpm_sample": sra.process.ddpm_samplers.sample,
    "frechet_distance": sra.evaluation.metrics.frechet_distance,
    "InceptionV3Features": sra.evaluation.inception.InceptionV3Features,
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_name_is_the_defining_modules_object(name):
    namespace = {}
    exec(f"from sra import {name}", namespace)
    assert namespace[name] is PUBLIC[name]
    assert name in sra.__all__


def test_all_lists_only_importable_names():
    assert set(sra.__all__) == {*PUBLIC, "__version__"}
    for name in sra.__all__:
        assert hasattr(sra, name), name
    assert isinstance(sra.__version__, str)


@pytest.mark.parametrize("old", ["sra.sampling", "sra.diffusion", "sra.diffusion.samplers", "sra.transport"])
def test_earlier_import_paths_are_gone(old):
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)
