"""The study's run table checked as the CLI checks its config, before any run starts: YAML without repeated keys,
every entry's types and ranges, run names that are plain folder names. Each refusal is one line naming the entry and
the key (`TableError`)."""
from __future__ import annotations

import unicodedata

import yaml

from sra.train.config import UniqueKeyLoader


class TableError(ValueError):
    """A table entry of the wrong type or range; the message names it (sections.main.seeds[1])."""


class TableLoader(UniqueKeyLoader):
    """yaml.safe_load refusing a key given twice in one mapping (as `sra train --config` does), naming its line."""

    def construct_mapping(self, node, deep=False):
        try:
            return super().construct_mapping(node, deep=deep)
        except ValueError as e:
            keys = [k for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
            again = next((k for i, k in enumerate(keys) if k.value in [j.value for j in keys[:i]]), node)
            raise ValueError(f"{e} (line {again.start_mark.line + 1})") from None


SEED_MAX = 2 ** 63 - 1  # sra train's --seed range: [0, 2^63)
NAME_MAX = 251          # bytes in a run's name: a file name holds 255, and its log adds ".log"


def not_plain(name) -> str | None:
    """Why NAME cannot name a folder of its own inside --runs-dir (None when it can): a run's folder and log, a
    section's curves and a classifier's scores are files named by it, so it must be one path part that neither climbs
    out (`..`, `/`, an absolute path) nor hides (control and format characters print as nothing, or move the
    terminal's cursor), nor reads as an option to `sra train --exp-name` (a leading '-')."""
    if not isinstance(name, str):
        return f"is not a string but {type(name).__name__}"
    hidden = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
    reason = ("is empty" if not name else "is '.' or '..'" if name in (".", "..")
              else "holds a '/' or '\\' (a path, not a folder name)" if "/" in name or "\\" in name
              else f"holds the control character U+{ord(hidden):04X}" if hidden is not None
              else "starts with '-' (sra would read it as an option)" if name.startswith("-")
              else f"is over {NAME_MAX} bytes" if len(name.encode()) > NAME_MAX else None)
    return reason


def plain_name(v, where: str) -> str:
    why = not_plain(v)
    if why:
        raise TableError(f"{where} {v!r} is not a plain folder name: it {why}")
    return v


def need(d: dict, key: str, where: str):
    if key not in d:
        raise KeyError(key, where or "the table")
    return d[key]


def mapping(d, where: str, required: tuple = (), optional: tuple = ()) -> dict:
    """D, refused unless it is a mapping holding every required key and no key but these."""
    label = where or "the table"
    if not isinstance(d, dict):
        raise TableError(f"{label} must be a mapping of {', '.join(required + optional)}, not {type(d).__name__}")
    unknown = next((k for k in d if k not in required + optional), None)
    if unknown is not None:
        raise TableError(f"{join(where, unknown)} is not a key of {label} (its keys: "
                         f"{', '.join(required + optional)})")
    for key in required:
        need(d, key, where)
    return d


def join(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


def integer(v, where: str, low: int = 0, high: int = SEED_MAX) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TableError(f"{where} must be an integer, not {v!r}")
    if not low <= v <= high:
        raise TableError(f"{where} must be in {low}..{high}, not {v}")
    return v


def integers(v, where: str, low: int = 0, high: int = SEED_MAX) -> list:
    """A non-empty list of distinct integers in low..high."""
    if not isinstance(v, list) or not v:
        raise TableError(f"{where} must be a non-empty list of integers, not {v!r}")
    for i, x in enumerate(v):
        integer(x, f"{where}[{i}]", low, high)
    again = next((x for i, x in enumerate(v) if x in v[:i]), None)
    if again is not None:
        raise TableError(f"{where} lists {again} twice")
    return v


def times(v, where: str) -> list:
    if not isinstance(v, list) or not v:
        raise TableError(f"{where} must be a non-empty list of times, not {v!r}")
    for i, t in enumerate(v):
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1:  # nan fails the range
            raise TableError(f"{where}[{i}] must be a number in [0, 1] (0 = data, 1 = noise), not {t!r}")
    return v


def text(v, where: str, none: bool = False) -> str | None:
    if not (isinstance(v, str) or none and v is None):
        raise TableError(f"{where} must be a string, not {v!r}")
    return v


def check_table(table) -> None:
    """Every entry of the table, in the order a reader meets them: its sections, then common, eval and probe."""
    mapping(table, "", ("sections", "common"), ("eval", "probe"))
    sections = table["sections"]
    if not isinstance(sections, dict) or not sections:
        raise TableError(f"sections must be a non-empty mapping of sections, not {sections!r}")
    for section, sec in sections.items():
        where = f"sections.{section}"
        plain_name(section, "sections: the section name")  # it names the section's curves file
        mapping(sec, where, ("steps", "seeds", "eval_steps", "methods"), ("flags", "probe", "similarity"))
        steps = integer(sec["steps"], f"{where}.steps", 1)
        integers(sec["seeds"], f"{where}.seeds")
        integers(sec["eval_steps"], f"{where}.eval_steps", 1, steps)
        text(sec.get("flags", ""), f"{where}.flags")
        if "probe" in sec:
            probe = mapping(sec["probe"], f"{where}.probe", ("block", "steps", "seeds"))
            integer(probe["block"], f"{where}.probe.block", 1)  # 0 would mean "not probed"
            integers(probe["steps"], f"{where}.probe.steps", 1, steps)
            integers(probe["seeds"], f"{where}.probe.seeds")
        if "similarity" in sec:
            sim = mapping(sec["similarity"], f"{where}.similarity", ("pairs", "times", "images"))
            pairs = sim["pairs"]
            if not isinstance(pairs, list) or not pairs:
                raise TableError(f"{where}.similarity.pairs must be a non-empty list of block pairs, not {pairs!r}")
            for i, pair in enumerate(pairs):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise TableError(f"{where}.similarity.pairs[{i}] must be a pair of blocks [a, b], not {pair!r}")
                integers(pair, f"{where}.similarity.pairs[{i}]")
            times(sim["times"], f"{where}.similarity.times")
            integer(sim["images"], f"{where}.similarity.images", 1)
        methods = sec["methods"]
        if not isinstance(methods, list) or not methods:
            raise TableError(f"{where}.methods must be a non-empty list of methods, not {methods!r}")
        for i, m in enumerate(methods):
            at = f"{where}.methods[{i}]"
            mapping(m, at, ("name", "label"), ("flags", "cost", "versus", "planned"))
            plain_name(m["name"], f"{at}.name")
            text(m["label"], f"{at}.label")
            text(m.get("flags"), f"{at}.flags", none=True)
            for key in ("cost", "versus"):
                text(m.get(key, ""), f"{at}.{key}")
            if not isinstance(m.get("planned", False), bool):
                raise TableError(f"{at}.planned must be true or false, not {m['planned']!r}")
    common = text(table["common"], "common")
    try:
        common.format(steps=1)
    except (KeyError, IndexError, ValueError) as e:
        raise TableError(f"common: {{steps}} is the only field it may name ({type(e).__name__}: {e})") from None
    ev = mapping(need(table, "eval", ""), "eval", ("samples", "sample_steps", "seed"), ("independent",))
    integer(ev["samples"], "eval.samples", 2)  # a Frechet distance needs two samples
    integer(ev["sample_steps"], "eval.sample_steps", 1)
    integer(ev["seed"], "eval.seed")
    independent = ev.get("independent", [])
    if not isinstance(independent, list):
        raise TableError(f"eval.independent must be a list of classifier names, not {independent!r}")
    for i, clf in enumerate(independent):
        plain_name(clf, f"eval.independent[{i}]")  # it names the evaluation's file
    if any("probe" in sec for sec in sections.values()):
        pr = mapping(need(table, "probe", ""), "probe", ("times", "train", "test", "seed"))
        times(pr["times"], "probe.times")
        integer(pr["train"], "probe.train", 1)
        integer(pr["test"], "probe.test", 1)
        integer(pr["seed"], "probe.seed")


# ----------------------------------------------------------------------------------------------------------------
# The files a run's steps leave in its folder (the report reads the same names)
# ----------------------------------------------------------------------------------------------------------------
