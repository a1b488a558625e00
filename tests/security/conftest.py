"""A test PKI shared by the security tests: the county CA, a rogue CA, and certificates."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.security.pki import Authority, Issued, make_authority


@dataclass(frozen=True)
class Pki:
    ca: Authority  # the CA teleconsult trusts
    rogue: Authority  # a CA nobody configured
    gateway: Issued  # teleconsult's own certificate (CN TELECONSULT)
    townus: Issued  # township 1's ultrasound (CN TOWNUS)
    storescu: Issued  # township 2's device (CN STORESCU)
    pacs: Issued  # the county PACS (CN COUNTYPACS)
    rogue_townus: Issued  # CN TOWNUS, but signed by the rogue CA


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_authority(folder, "county")
    rogue = make_authority(folder, "rogue")
    return Pki(
        ca=ca,
        rogue=rogue,
        gateway=ca.issue("TELECONSULT", "County hospital"),
        townus=ca.issue("TOWNUS", "Township 1"),
        storescu=ca.issue("STORESCU", "Township 2"),
        pacs=ca.issue("COUNTYPACS", "County hospital"),
        rogue_townus=rogue.issue("TOWNUS", "Township 1"),
    )
