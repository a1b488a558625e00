"""Helpers shared by the DICOMweb routes (``api/routes/qido.py``, ``wado.py``, ``stow.py``).

One module per job: ``media`` (Accept and Content-Type negotiation),
``query`` (QIDO-RS parameters), ``dicomjson`` (the DICOM JSON Model),
``multipart`` (multipart/related both ways), ``part10`` (File Meta of
uploads), ``storing`` and ``storeresponse`` (STOW-RS), ``access`` (scope and
path UIDs), ``transcode``, ``pixels``, ``bulkdata`` and ``rendering``
(WADO-RS), ``uris`` (RetrieveURL, BulkDataURI), ``errors`` (their HTTP errors).
"""

__all__: list[str] = []
