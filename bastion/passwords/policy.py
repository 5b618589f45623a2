"""Password rules: length, the common-password dictionary, personal data, context words,
history, and the app's own checks.

``check`` runs the cheap rules and is safe on the event loop: it looks at the length before
anything reads the content, so an oversized password costs one ``len()``.  ``check_history``
does one argon2 verify per remembered hash, so run it in a worker thread and after ``check``;
``run_checks`` (the app's ``password_checks``) may block on the network, so run it in a worker
thread too, last.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from bastion.errors import (
    ConfigError,
    PasswordContextWord,
    PasswordInDictionary,
    PasswordPersonalData,
    PasswordRecentlyUsed,
    PasswordTooLong,
    PasswordTooShort,
)
from bastion.passwords.checks import PasswordCheck, PasswordContext, run_checks, validate_checks
from bastion.passwords.dictionary import dictionary_words, fold
from bastion.passwords.variants import is_listed

if TYPE_CHECKING:
    from bastion.settings import Settings

MIN_LENGTH_FLOOR = 8
"""No policy accepts passwords shorter than this (OWASP ASVS 5.0 V6.2.1)."""

CONTEXT_WORDS_MAX = 100
"""Most ``password_context_words`` a deployment may list (names, not a second dictionary)."""
CONTEXT_WORD_MAX_LENGTH = 64
"""Longest context word, in characters: a product or organisation name, not a sentence."""

_MIN_TOKEN = 3  # Keycloak's MIN_NAME_LENGTH: "Ed" or "Li" would block half of all passwords.
_MIN_DIGIT_TOKEN = 4  # "007" or "42" in an id or name part is too common to forbid.
_MIN_SUBSCRIBER = 7  # Shortest phone number left once a country code is dropped.
_NAME_SPLIT = re.compile(r"\W+")
_LOCAL_SPLIT = re.compile(r"[._+\-]+")
_NOT_DIGIT = re.compile(r"[^0-9]+")


class HashVerifier(Protocol):
    """What ``check_history`` needs from a hasher (``PasswordHasher`` is one)."""

    def verify(self, stored_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash``."""
        ...


# What does not count as a character a user chose: whitespace (spaces, the ideographic space),
# format characters (zero-width space and joiners, soft hyphen, bidi controls), controls, lone
# surrogates, combining marks on their own, and the Hangul fillers, letters that show nothing.
_UNSEEN_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Mn", "Me"})
_UNSEEN_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")


def _visible(text: str) -> int:
    if text.isascii() and text.isprintable():
        return len(text) - text.count(" ")  # the usual case, quickly
    category = unicodedata.category
    return sum(
        1
        for ch in text
        if not ch.isspace() and ch not in _UNSEEN_LETTERS and category(ch) not in _UNSEEN_CATEGORIES
    )


def character_count(password: str) -> int:
    """How many visible characters ``password`` counts as for the minimum length."""
    # Counted after normalisation: NFC merges "e" + combining accent into one character; NFKC
    # also maps compatibility characters (the ideographic space to a space, full-width letters
    # to ASCII) and expands some (ﬃ -> ffi, one Arabic ligature -> 18 letters). The smaller of
    # the two counts what the user chose, so neither an accent nor an expanding ligature
    # inflates the length; what does not show never counts (eight spaces are no password).
    return min(
        _visible(unicodedata.normalize("NFC", password)),
        _visible(unicodedata.normalize("NFKC", password)),
    )


def _keep(token: str) -> bool:
    return len(token) >= (_MIN_DIGIT_TOKEN if token.isdigit() else _MIN_TOKEN)


def personal_tokens(
    *,
    user_id: str | None = None,
    email: str | None = None,
    name: str | None = None,
    phone: str | None = None,
) -> tuple[frozenset[str], frozenset[str]]:
    """The folded text tokens and phone-digit tokens a password must not contain."""
    text: set[str] = set()
    if user_id:
        text.add(fold(user_id).strip())
    if email:
        address = fold(email).strip()
        local = address.rpartition("@")[0] if "@" in address else address
        text.update((address, local, *_LOCAL_SPLIT.split(local)))
    if name:
        full = fold(name).strip()
        text.update((full, *_NAME_SPLIT.split(full)))
    digits: set[str] = set()
    if phone:
        raw = fold(phone).strip()
        number = _NOT_DIGIT.sub("", raw)
        if raw.startswith("+") or raw.startswith("00"):
            # International form: the leading 1-3 digits are the country code (+1, +44, +353),
            # and people type their number without it. Each drop is kept only while a
            # plausible subscriber number (7+ digits) remains, so a short number keeps its code.
            number = number[2:] if raw.startswith("00") else number
            digits.update(number[cut:] for cut in (1, 2, 3) if len(number) - cut >= _MIN_SUBSCRIBER)
        elif number.startswith("0") and len(number.lstrip("0")) >= _MIN_SUBSCRIBER:
            # National form with a trunk prefix (07700 900123): the part after it is the number.
            digits.add(number.lstrip("0"))
        digits.add(number)
    return frozenset(t for t in text if _keep(t)), frozenset(d for d in digits if _keep(d))


def context_tokens(words: Iterable[str]) -> frozenset[str]:
    """The folded context words a password must not contain (too short ones dropped)."""
    # The same folding and the same minimum as personal data: "ACME" and its full-width form
    # count, and a word like "it" cannot refuse half of all passwords.
    return frozenset(token for word in words if _keep(token := fold(word).strip()))


