"""Two-process gloo tests: allreduce, reference AVG, deferred statistics, DDP and FSDP2 training.

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

from aion_torch import AionResidual, sync_stats

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
        # α ≈ 0.1: fp32-relative (the sums differ only in reduction order)
        torch.testing.assert_close(
            r["allreduce.alpha_cached"], single.alpha_cached, rtol=1.3e-6, atol=0.0
        )
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

    model = worker.make_model("allreduce")  # no process group here: local statistics
    worker.train(model, torch.optim.SGD(model.parameters(), lr=0.1), None)
    for k, v in model.state_dict().items():
        assert torch.equal(ranks[0][f"ddp.{k}"], ranks[1][f"ddp.{k}"]), k
        torch.testing.assert_close(ranks[0][f"ddp.{k}"], v, msg=k)


def _single_process_accumulation() -> tuple[list[list[Tensor]], dict[str, Tensor]]:
    """Deferred statistics over the micro-batches of both ranks, one sync per step, in one process.

    The DDP gradient of a step is the rank average of the per-rank sums over micro-batches, so
    each rank's micro-batch loss enters with weight 1/2.
    """
    import _aion_dist_worker as worker

    d = worker.micro_batches(1)
    model = worker.make_model("deferred")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    emas: list[list[Tensor]] = []
    for step in range(worker.ACC_STEPS):
        for rank, counts in enumerate(worker.MICRO_TOKENS):
            for micro in range(len(counts)):
                key = f"acc{step}.{rank}.{micro}"
                loss = (model(d[f"{key}.x"]) - d[f"{key}.t"]).pow(2).mean()
                (loss / worker.WORLD).backward()
        sync_stats(model)  # local: the token-weighted mean over all 6 micro-batches
        opt.step()
        opt.zero_grad()
        emas.append([model[i].aion.ratio_ema.clone() for i in range(2)])
    return emas, {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("tag", ["sync", "nosync"])
def test_ddp_deferred_gradient_accumulation_is_token_weighted(
    ranks: list[dict[str, Tensor]], tag: str
) -> None:
    """3 forwards per reduction, with and without ``no_sync()``, under ``broadcast_buffers=True``.

    DDP broadcasts rank 0's buffers before every forward; ``pending`` must not be one of them.
    """
    emas, params = _single_process_accumulation()
    # hand-derived first-layer EMA after step 0: token-weighted mean of E[y²]/(E[n²] + ε) over the
    # 6 micro-batches of both ranks, n = LN(x) and y = layer(n) at the initial weights (γ = 0.9)
    import _aion_dist_worker as worker

    d, layer = worker.micro_batches(1), worker.make_model("deferred")[0].layer
    total, count = 0.0, 0
    with torch.no_grad():
        for rank, counts in enumerate(worker.MICRO_TOKENS):
            for micro in range(len(counts)):
                n = torch.nn.functional.layer_norm(d[f"acc0.{rank}.{micro}.x"].double(), (8,))
                y = torch.nn.functional.linear(n, layer.weight.double(), layer.bias.double())
                r = y.pow(2).mean(-1) / (n.pow(2).mean(-1) + 1e-8)
                total, count = total + float(r.sum()), count + r.numel()
    assert count == sum(map(sum, worker.MICRO_TOKENS))
    expected0 = torch.tensor(0.9 * 1.0 + 0.1 * total / count)
    # EMAs ≈ 0.9: fp32-relative (fp32 LayerNorm and sums against float64, or another summation
    # order); the default atol 1e-5 would be ten times looser than that
    ema_tol = {"rtol": 1.3e-6, "atol": 0.0}
    torch.testing.assert_close(ranks[0][f"{tag}0.ratio_ema0"], expected0, **ema_tol)
    torch.testing.assert_close(emas[0][0], expected0, **ema_tol)
    for step, expected in enumerate(emas):
        for i, e in enumerate(expected):
            key = f"{tag}{step}.ratio_ema{i}"
            assert torch.equal(ranks[0][key], ranks[1][key]), key
            torch.testing.assert_close(ranks[0][key], e, msg=key, **ema_tol)
    for k, v in params.items():
        assert torch.equal(ranks[0][f"{tag}.{k}"], ranks[1][f"{tag}.{k}"]), k
        torch.testing.assert_close(ranks[0][f"{tag}.{k}"], v, msg=k)


def test_fsdp2_allreduce_training_equals_single_process(ranks: list[dict[str, Tensor]]) -> None:
    """FSDP2 shards the (1,) scalars (α0, β, ReZero's α); 3 AdamW steps equal the whole batch."""
    import _aion_dist_worker as worker

    model = worker.make_model("allreduce", rezero=True)
    worker.train(model, torch.optim.AdamW(model.parameters(), lr=1e-2), None)
    assert float(model[2].aion.alpha.detach()) != 0.0  # ReZero's α left 0 and is compared
    for k, v in [*model.named_parameters(), *model.named_buffers()]:
        assert torch.equal(ranks[0][f"fsdp.{k}"], ranks[1][f"fsdp.{k}"]), k
        torch.testing.assert_close(ranks[0][f"fsdp.{k}"], v.detach(), msg=k)
    # sharded state dict: DTensor of the parameter's (1,) shape, as distributed checkpointing needs
    for r in ranks:
        assert bool(r["fsdp_state_alpha0_is_dtensor"])
        assert r["fsdp_state_alpha0_shape"].tolist() == [1]
        # exact: loaded values are copies
        assert torch.equal(r["fsdp_loaded.alpha0"], torch.tensor([0.2]))
        assert torch.equal(r["fsdp_loaded.rezero"], torch.tensor([0.3]))
