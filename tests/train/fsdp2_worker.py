"""FSDP2 (`torch.distributed.fsdp.fully_shard`) on a CPU device mesh, with spear_mm's freeze and
optimizer: the closest sharded path that runs on this machine (accelerate 1.15 runs FSDP on GPUs
only; docs/train.md, "Several processes"). Not a test module: test_multiprocess.py runs it under
`torchrun --nproc_per_node 2` and calls `train(..., shard=False)` in-process as the reference.

    torchrun --standalone --nproc_per_node 2 tests/train/fsdp2_worker.py MODEL OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

FREEZE = [r"layers\.0\.self_attn\."]  # a decoder layer with frozen and trainable tensors
STEPS, GLOBAL_BATCH, SEQ = 3, 4, 32


def train(model_dir: Path, *, shard: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Losses per step and the full final state dict (on every rank)."""
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from spear_mm.train.config import TrainerConfig
    from spear_mm.train.freeze import apply_freeze
    from spear_mm.train.optim import build_optimizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    apply_freeze(model, FREEZE, None, model.config.num_hidden_layers)  # before wrapping
    rank, world = (dist.get_rank(), dist.get_world_size()) if shard else (0, 1)
    if shard:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in model.model.layers:  # one unit per decoder layer, as fsdp.yaml wraps
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    opt = build_optimizer(model, TrainerConfig(lr=1e-3))
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(STEPS):
        ids = torch.randint(0, model.config.vocab_size, (GLOBAL_BATCH, SEQ), generator=gen)
        mine = ids.chunk(world)[rank]  # equal shares: the mean of rank means is the global mean
        loss = model(input_ids=mine, labels=mine).loss
        loss.backward()  # FSDP2 reduce-scatters the mean gradient
        opt.step()
        opt.zero_grad()
        loss = loss.detach()
        if shard:
            dist.all_reduce(loss)
            loss /= world
        losses.append(loss.item())
    state = {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
        for k, v in model.state_dict().items()
    }
    return losses, state


def main() -> None:
    import torch.distributed as dist

    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo")
    losses, state = train(model_dir, shard=True)
    if dist.get_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        torch.save(state, out / "state.pt")
        (out / "losses.json").write_text(json.dumps(losses))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
