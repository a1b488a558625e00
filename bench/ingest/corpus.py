"""Synthetic DICOM corpora for the ingest benchmark, generated once and cached.

Nothing here comes from a real patient: names, IDs, UIDs, pixels and waveform
samples are all made up (UIDs are ``2.25.`` values derived from fixed seeds).
Every file is uncompressed Explicit VR Little Endian, so a receiver stores it
byte for byte and the benchmark measures ingest rather than codecs.

Each class is written into ``GROUPS`` sub-directories, instance ``i`` going to
group ``i % GROUPS``: one ``storescu --scan-directories`` per group gives the
parallel runs, one ``storescu`` over all groups gives the single association.
A finished corpus is marked by ``<key>.json`` next to its directory (outside
it, so ``storescu`` never tries to send the marker) and reused by later runs
with the same counts.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

__all__ = [
    "CLASS_NAMES",
    "GROUPS",
    "Corpus",
    "ensure_corpus",
]

logger = logging.getLogger(__name__)

GROUPS = 4
# Bump when the generated content changes, so cached corpora are rebuilt.
_GENERATOR_VERSION = 2
_SEED = "teleconsult-bench-ingest"

_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
_DX_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
_US_MULTI_FRAME = UID("1.2.840.10008.5.1.4.1.1.3.1")
_TWELVE_LEAD_ECG = UID("1.2.840.10008.5.1.4.1.1.9.1.1")

# Made-up patients. A third use UTF-8, a third GB18030 and a third plain ASCII,
# so the receiver decodes both Chinese character sets a county hospital sends.
_PATIENT_NAMES = (
    ("Wang^Xiaoming", "王^小明"),
    ("Li^Na", "李^娜"),
    ("Zhang^Wei", "张^伟"),
    ("Liu^Yang", "刘^洋"),
    ("Chen^Jing", "陈^静"),
    ("Zhao^Lei", "赵^磊"),
    ("Huang^Min", "黄^敏"),
    ("Zhou^Jie", "周^杰"),
    ("Wu^Fang", "吴^芳"),
    ("Xu^Qiang", "徐^强"),
    ("Sun^Li", "孙^丽"),
    ("Ma^Jun", "马^军"),
)
_CHARACTER_SETS = ("ISO_IR 192", "GB18030", None)

# SCP-ECG lead codes (CID 3001) for the twelve standard leads.
_ECG_LEADS = (
    ("5.6.3-9-1", "Lead I"),
    ("5.6.3-9-2", "Lead II"),
    ("5.6.3-9-61", "Lead III"),
    ("5.6.3-9-62", "Lead aVR"),
    ("5.6.3-9-63", "Lead aVL"),
    ("5.6.3-9-64", "Lead aVF"),
    ("5.6.3-9-3", "Lead V1"),
    ("5.6.3-9-4", "Lead V2"),
    ("5.6.3-9-5", "Lead V3"),
    ("5.6.3-9-6", "Lead V4"),
    ("5.6.3-9-7", "Lead V5"),
    ("5.6.3-9-8", "Lead V6"),
)
_ECG_RATE_HZ = 500
_ECG_SECONDS = 10


def _uid(*parts: object) -> UID:
    """A deterministic UUID-derived ``2.25.`` UID (PS3.5 B.2) named by ``parts``.

    Name-based (UUID v5), not ``generate_uid(prefix=None, ...)``: pydicom
    ignores the entropy sources without a prefix and returns a random UID,
    which would put every instance in a study of its own.
    """
    name = "/".join(str(part) for part in (_SEED, *parts))
    return UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}")


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where one instance sits in the patient/study/series hierarchy."""

    class_name: str
    index: int
    study: int
    series: int


