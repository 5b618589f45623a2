"""Password hashing (argon2id), the cheap rules of PasswordPolicy, and password history."""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import argon2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion import ConfigError, Settings
from bastion.errors import (
    PasswordContextWord,
    PasswordInDictionary,
    PasswordPersonalData,
    PasswordRecentlyUsed,
    PasswordRejected,
    PasswordTooLong,
    PasswordTooShort,
)
from bastion.passwords import (
    PasswordHasher,
    PasswordPolicy,
    character_count,
    context_tokens,
    personal_tokens,
)

# Tiny argon2 parameters wherever a test is not about the parameters themselves.
FAST = {"memory_kib": 8, "time_cost": 1, "parallelism": 1}
PARAMS = re.compile(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+")

JOHN: dict[str, Any] = {
    "user_id": "u8f3kq2x9",
    "email": "john.smith@example.com",
    "name": "John Smith",
    "phone": "+1 555 123 4567",
}

Outcome = type[PasswordRejected] | None


def outcome(policy: PasswordPolicy, password: str, **user: Any) -> Outcome:
    try:
        policy.check(password, **user)
    except PasswordRejected as exc:
        return type(exc)
    return None


def fast_hasher(
    overrides: Mapping[str, int] | None = None, *, normalize: bool = True
) -> PasswordHasher:
    params = {**FAST, **(overrides or {})}
    return PasswordHasher(
        params["memory_kib"], params["time_cost"], params["parallelism"], normalize=normalize
    )


class Boom:
    """A hasher double that fails the test if anything asks it to verify."""

    def verify(self, stored_hash: str, password: str) -> bool:
        raise AssertionError("the hasher must not be called")


class CountingVerifier:
    """A hasher double that records which hashes it was asked about; 'hash:<pw>' matches <pw>."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def verify(self, stored_hash: str, password: str) -> bool:
        self.seen.append(stored_hash)
        return stored_hash == f"hash:{password}"


# --- lengths -------------------------------------------------------------------------------

SENTENCE = "correct horse battery staple "
AT_MAX = (SENTENCE * 10)[:256]


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("Zq8#vL2", PasswordTooShort),
        ("Zq8#vL2m", None),
        (AT_MAX, None),
        (AT_MAX + "x", PasswordTooLong),
        ("x" * 10_240, PasswordTooLong),
        # The minimum counts characters after normalisation, not code points or bytes:
        ("e\u0301" * 8, None),  # 16 code points, 8 characters (é composed by NFC/NFKC)
        ("e\u0301" * 7, PasswordTooShort),  # 14 code points, 7 characters
        ("\u00e9" * 8, None),  # 16 UTF-8 bytes, 8 characters (Appwrite counts 16)
        ("\ufb01" * 4, PasswordTooShort),  # 4 "fi" ligatures: NFKC makes 8 letters, we count 4
        ("\ufb01" * 8, None),
        ("\ufdfa", PasswordTooShort),  # one Arabic ligature that NFKC expands to 18 characters
        ("\uff76\uff9e" * 8, None),  # half-width ka + voiced mark: 16 code points, NFKC 8
        ("\U0001f600" * 8, None),  # astral characters count once each
        # The maximum counts code points as received (a cost bound), so 257 code points are too
        # many even when they make only 129 characters.
        ("e\u0301" * 128 + "x", PasswordTooLong),
    ],
)
def test_lengths_with_default_settings(password: str, expected: Outcome) -> None:
    assert outcome(PasswordPolicy.from_settings(Settings()), password) is expected


def test_character_count() -> None:
    # Only what shows counts: not whitespace, format characters or combining marks on their own.
    assert character_count(" " * 8) == 0
    assert character_count("\u3000" * 8) == 0  # ideographic spaces
    assert character_count("\u200b\u200c\u200d\u2060\ufeff\u00ad\u202e\u2066") == 0
    assert character_count("\u0301\u0308\u20dd") == 0  # combining marks with no base
    assert character_count("\u3164\uffa0\u115f\u1160") == 0  # Hangul fillers
    assert character_count("\x00\x1b\x7f") == 0
    assert character_count("correct horse battery staple") == 25
    assert character_count("a\u200bb\u3000c") == 3
    assert character_count("e\u0301") == 1
    assert character_count("\ufb03") == 1
    assert character_count("\uff76\uff9e") == 1
    assert character_count("\uff21\uff22") == 2  # full-width AB


def test_length_messages_say_what_to_do() -> None:
    policy = PasswordPolicy(min_length=10, max_length=20)
    with pytest.raises(PasswordTooShort) as short:
        policy.check("Zq8#vL2m")
    assert short.value.message == (
        "The password must be at least 10 characters long"
        " (spaces and invisible characters do not count)."
    )
    with pytest.raises(PasswordTooLong) as long:
        policy.check("Zq8#vL2m" * 3)
    assert long.value.message == "The password must be at most 20 characters long."
    assert (short.value.status, short.value.type) == (400, "password_too_short")
    assert (long.value.status, long.value.type) == (400, "password_too_long")


@pytest.mark.parametrize(
    "policy",
    [PasswordPolicy(min_length=12), PasswordPolicy.from_settings(Settings(password_min_length=12))],
)
def test_minimum_length_is_configurable(policy: PasswordPolicy) -> None:
    assert outcome(policy, "Zq8#vL2m-k4") is PasswordTooShort
    assert outcome(policy, "Zq8#vL2m-k4w") is None


def test_minimum_length_never_below_eight() -> None:
    with pytest.raises(ConfigError) as info:
        PasswordPolicy(min_length=7)
    assert info.value.name == "password_min_length"
    with pytest.raises(ConfigError):
        Settings(password_min_length=7)
    with pytest.raises(ConfigError) as bad_max:
        PasswordPolicy(min_length=12, max_length=11)
    assert bad_max.value.name == "password_max_length"
    with pytest.raises(ConfigError) as bad_history:
        PasswordPolicy(history=-1)
    assert bad_history.value.name == "password_history"


def test_oversized_password_is_refused_before_anything_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every content rule starts with unicodedata.normalize (length, dictionary, personal data);
    # if it never sees the password, check() did nothing but len() before refusing.
    policy = PasswordPolicy.from_settings(Settings(password_history=5))
    huge = "password" * 1_280  # 10 kB, common and personal if anything looked at it
    real_normalize = unicodedata.normalize
    seen: list[int] = []

    def spy(form: Any, text: str) -> str:
        seen.append(len(text))
        return real_normalize(form, text)

    with monkeypatch.context() as patch:
        patch.setattr(unicodedata, "normalize", spy)
        with pytest.raises(PasswordTooLong):
            policy.check(huge, **JOHN)
        # Nor does the expensive rule hash it, even if a caller forgets to run check() first.
        with pytest.raises(PasswordTooLong):
            policy.check_history(huge, ["hash:a", "hash:b"], Boom())
        policy.check("short-but-fine-9")  # the spy does see the passwords that get that far
    assert seen and len(huge) not in seen


# --- rule order and switches ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("password" * 33, PasswordTooLong),  # too long before anything else
        ("1234", PasswordTooShort),  # common, but too short first
        ("john", PasswordTooShort),  # personal, but too short first
        ("johnsmith", PasswordInDictionary),  # common and personal: the dictionary first
        ("JohnSmith!2024", PasswordInDictionary),  # so is a common password's form
        ("Smith-John-2024", PasswordPersonalData),
    ],
)
def test_first_failing_rule_wins(password: str, expected: Outcome) -> None:
    assert outcome(PasswordPolicy(), password, **JOHN) is expected


@pytest.mark.parametrize(
    ("overrides", "password", "expected"),
    [
        ({}, "password1", PasswordInDictionary),
        ({"password_dictionary": False}, "password1", None),
        ({}, "Smith-John-2024", PasswordPersonalData),
        ({"password_personal_data": False}, "Smith-John-2024", None),
        ({"password_dictionary": False}, "JohnSmith!2024", PasswordPersonalData),
        ({"password_personal_data": False}, "johnsmith", PasswordInDictionary),
        ({"password_dictionary": False, "password_personal_data": False}, "johnsmith", None),
        ({"password_max_length": 1024}, AT_MAX * 4, None),
    ],
)
def test_each_rule_follows_its_setting(
    overrides: dict[str, Any], password: str, expected: Outcome
) -> None:
    policy = PasswordPolicy.from_settings(Settings(**overrides))
    assert outcome(policy, password, **JOHN) is expected


def test_no_composition_rules() -> None:
    policy = PasswordPolicy()
    for password in ("aaaaaaaaaaaaaaaa-long-lowercase", "0192837465019283", "ÉTÉ-À-LA-PLAGE"):
        policy.check(password)


# --- personal data -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        # peers.md section 9 vectors
        ("JohnSmith!2024", PasswordPersonalData),  # name parts (Appwrite accepts it)
        ("x5551234567x", PasswordPersonalData),  # phone without the country code
        ("john.smith@example.com1", PasswordPersonalData),  # the email
        ("correct horse battery", None),
        # more of the same rule
        ("my 15551234567 line", PasswordPersonalData),  # phone with the country code
        ("call +1 (555) 123-4567!", PasswordPersonalData),  # phone digits with punctuation
        ("555.123.4567-home", PasswordPersonalData),
        ("JOHN.SMITH-rocks", PasswordPersonalData),  # email local part
        ("smith-and-wesson-9", PasswordPersonalData),  # one name part is enough
        ("Blacksmithing-9", PasswordPersonalData),  # substring rule: contained words count too
        ("\uff2a\uff4f\uff48\uff4e\uff33\uff4d\uff49\uff54\uff48\uff19", PasswordPersonalData),
        ("my-id-U8F3KQ2X9", PasswordPersonalData),  # the user id
        ("example.com-fan-99", None),  # the domain is not personal
        ("jo hn smi th 4ever", None),
        ("call 555 123 0000 ok", None),
        ("+1 is my country code!", None),
    ],
)
def test_personal_data_of_john_smith(password: str, expected: Outcome) -> None:
    # The dictionary off: some of these are common passwords' forms too ("johnsmith" + "!2024").
    assert outcome(PasswordPolicy(dictionary=False), password, **JOHN) is expected


@pytest.mark.parametrize(
    ("user", "password", "expected"),
    [
        ({"name": "Ed Li", "email": "ed.li@example.com"}, "Ed-is-great-77", None),  # < 3 ignored
        ({"name": "Ed Li"}, "Edward-Li-Lives", None),
        ({"name": "Bob Li"}, "bobcat-jumps-9", PasswordPersonalData),
        ({"name": "007 Bond"}, "agent-007-x-ray", None),  # digit tokens need 4 digits
        ({"name": "007 Bond"}, "james-bond-rules", PasswordPersonalData),
        ({"user_id": "42"}, "the-answer-is-42", None),
        ({"user_id": "1234"}, "zebra-1234-zebra", PasswordPersonalData),
        ({"user_id": "abc"}, "abc-is-easy-as", PasswordPersonalData),
        ({"name": "Groß"}, "GROSS-ARTIST-1", PasswordPersonalData),  # casefold: ß is ss
        ({"name": "José"}, "JOSE\u0301-likes-tea", PasswordPersonalData),  # NFKC composes é
        ({"name": "José"}, "jose-likes-tea", None),  # accents are not stripped
        ({"name": "Zoë"}, "\uff3a\uff2f\uff25\u0308-forever", PasswordPersonalData),
        ({"name": "Anne-Marie O'Neil"}, "the-marine-boat-9", None),
        ({"name": "Anne-Marie O'Neil"}, "neil-armstrong-1", PasswordPersonalData),
        ({"email": "a+b-c@x.io"}, "a+b-c-is-me", PasswordPersonalData),  # whole local part
        ({"email": "j_doe+news@x.io"}, "x.io-is-my-domain", None),
        ({"email": "j_doe+news@x.io"}, "call-me-JDoe", PasswordPersonalData),
        ({"email": "j_doe+news@x.io"}, "i-read-the-NEWS", PasswordPersonalData),
        ({"phone": "+44 7700 900123"}, "07700900123-uk", PasswordPersonalData),
        ({"phone": "+353 85 123 4567"}, "0851234567-ie", PasswordPersonalData),
        ({"phone": "\uff0b\uff11 555 123 4567"}, "x5551234567x", PasswordPersonalData),
        ({"phone": "+12"}, "my-number-is-12", None),
        ({}, "JohnSmith!2024", None),  # nothing known about the user
        ({"name": "", "email": None, "phone": "   "}, "JohnSmith!2024", None),
    ],
)
def test_personal_data_rules(user: dict[str, Any], password: str, expected: Outcome) -> None:
    assert outcome(PasswordPolicy(dictionary=False), password, **user) is expected


def test_personal_tokens_of_john_smith() -> None:
    text, digits = personal_tokens(**JOHN)
    assert text == {
        "u8f3kq2x9",
        "john.smith@example.com",
        "john.smith",
        "john",
        "smith",
        "john smith",
    }
    assert {"15551234567", "5551234567"} <= digits


@pytest.mark.parametrize(
    ("phone", "digits"),
    [
        # the number, then the number with 1, 2 and 3 leading digits dropped while 7+ remain
        ("+1 555 123 4567", {"15551234567", "5551234567", "551234567", "51234567"}),
        ("+44 7700 900123", {"447700900123", "47700900123", "7700900123", "700900123"}),
        ("+353 85 123 4567", {"353851234567", "53851234567", "3851234567", "851234567"}),
        ("0044 7700 900123", {"447700900123", "47700900123", "7700900123", "700900123"}),
        ("+1 234 5678", {"12345678", "2345678"}),  # a short number keeps most of its digits
        ("+1 234", {"1234"}),
        ("+12", set()),  # fewer than 4 digits: ignored
        ("07700 900123", {"07700900123", "7700900123"}),  # national form: trunk 0 dropped
        ("555 123 4567", {"5551234567"}),  # no + or 00: no country code to drop
        ("not a phone", set()),
    ],
)
def test_phone_tokens(phone: str, digits: set[str]) -> None:
    assert personal_tokens(phone=phone) == (frozenset(), frozenset(digits))


def test_personal_data_message() -> None:
    with pytest.raises(PasswordPersonalData) as info:
        PasswordPolicy().check("Smith-John-2024", **JOHN)
    assert info.value.status == 400
    assert info.value.type == "password_personal_data"
    assert "name, email address, phone number or user id" in info.value.message


# --- context words -------------------------------------------------------------------------


def acme() -> Settings:
    return Settings(password_context_words=["Bastion", "ACME Corp", "acme"])


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("my-bastion-pass-9", PasswordContextWord),
        ("BASTION-is-great-9", PasswordContextWord),  # casefolded
        ("\uff22\uff41\uff53\uff54\uff49\uff4f\uff4e-rules-7", PasswordContextWord),  # full width
        ("rocket-acme-launch", PasswordContextWord),
        ("i-work-at-acme corp", PasswordContextWord),  # the whole name counts too
        ("Sebastiano-7-hills", None),  # "bastion" is not in it: a substring rule, not fuzzy
        ("acne-cream-for-you", None),
        ("correct horse battery staple", None),
        # In addition to the other rules, not instead of them:
        ("password1", PasswordInDictionary),
        ("Smith-John-2024", PasswordPersonalData),
    ],
)
def test_context_words_are_refused_like_personal_data(password: str, expected: Outcome) -> None:
    assert outcome(PasswordPolicy.from_settings(acme()), password, **JOHN) is expected


def test_context_word_error() -> None:
    with pytest.raises(PasswordContextWord) as info:
        PasswordPolicy.from_settings(acme()).check("love-acme-forever")
    assert (info.value.status, info.value.type) == (400, "password_context_word")
    assert "name of this site, product or organisation" in info.value.message
    assert "acme" not in info.value.message.lower()  # nothing of the password is echoed


def test_context_words_do_not_follow_the_personal_data_switch() -> None:
    # They are the deployment's words, not the user's: the list itself is their switch.
    policy = PasswordPolicy.from_settings(acme(), personal_data=False)
    assert outcome(policy, "Smith-John-2024", **JOHN) is None
    assert outcome(policy, "JohnSmith!acme", **JOHN) is PasswordContextWord
    assert outcome(PasswordPolicy.from_settings(Settings()), "my-bastion-pass-9") is None


def test_context_tokens_are_folded_like_personal_data() -> None:
    words = ["Acme", " \uff22\uff21\uff33\uff34\uff29\uff2f\uff2e ", "Straße", "it", "123", "2024"]
    # Shorter than 3 (4 if all digits) is dropped, the same minimum as personal data.
    assert context_tokens(words) == {"acme", "bastion", "strasse", "2024"}
    assert PasswordPolicy(context_words=words).context_words == context_tokens(words)


# --- history -------------------------------------------------------------------------------


def test_history_off_does_nothing() -> None:
    policy = PasswordPolicy(history=0)
    policy.check_history("anything-at-all", ["hash:anything-at-all"], Boom())
    assert policy.remember("hash:new", ["hash:a", "hash:b"]) == []


def test_history_keeps_the_last_n_and_refuses_their_reuse() -> None:
    hasher = fast_hasher()
    policy = PasswordPolicy.from_settings(Settings(password_history=3))
    history: list[str] = []
    for number in range(1, 6):
        password = f"Passphrase-number-{number}"
        policy.check_history(password, history, hasher)
        history = policy.remember(hasher.hash(password), history)
    assert len(history) == 3
    assert [
        hasher.verify(h, f"Passphrase-number-{n}") for h, n in zip(history, (3, 4, 5), strict=True)
    ] == [
        True,
        True,
        True,
    ]
    for number in (3, 4, 5):
        with pytest.raises(PasswordRecentlyUsed) as info:
            policy.check_history(f"Passphrase-number-{number}", history, hasher)
        assert (info.value.status, info.value.type) == (400, "password_recently_used")
    for number in (1, 2, 6):  # older than the last three, or new
        policy.check_history(f"Passphrase-number-{number}", history, hasher)


def test_history_checks_only_the_newest_n_hashes() -> None:
    # A stored list longer than N (history was lowered) counts only its newest N entries.
    verifier = CountingVerifier()
    policy = PasswordPolicy(history=2)
    stored = ["hash:one-one-one", "hash:two-two-two", "hash:three-three", "hash:four-four-4"]
    policy.check_history("one-one-one", stored, verifier)
    assert verifier.seen == ["hash:three-three", "hash:four-four-4"]
    with pytest.raises(PasswordRecentlyUsed):
        policy.check_history("three-three", stored, verifier)


@pytest.mark.parametrize(
    ("limit", "history", "expected"),
    [
        (1, [], ["new"]),
        (1, ["a"], ["new"]),
        (3, ["a", "b"], ["a", "b", "new"]),
        (3, ["a", "b", "c"], ["b", "c", "new"]),
        (2, ["a", "b", "c", "d"], ["d", "new"]),
        (20, [str(n) for n in range(20)], [*(str(n) for n in range(1, 20)), "new"]),
    ],
)
def test_remember(limit: int, history: Sequence[str], expected: list[str]) -> None:
    before = list(history)
    assert PasswordPolicy(history=limit).remember("new", history) == expected
    assert list(history) == before  # the caller's list is not changed


# --- hashing -------------------------------------------------------------------------------


def params(stored_hash: str) -> tuple[int, int, int]:
    match = PARAMS.fullmatch(stored_hash)
    assert match, stored_hash
    m, t, p = match.groups()
    return int(m), int(t), int(p)


def test_default_hashes_are_argon2id_with_owasp_parameters() -> None:
    hasher = PasswordHasher.from_settings(Settings())
    assert params(hasher.hash("correct horse battery")) == (19_456, 2, 1)
    assert (hasher.memory_kib, hasher.time_cost, hasher.parallelism) == (19_456, 2, 1)
    assert params(PasswordHasher().hash("correct horse battery")) == (19_456, 2, 1)


def test_hashes_use_the_configured_parameters() -> None:
    settings = Settings(
        password_hash_memory_kib=20_480, password_hash_time_cost=3, password_hash_parallelism=2
    )
    stored = PasswordHasher.from_settings(settings).hash("correct horse battery")
    assert params(stored) == (20_480, 3, 2)
    assert params(fast_hasher({"memory_kib": 16, "time_cost": 2}).hash("x")) == (16, 2, 1)


def test_verify() -> None:
    hasher = fast_hasher()
    stored = hasher.hash("correct horse battery")
    assert hasher.verify(stored, "correct horse battery") is True
    assert hasher.verify(stored, "correct horse battery ") is False
    assert hasher.verify(stored, "Correct horse battery") is False  # case matters in hashes
    assert hasher.verify(stored, "") is False
    assert hasher.hash("correct horse battery") != stored  # a fresh salt each time


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not a hash",
        "$argon2id$",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$",
        "$argon2id$v=19$m=8,t=1,p=1$!!!!$!!!!",
        "$argon2id$v=19$m=x,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$\u00fc\u00fc\u00fc",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "pbkdf2_sha256$600000$salt$hash",
        "$argon2id$v=19$m=0,t=0,p=0$c2FsdHNhbHQ$aGFzaGhhc2g",
    ],
)
def test_verify_is_false_for_an_unusable_hash(stored: str) -> None:
    hasher = fast_hasher()
    assert hasher.verify(stored, "correct horse battery") is False
    assert hasher.needs_rehash(stored) is True


def test_verify_is_false_for_truncated_hashes_and_non_strings() -> None:
    hasher = fast_hasher()
    stored = hasher.hash("correct horse battery")
    for cut in (1, 10, len(stored) // 2):
        assert hasher.verify(stored[:-cut], "correct horse battery") is False
    assert hasher.verify(None, "correct horse battery") is False  # an account without a password
    assert hasher.needs_rehash(None) is True
    assert hasher.verify(b"not a str", "x") is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("old", "new", "needs"),
    [
        ({"memory_kib": 8}, {"memory_kib": 16}, True),  # lower memory
        ({"time_cost": 1}, {"time_cost": 2}, True),  # fewer passes
        ({"parallelism": 1}, {"memory_kib": 16, "parallelism": 2}, True),
        ({"memory_kib": 16}, {"memory_kib": 8}, True),  # other, even if stronger
        ({}, {}, False),  # current parameters
    ],
)
def test_needs_rehash(old: dict[str, int], new: dict[str, int], needs: bool) -> None:
    stored = fast_hasher(old).hash("correct horse battery")
    current = fast_hasher(new)
    assert current.needs_rehash(stored) is needs
    # An old hash still verifies, so the caller can upgrade it after this successful log-in.
    assert current.verify(stored, "correct horse battery") is True
    if needs:
        assert current.needs_rehash(current.hash("correct horse battery")) is False


def test_needs_rehash_for_other_argon2_variants() -> None:
    legacy = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, type=argon2.Type.I)
    stored = legacy.hash("correct horse battery")
    hasher = fast_hasher()
    assert hasher.verify(stored, "correct horse battery") is True
    assert hasher.needs_rehash(stored) is True


def spy_on_argon2(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes]]:
    """Record every argon2 verify (hash, secret) that goes through argon2-cffi."""
    calls: list[tuple[str, bytes]] = []
    real_verify = argon2.PasswordHasher.verify

    def spy(self: argon2.PasswordHasher, stored_hash: str, secret: bytes) -> bool:
        calls.append((stored_hash, secret))
        return real_verify(self, stored_hash, secret)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)
    return calls


def test_dummy_verify_does_a_real_verify_against_a_current_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hasher = fast_hasher({"memory_kib": 16, "time_cost": 2})
    calls = spy_on_argon2(monkeypatch)
    hasher.dummy_verify("correct horse battery")
    hasher.dummy_verify("")
    hasher.dummy_verify("\ud800 lone surrogate")
    hasher.dummy_verify("\ufb01")
    # The same normalise-and-encode steps as a real verify, against one fixed current hash.
    assert [secret for _, secret in calls] == [
        b"correct horse battery",
        b"",
        "\ud800 lone surrogate".encode("utf-8", "surrogatepass"),
        b"fi",
    ]
    assert len({stored for stored, _ in calls}) == 1
    assert params(calls[0][0]) == (16, 2, 1)
    assert hasher.needs_rehash(calls[0][0]) is False


@pytest.mark.parametrize("stored", [None, "", "not a hash", "$argon2id$v=19$m=8,t=1,p=1$!!!!$!!"])
def test_verify_of_a_missing_or_unusable_hash_costs_a_real_verify(
    monkeypatch: pytest.MonkeyPatch, stored: str | None
) -> None:
    # An account without a password (OAuth only) must not answer faster than a wrong password.
    hasher = fast_hasher()
    calls = spy_on_argon2(monkeypatch)
    assert hasher.verify(stored, "correct horse battery") is False
    dummy, secret = calls[-1]
    assert secret == b"correct horse battery"
    assert params(dummy) == (8, 1, 1)
    assert hasher.verify(dummy, "correct horse battery") is False


@pytest.mark.parametrize(
    ("hashed", "typed", "matches"),
    [
        ("caf\u00e9-au-lait-42", "cafe\u0301-au-lait-42", True),  # composed vs combining accent
        ("\ufb01refly-\ufb01eld", "firefly-field", True),  # ligatures are NFKC-expanded
        ("\uff30\uff41\uff53\uff53-wide-9", "Pass-wide-9", True),  # full-width vs ASCII
        ("\uff30\uff41\uff53\uff53-wide-9", "pass-wide-9", False),  # but case is kept
        ("Stra\u00dfe-am-See", "Strasse-am-See", False),  # no casefolding in hashes
        ("\ud800 lone surrogate", "\ud800 lone surrogate", True),  # cannot crash hashing
        ("\ud800 lone surrogate", "\ud801 lone surrogate", False),
    ],
)
def test_hashes_compare_nfkc_normalised_passwords(hashed: str, typed: str, matches: bool) -> None:
    hasher = fast_hasher()
    assert hasher.verify(hasher.hash(hashed), typed) is matches


def test_normalisation_can_be_turned_off_for_imported_hashes() -> None:
    raw = fast_hasher(normalize=False)
    imported = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(
        "cafe\u0301-au-lait-42"
    )
    assert raw.verify(imported, "cafe\u0301-au-lait-42") is True
    assert raw.verify(imported, "caf\u00e9-au-lait-42") is False
    assert fast_hasher().verify(imported, "cafe\u0301-au-lait-42") is False


def test_sign_up_change_and_log_in_flow() -> None:
    """The order a caller uses the pieces in: cheap rules, history, hash, remember; rehash."""
    old_hasher, hasher = fast_hasher(), fast_hasher({"memory_kib": 16})
    policy = PasswordPolicy(history=2)
    user = {"name": "Ada Lovelace", "email": "ada@example.com"}

    policy.check("analytical-engine-1843", **user)
    stored = old_hasher.hash("analytical-engine-1843")
    history = policy.remember(stored, [])

    # Log-in with newer parameters: verify, then upgrade the hash.
    assert hasher.verify(stored, "analytical-engine-1843")
    assert hasher.needs_rehash(stored)
    stored = hasher.hash("analytical-engine-1843")
    assert not hasher.needs_rehash(stored)

    # Changing to the same password is refused; to a new one is accepted.
    with pytest.raises(PasswordRecentlyUsed):
        policy.check_history("analytical-engine-1843", history, hasher)
    with pytest.raises(PasswordPersonalData):
        policy.check("lovelace-engine-1843", **user)
    policy.check("difference-engine-1822", **user)
    policy.check_history("difference-engine-1822", history, hasher)
    history = policy.remember(hasher.hash("difference-engine-1822"), history)
    assert len(history) == 2


# --- properties ----------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=300)  # surrogates too
user_field = st.none() | st.text(max_size=40)


@settings(max_examples=300, deadline=None)
@given(password=any_text, user_id=user_field, email=user_field, name=user_field, phone=user_field)
def test_check_only_ever_raises_password_errors(
    password: str, user_id: str | None, email: str | None, name: str | None, phone: str | None
) -> None:
    with contextlib.suppress(PasswordRejected):
        PasswordPolicy().check(password, user_id=user_id, email=email, name=name, phone=phone)


ascii_password = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


@settings(max_examples=300, deadline=None)
@given(password=ascii_password)
def test_case_and_width_do_not_change_the_outcome(password: str) -> None:
    # Full-width forms of ! .. ~ are U+FF01 .. U+FF5E; NFKC maps them back to ASCII.
    wide = "".join(chr(ord(c) + 0xFEE0) for c in password)
    policy = PasswordPolicy()
    expected = outcome(policy, password, **JOHN)
    assert outcome(policy, password.swapcase(), **JOHN) is expected
    assert outcome(policy, wide, **JOHN) is expected
