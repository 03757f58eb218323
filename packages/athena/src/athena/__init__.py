"""ATHENA: PolyAdapter (LoRA + IA³ + a sparse mixture of LoRA experts) with PEFT-compatible files,
budgeted AutoRank, progressive freezing, and rehearsal for continual learning."""

from .autorank import AutoRank, AutoRankResult, ProxyFineTune
from .checkpointing import enable_input_require_grads
from .config import PolyAdapterConfig
from .continual_metrics import ContinualMetrics
from .freezing import FreezeEvent, ProgressiveFreezingScheduler, freeze_param_groups
from .injection import inject_polyadapter
from .matching import TargetReport, inspect_targets
from .memory import CrossTaskMemory
from .model import AthenaModel, get_athena_model
from .modules_to_save import ModulesToSaveWrapper
from .poly_adapter import AdapterSpec, PolyAdapter

__version__ = "0.1.0"

__all__ = [
    "AdapterSpec",
    "AthenaModel",
    "AutoRank",
    "AutoRankResult",
    "ContinualMetrics",
    "CrossTaskMemory",
    "FreezeEvent",
    "ModulesToSaveWrapper",
    "PolyAdapter",
    "PolyAdapterConfig",
    "ProgressiveFreezingScheduler",
    "ProxyFineTune",
    "TargetReport",
    "__version__",
    "enable_input_require_grads",
    "freeze_param_groups",
    "get_athena_model",
    "inject_polyadapter",
    "inspect_targets",
]
