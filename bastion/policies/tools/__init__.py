"""The policy tooling teams run: YAML test suites and ``bastion policy check | test | explain``.

Not part of the request path. Reading suites needs PyYAML, the ``policy-tools`` extra
(``pip install 'bastion[policy-tools]'``); checking and explaining a policy do not.
"""
