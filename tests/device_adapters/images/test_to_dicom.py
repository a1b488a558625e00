"""Every kind of export to DICOM: stored, read back, pixels or bitstream kept, dciodvfy clean."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage

from device_adapters.images.errors import ImageImportError, SidecarError, UnsupportedImageError
from device_adapters.images.importer import ImageImporter
from teleconsult.domain.studies import StoreOutcome, StudyQuery
from teleconsult.events import EventType
from teleconsult.storage.store import InstanceStore
from tests.conftest import RecordingBus
from tests.device_adapters.images.conftest import (
    dciodvfy_errors,
    dcmcjpeg_bitstream,
    encode_image,
    grey8,
    grey16,
    rgb,
    sidecar,
)

# name -> (file name, bytes, pixels expected back (None: a kept JPEG), photometric, transfer syntax)
Export = tuple[str, bytes, np.ndarray | None, str, str]
EXPORTS: dict[str, Callable[[], Export]] = {
    "png-grey8": lambda: (
        "x.png",
        encode_image(grey8(), "PNG"),
        grey8(),
        "MONOCHROME2",
        ExplicitVRLittleEndian,
    ),
    "png-grey16": lambda: (
        "x.png",
        encode_image(grey16(), "PNG"),
        grey16(),
        "MONOCHROME2",
        ExplicitVRLittleEndian,
    ),
    "png-rgb": lambda: ("x.png", encode_image(rgb(), "PNG"), rgb(), "RGB", ExplicitVRLittleEndian),
    "bmp-rgb": lambda: ("x.bmp", encode_image(rgb(), "BMP"), rgb(), "RGB", ExplicitVRLittleEndian),
    "bmp-grey8": lambda: (
        "x.bmp",
        encode_image(grey8(), "BMP"),
        grey8(),
        "MONOCHROME2",
        ExplicitVRLittleEndian,
    ),
    "jpeg-colour": lambda: (
        "x.jpg",
        encode_image(rgb(), "JPEG", quality=90),
        None,
        "YBR_FULL_422",
        JPEGBaseline8Bit,
    ),
    "jpeg-colour-444": lambda: (
        "x.jpg",
        encode_image(rgb(), "JPEG", quality=90, subsampling=0),
        None,
        "YBR_FULL_422",  # not subsampled, but the value DICOM has for lossy JPEG colour
        JPEGBaseline8Bit,
    ),
    "jpeg-grey": lambda: (
        "x.jpg",
        encode_image(grey8(), "JPEG", quality=90),
        None,
        "MONOCHROME2",
        JPEGBaseline8Bit,
    ),
}


def _stored(store: InstanceStore, sop_instance_uid: str) -> tuple[bytes, Dataset]:
    part10 = store.read_instance(sop_instance_uid)
    return part10, dcmread(BytesIO(part10))


@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_each_export_is_stored_as_a_valid_secondary_capture(
    kind: str, image_importer: ImageImporter, store: InstanceStore, bus: RecordingBus, tmp_path: Path
) -> None:
    name, data, pixels, photometric, syntax = EXPORTS[kind]()
    imported = image_importer.import_export(
        name, data, sidecar(), organisation="TOWN01", sidecar_name="x.json"
    )
    stored = imported.stored
    assert stored.outcome is StoreOutcome.STORED
    assert stored.sop_class_uid == SecondaryCaptureImageStorage
    assert imported.transfer_syntax_uid == syntax
    part10, ds = _stored(store, stored.sop_instance_uid)
    assert dciodvfy_errors(part10, tmp_path) == []
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.PhotometricInterpretation == photometric
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.PatientName == "王^小明"
    assert (ds.PatientID, ds.PatientSex, ds.PatientBirthDate) == ("IMG0001", "M", "19620304")
    assert (ds.Modality, ds.BodyPartExamined, ds.StudyDescription) == ("DX", "CHEST", "胸部正位")
    assert (ds.StudyDate, ds.StudyTime, ds.AccessionNumber) == ("20261124", "093015", "A20261124001")
    assert ds.ConversionType == "WSD"
    assert ds.BurnedInAnnotation == "YES"
    assert "Laterality" not in ds  # CHEST is not a paired body part
    if pixels is None:
        assert ds.LossyImageCompression == "01"
        assert ds.LossyImageCompressionMethod == "ISO_10918_1"
        fragment = get_frame(ds.PixelData, 0, number_of_frames=1)
        assert fragment[: len(data)] == data  # the file's own bitstream (padded to even length)
        assert len(fragment) - len(data) in (0, 1)
        decoded = ds.pixel_array  # and a DICOM decoder reads it
        assert decoded.shape[:2] == (ds.Rows, ds.Columns)
    else:
        assert ds.LossyImageCompression == "00"
        assert np.array_equal(ds.pixel_array, pixels)
        assert ds.BitsAllocated == (16 if pixels.dtype == np.uint16 else 8)
    (event,) = [e for e in bus.events if e.type == EventType.INSTANCE_STORED]
    assert event.data["sop_instance_uid"] == stored.sop_instance_uid
    (study,) = store.index.find_studies(StudyQuery(patient_id="IMG0001"))
    assert study.source_organisation == "TOWN01"
    assert study.patient_name == "王^小明"
    assert study.modalities_in_study == ("DX",)


def test_a_sixteen_bit_grey_image_is_windowed_over_its_range(image_importer: ImageImporter) -> None:
    pixels = grey16()
    imported = image_importer.import_export(
        "dr.png", encode_image(pixels, "PNG"), sidecar(), organisation="TOWN01"
    )
    _, ds = _stored(image_importer.store, imported.stored.sop_instance_uid)
    low, high = int(pixels.min()), int(pixels.max())
    assert float(ds.WindowCenter) == (low + high) / 2
    assert float(ds.WindowWidth) == high - low + 1


def test_the_same_export_again_is_a_duplicate_and_a_corrected_name_a_new_version(
    image_importer: ImageImporter,
) -> None:
    data = encode_image(rgb(), "JPEG")
    first = image_importer.import_export("x.jpg", data, sidecar(), organisation="TOWN01").stored
    again = image_importer.import_export("x.jpg", data, sidecar(), organisation="TOWN01").stored
    assert again.outcome is StoreOutcome.DUPLICATE
    assert again.sop_instance_uid == first.sop_instance_uid
    corrected = image_importer.import_export(
        "x.jpg", data, sidecar(patient_name="王^晓明"), organisation="TOWN01"
    ).stored
    assert corrected.outcome is StoreOutcome.REPLACED
    assert corrected.sop_instance_uid == first.sop_instance_uid


def test_images_of_one_exam_meet_in_one_study(image_importer: ImageImporter, store: InstanceStore) -> None:
    """Same organisation, patient and accession number: one study; series by description; else apart."""
    pa = image_importer.import_export(
        "pa.png", encode_image(grey8(seed=1), "PNG"), sidecar(series_description="PA"), organisation="TOWN01"
    ).stored
    lateral = image_importer.import_export(
        "lat.png",
        encode_image(grey8(seed=2), "PNG"),
        sidecar(series_description="LAT"),
        organisation="TOWN01",
    ).stored
    second_pa = image_importer.import_export(
        "pa2.png", encode_image(grey8(seed=3), "PNG"), sidecar(series_description="PA"), organisation="TOWN01"
    ).stored
    assert pa.study_instance_uid == lateral.study_instance_uid == second_pa.study_instance_uid
    assert pa.series_instance_uid == second_pa.series_instance_uid != lateral.series_instance_uid
    other_town = image_importer.import_export(
        "pa.png", encode_image(grey8(seed=1), "PNG"), sidecar(series_description="PA"), organisation="TOWN02"
    ).stored
    other_exam = image_importer.import_export(
        "pa.png", encode_image(grey8(seed=1), "PNG"), sidecar(accession_number="A2"), organisation="TOWN01"
    ).stored
    assert len({pa.study_instance_uid, other_town.study_instance_uid, other_exam.study_instance_uid}) == 3
    # without an accession number: patient, modality, date and time of the exam
    no_accession = sidecar(accession_number=None, modality="US", body_part="ABDOMEN")
    one = image_importer.import_export(
        "a.bmp", encode_image(rgb(seed=4), "BMP"), no_accession, organisation="TOWN01"
    )
    two = image_importer.import_export(
        "b.bmp", encode_image(rgb(seed=5), "BMP"), no_accession, organisation="TOWN01"
    )
    assert one.stored.study_instance_uid == two.stored.study_instance_uid
    (study,) = store.index.find_studies(StudyQuery(study_instance_uids=(pa.study_instance_uid,)))
    assert study.number_of_series == 2
    assert study.number_of_instances == 3


def test_a_sidecar_may_add_the_image_to_a_stored_study(image_importer: ImageImporter) -> None:
    first = image_importer.import_export(
        "a.png", encode_image(grey8(), "PNG"), sidecar(), organisation="TOWN01"
    )
    uid = first.stored.study_instance_uid
    added = image_importer.import_export(
        "b.jpg",
        encode_image(rgb(), "JPEG"),
        sidecar(study_instance_uid=uid, accession_number=None, study_date="2026-11-25", modality="US"),
        organisation="TOWN01",
    )
    assert added.stored.study_instance_uid == uid
    _, ds = _stored(image_importer.store, added.stored.sop_instance_uid)
    # the study's own attributes, not the sidecar's other date
    assert (ds.StudyDate, ds.AccessionNumber) == ("20261124", "A20261124001")
    # another patient's, or another organisation's, study is refused
    for changes, organisation in (({"patient_id": "OTHER"}, "TOWN01"), ({}, "TOWN02")):
        with pytest.raises(ImageImportError, match=f"names study {uid}, which is stored, but not"):
            image_importer.import_export(
                "c.png",
                encode_image(grey8(seed=9), "PNG"),
                sidecar(study_instance_uid=uid, **changes),
                organisation=organisation,
            )
    # a study not stored yet is started by the image
    new = image_importer.import_export(
        "d.png",
        encode_image(grey8(seed=8), "PNG"),
        sidecar(study_instance_uid="1.2.826.0.1.99.7"),
        organisation="TOWN01",
    )
    assert new.stored.study_instance_uid == "1.2.826.0.1.99.7"


def test_names_laterality_spacing_and_digitized_film(image_importer: ImageImporter, tmp_path: Path) -> None:
    imported = image_importer.import_export(
        "knee.png",
        encode_image(grey8(), "PNG"),
        sidecar(
            patient_name="Wang^Xiaoming=王^小明",
            body_part="knee",
            laterality="左",
            pixel_spacing_mm=[0.2, 0.25],
            conversion_type="DF",
            series_number=3,
            instance_number=7,
        ),
        organisation="TOWN01",
    )
    part10, ds = _stored(image_importer.store, imported.stored.sop_instance_uid)
    assert dciodvfy_errors(part10, tmp_path) == []
    assert ds.PatientName.alphabetic == "Wang^Xiaoming"
    assert ds.PatientName.ideographic == "王^小明"
    assert (ds.BodyPartExamined, ds.Laterality) == ("KNEE", "L")
    assert [float(v) for v in ds.PixelSpacing] == [0.2, 0.25]
    assert [float(v) for v in ds.NominalScannedPixelSpacing] == [0.2, 0.25]
    assert ds.ConversionType == "DF"
    assert (ds.SeriesNumber, ds.InstanceNumber) == (3, 7)
    # a paired body part without a side: Laterality empty (unknown), still no dciodvfy error
    imported = image_importer.import_export(
        "hand.png", encode_image(grey8(seed=5), "PNG"), sidecar(body_part="HAND"), organisation="TOWN01"
    )
    part10, ds = _stored(image_importer.store, imported.stored.sop_instance_uid)
    assert ds.Laterality == ""
    assert dciodvfy_errors(part10, tmp_path) == []


def test_grey_saved_as_colour_is_stored_grey(image_importer: ImageImporter) -> None:
    pixels = grey8()
    data = encode_image(np.stack([pixels] * 3, axis=2), "BMP")
    imported = image_importer.import_export("dr.bmp", data, sidecar(), organisation="TOWN01")
    _, ds = _stored(image_importer.store, imported.stored.sop_instance_uid)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert np.array_equal(ds.pixel_array, pixels)


def test_a_palette_png_becomes_rgb(image_importer: ImageImporter) -> None:
    colours = rgb()
    palette = Image.fromarray(colours).quantize(colors=16)
    buffer = BytesIO()
    palette.save(buffer, format="PNG")
    imported = image_importer.import_export("p.png", buffer.getvalue(), sidecar(), organisation="TOWN01")
    _, ds = _stored(image_importer.store, imported.stored.sop_instance_uid)
    assert ds.PhotometricInterpretation == "RGB"
    assert np.array_equal(ds.pixel_array, np.asarray(palette.convert("RGB")))


def test_a_progressive_jpeg_is_decoded_and_stored_lossless_marked_lossy(
    image_importer: ImageImporter, tmp_path: Path
) -> None:
    data = encode_image(rgb(), "JPEG", progressive=True, quality=90)
    imported = image_importer.import_export("p.jpg", data, sidecar(), organisation="TOWN01")
    assert imported.transfer_syntax_uid == ExplicitVRLittleEndian
    part10, ds = _stored(image_importer.store, imported.stored.sop_instance_uid)
    assert dciodvfy_errors(part10, tmp_path) == []
    assert ds.LossyImageCompression == "01"  # it was a lossy JPEG once
    assert np.array_equal(ds.pixel_array, np.asarray(Image.open(BytesIO(data)).convert("RGB")))


def test_a_rotated_jpeg_is_turned_upright(image_importer: ImageImporter) -> None:
    """EXIF orientation 6 (turn 90° clockwise to view): decoded and turned as image viewers show it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode_image(rgb(), "JPEG", exif=exif.tobytes(), quality=95)
    imported = image_importer.import_export("phone.jpg", data, sidecar(), organisation="TOWN01")
    assert imported.transfer_syntax_uid == ExplicitVRLittleEndian
    _, ds = _stored(image_importer.store, imported.stored.sop_instance_uid)
    assert (ds.Rows, ds.Columns) == (70, 50)


