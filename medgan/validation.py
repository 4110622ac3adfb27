"""Argument checks shared by the Python API, the CLIs and the app, so every boundary says the same."""
from __future__ import annotations

import math
import numbers
import re

import numpy as np

from . import limits
from .errors import InvalidArgumentError

MAX_SEED = 2**63 - 1
MODEL_ID_PATTERN = re.compile(r"^(?:[a-z]+:)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Decimal strings, ASCII digits only (`\d` would also take "٣" or "４２"): an integer part of at most MAX_DIGITS
# digits and an optional fractional part, so "16", "+16", "16." and "16.0" are 16, as the number 16.0 is.
_DECIMAL = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?")
MAX_DIGITS = 30


def __getattr__(name: str):
    """MAX_COUNT_PER_CALL, read when used (MEDGAN_MAX_COUNT_PER_CALL through medgan.limits), not at import:
    a malformed value is a ConfigError naming the variable, not a ValueError while importing medgan."""
    if name == "MAX_COUNT_PER_CALL":
        return limits.max_count_per_call()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _shown(value: int) -> str:
    """An integer for a message: huge ones are abbreviated, not printed with hundreds of digits."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}… ({len(text.lstrip('-'))} digits)"


def as_int(name: str, value: object) -> int:
    """An integer from an int, numpy integer, integral float or decimal string; anything else is refused.

    Strings are read like the numbers they spell: ASCII digits only, "16", "16." and "16.0" are 16 (as 16.0 is),
    "16.5" is refused with the message 16.5 gets. Exponents ("1e3"), hex, "_" and non-ASCII digits are not."""
    if isinstance(value, bool) or value is None:
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):  # the same rules as for numbers: "16.0" is 16, "16.5" is not whole
        text = value.strip()
        match = _DECIMAL.fullmatch(text)
        if match and (match[2] or match[3]):  # at least one digit
            sign, whole, fraction = match.groups()
            if len(whole) > MAX_DIGITS:
                raise InvalidArgumentError(f"{name} is out of range ({len(whole)} digits)")
            if fraction and fraction.strip("0"):  # shown as the number 16.5 is: the same message for both
                shown = repr(float(text)) if len(text) <= 40 else text[:40] + "…"
                raise InvalidArgumentError(f"{name} must be a whole number, got {shown}")
            return int(sign + (whole or "0"))
        raise InvalidArgumentError(f"{name} must be an integer, got {value[:40]!r}")
    if isinstance(value, numbers.Rational):  # Fraction: exact, and may not fit a float
        if value.denominator != 1:
            raise InvalidArgumentError(f"{name} must be a whole number, got {str(value)[:40]}")
        return int(value.numerator)
    if isinstance(value, numbers.Real):
        try:
            number = float(value)
        except (OverflowError, ValueError, TypeError):
            raise InvalidArgumentError(f"{name} must be a finite integer, got {str(value)[:40]}") from None
        if not math.isfinite(number):
            raise InvalidArgumentError(f"{name} must be a finite integer, got {number!r}")
        if number != int(number):
            raise InvalidArgumentError(f"{name} must be a whole number, got {number!r}")
        return int(number)
    raise InvalidArgumentError(f"{name} must be an integer, got {type(value).__name__}")


def check_seed(seed: object) -> int:
    value = as_int("seed", seed)
    if not 0 <= value <= MAX_SEED:
        raise InvalidArgumentError(f"seed must be between 0 and 2**63-1, got {_shown(value)}")
    return value


def check_count(count: object, limit: int | None = None) -> int:
    """An integer in 1…limit (default: MEDGAN_MAX_COUNT_PER_CALL, read now)."""
    limit = limits.max_count_per_call() if limit is None else limit
    value = as_int("count", count)
    if not 1 <= value <= limit:
        raise InvalidArgumentError(f"count must be between 1 and {limit}, got {_shown(value)}")
    return value


def check_model_id(model_id: object) -> str:
    """Shape check only; the registry decides whether the id exists. Ids never become paths. At most
    MEDGAN_MAX_TEXT_CHARS characters (the app's edge refuses longer text before this point)."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise InvalidArgumentError("model id must be a non-empty string")
    if len(model_id) > limits.max_text_chars():
        raise InvalidArgumentError(f"model id is too long ({len(model_id)} characters; at most "
                                   f"{limits.max_text_chars()})")
    return model_id.strip()


def check_flag(name: str, value: object) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):  # numpy ints too
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    shown = repr(value) if isinstance(value, (str, int, float, type(None))) else type(value).__name__
    raise InvalidArgumentError(f"{name} must be true or false, got {shown[:60]}")


MAX_TRUNCATION = 2.0


def check_truncation(value: object) -> float:
    """ψ: a finite number in [0, 2] (1 = no truncation; 0 = the mean image of the class)."""
    if isinstance(value, bool) or value is None or not isinstance(value, (numbers.Real, str)):
        raise InvalidArgumentError(f"truncation must be a number between 0 and {MAX_TRUNCATION:g}, got {value!r}"[:120])
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise InvalidArgumentError(f"truncation must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number) or not 0.0 <= number <= MAX_TRUNCATION:
        raise InvalidArgumentError(f"truncation must be between 0 and {MAX_TRUNCATION:g}, got {str(value)[:40]}")
    return number


def check_label(value: object, classes: list[str], model_id: str) -> int | None:
    """A class of a conditional model, by name or index; None (or "any"/"") = a class drawn per image."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "any")):
        return None
    if not classes:
        raise InvalidArgumentError(f"label: model {model_id!r} is unconditional (it has no classes); "
                                   f"leave label unset")
    if isinstance(value, str) and value.strip() in classes:
        return classes.index(value.strip())
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= int(value) < len(classes):
        return int(value)
    raise InvalidArgumentError(f"label: unknown class {str(value)[:40]!r} for model {model_id!r}; "
                               f"choose one of {', '.join(classes)} (or 'any')")
