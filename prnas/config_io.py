"""Reading YAML configs into pydantic models, shared by the search and the retrain.

One place decides how overrides apply and how a validation error reads, so
every command reports a bad field the same way: its dotted name, the problem
and, for an unknown field, the fields that are allowed there.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

# Configs refuse unknown fields, never change after validation, and refuse inf/NaN: an
# ``lr: .inf`` would otherwise pass and train a cycle on NaNs.
STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

M = TypeVar("M", bound=BaseModel)


# Largest seed every RNG takes (torch.manual_seed needs it to fit in 64 bits).
MAX_SEED = 2**63 - 1


class ConfigError(ValueError):
    """An invalid config; the message names every offending field."""


def check_device(v: str) -> str:
    """A device string both configs accept: refused at load, not when a run starts."""
    head, _, index = v.partition(":")
    if head not in ("auto", "cpu", "cuda") or (index and not index.isdigit()) or (
        index and head != "cuda"
    ):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
    return v


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """``raw["a"]["b"] = value`` for ``key="a.b"``, creating the intermediate mappings."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict:
    """Overrides are dotted keys (``data.data_dir``) or nested mappings, merged into a copy
    of ``raw`` (a deep one: a dotted key must never write into the caller's sections)."""
    merged = copy.deepcopy(dict(raw))
    for key, value in (overrides or {}).items():
        if "." in key:
            set_dotted(merged, key, value)
        else:
            merged = deep_merge(merged, {key: value})
    return merged


Behaviour = Literal["paper", "reference"]
BEHAVIOUR_HELP = ("paper: the paper's text and prnas' fixes; reference: the authors' code's "
                  "behaviour where prnas differs (docs/search.md, Fidelity)")


def fill_behaviour(raw: Any, fields: Mapping[str, Any]) -> Any:
    """A raw config with ``behaviour: reference`` gets the dotted ``fields`` that it does
    not set itself (a value set explicitly is kept), before validation, so the validated
    config shows what the switch chose."""
    if not isinstance(raw, Mapping) or raw.get("behaviour") != "reference":
        return raw
    out = copy.deepcopy(dict(raw))
    for key, value in fields.items():
        section, name = key.split(".")
        part = out.get(section)
        if isinstance(part, BaseModel):
            part = part.model_dump(exclude_unset=True)
        part = dict(part or {})
        part.setdefault(name, value)
        out[section] = part
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML ({err})") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of config fields at the top level")
    return raw or {}


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (sub)model at ``loc``, for "unknown field" messages."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None or not isinstance(field.annotation, type):
            return []
        current = field.annotation
    return list(getattr(current, "model_fields", {}))


def format_validation_error(err: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = _fields_at(model, e["loc"][:-1])
            msg = "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif e["type"] == "value_error":  # our own validators already quote the value
            msg = msg.removeprefix("Value error, ")
        elif e["type"] != "missing" and not isinstance(e.get("input"), dict | list):
            msg = f"{msg} (got {e.get('input')!r})"
        lines.append(f"{loc}: {msg}")
    return "invalid config: " + "; ".join(lines)


def validate(model: type[M], raw: Mapping[str, Any] | None = None,
             overrides: Mapping[str, Any] | None = None, source: str | None = None) -> M:
    """``model`` validated from ``raw`` plus ``overrides``; ConfigError naming each bad field."""
    merged = apply_overrides(raw or {}, overrides)
    try:
        return model.model_validate(merged)
    except ValidationError as err:
        msg = format_validation_error(err, model)
        raise ConfigError(f"{source}: {msg}" if source else msg) from None


def load(model: type[M], path: str | os.PathLike | None = None,
         overrides: Mapping[str, Any] | None = None) -> M:
    """The YAML file at ``path`` (None: the model's defaults) plus overrides, validated."""
    raw = read_yaml(path) if path is not None else {}
    return validate(model, raw, overrides, source=str(path) if path is not None else None)


def dump(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def parse_set_args(items: list[str]) -> dict[str, Any]:
    """``--set a.b=VALUE`` flags as dotted overrides; VALUE is parsed as YAML (3, true, [1,2])."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or "not valid YAML"
            raise ConfigError(f"--set {key.strip()}: value {value!r} is not valid YAML "
                              f"({problem})") from None
    return out
