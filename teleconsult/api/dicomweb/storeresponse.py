"""The Store Instances Response (PS3.18 10.5.3) and its HTTP status.

200 when every part was stored, 202 when some were (or warnings exist), 409
when none was: the body lists the stored instances in ReferencedSOPSequence
(each with its RetrieveURL) and the refused ones in FailedSOPSequence with
a FailureReason, as dcm4chee's conformance statement documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from teleconsult.api.dicomweb.storing import PartResult
from teleconsult.api.dicomweb.uris import DicomwebURLs

__all__ = ["store_response", "store_status"]


def _uid(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def store_status(results: Sequence[PartResult]) -> int:
    stored = sum(1 for result in results if result.stored is not None)
    if stored == len(results):
        return 200
    return 202 if stored else 409


def store_response(results: Sequence[PartResult], urls: DicomwebURLs) -> dict[str, Any]:
    """The response data set in the DICOM JSON Model."""
    body: dict[str, Any] = {}
    referenced = []
    failed = []
    studies = set()
    for result in results:
        if result.stored is not None:
            stored = result.stored
            studies.add(stored.study_instance_uid)
            referenced.append(
                {
                    "00081150": _uid(stored.sop_class_uid),
                    "00081155": _uid(stored.sop_instance_uid),
                    "00081190": {
                        "vr": "UR",
                        "Value": [
                            urls.instance(
                                stored.study_instance_uid, stored.series_instance_uid, stored.sop_instance_uid
                            )
                        ],
                    },
                }
            )
        else:
            failed.append(
                {
                    "00081150": _uid(result.sop_class_uid),
                    "00081155": _uid(result.sop_instance_uid),
                    "00081197": {"vr": "US", "Value": [result.failure_reason]},
                }
            )
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [urls.study(studies.pop())]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    return body
