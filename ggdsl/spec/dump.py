"""Spec to plain dict and YAML; the inverse of the loader (``load_spec(s.to_yaml()) == s``)."""

from __future__ import annotations

from typing import Any

import yaml

from ggdsl.spec.frozen import thaw
from ggdsl.spec.ir import Layer, Spec, Variable
from ggdsl.spec.schema import COMMON_KEYS, NODE_TYPES
from ggdsl.spec.yamltree import EXPONENT_FLOAT


def _net(value: Any) -> Any:
    if isinstance(value, tuple) and value and isinstance(value[0], Layer):
        return [layer.to_dict() for layer in value]
    return thaw(value)


def variable_to_dict(var: Variable) -> dict[str, Any]:
    """A variable as YAML would write it, leaving out keys at their defaults."""
    out: dict[str, Any] = {"type": var.type}
    if var.shape:
        out["shape"] = list(var.shape)
    if var.given:
        out["given"] = [str(p) for p in var.given]
    if var.observed:
        out["observed"] = True
    if var.steps:
        out["steps"] = True
    keys = NODE_TYPES[var.type].keys
    for key, value in var.options.items():
        if key in keys and not keys[key].required and value == keys[key].default:
            continue
        out[key] = _net(value) if key == "net" else thaw(value)
    if var.first is not None:
        out["first"] = variable_to_dict(var.first)
    assert set(out) <= set(COMMON_KEYS) | set(keys)
    return out


def spec_to_dict(spec: Spec) -> dict[str, Any]:
    """The whole spec as plain dicts and lists, defaults included outside ``model``."""
    out: dict[str, Any] = {"name": spec.name}
    if spec.data is not None:
        out["data"] = {
            "source": spec.data.source,
            "observe": thaw(spec.data.observe),
            "range": list(spec.data.range),
            **thaw(spec.data.options),
        }
    if spec.time is not None:
        out["time"] = {"steps": spec.time.steps}
    out["model"] = {name: variable_to_dict(var) for name, var in spec.model.items()}
    inference = spec.inference
    out["inference"] = {
        "family": inference.family,
        "discrete": inference.discrete,
        "temperature": inference.temperature,
    }
    if inference.nets:
        out["inference"]["nets"] = {k: _net(v) for k, v in inference.nets.items()}
    objective = spec.objective
    out["objective"] = {
        "divergence": objective.divergence,
        "loss": objective.loss,
        "reconstruction": objective.reconstruction,
        "latent_reconstruction": thaw(objective.latent_reconstruction),
        "r1": thaw(objective.r1),
        "weights": thaw(objective.weights),
        "video": objective.video,
        "spectral_norm": objective.spectral_norm,
        "instance_noise": objective.instance_noise,
    }
    if objective.code_likelihood:  # written only when set: specs without it keep their model hash
        out["objective"]["code_likelihood"] = objective.code_likelihood
    if objective.augment:  # likewise
        out["objective"]["augment"] = thaw(objective.augment)
    if objective.consistency:  # likewise
        out["objective"]["consistency"] = thaw(objective.consistency)
    if objective.marginals:  # likewise
        out["objective"]["marginals"] = list(objective.marginals)
    if objective.discriminators:
        out["objective"]["discriminators"] = {k: _net(v) for k, v in objective.discriminators.items()}
    if spec.networks:
        out["networks"] = {k: _net(v) for k, v in spec.networks.items()}
    train = spec.train
    out["train"] = {
        "batch_size": train.batch_size,
        "steps": train.steps,
        "optimizer": thaw(train.optimizer),
        **({"critic_optimizer": thaw(train.critic_optimizer)} if train.critic_optimizer else {}),
        "critic_steps": train.critic_steps,
        "seed": train.seed,
        "log_every": train.log_every,
        "eval_every": train.eval_every,
        "checkpoint_every": train.checkpoint_every,
        "devices": train.devices,
        "on_nonfinite": train.on_nonfinite,
        "ema": train.ema,
        **({"holdout": train.holdout} if train.holdout else {}),
        **({"select": train.select} if train.select != "last" else {}),
        **({"pretrain": thaw(train.pretrain)} if train.pretrain else {}),
        **({"init_from": thaw(train.init_from)} if train.init_from else {}),
    }
    if spec.eval:
        out["eval"] = list(spec.eval)
    return out


class _Dumper(yaml.SafeDumper):
    """Quotes the strings that the spec loader would read as numbers (``"1e5"``)."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789."))


def _flow_short_lists(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, (int, float, str, bool)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _flow_layers(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    flow = all(isinstance(v, (int, float, str, bool, type(None))) for v in data.values()) and len(data) <= 8
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flow)


_Dumper.add_representer(list, _flow_short_lists)
_Dumper.add_representer(dict, _flow_layers)


def spec_to_yaml(spec: Spec) -> str:
    """YAML text of the spec, in the section order of the format."""
    return yaml.dump(spec_to_dict(spec), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
