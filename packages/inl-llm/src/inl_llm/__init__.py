"""inl_llm: the integrator-neuron layer (INL) and a Hugging Face causal LM built on it.

The layer: :class:`INLConfig`, :class:`INLLayer`, :class:`SharedINLController` and the pure
functions of :mod:`inl_llm.functional`.
"""

from inl_llm import functional
from inl_llm.inl_config import INLConfig
from inl_llm.inl_controller import INLController, SharedINLController
from inl_llm.inl_layer import INLLayer, INLStats

__version__ = "0.1.0"

__all__ = [
    "INLConfig",
    "INLController",
    "INLLayer",
    "INLStats",
    "SharedINLController",
    "__version__",
    "functional",
]
