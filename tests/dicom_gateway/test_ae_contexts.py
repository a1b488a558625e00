"""The server's presentation contexts, copied for each association."""

from __future__ import annotations

import copy

from pydicom.uid import ExplicitVRLittleEndian

from dicom_gateway.ae import _PresentationContexts, build_ae
from teleconsult.config import Settings


def test_each_association_gets_contexts_equal_to_the_servers_and_independent_of_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    served = _PresentationContexts(build_ae(Settings(data_dir=tmp_path)).supported_contexts)
    copies = copy.deepcopy(served)

    assert [(c.abstract_syntax, c.transfer_syntax, c.scu_role, c.scp_role) for c in copies] == [
        (c.abstract_syntax, c.transfer_syntax, c.scu_role, c.scp_role) for c in served
    ]
    negotiated = copies[-1]
    negotiated.context_id = 7
    negotiated.result = 0x00
    negotiated.transfer_syntax.clear()
    negotiated.add_transfer_syntax(ExplicitVRLittleEndian)

    original = served[-1]
    assert original.context_id is None
    assert original.result is None
    assert len(original.transfer_syntax) > 1
    assert all(a is not b for a, b in zip(copies, served, strict=True))
