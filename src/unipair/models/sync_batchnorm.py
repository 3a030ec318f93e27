"""BatchNorm over the global batch under DDP, on any device.

Under DDP each process normalises with the statistics of its own share of the batch, so N
processes do not compute what one process computes on the whole batch. ``SyncBatchNorm`` fixes
that, but PyTorch's runs on GPUs only; :class:`GlobalBatchNorm` does the same on CPUs (gloo)
with two differentiable all-reduces (sum, then the centred sum of squares), so gradients flow
through the global statistics exactly as in one process. On CUDA the conversion uses PyTorch's
own ``SyncBatchNorm``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["GlobalBatchNorm", "convert_sync_batchnorm", "has_sync_batchnorm"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose gradient is the sum of every process's gradient (each
    process's loss depends on the global statistics)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm{1,2,3}d whose training statistics span every process's rows (any device)."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        local_n = xf.new_tensor([x.numel() / max(x.shape[1], 1)])
        stats = all_reduce(torch.cat([xf.sum(dims), local_n]))
        n = stats[-1]
        mean = stats[:-1] / n.clamp_min(1.0)
        centred = xf - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / n.clamp_min(1.0)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        rm, rv, tracked = self.running_mean, self.running_var, self.num_batches_tracked
        if self.track_running_stats and rm is not None and rv is not None and tracked is not None:
            with torch.no_grad():
                tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                unbiased = var * n / (n - 1.0).clamp_min(1.0)
                rm.lerp_(mean.to(rm.dtype), momentum)
                rv.lerp_(unbiased.to(rv.dtype), momentum)
        return out.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Replace every BatchNorm by one with global statistics (in place where possible)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,  # type: ignore[arg-type]
            module.affine,
            module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        new.to(next(module.buffers(), torch.zeros(())).device)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device_type))
    return module


def has_sync_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` holds a BatchNorm that takes part in collectives when training."""
    return any(isinstance(m, (GlobalBatchNorm, nn.SyncBatchNorm)) for m in module.modules())
