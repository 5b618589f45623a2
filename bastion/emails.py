"""Email addresses: the one form they are stored and looked up in, and what sign-up accepts.

Two addresses that look the same must not make two accounts. NFKC and casefolding merge what
Unicode itself calls the same (full-width letters, ligatures, case); what they leave alone,
sign-up refuses: characters that do not show (zero-width spaces and joiners, the soft hyphen,
bidi overrides: Unicode's format characters, Cf), control characters (Cc) and the other
characters of category C, and domains that are not host names (``example.com.`` names the same
host as ``example.com``).

Log-in and the look-ups only normalise (:func:`normalize_email`), never validate: an account
made before a rule existed can still log in, and an address sign-up would refuse simply finds
no account.
"""

from __future__ import annotations

import re
import unicodedata

import idna

from bastion.errors import BadRequest

ADDRESS_MAX = 320
"""Longest address, in characters (RFC 3696 errata: 64 + 1 + 255)."""
LOCAL_MAX = 64
"""Longest local part (before the ``@``), in characters (RFC 5321 4.5.3.1.1)."""
DOMAIN_MAX = 253
"""Longest domain in its ASCII (A-label) form, without a trailing dot (RFC 1035 2.3.4)."""
LABEL_MAX = 63
"""Longest label of a domain in its ASCII form (RFC 1035 2.3.4)."""

_SHAPE = re.compile(r"[^@\s]+@[^@\s]+")
# A host name label (RFC 1123): letters, digits and hyphens, no hyphen at either end. Lower
# case only: the address is casefolded before it gets here.
_LDH = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_EXAMPLE = "expected an address like name@example.com"


def normalize_email(email: str) -> str:
    """The form emails are compared and stored in: NFKC, trimmed, casefolded."""
    return unicodedata.normalize("NFKC", email).strip().casefold()


def validate_email(email: str) -> str:
    """``email`` normalised, or ``BadRequest`` saying what is wrong with it."""
    email = normalize_email(email)
    # Category C: Cc (NUL, ESC, ...), Cf (zero-width, soft hyphen, bidi controls), and Cs, Co,
    # Cn: a lone surrogate cannot be stored as UTF-8, a private-use character has no agreed
    # look, and an unassigned one may get a normalisation in a later Unicode version.
    if any(unicodedata.category(ch)[0] == "C" for ch in email):
        raise BadRequest("Invalid email: it contains an invisible or control character.")
    if not _SHAPE.fullmatch(email) or len(email) > ADDRESS_MAX:
        raise BadRequest(f"Invalid email: {_EXAMPLE}.")
    local, _, domain = email.partition("@")
    if len(local) > LOCAL_MAX:
        raise BadRequest(f"Invalid email: the part before @ is longer than {LOCAL_MAX} characters.")
    problem = domain_problem(domain)
    if problem is not None:
        raise BadRequest(f"Invalid email: {problem}.")
    return email


def domain_problem(domain: str) -> str | None:
    """What makes ``domain`` (normalised) no host name, or None if it is one."""
    if domain.endswith("."):
        # A fully qualified "example.com." is the same host as "example.com": two accounts.
        return "the domain must not end with a dot"
    labels = domain.split(".")
    if len(labels) < 2:
        return f"the domain needs at least one dot ({_EXAMPLE})"
    length = len(labels) - 1  # the dots
    for label in labels:
        if not label:
            return "the domain has an empty label (two dots in a row, or a leading dot)"
        if label.isascii():
            if not _LDH.fullmatch(label):
                return (
                    "each part of the domain must be letters, digits and hyphens,"
                    " not starting or ending with a hyphen"
                )
            if label.startswith("xn--") and not _valid_alabel(label):
                return "the domain has an invalid internationalised (xn--) label"
            ascii_label = label
        else:
            try:
                ascii_label = idna.alabel(label).decode("ascii")
            except (idna.IDNAError, UnicodeError):
                return "the domain is not a valid internationalised domain name"
        if len(ascii_label) > LABEL_MAX:
            return f"each part of the domain must be at most {LABEL_MAX} characters long"
        length += len(ascii_label)
    if length > DOMAIN_MAX:
        return f"the domain must be at most {DOMAIN_MAX} characters long"
    return None


def _valid_alabel(label: str) -> bool:
    """Whether an ``xn--`` label decodes to a valid IDNA 2008 label."""
    try:
        idna.ulabel(label)
    except (idna.IDNAError, UnicodeError):
        return False
    return True
