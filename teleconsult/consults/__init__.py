"""Consults and co-signed reports: the review service of the county medical community.

``ConsultService`` (requests, states, deadlines, escalation),
``ReportService`` (drafts, performing and reviewing signatures, addenda,
verification), ``OverdueMonitor`` (the background deadline check) and
``consult_grants_study`` (studies shared with a consult's specialist).
The pure model is in ``teleconsult.domain`` (``consults``, ``reports``,
``report_templates``, ``signing``), the rows in ``teleconsult.storage``.
"""

from teleconsult.consults.access import HiddenError, consult_grants_study
from teleconsult.consults.reporting import ReportService, SignatureCheck, Verification
from teleconsult.consults.service import ConsultService
from teleconsult.consults.sla import OverdueMonitor

__all__ = [
    "ConsultService",
    "HiddenError",
    "OverdueMonitor",
    "ReportService",
    "SignatureCheck",
    "Verification",
    "consult_grants_study",
]
