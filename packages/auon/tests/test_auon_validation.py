"""Bad hyperparameters and parameters raise errors that name the argument."""

from __future__ import annotations

import pytest
import torch

from auon import AuON, AuONWithAuxAdam, HybridAuON, Muon


def _w() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.randn(4, 4))]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": -0.1}, "lr"),
        ({"momentum": 1.5}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"gamma": 0.0}, "gamma"),
        ({"eps": 0.0}, "eps"),
        ({"variant": "nope"}, "variant"),
        ({"adjust_lr_fn": "bogus"}, "adjust_lr_fn"),
        ({"brake": "hard"}, "brake"),
        ({"brake_temperature": -1.0}, "brake_temperature"),
        ({"nonfinite": "ignore"}, "nonfinite"),
        ({"variant": "repo", "adjust_lr_fn": "unit"}, "adjust_lr_fn"),
        ({"variant": "repo", "brake": "rms"}, "brake"),
    ],
)
def test_auon_bad_hyperparameters(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        AuON(_w(), **kwargs)  # type: ignore[arg-type]


def test_per_group_bad_value_is_rejected_and_not_added() -> None:
    opt = AuON(_w(), lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(3, 3))], "momentum": 2.0})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("cls", [Muon, HybridAuON])
def test_every_optimizer_rolls_back_an_invalid_group(cls: type[torch.optim.Optimizer]) -> None:
    opt = cls([torch.nn.Parameter(torch.randn(3, 3))], lr=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="momentum"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(3, 3))], "momentum": 2.0})
    assert len(opt.param_groups) == 1


def test_aux_adam_validates_each_kind_of_group() -> None:
    w = torch.nn.Parameter(torch.randn(3, 3))
    opt = AuONWithAuxAdam([{"params": [w], "use_auon": True}])
    bad_auon = {"params": [torch.nn.Parameter(torch.randn(3, 3))], "use_auon": True, "momentum": 2}
    with pytest.raises(ValueError, match="momentum"):
        opt.add_param_group(bad_auon)
    bad_adam = {"params": [torch.nn.Parameter(torch.randn(3))], "use_auon": False, "lr": -1.0}
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group(bad_adam)
    assert len(opt.param_groups) == 1


def test_vectors_rejected_with_pointer_to_param_groups() -> None:
    with pytest.raises(ValueError, match=r"auon\.matrix_param_groups"):
        AuON([torch.nn.Parameter(torch.randn(5))])
    with pytest.raises(ValueError, match=r"auon\.matrix_param_groups"):
        AuON([torch.nn.Parameter(torch.tensor(1.0))])
    with pytest.raises(ValueError, match=r"auon\.matrix_param_groups"):
        Muon([torch.nn.Parameter(torch.randn(5))])
    AuON([torch.nn.Parameter(torch.randn(5))], variant="repo")  # the repo variant takes any shape


def test_complex_and_sparse() -> None:
    with pytest.raises(ValueError, match="complex"):
        AuON([torch.nn.Parameter(torch.randn(3, 3, dtype=torch.complex64))])
    p = torch.nn.Parameter(torch.randn(3, 3))
    opt = AuON([p])
    p.grad = torch.randn(3, 3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_other_optimizers_validate() -> None:
    with pytest.raises(ValueError, match="ns_steps"):
        HybridAuON(_w(), ns_steps=0)
    with pytest.raises(ValueError, match="lr"):
        Muon(_w(), lr=-1.0)
    with pytest.raises(ValueError, match="use_auon"):
        AuONWithAuxAdam([{"params": _w()}])
    with pytest.raises(ValueError, match="betas"):
        AuONWithAuxAdam([{"params": _w(), "use_auon": False, "betas": (0.9, 1.0)}])
