"""Password checks of the app's own (a breached-password service, say): ``password_checks``.

The protocol: a check is a plain function ``check(password, context) -> None``. It accepts a
password by returning None and refuses it by raising a subclass of
:class:`~bastion.errors.PasswordRejected` with a ``type`` of the app's choosing (400). Any other
:class:`~bastion.errors.BastionError` is answered as it is (``ServiceUnavailable`` for a check that
wants to fail closed while its service is down). Anything else, an unexpected exception or a
return value other than None, is a bug: the password is not accepted, the client gets a 500
``general_server_error`` without details, and the log gets the traceback with the password
blanked out.

Checks run after Bastion's own rules, in a worker thread on the async side (they may block on
the network), one after the other in the order given; the first refusal wins.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bastion.errors import BastionError, ConfigError, ServerError
from bastion.redact import redact

logger = logging.getLogger("bastion.passwords")


@dataclass(frozen=True, slots=True)
class PasswordContext:
    """Whose new password a check is looking at (sign-up or password change)."""

    user_id: str
    email: str
    name: str = ""
    phone: str = ""


PasswordCheck = Callable[[str, PasswordContext], None]
"""An app's own password check; see the module docstring for the protocol."""


def check_name(check: PasswordCheck) -> str:
    """How logs name ``check``: its qualified name, never its repr (which may hold anything)."""
    return getattr(check, "__qualname__", None) or type(check).__qualname__


def validate_checks(checks: Iterable[PasswordCheck]) -> tuple[PasswordCheck, ...]:
    """``checks`` as a tuple, or ``ConfigError`` at start-up for one that cannot be a check."""
    if isinstance(checks, (str, bytes)) or callable(checks):
        raise ConfigError("password_checks", checks, "a list of functions (password, context)")
    out = tuple(checks)
    for check in out:
        if not callable(check):
            raise ConfigError("password_checks", check, "functions (password, context)")
        # An async def, or an object whose __call__ is one.
        if inspect.iscoroutinefunction(check) or inspect.iscoroutinefunction(type(check).__call__):
            # A coroutine would be created and never awaited: the check would silently pass.
            raise ConfigError(
                "password_checks",
                check_name(check),
                "plain functions (they run in a worker thread; use a blocking client there)",
            )
    return out


def run_checks(checks: Sequence[PasswordCheck], password: str, context: PasswordContext) -> None:
    """Run each check in turn; let its refusal through, turn anything unexpected into a 500."""
    for check in checks:
        try:
            result = check(password, context)
        except BastionError:
            raise
        except Exception as exc:
            # Formatted here rather than with logger.exception, so the password can be taken
            # out of the text (a check may have put it in a message or a URL); and the 500
            # does not chain the exception, so nothing up the stack can log it raw either.
            text = "".join(traceback.format_exception(exc))
            logger.error(
                "password check %s failed; the password was not accepted:\n%s",
                check_name(check),
                _blank(text, password),
            )
            raise ServerError() from None
        if result is not None:
            # Not the protocol (a check that returns a reason or False): refusing silently or
            # accepting silently would both be guesses, so it fails loudly and closed.
            logger.error(
                "password check %s returned a %s instead of None; to refuse a password, raise "
                "a subclass of bastion.PasswordRejected",
                check_name(check),
                type(result).__name__,
            )
            raise ServerError()


def _blank(text: str, password: str) -> str:
    return redact(text, (password,), mask="[password]")
