"""Package hygiene: public API surface, import side effects, module docstrings."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import warnings

import pytest
import torch

import adaptnn_core

EXPECTED_API = {
    "EMATracker",
    "KELLER_COEFFICIENTS",
    "POLAR_EXPRESS_COEFFICIENTS",
    "__version__",
    "all_reduce_",
    "all_reduce_coalesced_",
    "broadcast_",
    "dist",
    "ema_update_",
    "energy_ratio",
    "is_initialized",
    "keep_fp32",
    "masked_mean",
    "masked_sum_count",
    "matrix_shape",
    "mean_square",
    "newton_schulz",
    "newton_schulz_flops",
    "orthogonalize",
    "rank",
    "rms",
    "world_size",
}


def test_public_api_and_version() -> None:
    assert set(adaptnn_core.__all__) == EXPECTED_API
    assert len(adaptnn_core.__all__) == len(EXPECTED_API)
    assert adaptnn_core.__version__ == "0.1.0"
    for name in adaptnn_core.__all__:
        assert hasattr(adaptnn_core, name), name


def test_dist_is_a_public_module_with_the_top_level_names() -> None:
    from adaptnn_core import dist

    assert dist.__name__ == "adaptnn_core.dist"
    assert adaptnn_core.dist is dist
    for name in dist.__all__:
        assert getattr(adaptnn_core, name) is getattr(dist, name), name


def test_all_is_sorted_like_ruff() -> None:
    # ruff's RUF022 "isort-style" order: SCREAMING_CASE, then CamelCase, then the rest.
    def key(name: str) -> tuple[int, str]:
        if name.isupper():
            return (0, name)
        if name[0].isupper():
            return (1, name)
        return (2, name)

    assert list(adaptnn_core.__all__) == sorted(adaptnn_core.__all__, key=key)


def test_every_module_and_public_callable_is_documented() -> None:
    modules = (
        "adaptnn_core",
        "adaptnn_core._ema",
        "adaptnn_core._energy",
        "adaptnn_core._orth",
        "adaptnn_core._precision",
        "adaptnn_core.dist",
    )
    for mod in modules:
        doc = importlib.import_module(mod).__doc__
        assert doc is not None
        assert len(doc.strip()) > 40, mod
    for name in adaptnn_core.__all__:
        obj = getattr(adaptnn_core, name)
        if callable(obj):
            assert inspect.getdoc(obj), name


def test_import_does_not_initialise_cuda_or_touch_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Re-execute the package's import with every CUDA entry point patched to raise.

    Done in-process (a fresh interpreter would pay another torch import); the original module
    objects are put back by monkeypatch afterwards.
    """

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("CUDA touched at import time")

    for name in ("current_device", "init", "set_device", "_lazy_init", "device_count"):
        monkeypatch.setattr(torch.cuda, name, boom)
    for name in [m for m in sys.modules if m == "adaptnn_core" or m.startswith("adaptnn_core.")]:
        monkeypatch.delitem(sys.modules, name)
    env = dict(os.environ)
    threads = torch.get_num_threads()
    cuda_was_initialised = torch.cuda.is_initialized()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh = importlib.import_module("adaptnn_core")
    assert fresh is not adaptnn_core  # the import really ran again
    assert fresh.__all__ == adaptnn_core.__all__
    assert torch.cuda.is_initialized() == cuda_was_initialised
    assert dict(os.environ) == env
    assert torch.get_num_threads() == threads
    assert not torch.distributed.is_initialized()
