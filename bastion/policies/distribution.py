"""Which Casbin is installed: ``pycasbin`` (maintained) and not the frozen ``casbin``.

Both distributions install the same ``casbin`` import package and overwrite each other's files
(a mix of versions in one folder), so having both is refused loudly at import time.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from importlib import metadata

logger = logging.getLogger("bastion.policy")

FIX = "pip uninstall -y casbin pycasbin && pip install 'pycasbin>=2.0'"


def check_casbin(version_of: Callable[[str], str] = metadata.version) -> str | None:
    """Warn when the frozen ``casbin`` distribution sits beside ``pycasbin``; the problem, or None.

    Raises ``RuntimeError`` when only the frozen one is installed: Bastion is tested on pycasbin.
    """
    found = {}
    for name in ("pycasbin", "casbin"):
        try:
            found[name] = version_of(name)
        except metadata.PackageNotFoundError:
            continue
    if "pycasbin" not in found:
        raise RuntimeError(
            f"Bastion needs the maintained 'pycasbin' distribution, found "
            f"{'casbin ' + found['casbin'] if 'casbin' in found else 'none'}: {FIX}"
        )
    if "casbin" in found:
        problem = (
            f"both 'pycasbin' {found['pycasbin']} and the frozen 'casbin' {found['casbin']} are "
            f"installed; they overwrite each other's files in the 'casbin' package, so the code "
            f"that runs is a mix of both. Fix: {FIX}"
        )
        warnings.warn(problem, RuntimeWarning, stacklevel=2)
        logger.error(problem)
        return problem
    return None
