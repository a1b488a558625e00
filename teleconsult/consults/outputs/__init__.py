"""The outputs of signed reports: PDF, DICOM SR and Encapsulated PDF into the study, FHIR DiagnosticReport.

``ReportOutputs`` subscribes to ``report.signed`` and makes them off the
signing request's thread, once per signed version (``producer.py``); one
builder per output (``pdf.py``, ``sr.py``, ``encapsulated.py``,
``fhir.py``) reads the same ``ReportDocument`` (``document.py``).
"""

from teleconsult.consults.outputs.document import ReportDocument, collect_document, document_title
from teleconsult.consults.outputs.encapsulated import build_encapsulated_pdf
from teleconsult.consults.outputs.fhir import FHIR_JSON, diagnostic_report, patient_resource_id, searchset
from teleconsult.consults.outputs.fonts import ReportFont, load_report_font
from teleconsult.consults.outputs.pdf import build_report_pdf
from teleconsult.consults.outputs.producer import ReportOutputs
from teleconsult.consults.outputs.sr import build_report_sr
from teleconsult.consults.outputs.study import KeyImage, StudyMaterial, read_study_material

__all__ = [
    "FHIR_JSON",
    "KeyImage",
    "ReportDocument",
    "ReportFont",
    "ReportOutputs",
    "StudyMaterial",
    "build_encapsulated_pdf",
    "build_report_pdf",
    "build_report_sr",
    "collect_document",
    "diagnostic_report",
    "document_title",
    "load_report_font",
    "patient_resource_id",
    "read_study_material",
    "searchset",
]
