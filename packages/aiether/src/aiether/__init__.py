"""aiether: function-preserving depth growth for PyTorch models whose blocks form an ``nn.ModuleList``.

A :class:`GrowableStack` holds every block from step 0 and runs an ordered subset;
:class:`TrajectoryTracker` measures how the frontier block's weights move (τ, κ);
:class:`GrowthTrigger` decides when to grow; :class:`GrowthController` inserts a block
(copy, random, geometric or reference initialisation, made function-preserving), transfers
optimiser state and re-warms :class:`GrowthAwareLR`. Hugging Face integration: :mod:`aiether.hf`.
"""

from aiether.adapters import StackAdapter, export_compact, for_model, make_growable
from aiether.controller import GrowthController
from aiether.events import GrowthEvent
from aiether.extrapolator import GeometricExtrapolator
from aiether.layer_states import LayerStateManager
from aiether.model import AIetherGPT, GPTConfig
from aiether.operators import GeometricParams, initialise_block
from aiether.param_groups import param_groups
from aiether.persistence import load_growth_state, read_growth_state, save_growth_state
from aiether.schedule import GrowthAwareLR
from aiether.stack import GatedBlock, GrowableStack
from aiether.state_transfer import transfer_state
from aiether.trajectory import TrajectoryMetrics, TrajectoryTracker
from aiether.trigger import GrowthTrigger

__version__ = "0.1.0"

__all__ = [
    "AIetherGPT",
    "GPTConfig",
    "GatedBlock",
    "GeometricExtrapolator",
    "GeometricParams",
    "GrowableStack",
    "GrowthAwareLR",
    "GrowthController",
    "GrowthEvent",
    "GrowthTrigger",
    "LayerStateManager",
    "StackAdapter",
    "TrajectoryMetrics",
    "TrajectoryTracker",
    "__version__",
    "export_compact",
    "for_model",
    "initialise_block",
    "load_growth_state",
    "make_growable",
    "param_groups",
    "read_growth_state",
    "save_growth_state",
    "transfer_state",
]
