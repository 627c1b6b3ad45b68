"""A CPU-only stand-in for "the model is on CUDA": fails where a real CUDA run would mix devices.

:class:`FakeCuda` is a :class:`torch.overrides.TorchFunctionMode` that tags tensors as living on a
pretend ``cuda`` device. Every tensor still computes on the CPU (a CPU-only torch build runs the
test), but the mode keeps a second, simulated device for each one and applies CUDA's rules to it:

- **tagged (cuda)**: the weights and buffers of a model passed to :meth:`FakeCuda.tag_module`, any
  tensor made with ``device=`` a cuda device (``"cuda"``, ``torch.device("cuda", 0)``, an int
  index — rewritten to the CPU before the call), ``.to(cuda)`` / ``.cuda()``, and every result of
  an op that read a tagged tensor. ``tensor.device`` / ``tensor.is_cuda`` of a tagged tensor report
  cuda, so ``torch.zeros(n, device=x.device)`` is tagged as it would be on a GPU.
- **untagged (cpu)**: factory results without a device (``torch.tensor(list)``, ``torch.rand(k)``,
  ``torch.arange(k)``, ...), ``.cpu()`` / ``.to("cpu")`` results, numpy imports.

An op fails with :class:`DeviceMixError` where CUDA would fail (or silently copy in a way the
project forbids): tagged and untagged tensors in one op (an untagged 0-dim tensor is allowed, as
CUDA allows CPU scalars; untagged *index* tensors into a tagged tensor are allowed, as CUDA moves
indices), a ``generator=`` whose device differs from the op's (``torch.rand(k, generator=g_cuda)``
makes a CPU tensor: CUDA refuses), and ``.numpy()`` of a tagged tensor. Explicit transfers
(``to``, ``cuda``, ``cpu``, ``copy_``, and assignment into a tensor by basic indexing, which is a
copy) may cross devices, as on CUDA.

:meth:`FakeCuda.generator` gives a per-row generator "on cuda" (a CPU generator whose ``device``
reports cuda), the generator the runner creates on a GPU target (``sampling.row_generator``).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")

_TRANSFERS = {"to", "cuda", "cpu", "copy_", "type"}  # may cross devices (explicit moves)


class DeviceMixError(AssertionError):
    """An op that a CUDA run would refuse (or that mixes devices behind the caller's back)."""


class FakeCudaGenerator(torch.Generator):
    """A CPU generator that says it lives on cuda (what ``torch.Generator(device="cuda")`` is)."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return CUDA


def _is_cuda(dev: Any) -> bool | None:
    """True / False for a device-like argument naming cuda / not cuda; None if not device-like."""
    if isinstance(dev, torch.device):
        return dev.type == "cuda"
    if isinstance(dev, str):
        try:
            return torch.device(dev).type == "cuda"
        except RuntimeError:
            return None
    if isinstance(dev, int) and not isinstance(dev, bool):
        return True  # a bare index means a cuda ordinal
    return None


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def _basic_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items)


class FakeCuda(TorchFunctionMode):
    """Use as ``with FakeCuda() as guard: guard.tag_module(model); ...`` (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.tagged: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.ops = 0  # ops seen (the test asserts the guard actually watched the decoder)

    # ---- set-up -------------------------------------------------------------------------------

    def tag_module(self, module: torch.nn.Module) -> torch.nn.Module:
        for t in list(module.parameters()) + list(module.buffers()):
            self.tagged[t] = True
        return module

    def tag(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            self.tagged[t] = True

    def generator(self, seed: int) -> torch.Generator:
        return FakeCudaGenerator().manual_seed(seed)

    def is_cuda(self, t: torch.Tensor) -> bool:
        return t in self.tagged

    # ---- the mode -----------------------------------------------------------------------------

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        self.ops += 1
        owner = getattr(func, "__self__", None)
        # property reads: a tagged tensor reports the device it would have on a GPU
        if owner is torch._C.TensorBase.device:
            return CUDA if args[0] in self.tagged else func(*args, **kwargs)
        if owner is torch._C.TensorBase.is_cuda:
            return args[0] in self.tagged
        name = getattr(func, "__name__", "")
        if name in ("numpy", "__array__") and args and args[0] in self.tagged:
            raise DeviceMixError(f"{_name(func)}: .numpy() of a cuda tensor (CUDA raises 'can't convert cuda:0 device type tensor to numpy') — move it with .cpu() first")

        explicit: bool | None = None  # the device the call asks for, if any
        if "device" in kwargs:
            explicit = _is_cuda(kwargs["device"])
            if explicit is not None:
                kwargs["device"] = CPU
        if name in _TRANSFERS and args and isinstance(args[0], torch.Tensor):
            return self._transfer(func, name, args, kwargs, explicit)

        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        if name in ("__getitem__", "__setitem__") and isinstance(args[0], torch.Tensor):
            op_cuda = self._check_indexing(func, name, args)
        else:
            op_cuda = self._check_operands(func, tensors)
        if explicit is not None:
            op_cuda = explicit
        self._check_generators(func, (args, kwargs), op_cuda)
        out = func(*args, **kwargs)
        if op_cuda:
            tree_map(self._tag_out, out)
        return out

    def _tag_out(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            self.tagged[x] = True
        return x

    def _check_operands(self, func: Any, tensors: list[torch.Tensor]) -> bool:
        cuda = [t for t in tensors if t in self.tagged]
        cpu = [t for t in tensors if t not in self.tagged and t.dim() > 0]
        if cuda and cpu:
            raise DeviceMixError(
                f"{_name(func)}: mixes cuda tensors {[tuple(t.shape) for t in cuda]} with cpu tensors {[tuple(t.shape) for t in cpu]} "
                "(CUDA raises 'Expected all tensors to be on the same device') — create the cpu one on the other's device"
            )
        return bool(cuda)

    def _check_indexing(self, func: Any, name: str, args: tuple) -> bool:
        base, index = args[0], args[1]
        base_cuda = base in self.tagged
        idx = [t for t in tree_flatten(index)[0] if isinstance(t, torch.Tensor)]
        if not base_cuda and any(t in self.tagged for t in idx):
            raise DeviceMixError(f"{_name(func)}: a cpu tensor indexed by a cuda index tensor (CUDA raises) — index on one device")
        if name == "__setitem__" and len(args) > 2 and isinstance(args[2], torch.Tensor):
            value = args[2]
            crosses = (value in self.tagged) != base_cuda and value.dim() > 0
            if crosses and not _basic_index(index):
                raise DeviceMixError(f"{_name(func)}: index_put_ of values from another device (CUDA raises) — move the values first")
        return base_cuda

    def _check_generators(self, func: Any, tree: Any, op_cuda: bool) -> None:
        for g in tree_flatten(tree)[0]:
            if isinstance(g, torch.Generator) and (g.device.type == "cuda") != op_cuda:
                where = "cuda" if op_cuda else "cpu"
                raise DeviceMixError(
                    f"{_name(func)}: a {g.device.type} generator drives a draw on {where} (CUDA raises 'Expected a "
                    f"'{where}' device type for generator') — draw on the generator's device"
                )

    def _transfer(self, func: Any, name: str, args: tuple, kwargs: dict, explicit: bool | None) -> Any:
        src = args[0]
        src_cuda = src in self.tagged
        rest = list(args[1:])
        if name == "copy_":
            return func(*args, **kwargs)  # cross-device copy is allowed; dst keeps its device
        if name == "cuda":
            dst_cuda: bool = True
            rest = []
            kwargs.pop("device", None)
        elif name == "cpu":
            dst_cuda = False
        elif name == "type":
            dst_cuda = src_cuda
        else:  # to(device?, dtype?, ...) / to(tensor) / to(dtype)
            dst_cuda = src_cuda if explicit is None else explicit
            for i, a in enumerate(rest):
                if isinstance(a, torch.Tensor):
                    dst_cuda = a in self.tagged
                elif _is_cuda(a) is not None and not isinstance(a, torch.dtype):
                    dst_cuda = bool(_is_cuda(a))
                    rest[i] = CPU
        out = func(src, *rest, **kwargs)
        if out is src and dst_cuda != src_cuda:
            out = out.clone()  # a real transfer makes a new tensor on the other device
        if dst_cuda:
            self.tagged[out] = True
        elif out in self.tagged and out is not src:
            del self.tagged[out]
        return out


def all_cuda(guard: FakeCuda, tensors: Iterable[torch.Tensor]) -> bool:
    return all(guard.is_cuda(t) for t in tensors)
