"""The processes, keyed by name: `flow` (SiT: flow matching) and `ddpm` (DiT). A run's spec names its process and
holds its config ({"name": "flow", "path": "linear", ...}); `build` turns that section into the process object, once,
and everything downstream is handed that object. Adding a process is one more file with the interface of
`FlowProcess` / `DDPMProcess` (a `name`, a frozen `Config` dataclass of `option(...)`s, the methods) and its entry
in PROCESSES."""
from __future__ import annotations

import dataclasses

from .. import options
from .base import check_sampler_args, pixel_map, randn_per_image
from .ddpm import DDPMProcess
from .flow import FlowProcess

PROCESSES = {cls.name: cls for cls in (FlowProcess, DDPMProcess)}


def process_class(name: str):
    if name not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; choices: {', '.join(PROCESSES)}")
    return PROCESSES[name]


def config_from_section(section: dict):
    """The process config of a spec's `process` section {"name": ..., option: value, ...} (missing options keep their
    defaults, unknown ones are refused in one line)."""
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        raise ValueError(f"the process section must be a mapping with a 'name' ({', '.join(PROCESSES)}), got "
                         f"{section!r}")
    rest = {k: v for k, v in section.items() if k != "name"}
    return options.from_dict(process_class(section["name"]).Config, rest, prefix="process.")


def class_of_config(config):
    cls = next((cls for cls in PROCESSES.values() if type(config) is cls.Config), None)
    if cls is None:
        raise TypeError(f"{type(config).__name__} is not the config of a registered process")
    return cls


def section_of(config) -> dict:
    """The spec section of a process config: its name, then its options."""
    return {"name": class_of_config(config).name, **dataclasses.asdict(config)}


def from_config(config):
    """The process object of a process config (a run spec's `process`)."""
    return class_of_config(config)(config)


def build(section: dict):
    """The process object of a spec's `process` section (a dict, as config.json and exports hold it)."""
    return from_config(config_from_section(section))


__all__ = ["PROCESSES", "DDPMProcess", "FlowProcess", "build", "class_of_config", "config_from_section", "from_config", "process_class", "section_of",
           "pixel_map", "randn_per_image", "check_sampler_args"]
