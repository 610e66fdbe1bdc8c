"""Data-parallel training through PyTorch's own engine (torchrun + DistributedDataParallel).

Launched with ``torchrun --nproc-per-node N -m greedymm train ...``: every rank reads its slice of each global
batch, DDP averages the gradients, and everything the method decides from is made identical on every rank:
the conditional learning speed is computed from the all-reduced gradients, the running gate means and the
squeeze sums are all-reduced, BatchNorm statistics are synchronized (torch's SyncBatchNorm on GPUs, ``DistBatchNorm``
below on CPUs, where SyncBatchNorm does not run), and the random variant draws from a generator seeded alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_(t: Tensor, op: str = "sum") -> Tensor:
    """In-place sum or mean over ranks; a no-op in a single process."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        if op == "mean":
            t /= dist.get_world_size()
    return t


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def gather_rng_states() -> list[Tensor]:
    """Every rank's CPU RNG state, in rank order (a collective when distributed)."""
    state = torch.get_rng_state()
    if not is_distributed():
        return [state]
    states: list[Tensor | None] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states  # type: ignore[return-value]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_OWNED = False  # whether greedymm started the process group (and so must end it)


def teardown() -> None:
    """End the process group greedymm started, so no communication thread outlives the command.

    Left to interpreter shutdown, gloo's (or nccl's) background threads can still be alive when the process exits,
    and a rank that trained fine then aborts ("terminate called without an active exception", exit -6), which a
    scheduler reports as a failed job. Safe to call twice, after an error, and when nothing was started."""
    global _OWNED
    if _OWNED and dist.is_available() and dist.is_initialized():
        import gc

        # A DistributedDataParallel wrapper and its reducer sit in reference cycles and keep the process group
        # alive: unless they are freed now, the group (and its gloo threads) is destroyed during interpreter
        # shutdown, where a rank can abort after training fine (seen: "terminate called without an active
        # exception" at exit, with the main thread already without Python frames).
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
    _OWNED = False


def ddp_buffer_kwargs() -> dict:
    """DistributedDataParallel arguments that keep buffers rank-local during forwards (greedymm all-reduces them
    itself); ``forward_sync_buffers`` where this torch has it (``broadcast_buffers`` is deprecated there)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}  # it still syncs once at construction: every rank's buffers agree then
    return {"broadcast_buffers": False}


def setup(device: str) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device {device!r} is not a device torch knows ({e}); use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {device}: no CUDA GPU is visible to this torch ({torch.__version__}); use --device cpu, or "
            "--device auto to take a GPU when there is one"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), 0-based")
    if world <= 1:
        return DistContext(device=dev)
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        global _OWNED
        _OWNED = True
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), device=dev)


class _GlobalStats(torch.autograd.Function):
    """Sum a tensor over ranks in forward; sum its gradient over ranks in backward."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:  # type: ignore[override]
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        g = g.clone()
        dist.all_reduce(g)
        return g


class DistBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (all ranks), for CPU process groups."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        n_local = torch.tensor(float(x.numel() // x.shape[1]), dtype=x.dtype, device=x.device)
        local = torch.cat([x.sum(dims), (x * x).sum(dims), n_local.view(1)])
        total = _GlobalStats.apply(local)
        c = x.shape[1]
        n = total[-1]
        mean = total[:c] / n
        var = total[c : 2 * c] / n - mean * mean  # biased, as BatchNorm normalizes with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * unbiased)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm by a synchronized one (state dicts stay compatible)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, DistBatchNorm):
            new = DistBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new.to(device))
        else:
            sync_batchnorm(child, device)
    return module
