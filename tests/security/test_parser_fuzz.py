"""Every parser of outside input reads it or refuses it with its own error, quickly and in bounded memory.

Issue 11 row 4. The readers of the ECG formats are fuzzed in
``tests/device_adapters/test_robustness.py`` (SCP-ECG mutations, cuts of
aECG and CSV, random bytes); this module adds what was not: DICOM as the
gateway and STOW-RS read it (the named mutations of
``bench/reliability/mutations.py``, drawn by Hypothesis), the STOW-RS
multipart reader, kiosk JSON, WFDB headers, and hostile XML in an aECG.

The property is the same everywhere: a result, or the module's documented
error type (``InvalidInstanceError``, ``InvalidRequestError`` /
``PayloadTooLargeError``, pydantic's ``ValidationError``, ``EcgImportError``),
never another exception, within a few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bench.reliability.mutations import MUTATIONS, REFUSED, deflate_bomb, mutate
from device_adapters.ecg.errors import EcgImportError
from device_adapters.ecg.formats import read_ecg
from device_adapters.kiosk.errors import KioskMessageError
from device_adapters.kiosk.schema import KioskMessage
from teleconsult.api.dicomweb.errors import InvalidRequestError, PayloadTooLargeError
from teleconsult.api.dicomweb.multipart import read_multipart
from teleconsult.api.dicomweb.part10 import split_part10
from teleconsult.domain.instances import read_instance_attributes
from teleconsult.errors import InvalidInstanceError
from tests.device_adapters.writers import synthetic_leads, write_aecg, write_wfdb

# Wall-clock bound of one parse: generous for a shared 2-core machine, far below a hang.
_SECONDS = 5.0
_NAMES = sorted(MUTATIONS)


def _refusal(call: Callable[[], object], *errors: type[Exception]) -> tuple[object, Exception | None]:
    """(result, None) or (None, the documented error): anything else propagates and fails the test."""
    try:
        return call(), None
    except errors as exc:
        return None, exc


def _timed(started: float) -> None:
    elapsed = time.perf_counter() - started
    assert elapsed < _SECONDS, f"parsing took {elapsed:.1f} s"


# -- DICOM: the gateway's reading (C-STORE) and STOW-RS's (Part 10) -----------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from([n for n in _NAMES if n != "deflate_bomb"]), seed=st.integers(0, 10**9))
def test_mutated_dicom_is_read_or_refused(name: str, seed: int) -> None:
    mutant = mutate(seed, name)
    started = time.perf_counter()
    _, refused = _refusal(
        lambda: read_instance_attributes(
            mutant.data_set,
            mutant.transfer_syntax_uid,
            expected_sop_class_uid=mutant.sop_class_uid,
            expected_sop_instance_uid=mutant.sop_instance_uid,
        ),
        InvalidInstanceError,
    )
    _timed(started)
    if refused is None:
        assert mutant.expect != REFUSED, f"{mutant.label} was read as storable"
    else:
        assert isinstance(refused, InvalidInstanceError)
        assert 0 < len(refused.comment) <= 64  # a DIMSE ErrorComment


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from([n for n in _NAMES if n != "deflate_bomb"]), seed=st.integers(0, 10**9))
def test_mutated_part10_is_read_or_refused(name: str, seed: int) -> None:
    mutant = mutate(seed, name)
    started = time.perf_counter()

    def read() -> object:
        meta, data_set = split_part10(mutant.part10())
        return read_instance_attributes(
            data_set,
            meta.transfer_syntax_uid,
            expected_sop_class_uid=meta.sop_class_uid or None,
            expected_sop_instance_uid=meta.sop_instance_uid or None,
        )

    _, refused = _refusal(read, InvalidInstanceError)
    _timed(started)
    if refused is None:
        assert mutant.expect != REFUSED, f"{mutant.label} was read as storable"


@given(data=st.binary(max_size=600))
def test_random_part10_is_read_or_refused(data: bytes) -> None:
    for candidate in (data, b"\x00" * 128 + b"DICM" + data, b"DICM" + data):
        _refusal(lambda candidate=candidate: split_part10(candidate), InvalidInstanceError)


def test_a_deflate_bomb_header_is_read_in_bounded_memory() -> None:
    """2 GiB once inflated: reading the indexed attributes inflates at most a bounded prefix."""
    import random

    mutant = deflate_bomb(random.Random(1), 1)
    tracemalloc.start()
    try:
        started = time.perf_counter()
        attrs = read_instance_attributes(mutant.data_set, mutant.transfer_syntax_uid)
        _timed(started)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert attrs.sop_instance_uid == mutant.sop_instance_uid
    assert peak < 64 << 20, f"{peak >> 20} MiB to read a header"


# -- the STOW-RS multipart reader ---------------------------------------------------------------------

_BOUNDARY_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0xFF)


async def _chunks(body: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    position = 0
    for size in sizes:
        if position >= len(body):
            break
        yield body[position : position + size]
        position += size
    if position < len(body):
        yield body[position:]


def _multipart(boundary: str, parts: list[bytes]) -> bytes:
    delimiter = f"--{boundary}".encode("latin-1")
    body = b"".join(delimiter + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts)
    return body + delimiter + b"--\r\n"


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    boundary=st.text(_BOUNDARY_CHARS, min_size=0, max_size=80),
    parts=st.lists(st.binary(max_size=200), max_size=4),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=8)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 2_000)),
    sizes=st.lists(st.integers(1, 300), max_size=8),
    max_bytes=st.sampled_from([64, 1 << 20]),
)
def test_multipart_bodies_are_read_or_refused(
    tmp_path: Path,
    boundary: str,
    parts: list[bytes],
    edits: list[tuple[int, bytes]],
    cut: int | None,
    sizes: list[int],
    max_bytes: int,
) -> None:
    body = bytearray(_multipart(boundary or "b", parts))
    for position, insert in edits:
        at = position % (len(body) + 1)
        body[at : at + len(insert)] = insert
    if cut is not None:
        del body[cut:]
    started = time.perf_counter()
    received, refused = _refusal(
        lambda: asyncio.run(
            read_multipart(_chunks(bytes(body), sizes), boundary, max_bytes=max_bytes, spool_dir=tmp_path)
        ),
        InvalidRequestError,
        PayloadTooLargeError,
    )
    _timed(started)
    if refused is None:
        assert isinstance(received, list)
        assert received
        for part in received:
            part.read()
            part.close()
    assert list(tmp_path.iterdir()) == [], "a spooled part was left on disk"


# -- kiosk JSON -------------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _kiosk_message() -> dict[str, Any]:
    return {
        "device_id": "KIOSK-V21",
        "measured_at": datetime(2026, 11, 24, 9, 30, tzinfo=UTC).isoformat(),
        "resident_id": "11010519620304123X",
        "name": "王小明",
        "measurements": [
            {"type": "blood_pressure", "systolic": 132, "diastolic": 84, "unit": "mmHg"},
            {"type": "glucose", "value": 6.1, "unit": "mmol/L", "context": "fasting"},
            {"type": "urinalysis", "glucose": "-", "protein": "±", "nitrite": "neg", "ph": 6.0},
        ],
        "ecg": {"files": [{"name": "ecg.csv", "content_base64": base64.b64encode(b"I,II\n1,2\n").decode()}]},
    }


def _parse_kiosk(payload: bytes) -> None:
    started = time.perf_counter()
    _, refused = _refusal(lambda: KioskMessage.model_validate_json(payload), ValidationError)
    if isinstance(refused, ValidationError):
        error = KioskMessageError.of(refused)  # what the API and MQTT answer with
        assert error.message
        assert error.errors
        json.dumps(error.as_json())
    _timed(started)


@given(payload=st.binary(max_size=400))
def test_kiosk_bytes_are_read_or_refused(payload: bytes) -> None:
    _parse_kiosk(payload)


@given(
    path=st.lists(
        st.sampled_from(["measurements", 0, 1, 2, "ecg", "files", "name", "value", "type"]), max_size=4
    ),
    field=st.sampled_from(
        [
            "device_id",
            "measured_at",
            "resident_id",
            "name",
            "measurements",
            "ecg",
            "type",
            "value",
            "unit",
            "x",
        ]
    ),
    value=_JSON,
)
def test_kiosk_messages_with_a_field_replaced_are_read_or_refused(
    path: list[str | int], field: str, value: Any
) -> None:
    message: Any = _kiosk_message()
    node = message
    for step in path:
        into_dict = (
            isinstance(node, dict) and isinstance(step, str) and isinstance(node.get(step), dict | list)
        )
        into_list = isinstance(node, list) and isinstance(step, int) and step < len(node)
        if into_dict or into_list:
            node = node[step]
    if isinstance(node, dict):
        node[field] = value
    elif isinstance(node, list):
        node.append(value)
    _parse_kiosk(json.dumps(message, ensure_ascii=False).encode())


# -- WFDB headers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wfdb_record(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    folder = tmp_path_factory.mktemp("wfdb")
    header = write_wfdb(folder, synthetic_leads(("I", "II"), seconds=0.5), record_name="rec01")
    return header.read_bytes(), (folder / "rec01.dat").read_bytes()


_WFDB_VALUES = st.sampled_from(
    [
        "0",
        "-1",
        "1",
        "2",
        "99999999999",
        "1e308",
        "nan",
        "inf",
        "16",
        "212",
        "310",
        "8",
        "80",
        "0x10",
        "../x",
        "rec01.dat",
        "/etc/passwd",
        "",
        "200(0)/mV",
        "0/mV",
        "200/furlong",
        "12:00:00 24/11/2026",
    ]
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    replacements=st.lists(st.tuples(st.integers(0, 40), _WFDB_VALUES), min_size=1, max_size=4),
    dat_cut=st.integers(0, 2_000),
)
def test_wfdb_headers_with_fields_replaced_are_read_or_refused(
    wfdb_record: tuple[bytes, bytes], replacements: list[tuple[int, str]], dat_cut: int
) -> None:
    header, dat = wfdb_record
    lines = header.decode().splitlines()
    fields = [line.split(" ") for line in lines]
    positions = [
        (i, j) for i, words in enumerate(fields) if not lines[i].startswith("#") for j in range(len(words))
    ]
    for index, value in replacements:
        i, j = positions[index % len(positions)]
        fields[i][j] = value
    mutated = "\n".join(" ".join(words) for words in fields).encode()
    started = time.perf_counter()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _, refused = _refusal(
        lambda: read_ecg({"rec01.hea": mutated, "rec01.dat": dat[: dat_cut or len(dat)]}), EcgImportError
    )
    _timed(started)
    assert refused is None or str(refused).strip(), "a refusal must say what is wrong"
    # resident memory, not allocations: a header claiming 10^11 samples makes wfdb ask numpy for
    # 373 GiB, which fails (MemoryError, refused) or is never touched
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) >> 10
    assert grown < 256, f"peak RSS grew {grown} MiB for a {len(dat)}-byte record"


# -- hostile XML in an aECG ---------------------------------------------------------------------------

_HOSTILE_PROLOGUES = (
    # billion laughs
    '<!DOCTYPE a [<!ENTITY l0 "ha">'
    + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    + "]>",
    # external entity (XXE)
    '<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    # external DTD
    '<!DOCTYPE a SYSTEM "http://127.0.0.1:9/evil.dtd">',
    # parameter entity
    '<!DOCTYPE a [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>',
)


@given(
    prologue=st.sampled_from(_HOSTILE_PROLOGUES),
    reference=st.sampled_from(["&l9;", "&x;", "", "&undefined;"]),
)
def test_hostile_xml_in_an_aecg_is_read_without_entities_or_refused(prologue: str, reference: str) -> None:
    leads = {"I": np.arange(100) % 50, "II": np.arange(100) % 7}
    document = write_aecg(leads).decode()
    body = document.split("?>", 1)[1] if document.startswith("<?xml") else document
    body = body.replace("</AnnotatedECG>", f"<text>{reference}</text></AnnotatedECG>", 1)
    started = time.perf_counter()
    document = ('<?xml version="1.0" encoding="UTF-8"?>' + prologue + body).encode()
    record, refused = _refusal(lambda: read_ecg({"ecg.xml": document}), EcgImportError)
    _timed(started)
    assert "root:" not in str(refused)
    if refused is None:
        # only a DOCTYPE that declares no entity may pass, and nothing was fetched or expanded
        assert "ENTITY" not in prologue
        assert reference == ""
        assert "root:" not in repr(record)
