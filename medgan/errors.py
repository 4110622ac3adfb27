"""Typed errors with messages a user can act on.

Every message names the model (where there is one) and what is wrong, and never a server-side path
that a remote caller could learn the layout from (the UI shows these messages verbatim).
"""
from __future__ import annotations


class MedganError(Exception):
    """Base class of every error raised on purpose by medgan."""


class UnknownModelError(MedganError, KeyError):
    def __init__(self, model_id: object, available: list[str] | None = None):
        shown = repr(model_id) if len(str(model_id)) <= 80 else repr(str(model_id)[:80] + "…")
        # A few ids (local ones come first), not the whole zoo: the message must stay one readable line.
        more = f" and {len(available) - 8} more (see /models)" if available and len(available) > 8 else ""
        hint = f" Available: {', '.join(available[:8])}{more}." if available else ""
        super().__init__(f"Unknown model id {shown}.{hint}")
        self.model_id = model_id

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class InvalidArgumentError(MedganError, ValueError):
    """A count, seed, format or flag outside what is accepted."""


class WeightsError(MedganError):
    """Weights are missing, unreadable, not safetensors, or disagree with the config."""


class ConfigError(MedganError):
    """config.json is missing or invalid."""


class SourceUnavailableError(MedganError):
    """A source (the Hub, medigan) cannot provide the model right now (offline with no cache, …)."""


class GenerationError(MedganError):
    """Generation failed (a worker crashed, timed out, or foreign code misbehaved)."""
