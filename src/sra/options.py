"""Options declared once. A config dataclass field carries its help text (with units), its flag name where that
differs from the field name, its choices and its argparse group in `option(...)` metadata; from that one declaration
`add_arguments` builds the command-line flags and `from_dict` reads the file format (the nested dicts of `to_dict`).

Flags are added with default=SUPPRESS, so a parsed namespace holds only the flags actually given: `given` turns them
into a nested dict that overrides a preset or a config file, never the other way round.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from types import UnionType


def option(default=dataclasses.MISSING, *, help: str, flag: str | None = None, choices=None, group: str | None = None,
           metavar: str | None = None, aliases: tuple[str, ...] = (), factory=None, resumable: bool = False):
    """A dataclass field with its CLI/file metadata. `flag`: '--name' when it is not '--field-name'; for booleans the
    positive form (its '--no-' form comes with it); `aliases`: further flag names. `group`: starts a new argparse group at this field. `resumable`:
    may change between a run and its resumption (it does not change the math)."""
    md = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None, "group": group,
          "metavar": metavar, "aliases": tuple(aliases), "resumable": resumable}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=md)
    return dataclasses.field(default=default, metadata=md)


def _base_type(hint):
    """(type, is_optional) of a hint such as `int | None`, `tuple[float, float]`, `bool`."""
    args = typing.get_args(hint)
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [a for a in args if a is not type(None)]
        return rest[0], len(rest) < len(args)
    return hint, False


def _fields(cls):
    """(field, resolved type hint) pairs of a dataclass."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _show(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value) or "none"
    return str(value)


def add_arguments(parser: argparse.ArgumentParser, config, prefix: str = "", group=None):
    """Add one flag per field of the dataclass instance `config` (nested dataclasses recursively, their fields dotted
    as 'align.weight'); the instance's values are the defaults shown in the help. Returns the last argparse group."""
    for f, hint in _fields(type(config)):
        md, value = f.metadata, getattr(config, f.name)
        if md.get("group"):
            group = parser.add_argument_group(md["group"])
        target = group or parser
        if "help" not in md:
            continue  # not an option (internal field)
        if dataclasses.is_dataclass(value):
            group = add_arguments(parser, value, f"{prefix}{f.name}.", group)
            continue
        typ, _ = _base_type(hint)
        text = md["help"] + (f" (default: {_show(value)})" if value is not None else "")
        kw = dict(dest=prefix + f.name, default=argparse.SUPPRESS, help=text.replace("%", "%%"))
        if typ is bool:
            target.add_argument(flag_name(f), action=argparse.BooleanOptionalAction, **kw)
            continue
        if typing.get_origin(typ) is tuple:
            elems = typing.get_args(typ)  # (float, float) or (float, ...): fixed or any length
            kw.update(nargs="+" if elems[-1] is Ellipsis else len(elems), type=elems[0])
        else:
            kw.update(type=typ)
        if md.get("choices"):
            kw["choices"] = md["choices"]
        if not md.get("choices"):
            kw["metavar"] = md.get("metavar") or {int: "N", float: "X"}.get(kw["type"], f.name.upper())
        target.add_argument(flag_name(f), *md.get("aliases", ()), **kw)
    return group


def option_names(cls, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Dotted option name -> field, for every leaf field of a dataclass (nested ones through their default value)."""
    out = {}
    for f, hint in _fields(cls):
        typ, _ = _base_type(hint)
        if dataclasses.is_dataclass(typ):
            out.update(option_names(typ, f"{prefix}{f.name}."))
        elif "help" in f.metadata:
            out[prefix + f.name] = f
    return out


def nest(flat: dict) -> dict:
    """{'align.weight': 0.2} -> {'align': {'weight': 0.2}}."""
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        d = out
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = value
    return out


def given(args: argparse.Namespace, cls) -> dict:
    """The options given on the command line, as a nested dict (flags not given are absent from the namespace)."""
    names = option_names(cls)
    return nest({k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items() if k in names})


def merge(base: dict, override: dict) -> dict:
    """Deep merge: nested dicts merge key by key, anything else replaces. Returns a new dict."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _coerce(name: str, hint, value):
    """A file value as the field's type: ints for int fields, floats also from ints and strings like '1e-4' (YAML 1.1
    reads those as strings), tuples from lists; anything else that does not fit is a one-line ValueError."""
    typ, optional = _base_type(hint)
    if value is None:
        if optional:
            return None
        raise ValueError(f"option {name} may not be null")
    try:
        if typing.get_origin(typ) is tuple:
            elems = typing.get_args(typ)
            if elems[-1] is Ellipsis:
                elems = (elems[0],) * len(value) if isinstance(value, (list, tuple)) else ()
            if not isinstance(value, (list, tuple)) or len(value) != len(elems) or not elems:
                raise TypeError
            return tuple(_coerce(name, e, v) for e, v in zip(elems, value))
        if typ is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if typ is int:
            if isinstance(value, bool) or not math.isfinite(float(value)) or float(value) != int(float(value)):
                raise TypeError
            return int(value) if isinstance(value, int) else int(float(value))
        if typ is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)  # .inf/.nan/1e400 pass here; `check_finite` refuses them with the option's flag
        if typ is str:
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"option {name}: expected {getattr(typ, '__name__', typ)}, got {value!r}") from None
    return value


def from_dict(cls, d: dict, prefix: str = ""):
    """Build a dataclass from (possibly partial) nested dicts; missing fields keep their defaults, unknown keys are a
    one-line ValueError naming the key."""
    if not isinstance(d, dict):
        raise ValueError(f"option {prefix.rstrip('.') or 'config'} must be a mapping, got {d!r}")
    known = {f.name: (f, hint) for f, hint in _fields(cls)}
    unknown = [k for k in d if k not in known]
    if unknown:
        raise ValueError(f"unknown option {prefix}{unknown[0]} (known: {', '.join(known)})")
    kwargs = {}
    for k, v in d.items():
        f, hint = known[k]
        typ, _ = _base_type(hint)
        kwargs[k] = from_dict(typ, v, f"{prefix}{k}.") if dataclasses.is_dataclass(typ) else _coerce(prefix + k, hint, v)
    return cls(**kwargs)


def check_finite(config) -> None:
    """Every float option (and every float in a tuple option) is finite: argparse's float() takes 'nan' and 'inf',
    which would switch a term off silently (nan > 0 is false) or train into divergence."""
    for f, hint in _fields(type(config)):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_finite(value)
            continue
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError(f"{flag_name(f)} must be finite (got {_show(value)})")


def check_choices(config, prefix: str = "") -> None:
    """Every field with declared choices holds one of them (config files bypass argparse's check)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_choices(value, f"{prefix}{f.name}.")
        elif f.metadata.get("choices") and value is not None and value not in f.metadata["choices"]:
            raise ValueError(f"{flag_name(f)} {value!r} is not one of {', '.join(map(str, f.metadata['choices']))}")
