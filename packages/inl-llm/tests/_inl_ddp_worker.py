"""Worker of the 2-process gloo test in ``test_inl_hf_ddp.py`` (not collected by pytest).

Each rank trains the same tiny INL model (shared controller, halting on) under DDP with
``find_unused_parameters=False`` for a few steps on its own shard of a fixed global batch, and saves
its final state and losses to ``{out_dir}/rank{rank}.pt``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from _inl_hf_common import VOCAB, tiny_config
from torch.nn.parallel import DistributedDataParallel

from inl_llm.modeling_inl import INLForCausalLM

WORLD = 2
STEPS = 3
BATCH_PER_RANK = 2
SEQ = 8


def data(seed: int = 0) -> torch.Tensor:
    """(STEPS, WORLD · BATCH_PER_RANK, SEQ) token ids, identical everywhere."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (STEPS, WORLD * BATCH_PER_RANK, SEQ), generator=g)


def build() -> INLForCausalLM:
    torch.manual_seed(0)
    model = INLForCausalLM(tiny_config(num_layers=2, use_shared_controllers=True))
    with torch.no_grad():  # open the gates so every INL parameter gets a non-zero gradient
        for layer in model.model.layers:
            layer.inl.gate.fill_(0.5)
    return model


def run(rank: int, out_dir: str, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        model = build().train()
        ddp = DistributedDataParallel(model, find_unused_parameters=False)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        batches = data()
        losses = []
        for step in range(STEPS):
            ids = batches[step, rank * BATCH_PER_RANK : (rank + 1) * BATCH_PER_RANK]
            opt.zero_grad(set_to_none=True)
            loss = ddp(ids, labels=ids, use_cache=False).loss
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        state["losses"] = torch.stack(losses)
        torch.save(state, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
