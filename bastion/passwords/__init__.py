"""Password safety: argon2id hashing, the length/dictionary/personal-data rules, history and
the app's own checks."""

from bastion.passwords.checks import PasswordCheck, PasswordContext
from bastion.passwords.dictionary import dictionary_words, fold, is_common, load_dictionary
from bastion.passwords.hashing import PasswordHasher
from bastion.passwords.policy import (
    CONTEXT_WORD_MAX_LENGTH,
    CONTEXT_WORDS_MAX,
    MIN_LENGTH_FLOOR,
    HashVerifier,
    PasswordPolicy,
    character_count,
    context_tokens,
    personal_tokens,
)

__all__ = [
    "CONTEXT_WORDS_MAX",
    "CONTEXT_WORD_MAX_LENGTH",
    "MIN_LENGTH_FLOOR",
    "HashVerifier",
    "PasswordCheck",
    "PasswordContext",
    "PasswordHasher",
    "PasswordPolicy",
    "character_count",
    "context_tokens",
    "dictionary_words",
    "fold",
    "is_common",
    "load_dictionary",
    "personal_tokens",
]
