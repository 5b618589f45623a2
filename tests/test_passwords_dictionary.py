"""The common-password dictionary: the shipped list, folding, custom files and their errors."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from bastion import Bastion, ConfigError, Settings
from bastion.errors import PasswordInDictionary, PasswordTooShort
from bastion.passwords import PasswordPolicy, dictionary_words, fold, is_common, load_dictionary
from bastion.passwords.variants import MAX_CUTS, forms


def shipped_lines() -> list[str]:
    data = resources.files("bastion.passwords").joinpath("data/common-passwords.txt")
    return data.read_text("utf-8").splitlines()


def test_shipped_file_is_folded_unique_and_as_counted_in_notice() -> None:
    lines = shipped_lines()
    assert len(lines) == 18_440
    assert len(set(lines)) == len(lines)
    assert all(line and line == fold(line).strip() for line in lines)
    assert sum(len(line) >= 8 for line in lines) == 10_526
    assert load_dictionary() == frozenset(lines)
    assert resources.files("bastion.passwords").joinpath("data/NOTICE").is_file()


def test_every_shipped_entry_is_refused() -> None:
    # Entries of 8+ characters are refused as common; shorter ones never get that far.
    policy = PasswordPolicy()
    common = short = 0
    for entry in shipped_lines():
        expected = PasswordInDictionary if len(entry) >= 8 else PasswordTooShort
        with pytest.raises(expected):
            policy.check(entry)
        common += expected is PasswordInDictionary
        short += expected is PasswordTooShort
    assert (common, short) == (10_526, 18_440 - 10_526)


@pytest.mark.parametrize(
    ("password", "common"),
    [
        ("password", True),
        ("PASSWORD", True),
        ("Password", True),
        (
            "\uff30\uff21\uff33\uff33\uff37\uff2f\uff32\uff24",
            True,
        ),  # full-width: NFKC maps it to ASCII
        ("  password\t", True),  # surrounding whitespace is ignored
        ("\u3000password\u3000", True),  # ideographic spaces become spaces under NFKC
        ("\ufb01rebird", True),  # the "fi" ligature: NFKC expands it to "f" + "i"
        ("FIREBIRD", True),
        ("password1", True),
        ("pass word", False),  # inner whitespace is kept
        ("pass\u200bword", True),  # a zero-width space survives NFKC, but is not looked at
        ("p\u0430ssword", False),  # Cyrillic a: NFKC does not map confusables (by design)
        ("correct horse battery staple", False),
    ],
)
def test_is_common_compares_the_folded_password(password: str, common: bool) -> None:
    assert is_common(password) is common


def test_fold_is_nfkc_then_casefold() -> None:
    assert fold("\uff30\uff21\uff33\uff33") == "pass"
    assert fold("\ufb03") == "ffi"
    assert fold("Straße") == "strasse"
    assert fold("e\u0301") == "\u00e9"  # combining accent composed into one character
    assert fold("\u2168") == "ix"  # Roman numeral nine


def test_shipped_list_is_loaded_once() -> None:
    assert load_dictionary() is load_dictionary()
    assert load_dictionary(None) is load_dictionary()


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8", newline="")
    return str(path)


def test_custom_file_lines_are_folded_like_the_shipped_list(tmp_path: Path) -> None:
    path = write(
        tmp_path / "words.txt",
        "\uff28\uff35\uff2e\uff34\uff25\uff32\uff12\uff12\r\n  Tr0ub4dor&3  \n\n\ufb01refly-9\n",
    )
    assert load_dictionary(path) == {"hunter22", "tr0ub4dor&3", "firefly-9"}
    assert is_common("hunter22", path)
    assert is_common("TR0UB4DOR&3", Path(path))
    assert is_common("FIREFLY-9", path)
    assert is_common("password", path)  # a custom file extends the shipped list
    assert not is_common("password", path, replace=True)  # unless it replaces it


def test_custom_file_is_cached_per_path(tmp_path: Path) -> None:
    path = write(tmp_path / "words.txt", "alpha-omega\n")
    first = load_dictionary(path)
    write(tmp_path / "words.txt", "something-else\n")
    # Read once: edits need a restart, like every other setting.
    assert load_dictionary(path) is first
    other = write(tmp_path / "other.txt", "something-else\n")
    assert load_dictionary(other) == {"something-else"}


def bad_files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9-au-lait\n")
    (tmp_path / "dir").mkdir()
    return {
        "missing": str(tmp_path / "missing.txt"),
        "directory": str(tmp_path / "dir"),
        "not utf-8": str(tmp_path / "latin1.txt"),
        "empty": write(tmp_path / "empty.txt", ""),
        "blank lines only": write(tmp_path / "blank.txt", "\n  \n\t\n"),
    }


@pytest.mark.parametrize("case", ["missing", "directory", "not utf-8", "empty", "blank lines only"])
def test_unusable_custom_file_is_a_config_error(tmp_path: Path, case: str) -> None:
    path = bad_files(tmp_path)[case]
    with pytest.raises(ConfigError) as info:
        load_dictionary(path)
    assert info.value.name == "password_dictionary_path"
    assert info.value.value == path
    assert "one password a line" in str(info.value)
    # The policy fails at start-up, not at the first sign-up.
    with pytest.raises(ConfigError):
        PasswordPolicy.from_settings(Settings(password_dictionary_path=path))


def test_custom_file_is_not_read_when_the_dictionary_is_off(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.txt")
    policy = PasswordPolicy(dictionary=False, dictionary_path=missing)
    policy.check("password")


def test_policy_uses_the_custom_file_from_settings(tmp_path: Path) -> None:
    path = write(tmp_path / "words.txt", "bastion-rocks\n")
    policy = PasswordPolicy.from_settings(Settings(password_dictionary_path=path))
    with pytest.raises(PasswordInDictionary):
        policy.check("Bastion-Rocks")
    with pytest.raises(PasswordInDictionary):
        policy.check("password1")  # only in the shipped list, which the file extends


def test_custom_file_extends_the_shipped_list_unless_replace(tmp_path: Path) -> None:
    path = write(tmp_path / "words.txt", "acme-winter-2026\n")
    extended = PasswordPolicy.from_settings(Settings(password_dictionary_path=path))
    replaced = PasswordPolicy.from_settings(
        Settings(password_dictionary_path=path, password_dictionary_replace=True)
    )
    for policy in (extended, replaced):
        with pytest.raises(PasswordInDictionary):
            policy.check("ACME-Winter-2026")
    with pytest.raises(PasswordInDictionary):
        extended.check("iloveyou")
    replaced.check("iloveyou")
    assert dictionary_words(path) == load_dictionary() | {"acme-winter-2026"}
    assert dictionary_words(path, replace=True) == {"acme-winter-2026"}
    assert dictionary_words(path) is dictionary_words(path)  # merged once, then cached


def test_replace_needs_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(password_dictionary_replace=True)
    assert info.value.name == "password_dictionary_replace"
    assert "password_dictionary_path" in str(info.value)
    with pytest.raises(ConfigError) as direct:
        PasswordPolicy(dictionary_replace=True)
    assert direct.value.name == "password_dictionary_replace"


def test_dictionary_settings_from_toml_and_env(tmp_path: Path) -> None:
    # A file named in the TOML file is relative to it, like the policy files.
    (tmp_path / "conf").mkdir()
    words = write(tmp_path / "conf" / "words.txt", "acme-winter-2026\n")
    config = tmp_path / "conf" / "bastion.toml"
    config.write_text(
        'password_dictionary_path = "words.txt"\npassword_dictionary_replace = true\n'
    )
    loaded = Settings.load(config, env={})
    assert (loaded.password_dictionary_path, loaded.password_dictionary_replace) == (words, True)
    env = {"BASTION_PASSWORD_DICTIONARY_PATH": words, "BASTION_PASSWORD_DICTIONARY_REPLACE": "no"}
    assert Settings.load(env=env).password_dictionary_replace is False


def test_unusable_custom_file_stops_bastion_even_with_the_dictionary_off(tmp_path: Path) -> None:
    # `bastion security set password_dictionary true` can switch the rule on while the app
    # runs; the first sign-up after that must not be where the file is found to be bad.
    for path in bad_files(tmp_path).values():
        settings = Settings(password_dictionary=False, password_dictionary_path=path)
        with pytest.raises(ConfigError) as info:
            Bastion(settings)
        assert info.value.name == "password_dictionary_path"


# --- the forms a common password hides in (issue 11) ----------------------------------------


@pytest.mark.parametrize(
    ("password", "common"),
    [
        ("Password1!", True),  # "1!" cut off
        ("P@ssw0rd!", True),  # "!" cut off, @ and 0 read as a and o
        ("Summer2024!", True),  # "2024!" cut off
        ("letmein!", True),
        ("2024!!summer", True),  # a leading run
        ("$unsh1ne", True),  # a leading $ is an s, not a symbol to cut
        ("1l0vey0u", True),  # 1 read as i
        ("f00tba11", True),  # 1 read as l, for every 1 at once
        ("12345678!", True),  # digits only: symbols at the ends cut off
        ("!!123456!!", True),
        ("PASSWORD-2024", True),
        ("pass\u200bword", True),  # invisible characters are not looked at
        ("\u200bpassword\u2060", True),
        # Not common: the word is not at the edge, or is not a listed one.
        ("correct horse battery staple", False),
        ("Ed-is-great-77", False),
        ("my-password-is-long", False),  # the word inside, not at an end
        ("2000-09-15", False),  # a date: digits at both ends, nothing to cut
        ("abc!12345678", False),  # forms shorter than 4 are not looked up
        ("p\u0430ssw0rd!", False),  # Cyrillic a: confusables are not mapped (by design)
    ],
)
def test_common_passwords_dressed_up_are_common(password: str, common: bool) -> None:
    assert is_common(password) is common
    outcome = PasswordInDictionary if common else None
    try:
        PasswordPolicy().check(password)
        got: type[Exception] | None = None
    except PasswordInDictionary as exc:
        got = type(exc)
    assert got is outcome


def test_the_forms_are_bounded_whatever_the_password() -> None:
    # Runs of 120 characters at both ends, digits and symbols alternating (a cut point at every
    # character), around a word full of substitutable characters.
    run = "1!" * 60
    password = run + "p@55w0rd1" + run
    found = list(forms(fold(password)))
    assert len(found) <= 2 + MAX_CUTS * MAX_CUTS * 3
    assert "password" in found  # the caps keep the cuts nearest the word


def test_the_dictionary_switch_covers_the_forms(tmp_path: Path) -> None:
    PasswordPolicy(dictionary=False).check("P@ssw0rd!")
    with pytest.raises(PasswordInDictionary):
        PasswordPolicy().check("P@ssw0rd!")
    # A custom list's entries are looked for in the same forms.
    path = write(tmp_path / "words.txt", "bastion-rocks\n")
    assert is_common("B@sti0n-R0cks!!2026", path)
    assert not is_common("B@sti0n-R0cks!!2026")
