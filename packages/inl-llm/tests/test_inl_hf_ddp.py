"""Two-process gloo DDP with the shared INL controller: no unused-parameter error, ranks agree,
and the result equals single-process training on the whole batch."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import Tensor

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Tensor]]:
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    import _inl_ddp_worker as worker  # tests/ is on sys.path (conftest.py); children inherit it

    out_dir = tmp_path_factory.mktemp("inl_ddp")
    # Raises if a rank fails, e.g. DDP's "Expected to have finished reduction in the prior
    # iteration" when a parameter (the shared controller) got no gradient.
    mp.spawn(worker.run, args=(str(out_dir), _free_port()), nprocs=2, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_ranks_agree_and_controller_trained(ranks: list[dict[str, Tensor]]) -> None:
    import _inl_ddp_worker as worker

    fresh = worker.build().state_dict()
    for key, value in ranks[0].items():
        if key != "losses":
            assert torch.equal(value, ranks[1][key]), key
    changed = [k for k in fresh if k.startswith("model.inl_controller.")]
    assert changed
    for key in changed:
        assert not torch.equal(ranks[0][key], fresh[key]), key


def test_ddp_equals_single_process_on_the_whole_batch(ranks: list[dict[str, Tensor]]) -> None:
    import _inl_ddp_worker as worker

    model = worker.build().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for ids in worker.data():
        opt.zero_grad(set_to_none=True)
        # DDP averages the per-rank means; equal shard sizes make that the global mean
        model(ids, labels=ids, use_cache=False).loss.backward()
        opt.step()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(ranks[0][key], value, atol=1e-5, rtol=1e-4, msg=key)