class PasswordPolicy:
    """The password rules of one deployment; each rule is a setting and can be switched off.

    Lengths: the maximum counts code points as received (it is a cost bound, checked before
    anything reads the content); the minimum counts visible characters after normalisation (the
    smaller of the NFC and NFKC counts; whitespace, format characters and combining marks on
    their own do not count), unlike Appwrite, which counts UTF-8 bytes. The password that is
    hashed is never changed.

    The dictionary rule refuses a listed password and one that becomes listed once digits and
    symbols at its ends are cut and common substitutions undone (:mod:`.variants`).
    """

    def __init__(
        self,
        *,
        min_length: int = 8,
        max_length: int = 256,
        dictionary: bool = True,
        dictionary_path: str | None = None,
        dictionary_replace: bool = False,
        personal_data: bool = True,
        context_words: Iterable[str] = (),
        history: int = 0,
        checks: Iterable[PasswordCheck] = (),
    ) -> None:
        if min_length < MIN_LENGTH_FLOOR:
            raise ConfigError("password_min_length", min_length, f"at least {MIN_LENGTH_FLOOR}")
        if max_length < min_length:
            raise ConfigError("password_max_length", max_length, f"at least {min_length}")
        if history < 0:
            raise ConfigError("password_history", history, "0 (off) or more")
        self.min_length = min_length
        self.max_length = max_length
        self.dictionary = dictionary
        self.dictionary_path = dictionary_path
        self.dictionary_replace = dictionary_replace
        self.personal_data = personal_data
        self.context_words = context_tokens(context_words)
        self.history = history
        self.checks = validate_checks(checks)
        if dictionary_replace and dictionary_path is None:
            raise ConfigError(
                "password_dictionary_replace", True, "false unless password_dictionary_path is set"
            )
        if dictionary and dictionary_path is not None:
            # A missing or unreadable custom file fails at start-up, not at the first sign-up;
            # the shipped list cannot be missing and stays lazy.
            dictionary_words(dictionary_path, replace=dictionary_replace)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        dictionary: bool | None = None,
        personal_data: bool | None = None,
        history: int | None = None,
        checks: Iterable[PasswordCheck] = (),
    ) -> PasswordPolicy:
        """The policy the ``password_*`` settings describe, with run-time values over them."""
        return cls(
            min_length=settings.password_min_length,
            max_length=settings.password_max_length,
            dictionary=settings.password_dictionary if dictionary is None else dictionary,
            dictionary_path=settings.password_dictionary_path,
            dictionary_replace=settings.password_dictionary_replace,
            personal_data=settings.password_personal_data
            if personal_data is None
            else personal_data,
            context_words=settings.password_context_words,
            history=settings.password_history if history is None else history,
            checks=checks,
        )

    def check(
        self,
        password: str,
        *,
        user_id: str | None = None,
        email: str | None = None,
        name: str | None = None,
        phone: str | None = None,
    ) -> None:
        """Raise the first failing cheap rule's error: length, common, personal, context word."""
        # len() is O(1) on a str: nothing below runs for an oversized password.
        if len(password) > self.max_length:
            raise PasswordTooLong(
                f"The password must be at most {self.max_length} characters long."
            )
        if character_count(password) < self.min_length:
            raise PasswordTooShort(
                f"The password must be at least {self.min_length} characters long"
                " (spaces and invisible characters do not count)."
            )
        folded = fold(password)
        if self.dictionary and is_listed(
            folded.strip(), dictionary_words(self.dictionary_path, replace=self.dictionary_replace)
        ):
            raise PasswordInDictionary()
        if self.personal_data and _contains_personal_data(
            folded, user_id=user_id, email=email, name=name, phone=phone
        ):
            raise PasswordPersonalData()
        if any(word in folded for word in self.context_words):
            raise PasswordContextWord()

    def check_history(self, password: str, history: Sequence[str], hasher: HashVerifier) -> None:
        """Raise ``PasswordRecentlyUsed`` if ``password`` matches one of the last N hashes."""
        if self.history == 0:
            return
        # check() should have run first; repeat its O(1) length guard so a forgotten check()
        # cannot turn N argon2 verifies of a huge string into a denial of service.
        if len(password) > self.max_length:
            raise PasswordTooLong(
                f"The password must be at most {self.max_length} characters long."
            )
        # Only the newest N count, even if the stored list is longer (history was lowered).
        for stored_hash in history[-self.history :]:
            if hasher.verify(stored_hash, password):
                raise PasswordRecentlyUsed()

    def run_checks(self, password: str, context: PasswordContext) -> None:
        """Run the app's ``password_checks`` (may block: a worker thread, after the other rules)."""
        if not self.checks:
            return
        # The same O(1) guard as check_history: never send an oversized string to a service.
        if len(password) > self.max_length:
            raise PasswordTooLong(
                f"The password must be at most {self.max_length} characters long."
            )
        run_checks(self.checks, password, context)

    def remember(self, new_hash: str, history: Sequence[str]) -> list[str]:
        """The history to store after setting a password with hash ``new_hash`` (newest last)."""
        if self.history == 0:
            return []
        return [*history, new_hash][-self.history :]


def _contains_personal_data(
    folded: str,
    *,
    user_id: str | None,
    email: str | None,
    name: str | None,
    phone: str | None,
) -> bool:
    text, digits = personal_tokens(user_id=user_id, email=email, name=name, phone=phone)
    if any(token in folded for token in text):
        return True
    if not digits:
        return False
    # Phone numbers are also looked for in the password's digits alone, so "555-123-4567" and
    # "(555) 123 4567" are caught like "5551234567".
    only_digits = _NOT_DIGIT.sub("", folded)
    return any(token in folded or token in only_digits for token in digits)
