"""Lamina's exception types; every error says where, what was expected and what was got."""
from __future__ import annotations

import difflib
from typing import Iterable


class LaminaError(Exception):
    """Base class of every error Lamina raises on purpose."""


class ShapeError(LaminaError, ValueError):
    """An op or layer got an input of the wrong shape."""


class OpError(LaminaError, ValueError):
    """An op was called with arguments it cannot accept."""


class BackendError(LaminaError, RuntimeError):
    """A backend is unknown, unavailable, or lacks a kernel."""


class RegistrationError(LaminaError):
    """A plugin registered something badly (e.g. the same name twice)."""


class UnknownNameError(LaminaError, KeyError):
    """A name looked up in a registry does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ConfigError(LaminaError, ValueError):
    """A configuration file or recipe is invalid."""


class CheckpointError(LaminaError):
    """A checkpoint is missing, truncated, corrupted or does not fit the model."""


class TrainingDiverged(LaminaError, FloatingPointError):
    """The loss became NaN or infinite during training."""


def close_matches(name: str, candidates: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix listing candidates close to `name` (or '')."""
    matches = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"