def _base_dataset(place: _Placement, sop_class_uid: UID, modality: str) -> Dataset:
    """Patient, study, series, equipment and SOP Common modules shared by all classes."""
    patient = place.study % (len(_PATIENT_NAMES) * len(_CHARACTER_SETS))
    alphabetic, ideographic = _PATIENT_NAMES[patient % len(_PATIENT_NAMES)]
    character_set = _CHARACTER_SETS[patient % len(_CHARACTER_SETS)]
    ds = Dataset()
    if character_set is not None:
        ds.SpecificCharacterSet = character_set
        ds.PatientName = f"{alphabetic}={ideographic}"
    else:
        ds.PatientName = alphabetic.upper()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = _uid(place.class_name, "instance", place.index)
    ds.StudyDate = f"2024{1 + place.study % 12:02d}{1 + place.study % 28:02d}"
    ds.StudyTime = f"{8 + place.study % 10:02d}3000"
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AccessionNumber = f"BA{place.class_name[:2].upper()}{place.study:06d}"
    ds.Modality = modality
    ds.Manufacturer = "teleconsult bench"
    ds.InstitutionName = "Synthetic County Hospital"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = f"bench {place.class_name}"
    ds.SeriesDescription = f"bench {place.class_name} series {place.series}"
    ds.PatientID = f"BENCH{patient:04d}"
    ds.PatientBirthDate = f"19{50 + patient % 40:02d}0101"
    ds.PatientSex = "MF"[patient % 2]
    ds.StudyInstanceUID = _uid(place.class_name, "study", place.study)
    ds.SeriesInstanceUID = _uid(place.class_name, "study", place.study, "series", place.series)
    ds.StudyID = str(place.study + 1)
    ds.SeriesNumber = place.series + 1
    ds.InstanceNumber = place.index + 1
    return ds


def _image_pixels(ds: Dataset, pixels: np.ndarray, *, bits_stored: int) -> None:
    """Image Pixel module for unsigned monochrome or RGB pixels."""
    ds.SamplesPerPixel = 3 if pixels.ndim == 4 else 1
    ds.PhotometricInterpretation = "RGB" if pixels.ndim == 4 else "MONOCHROME2"
    if pixels.ndim == 4:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if pixels.ndim == 4 else pixels.shape[-2:]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.add_new(0x7FE00010, "OW" if ds.BitsAllocated > 8 else "OB", pixels.tobytes())


def _ct(place: _Placement, rng: np.random.Generator) -> Dataset:
    ds = _base_dataset(place, _CT_IMAGE_STORAGE, "CT")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP = "120"
    ds.SliceThickness = "1.0"
    ds.PixelSpacing = ["0.7", "0.7"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-90, -90, place.index % 100]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    _image_pixels(ds, rng.integers(0, 4096, size=(256, 256), dtype=np.uint16), bits_stored=12)
    return ds


def _dx(place: _Placement, rng: np.random.Generator) -> Dataset:
    ds = _base_dataset(place, _DX_FOR_PRESENTATION, "DX")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PatientOrientation = ["L", "F"]
    ds.BodyPartExamined = "CHEST"
    ds.ImagerPixelSpacing = ["0.14", "0.14"]
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    _image_pixels(ds, rng.integers(0, 4096, size=(2048, 2048), dtype=np.uint16), bits_stored=12)
    return ds


def _us(place: _Placement, rng: np.random.Generator) -> Dataset:
    frames = 60
    ds = _base_dataset(place, _US_MULTI_FRAME, "US")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.NumberOfFrames = frames
    ds.FrameTime = "33.3"
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    pixels = rng.integers(0, 256, size=(frames, 480, 640, 3), dtype=np.uint8)
    _image_pixels(ds, pixels, bits_stored=8)
    return ds


def _code(value: str, scheme: str, meaning: str, version: str | None = None) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    if version is not None:
        item.CodingSchemeVersion = version
    item.CodeMeaning = meaning
    return item


def _ecg_channel(code: str, meaning: str) -> Dataset:
    channel = Dataset()
    channel.ChannelSourceSequence = Sequence([_code(code, "SCPECG", meaning, "1.3")])
    channel.ChannelSensitivity = "2.5"
    channel.ChannelSensitivityUnitsSequence = Sequence([_code("uV", "UCUM", "microvolt", "1.4")])
    channel.ChannelSensitivityCorrectionFactor = "1"
    channel.ChannelBaseline = "0"
    channel.ChannelSampleSkew = "0"
    channel.WaveformBitsStored = 16
    channel.FilterLowFrequency = "0.05"
    channel.FilterHighFrequency = "150"
    return channel


