"""Smoke test of `athena[autorank]` (run by scripts/smoke.py in a fresh venv with that extra): a
GP-EI rank search on a synthetic objective runs, stays within its budget and exports a pattern."""

import math

import torch
from torch import nn

import athena
from athena import AutoRank, PolyAdapterConfig

assert "site-packages" in athena.__file__, athena.__file__


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleDict({"query": nn.Linear(8, 8)}) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            x = block["query"](x)
        return x


def objective(rank_map: dict[str, int], trial: object) -> float:
    assert sum(rank_map.values()) <= 12, rank_map
    return sum((math.log2(1 + r) - 2.0) ** 2 for r in rank_map.values())  # best: r = 3 → 2 or 4


result = AutoRank(
    Net(),
    rank_budget=12,
    rank_candidates=(0, 2, 4, 8),
    num_trials=8,
    patience=8,
    base_config=PolyAdapterConfig(target_modules=["query"]),
    seed=0,
    objective=objective,
).search()
assert sum(result.rank_map.values()) <= 12, result.rank_map
assert isinstance(result.rank_pattern, dict), result
print(f"athena {athena.__version__} [autorank]: GP-EI search ok, best {result.best_value:.3f}")
