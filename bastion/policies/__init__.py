"""Policies: the Casbin model, strict policy loading, the indexed decision engine and its holder.

Import from the modules (``bastion.policies.engine``, ``.holder``...): this package imports
nothing, so the request path can use the light modules (``holder``, ``authorizer``, ``grants``)
without loading pycasbin until a policy is built (:mod:`bastion.policies.casbin_compat`), and
the team tooling in :mod:`bastion.policies.tools` stays out of the runtime.
"""
