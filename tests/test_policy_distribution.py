"""The frozen ``casbin`` distribution beside ``pycasbin`` is refused loudly."""

from __future__ import annotations

from importlib import metadata

import pytest

from bastion.policies.distribution import check_casbin


def _installed(**versions: str):  # type: ignore[no-untyped-def]
    def version_of(name: str) -> str:
        if name in versions:
            return versions[name]
        raise metadata.PackageNotFoundError(name)

    return version_of


def test_pycasbin_alone_is_fine() -> None:
    assert check_casbin(_installed(pycasbin="2.8.0")) is None
    assert check_casbin() is None  # this environment


def test_both_distributions_warn_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.warns(RuntimeWarning, match="overwrite each other"):
        problem = check_casbin(_installed(pycasbin="2.8.0", casbin="1.43.0"))
    assert problem is not None and "pip uninstall" in problem
    assert "frozen 'casbin' 1.43.0" in caplog.text


def test_the_frozen_one_alone_is_refused() -> None:
    with pytest.raises(RuntimeError, match="pycasbin"):
        check_casbin(_installed(casbin="1.43.0"))
