"""The export-form mechanism shared by :mod:`.export_swaps` and the family modules of forms
(:mod:`.mobileformer_forms`): :class:`_ExportForm` (an eager module's export-time subclass sharing
its state) and :class:`_Part` (a parameterless child giving part of a form its own module path)."""

from __future__ import annotations

import torch.nn as nn


class _ExportForm:
    """Mixin: ``from_module(m)`` turns an eager module into this export form, sharing its
    parameters, buffers and submodules (same ``state_dict``, no copy).

    ``int8_float``: what of a form stays float in an INT8 file of a runtime that keeps such work
    float (``Runtime.float_forms``): child module names, ``""`` for the whole form
    (:func:`float_modules` lists the paths). Token-sized work gains nothing from int8, and its int8
    kernels may run outside the runtime's accelerated backend."""

    int8_float: tuple = ()

    @classmethod
    def from_module(cls, m: nn.Module):
        """The export form of ``m``.

        Args:
            m: an instance of the eager class this form subclasses.
        """
        mro = cls.__mro__
        base = mro[mro.index(_ExportForm) + 1]  # the eager class (a form may refine another form)
        if not isinstance(m, base):
            raise TypeError(f"expected a {base.__name__}, got {type(m).__name__}")
        new = cls.__new__(cls)
        new.__dict__.update(m.__dict__)  # nn.Module state: parameters, buffers, submodules, flags
        new._modules, new._parameters, new._buffers = dict(m._modules), dict(m._parameters), dict(m._buffers)
        return new


class _Part(nn.Module):
    """A parameterless child that runs a function of its parent (a bound method, not registered
    as a module: the parent's ``state_dict`` is unchanged), so that the ops it runs have their
    own module path (what ``int8_float`` names)."""

    def __init__(self, fn):
        super().__init__()
        object.__setattr__(self, "fn", fn)

    def forward(self, *args):
        return self.fn(*args)
