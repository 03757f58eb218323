"""Two-process gloo tests: allreduce, reference AVG, deferred statistics and DDP training.

One spawn (2 ranks on loopback) runs every scenario of ``_aion_dist_worker.py``; the tests compare
its saved tensors with single-process computations on the concatenated data.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import Tensor

from aion_torch import AionResidual

pytestmark = pytest.mark.distributed

_HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Tensor]]:
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    if str(_HERE) not in sys.path:
        sys.path.insert(0, str(_HERE))  # spawned children inherit sys.path
    import _aion_dist_worker as worker

    out_dir = tmp_path_factory.mktemp("aion_dist")
    mp.spawn(worker.run, args=(str(out_dir), _free_port()), nprocs=2, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]


def _worker_data() -> dict[str, Tensor]:
    import _aion_dist_worker as worker

    return worker.data(0)


def test_allreduce_equals_concatenated_statistic(ranks: list[dict[str, Tensor]]) -> None:
    d = _worker_data()
    single = AionResidual(ema_gamma=0.0)
    x = torch.cat([d["x0"], d["x1"]], dim=1)
    y = torch.cat([d["y0"], d["y1"]], dim=1)
    _, stats = single(x, y, return_stats=True)
    for r in ranks:
        torch.testing.assert_close(r["allreduce_ratio"], stats["ratio"])
        torch.testing.assert_close(r["allreduce.alpha_cached"], single.alpha_cached)
    for key in ranks[0]:
        if key.startswith("allreduce."):
            assert torch.equal(ranks[0][key], ranks[1][key]), key


def test_reference_averages_ranks_equally(ranks: list[dict[str, Tensor]]) -> None:
    d = _worker_data()
    means = []
    for i in range(2):
        m = AionResidual(mode="reference", ema_gamma=0.0)
        m(d[f"x{i}"], d[f"y{i}"])
        means.append(m.ratio_ema.clone())
    expected = (means[0] + means[1]) / 2  # not token-weighted (4 vs 12 tokens)
    for r in ranks:
        torch.testing.assert_close(r["reference_ratio_ema"], expected)
    assert torch.equal(ranks[0]["reference_alpha"], ranks[1]["reference_alpha"])


def test_deferred_one_collective_and_identical_buffers(ranks: list[dict[str, Tensor]]) -> None:
    d = _worker_data()
    for r in ranks:
        assert int(r["deferred_collectives"]) == 1
        assert float(r["deferred_alpha_spread"]) == 0.0
    # expected EMA: token-weighted mean over both ranks and both micro-batches
    total, count = torch.tensor(0.0), 0
    for i in range(2):
        for micro in range(2):
            x = d[f"x{i}"] * (1 + micro)
            ex = x.pow(2).mean(-1)
            ey = d[f"y{i}"].pow(2).mean(-1)
            total = total + (ey / (ex + 1e-8)).sum()
            count += ex.numel()
    expected = 0.5 * 1.0 + 0.5 * total / count
    for i in range(3):
        key = f"deferred{i}.ratio_ema"
        assert torch.equal(ranks[0][key], ranks[1][key])
        torch.testing.assert_close(ranks[0][key], expected)


def test_ddp_allreduce_training_equals_single_process(ranks: list[dict[str, Tensor]]) -> None:
    import _aion_dist_worker as worker

    d = _worker_data()
    model = worker.make_model("allreduce")  # no process group here: local statistics
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        loss = (model(d["train_x"][step]) - d["train_t"][step]).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    for k, v in model.state_dict().items():
        assert torch.equal(ranks[0][f"ddp.{k}"], ranks[1][f"ddp.{k}"]), k
        torch.testing.assert_close(ranks[0][f"ddp.{k}"], v, rtol=1e-5, atol=1e-6, msg=k)
