"""The spec stage: YAML or builder in, frozen IR out. Imports neither JAX nor Flax."""

from ggdsl.spec.builder import ModelBuilder, VarRef
from ggdsl.spec.frozen import FrozenDict
from ggdsl.spec.ir import (
    DataSpec,
    InferenceSpec,
    Layer,
    ObjectiveSpec,
    ParentRef,
    Spec,
    TimeSpec,
    TrainSpec,
    Variable,
)
from ggdsl.spec.load import apply_overrides, load_spec, spec_from_dict
from ggdsl.spec.schema import Key, register_node

__all__ = [
    "DataSpec",
    "FrozenDict",
    "InferenceSpec",
    "Key",
    "Layer",
    "ModelBuilder",
    "ObjectiveSpec",
    "ParentRef",
    "Spec",
    "TimeSpec",
    "TrainSpec",
    "VarRef",
    "Variable",
    "apply_overrides",
    "load_spec",
    "register_node",
    "spec_from_dict",
]
