"""Networks: layer kinds, presets and assembly plans (pure Python), and their Flax modules.

Importing ``ggdsl.nets`` does not import JAX; the modules live in
:mod:`ggdsl.nets.modules` and the convolutions in :mod:`ggdsl.nets.conv`, imported
explicitly where networks are built.
"""

from ggdsl.nets.shapes import *  # noqa: F403
from ggdsl.nets.shapes import __all__ as __all__
