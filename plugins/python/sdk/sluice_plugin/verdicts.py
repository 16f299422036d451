"""The three verdicts a handler can return, named as in the Rust SDK.

These are functions, not subclasses of the generated types: componentize-py
matches a variant case by its exact class, so each returns the generated
case (``Verdict_Success`` and so on) from ``wit/plugin.wit``'s bindings.
"""

from collections.abc import Iterable
from typing import Optional

try:
    from wit_world.imports import types
except ImportError:  # a world with wasi:http, whose own `types` takes the name
    from wit_world.imports import sluice_plugin_types as types

Verdict = types.Verdict


def Success(outputs: Iterable[types.Output] = ()) -> Verdict:
    """Handled: produce these outputs, then commit. No outputs filters the message."""
    return types.Verdict_Success(outputs if type(outputs) is list else list(outputs))


def Filter() -> Verdict:
    """Handled, with nothing to produce: the message is filtered out."""
    return types.Verdict_Success([])


def Retry(reason: str, delay_ms: Optional[int] = None) -> Verdict:
    """Try the same message again later.

    ``delay_ms`` asks for a minimum wait (capped by the stage's maximum
    backoff); without it the stage's backoff policy decides. After the
    stage's maximum attempts the message is dead-lettered with
    ``retries exhausted: <reason>``.
    """
    return types.Verdict_Retry(types.RetryInfo(reason, delay_ms))


def DeadLetter(reason: str) -> Verdict:
    """Give up: send the original record to the dead-letter topic with this reason."""
    return types.Verdict_DeadLetter(reason)
