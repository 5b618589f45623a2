"""Password safety: argon2id hashing, the length/dictionary/personal-data rules and history."""

from bastion.passwords.dictionary import fold, is_common, load_dictionary
from bastion.passwords.hashing import PasswordHasher
from bastion.passwords.policy import (
    MIN_LENGTH_FLOOR,
    HashVerifier,
    PasswordPolicy,
    character_count,
    personal_tokens,
)

__all__ = [
    "MIN_LENGTH_FLOOR",
    "HashVerifier",
    "PasswordHasher",
    "PasswordPolicy",
    "character_count",
    "fold",
    "is_common",
    "load_dictionary",
    "personal_tokens",
]
