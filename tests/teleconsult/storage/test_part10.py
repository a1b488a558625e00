"""The hand-assembled File Meta header against pydicom's writer."""

from __future__ import annotations

from io import BytesIO

from hypothesis import given
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import JPEGBaseline8Bit, UltrasoundMultiFrameImageStorage

from teleconsult.storage.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, file_meta

_uids = st.from_regex(r"[1-9][0-9]{0,8}(\.(0|[1-9][0-9]{0,8})){1,6}", fullmatch=True)


def _pydicom_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = transfer_syntax_uid
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return b"\x00" * 128 + b"DICM" + buffer.getvalue()


@given(sop_class_uid=_uids, sop_instance_uid=_uids, transfer_syntax_uid=_uids)
def test_file_meta_bytes_equal_pydicoms_writer(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str
) -> None:
    assert file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid) == _pydicom_meta(
        sop_class_uid, sop_instance_uid, transfer_syntax_uid
    )


def test_file_meta_reads_back_with_pydicom() -> None:
    header = file_meta(UltrasoundMultiFrameImageStorage, "2.25.1234567", JPEGBaseline8Bit)
    meta = dcmread(BytesIO(header), force=True).file_meta
    assert meta.MediaStorageSOPClassUID == UltrasoundMultiFrameImageStorage
    assert meta.MediaStorageSOPInstanceUID == "2.25.1234567"
    assert meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.FileMetaInformationGroupLength == len(header) - 128 - 4 - 12