def _ecg(place: _Placement, rng: np.random.Generator) -> Dataset:
    samples = _ECG_RATE_HZ * _ECG_SECONDS
    ds = _base_dataset(place, _TWELVE_LEAD_ECG, "ECG")
    ds.AcquisitionDateTime = f"{ds.StudyDate}{ds.StudyTime}"
    ds.AcquisitionContextSequence = Sequence()
    # A 72 bpm sawtooth-ish beat plus noise: enough to look like a trace.
    t = np.arange(samples) / _ECG_RATE_HZ
    beat = (np.sin(2 * np.pi * 1.2 * t) ** 31 * 400).astype(np.int16)
    leads = beat[:, None] + rng.integers(-20, 20, size=(samples, len(_ECG_LEADS)), dtype=np.int16)
    group = Dataset()
    group.MultiplexGroupTimeOffset = "0"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(_ECG_LEADS)
    group.NumberOfWaveformSamples = samples
    group.SamplingFrequency = str(_ECG_RATE_HZ)
    group.MultiplexGroupLabel = "RHYTHM"
    group.ChannelDefinitionSequence = Sequence([_ecg_channel(*lead) for lead in _ECG_LEADS])
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    # Samples are interleaved channel by channel (PS3.3 C.10.9.1.7).
    group.add_new(0x54001010, "OW", leads.astype("<i2").tobytes())
    ds.WaveformSequence = Sequence([group])
    return ds


@dataclass(frozen=True, slots=True)
class _ClassSpec:
    """How to build one instance class and how to spread it over studies."""

    name: str
    full_count: int
    quick_count: int
    instances_per_study: int
    build: Callable[[_Placement, np.random.Generator], Dataset]


_CLASSES = (
    # 2,000 CT slices over 20 studies of 100 (two series of 50 each).
    _ClassSpec("small", 2000, 200, 100, _ct),
    _ClassSpec("dr", 100, 5, 2, _dx),
    _ClassSpec("us", 10, 2, 2, _us),
    # One ECG per study, as electrocardiographs send them.
    _ClassSpec("ecg", 200, 20, 1, _ecg),
)
CLASS_NAMES = tuple(spec.name for spec in _CLASSES)


@dataclass(frozen=True, slots=True)
class Corpus:
    """One generated class on disk."""

    name: str
    root: Path
    count: int
    total_bytes: int

    @property
    def groups(self) -> list[Path]:
        """The non-empty group directories (fewer than GROUPS for tiny corpora)."""
        return [path for path in sorted(self.root.glob("g*")) if any(path.iterdir())]


def _spec(name: str) -> _ClassSpec:
    for spec in _CLASSES:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown class {name!r}; choose from {', '.join(CLASS_NAMES)}")


def _placement(spec: _ClassSpec, index: int) -> _Placement:
    study = index // spec.instances_per_study
    series = (index % spec.instances_per_study) * 2 // spec.instances_per_study
    return _Placement(spec.name, index, study, series)


def _write(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def _generate(spec: _ClassSpec, count: int, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for group in range(GROUPS):
        (partial / f"g{group}").mkdir(parents=True)
    rng = np.random.default_rng(zlib.crc32(f"{_SEED}/{spec.name}".encode()))
    for index in range(count):
        ds = spec.build(_placement(spec, index), rng)
        _write(ds, partial / f"g{index % GROUPS}" / f"{spec.name}{index:05d}.dcm")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def _scan(name: str, root: Path) -> Corpus:
    files = [path for path in root.glob("g*/*.dcm") if path.is_file()]
    return Corpus(name=name, root=root, count=len(files), total_bytes=sum(p.stat().st_size for p in files))


def _remove_stale(base_dir: Path, name: str) -> None:
    """Drop corpora of ``name`` made by older generator versions: they are never read again."""
    current = f"-v{_GENERATOR_VERSION}"
    for path in base_dir.glob(f"{name}-*-v*"):
        if not path.name.removesuffix(".json").removesuffix(".partial").endswith(current):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def ensure_corpus(name: str, base_dir: Path, *, quick: bool, count: int | None = None) -> Corpus:
    """The corpus of class ``name``, generated under ``base_dir`` unless already cached.

    The cache key holds the class, the count and the generator version, so a
    quick corpus and a full one live side by side and neither is rebuilt.
    """
    spec = _spec(name)
    wanted = count if count is not None else spec.quick_count if quick else spec.full_count
    key = f"{name}-{wanted}-v{_GENERATOR_VERSION}"
    root = base_dir / key
    marker = base_dir / f"{key}.json"
    if marker.is_file() and root.is_dir():
        corpus = _scan(name, root)
        if corpus.count == wanted:
            return corpus
        logger.warning("cached corpus %s has %d files, not %d: regenerating", root, corpus.count, wanted)
    marker.unlink(missing_ok=True)
    base_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(base_dir, name)
    _generate(spec, wanted, root)
    corpus = _scan(name, root)
    marker.write_text(json.dumps({"class": name, "count": corpus.count, "bytes": corpus.total_bytes}))
    return corpus
