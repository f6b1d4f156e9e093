"""ggdsl: declare a Bayesian network, get a Graphical GAN trained in JAX.

The front end (spec, graph analysis) is imported eagerly and needs no JAX; training,
evaluation and run loading import JAX when first used.
"""

from __future__ import annotations

from typing import Any

from ggdsl.errors import BuildError, DataError, EvalError, GGDSLError, GraphError, SpecError, TrainError
from ggdsl.factorize import Analysis, Factor, analyze
from ggdsl.nodes import NodeSampler, register_sampler
from ggdsl.spec import Layer, ModelBuilder, Spec, Variable, load_spec, register_node

__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "BuildError",
    "DataError",
    "EvalError",
    "Factor",
    "GGDSLError",
    "GraphError",
    "Layer",
    "ModelBuilder",
    "NodeSampler",
    "Spec",
    "SpecError",
    "TrainError",
    "Variable",
    "analyze",
    "compile_and_train",
    "load_run",
    "load_spec",
    "register_node",
    "register_sampler",
]


def __getattr__(name: str) -> Any:
    # Lazy so that `import ggdsl` (and `ggdsl validate`) never import JAX.
    if name == "compile_and_train":
        from ggdsl.train import compile_and_train

        return compile_and_train
    if name == "load_run":
        from ggdsl.run import load_run

        return load_run
    raise AttributeError(f"module 'ggdsl' has no attribute {name!r}")
