"""Shapes, parameter counts, layer kinds, presets and assembly plans, without JAX.

This is the pure-Python half of :mod:`ggdsl.nets`: the spec loader validates layer
mappings with :func:`check_layer`, and ``ggdsl explain`` counts parameters with
:func:`plan_param_count`, both without importing JAX. :mod:`ggdsl.nets.modules` builds
the same layer lists and plans into Flax NNX modules.

>>> layers = get_preset("generator28", (28, 28, 1))
>>> network_shapes(layers, (64,))[-1]
(28, 28, 1)
>>> plan = discriminator_plan({"x": (28, 28, 1), "h": (64,)})
>>> plan_out_shape(plan, {"x": (28, 28, 1), "h": (64,)})
(1,)
"""

from ggdsl.nets._layers import (
    ACTIVATIONS,
    LAYER_KINDS,
    NORMS,
    PADDINGS,
    LayerKind,
    Option,
    Shape,
    check_layer,
    conv_out_size,
    deconv_out_size,
    layer_kind,
    layer_option,
    layer_out_shape,
    layer_param_count,
    network_param_count,
    network_shapes,
    pool_axes,
    register_layer_kind,
)
from ggdsl.nets._plans import (
    VIDEO_MODES,
    Branch,
    Plan,
    branch_in_shape,
    conv_tower,
    discriminator_plan,
    extractor_plan,
    input_kind,
    network_plan,
    plan_out_shape,
    plan_param_count,
    plan_shapes,
)
from ggdsl.nets._presets import (
    PRESET_RESIDUAL,
    PRESETS,
    get_preset,
    output_activation,
    preset_names,
    register_preset,
)

__all__ = [
    "pool_axes",
    "ACTIVATIONS",
    "LAYER_KINDS",
    "NORMS",
    "PADDINGS",
    "PRESETS",
    "PRESET_RESIDUAL",
    "VIDEO_MODES",
    "Branch",
    "LayerKind",
    "Option",
    "Plan",
    "Shape",
    "branch_in_shape",
    "check_layer",
    "conv_out_size",
    "conv_tower",
    "deconv_out_size",
    "discriminator_plan",
    "extractor_plan",
    "get_preset",
    "input_kind",
    "layer_kind",
    "layer_option",
    "layer_out_shape",
    "layer_param_count",
    "network_param_count",
    "network_plan",
    "network_shapes",
    "output_activation",
    "plan_out_shape",
    "plan_param_count",
    "plan_shapes",
    "preset_names",
    "register_layer_kind",
    "register_preset",
]
