"""Register the INL model with the transformers Auto classes, explicitly (no import side effect).

After :func:`register_auto_classes`, ``AutoConfig.for_model("inl-llm")``,
``AutoModel.from_config(config)`` and ``AutoModelForCausalLM.from_pretrained(path)`` resolve to
:class:`~inl_llm.INLLLMConfig`, :class:`~inl_llm.INLModel` and :class:`~inl_llm.INLForCausalLM`
without ``trust_remote_code``. Checkpoints saved by ``save_pretrained`` also carry ``auto_map`` and
the modelling files, so they load with ``trust_remote_code=True`` where ``inl_llm`` is not installed.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from inl_llm.configuration_inl import INLLLMConfig
from inl_llm.modeling_inl import INLForCausalLM, INLModel

__all__ = ["register_auto_classes"]


def register_auto_classes() -> None:
    """Register ``"inl-llm"`` with AutoConfig, AutoModel and AutoModelForCausalLM (idempotent)."""
    AutoConfig.register(INLLLMConfig.model_type, INLLLMConfig, exist_ok=True)
    AutoModel.register(INLLLMConfig, INLModel, exist_ok=True)
    AutoModelForCausalLM.register(INLLLMConfig, INLForCausalLM, exist_ok=True)
