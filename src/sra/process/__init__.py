"""One process object per model family, chosen once from the preset: `FlowProcess` (SiT) and `DDPMProcess` (DiT).
Adding a family is one more process file and one row here."""
from .base import check_sampler_args, pixel_map, randn_per_image
from .ddpm import DDPMProcess
from .flow import FlowProcess

PROCESSES = {cls.family: cls for cls in (FlowProcess, DDPMProcess)}


def process_for(family: str, path: str | None = None, time_sampling: str | None = None):
    """The process of a family ("SiT", "DiT"); `path` / `time_sampling` for processes that have them."""
    if family not in PROCESSES:
        raise ValueError(f"unknown model family {family!r}; choices: {', '.join(PROCESSES)}")
    kw = {k: v for k, v in dict(path=path, time_sampling=time_sampling).items() if v is not None}
    return PROCESSES[family](**kw)


def family_of(learn_sigma: bool) -> str:
    """The family whose models have (or lack) learned-variance outputs."""
    return next(f for f, cls in PROCESSES.items() if cls.learn_sigma == bool(learn_sigma))


__all__ = ["PROCESSES", "DDPMProcess", "FlowProcess", "process_for", "family_of", "pixel_map", "randn_per_image",
           "check_sampler_args"]