@pytest.mark.parametrize(("option", "bits", "lossy"), [("+ee", 12, "01"), ("+el", 16, "00")])
def test_twelve_bit_and_lossless_jpeg_are_decoded(
    option: str, bits: int, lossy: str, image_importer: ImageImporter, tmp_path: Path
) -> None:
    pixels = grey16()
    data = dcmcjpeg_bitstream(pixels, option, 12, tmp_path)
    imported = image_importer.import_export("dr.jpg", data, sidecar(), organisation="TOWN01")
    assert imported.transfer_syntax_uid == ExplicitVRLittleEndian
    part10, ds = _stored(image_importer.store, imported.stored.sop_instance_uid)
    assert dciodvfy_errors(part10, tmp_path) == []
    assert (ds.BitsAllocated, ds.LossyImageCompression) == (16, lossy)
    assert ds.BitsStored == bits
    if lossy == "00":
        assert np.array_equal(ds.pixel_array, pixels)


@pytest.mark.parametrize(
    ("name", "make", "error", "message"),
    [
        ("x.jpg", lambda: b"", ImageImportError, "is empty"),
        ("x.jpg", lambda: b"GIF89a not ours", ImageImportError, "not a format teleconsult imports"),
        ("x.jpg", lambda: encode_image(rgb(), "JPEG")[:300], ImageImportError, "damaged or cut short"),
        ("x.png", lambda: encode_image(rgb(), "PNG")[:200], ImageImportError, "damaged or cut short"),
        ("x.jpg", lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF", ImageImportError, "cut short"),
    ],
)
def test_unreadable_exports_are_refused_saying_why(
    name: str,
    make: Callable[[], bytes],
    error: type[Exception],
    message: str,
    image_importer: ImageImporter,
    store: InstanceStore,
) -> None:
    with pytest.raises(error, match=message):
        image_importer.import_export(name, make(), sidecar(), organisation="TOWN01")
    assert store.index.find_studies(StudyQuery(patient_id="IMG0001")) == []


def test_sixteen_bit_colour_png_is_refused(image_importer: ImageImporter) -> None:
    header = encode_image(rgb(), "PNG")
    # IHDR bit depth 16, colour type 2 (Pillow does not write 48-bit PNG): refused before decoding
    data = header[:24] + bytes([16]) + header[25:]
    with pytest.raises(UnsupportedImageError, match="16-bit colour PNG"):
        image_importer.import_export("x.png", data, sidecar(), organisation="TOWN01")


def test_a_bad_sidecar_names_its_fields(image_importer: ImageImporter) -> None:
    bad = sidecar(patient_id=None, study_date="2026-13-40", modality="XX", patientid="typo")
    with pytest.raises(SidecarError) as raised:
        image_importer.import_export(
            "x.png", encode_image(grey8(), "PNG"), bad, organisation="TOWN01", sidecar_name="x.json"
        )
    fields = dict(raised.value.errors)
    assert set(fields) == {"patient_id", "study_date", "modality", "patientid"}
    assert "'x.json'" in raised.value.message
    assert "IMG0001" not in raised.value.message
