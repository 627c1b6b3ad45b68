"""A CPU-only stand-in for "the models are on CUDA": fails where a real CUDA run would mix devices.

:class:`FakeCuda` is a :class:`torch.overrides.TorchFunctionMode` that gives tensors a simulated
device, ``cuda:0``, ``cuda:1``, ... Every tensor still computes on the CPU (a CPU-only torch build
runs the test), but the mode tracks where each one would live and applies CUDA's rules to that:

- **on a fake gpu**: the weights and buffers of a model passed to :meth:`FakeCuda.tag_module`, any
  tensor made with ``device=`` a cuda device (``"cuda"``, ``torch.device("cuda", 1)``, an int
  index — rewritten to the CPU before the call), ``.to(cuda)`` / ``.cuda()``, and every result of
  an op that read such a tensor. ``tensor.device`` / ``tensor.is_cuda`` report the fake device, so
  ``torch.zeros(n, device=x.device)`` lands where it would on a GPU.
- **cpu**: factory results without a device (``torch.tensor(list)``, ``torch.rand(k)``,
  ``torch.arange(k)``, ...), ``.cpu()`` / ``.to("cpu")`` results, numpy imports.

An op fails with :class:`DeviceMixError` where CUDA would fail (or copy behind the caller's back):
tensors of two devices in one op (a 0-dim cpu tensor is allowed, as CUDA allows CPU scalars; cpu
*index* tensors into a gpu tensor are allowed, as CUDA moves indices), a ``generator=`` of another
device than the op's (``torch.rand(k, generator=g_cuda)`` makes a CPU tensor: CUDA refuses), and
``.numpy()`` of a gpu tensor. Explicit transfers (``to``, ``cuda``, ``cpu``, ``copy_``, and
assignment by basic indexing, which is a copy) may cross devices, as on CUDA.

:meth:`FakeCuda.generator` gives a per-row generator on a fake gpu (a CPU generator whose
``device`` says cuda), what ``spsamp.sampling.row_generator`` returns for a GPU target.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary

CPU = torch.device("cpu")
_TRANSFERS = {"to", "cuda", "cpu", "copy_", "type"}  # may cross devices (explicit moves)


class DeviceMixError(AssertionError):
    """An op that a CUDA run would refuse (or that mixes devices behind the caller's back)."""


class FakeCudaGenerator(torch.Generator):
    """A CPU generator that says it lives on a gpu (what ``torch.Generator(device="cuda:i")`` is)."""

    def __new__(cls, index: int = 0) -> "FakeCudaGenerator":
        gen = super().__new__(cls)  # a CPU generator: torch.Generator's own constructor takes no index here
        gen.index = index
        return gen

    def __init__(self, index: int = 0):
        pass

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", self.index)


def _gpu(dev: Any) -> int | None | bool:
    """The gpu index a device-like argument names, None for the cpu, False if not device-like."""
    if isinstance(dev, str):
        try:
            dev = torch.device(dev)
        except RuntimeError:
            return False
    if isinstance(dev, torch.device):
        if dev.type == "cuda":
            return dev.index or 0  # "cuda" = the current device, 0 here
        return None if dev.type == "cpu" else False
    if isinstance(dev, int) and not isinstance(dev, bool):
        return dev  # a bare index is a cuda ordinal
    return False


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def _basic_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items)


def _where(gpu: int | None) -> str:
    return "cpu" if gpu is None else f"cuda:{gpu}"


