"""The package's error families, so a caller can catch a kind of mistake without parsing messages.

    UnknownNameError   an unknown name (data set, split, schedule, model kind, sampler, variance, pretrained model):
                       a ``LookupError`` — and a ``ValueError``, which is what these raised before, so existing
                       ``except ValueError`` blocks keep working
    ValueError         a bad value (out of range, wrong shape)
    TypeError          a wrong type
    CorruptFileError   a corrupt, truncated or foreign file: a ``ValueError`` carrying the file's ``path``

Every message says what was given and what is allowed. :class:`diffusion_lab.checkpoint.CheckpointError` and
:class:`diffusion_lab.pretrained.PretrainedError` build on these (they stay ``RuntimeError`` s as before).
"""
from __future__ import annotations

__all__ = ["UnknownNameError", "CorruptFileError", "unknown_name"]


class UnknownNameError(LookupError, ValueError):
    """A name that is not one of the allowed ones. ``given`` and ``allowed`` are kept as attributes."""

    def __init__(self, message: str, *, given=None, allowed=()):
        super().__init__(message)
        self.given, self.allowed = given, tuple(allowed)


class CorruptFileError(ValueError):
    """A file that cannot be used: truncated, corrupt, or written by something else. ``path`` names it."""

    def __init__(self, message: str, *, path=None):
        super().__init__(message)
        self.path = path


def unknown_name(what: str, given, allowed) -> UnknownNameError:
    """``UnknownNameError("unknown <what> <given!r>; choose one of [<allowed, sorted>]")``."""
    allowed = sorted(allowed)
    return UnknownNameError(f"unknown {what} {given!r}; choose one of {allowed}", given=given, allowed=allowed)
