"""inl_llm: the integrator-neuron layer (INL) and a Hugging Face causal LM built on it.

The layer: :class:`INLConfig`, :class:`INLLayer`, :class:`SharedINLController` and the pure
functions of :mod:`inl_llm.functional`. The language model: :class:`INLLLMConfig`,
:class:`INLModel`, :class:`INLForCausalLM`, :func:`register_auto_classes` and
:func:`causal_lm_collator`.
"""

from inl_llm import functional
from inl_llm.auto import register_auto_classes
from inl_llm.configuration_inl import INLLLMConfig
from inl_llm.data import causal_lm_collator
from inl_llm.inl_config import INLConfig
from inl_llm.inl_controller import INLController, SharedINLController
from inl_llm.inl_layer import INLLayer, INLStats
from inl_llm.modeling_inl import (
    INLCausalLMOutputWithPast,
    INLForCausalLM,
    INLModel,
    INLPreTrainedModel,
)

__version__ = "0.1.0"

__all__ = [
    "INLCausalLMOutputWithPast",
    "INLConfig",
    "INLController",
    "INLForCausalLM",
    "INLLLMConfig",
    "INLLayer",
    "INLModel",
    "INLPreTrainedModel",
    "INLStats",
    "SharedINLController",
    "__version__",
    "causal_lm_collator",
    "functional",
    "register_auto_classes",
]