class FakeCuda(TorchFunctionMode):
    """Use as ``with FakeCuda() as guard: guard.tag_module(model, 0); ...`` (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.gpu_of: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> fake gpu index (absent: cpu)
        self.ops = 0  # ops seen (tests assert the guard actually watched the decoder)

    # ---- set-up -------------------------------------------------------------------------------

    def tag_module(self, module: torch.nn.Module, gpu: int = 0) -> torch.nn.Module:
        for t in list(module.parameters()) + list(module.buffers()):
            self.gpu_of[t] = gpu
        return module

    def generator(self, seed: int, gpu: int = 0) -> torch.Generator:
        return FakeCudaGenerator(gpu).manual_seed(seed)

    def device_of(self, t: torch.Tensor) -> torch.device:
        gpu = self.gpu_of.get(t)
        return CPU if gpu is None else torch.device("cuda", gpu)

    def is_cuda(self, t: torch.Tensor) -> bool:
        return t in self.gpu_of

    # ---- the mode -----------------------------------------------------------------------------

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        self.ops += 1
        owner = getattr(func, "__self__", None)
        # property reads: a tensor reports the device it would have on a GPU machine
        if owner is torch._C.TensorBase.device:
            return self.device_of(args[0]) if args[0] in self.gpu_of else func(*args, **kwargs)
        if owner is torch._C.TensorBase.is_cuda:
            return args[0] in self.gpu_of
        name = getattr(func, "__name__", "")
        if name in ("numpy", "__array__") and args and args[0] in self.gpu_of:
            raise DeviceMixError(f"{_name(func)}: .numpy() of a cuda tensor (CUDA raises 'can't convert cuda:0 device type tensor to numpy') — move it with .cpu() first")

        explicit: int | None | bool = False  # the device the call asks for (False: none named)
        if "device" in kwargs:
            explicit = _gpu(kwargs["device"])
            if explicit is not False:
                kwargs["device"] = CPU
        if name in _TRANSFERS and args and isinstance(args[0], torch.Tensor):
            return self._transfer(func, name, args, kwargs, explicit)

        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        if name in ("__getitem__", "__setitem__") and isinstance(args[0], torch.Tensor):
            where = self._check_indexing(func, name, args)
        else:
            where = self._check_operands(func, tensors)
        if explicit is not False:
            where = explicit
        self._check_generators(func, (args, kwargs), where)
        out = func(*args, **kwargs)
        if where is not None:
            tree_map(lambda x: self._put(x, where), out)
        return out

    def _put(self, x: Any, gpu: int) -> Any:
        if isinstance(x, torch.Tensor):
            self.gpu_of[x] = gpu
        return x

    def _check_operands(self, func: Any, tensors: list[torch.Tensor]) -> int | None:
        gpus = {self.gpu_of[t] for t in tensors if t in self.gpu_of}
        cpu = [t for t in tensors if t not in self.gpu_of and t.dim() > 0]
        if len(gpus) > 1 or (gpus and cpu):
            seen = sorted({_where(self.gpu_of.get(t)) for t in tensors if t in self.gpu_of or t.dim() > 0})
            shapes = [(_where(self.gpu_of.get(t)), tuple(t.shape)) for t in tensors]
            raise DeviceMixError(
                f"{_name(func)}: mixes tensors on {seen} {shapes} (CUDA raises 'Expected all tensors to be on the same "
                "device') — create each tensor on the device it meets, or move it explicitly"
            )
        return next(iter(gpus)) if gpus else None

    def _check_indexing(self, func: Any, name: str, args: tuple) -> int | None:
        base, index = args[0], args[1]
        where = self.gpu_of.get(base)
        for t in tree_flatten(index)[0]:
            if isinstance(t, torch.Tensor) and t in self.gpu_of and self.gpu_of[t] != where:
                raise DeviceMixError(f"{_name(func)}: a {_where(where)} tensor indexed by a {_where(self.gpu_of[t])} index (CUDA raises) — index on one device")
        if name == "__setitem__" and len(args) > 2 and isinstance(args[2], torch.Tensor):
            value = args[2]
            crosses = self.gpu_of.get(value) != where and value.dim() > 0
            if crosses and not _basic_index(index):
                raise DeviceMixError(f"{_name(func)}: index_put_ of {_where(self.gpu_of.get(value))} values into a {_where(where)} tensor (CUDA raises) — move the values first")
        return where

    def _check_generators(self, func: Any, tree: Any, where: int | None) -> None:
        for g in tree_flatten(tree)[0]:
            if isinstance(g, torch.Generator):
                gen_at = (g.device.index or 0) if g.device.type == "cuda" else None
                if gen_at != where:
                    raise DeviceMixError(
                        f"{_name(func)}: a {_where(gen_at)} generator drives a draw on {_where(where)} (CUDA raises "
                        f"'Expected a '{_where(where).split(':')[0]}' device type for generator') — draw on the generator's device"
                    )

    def _transfer(self, func: Any, name: str, args: tuple, kwargs: dict, explicit: int | None | bool) -> Any:
        src = args[0]
        src_at = self.gpu_of.get(src)
        rest = list(args[1:])
        if name == "copy_":
            return func(*args, **kwargs)  # cross-device copy is allowed; dst keeps its device
        if name == "cuda":
            dst_at: int | None = _gpu(rest[0]) if rest else (explicit if explicit is not False else 0)  # type: ignore[assignment]
            rest = []
            kwargs.pop("device", None)
        elif name == "cpu":
            dst_at = None
        elif name == "type":
            dst_at = src_at
        else:  # to(device?, dtype?, ...) / to(tensor) / to(dtype)
            dst_at = src_at if explicit is False else explicit  # type: ignore[assignment]
            for i, a in enumerate(rest):
                if isinstance(a, torch.Tensor):
                    dst_at = self.gpu_of.get(a)
                elif not isinstance(a, (bool, torch.dtype)) and _gpu(a) is not False:
                    dst_at = _gpu(a)  # type: ignore[assignment]
                    rest[i] = CPU
        out = func(src, *rest, **kwargs)
        if out is src and dst_at != src_at:
            out = out.clone()  # a real transfer makes a new tensor on the other device
        if dst_at is not None:
            self.gpu_of[out] = dst_at
        elif out is not src and out in self.gpu_of:
            del self.gpu_of[out]
        return out
