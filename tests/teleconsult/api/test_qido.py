"""QIDO-RS: matching as C-FIND, dicom+json bodies, scope, bad queries."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from teleconsult.api.dicomweb.dicomjson import rows_to_json, rows_to_json_bytes
from teleconsult.api.dicomweb.query import DEFAULT_RETURN_KEYS
from teleconsult.storage.matching import Level
from tests.conftest import ApiClient
from tests.factories import encode, make_ecg, make_image


def _store(api: ApiClient, ds: Dataset, organisation: str = "TOWN01") -> Dataset:
    api.store.store_instance(
        encode(ds), ExplicitVRLittleEndian, calling_ae_title="TOWNUS", source_organisation=organisation
    )
    return ds


def _auth(api: ApiClient, user: str) -> dict[str, str]:
    """Bearer headers, signing in once per user and test (password hashing is slow on purpose)."""
    tokens: dict[str, dict[str, str]] = api.__dict__.setdefault("_dicomweb_tokens", {})
    if user not in tokens:
        tokens[user] = api.headers(user)
    return tokens[user]


def _get(api: ApiClient, url: str, user: str = "sono1", **headers: str):  # type: ignore[no-untyped-def]
    return api.client.get(url, headers={**_auth(api, user), **headers})  # type: ignore[attr-defined]


def _uids(body: list[dict], tag: str = "0020000D") -> set[str]:
    return {item[tag]["Value"][0] for item in body}


@pytest.fixture
def community(api: ApiClient) -> dict[str, Dataset]:
    """Studies of TOWN01 (two), TOWN02 and VILLAGE21."""
    studies = {
        "wang": _store(api, make_image(patient_name="Wang^XiaoMing=王^小明", patient_id="P1")),
        "wang2": _store(api, make_image(patient_name="王小红", patient_id="P2", charset="ISO_IR 192")),
        "li": _store(api, make_ecg(patient_name="Li^Hua=李^华", patient_id="P3"), "TOWN02"),
        "zhao": _store(
            api, make_image(patient_name="赵^六", patient_id="P4", charset="ISO_IR 192"), "VILLAGE21"
        ),
    }
    series = make_image(
        patient_id="P1",
        study_instance_uid=studies["wang"].StudyInstanceUID,
        series_instance_uid=studies["wang"].SeriesInstanceUID,
    )
    series.InstanceNumber = 2
    _store(api, series)
    return studies


def test_search_studies_returns_dicom_json(api: ApiClient, community: dict[str, Dataset]) -> None:
    wang = community["wang"]
    response = _get(api, f"/dicomweb/studies?StudyInstanceUID={wang.StudyInstanceUID}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    (study,) = response.json()
    assert study["00100010"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Wang^XiaoMing", "Ideographic": "王^小明"}],
    }
    assert study["0020000D"] == {"vr": "UI", "Value": [wang.StudyInstanceUID]}
    assert study["00080061"] == {"vr": "CS", "Value": ["US"]}
    assert study["00201206"] == {"vr": "IS", "Value": [1]}
    assert study["00201208"] == {"vr": "IS", "Value": [2]}
    assert study["00080090"] == {"vr": "PN"}  # empty: returned without a value
    assert study["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{wang.StudyInstanceUID}")
    assert list(study) == sorted(study)


_NAME_QUERIES = (
    ("PatientName=王*", {"wang", "wang2"}),
    ("PatientName=" + quote("王*"), {"wang", "wang2"}),
    ("PatientName=%E7%8E%8B%2A", {"wang", "wang2"}),
    ("00100010=" + quote("王*"), {"wang", "wang2"}),
    ("PatientName=王?红", {"wang2"}),
    ("PatientName=王%3F红", {"wang2"}),
    ("PatientName=wang^xiao*", {"wang"}),
    ("PatientName=" + quote("WANG^XIAO*", safe=""), {"wang"}),
    ("PatientName=" + quote("王^小明"), {"wang"}),
)


def test_chinese_wildcards_literal_or_percent_encoded(api: ApiClient, community: dict[str, Dataset]) -> None:
    for query, expected in _NAME_QUERIES:
        response = _get(api, f"/dicomweb/studies?{query}")
        assert response.status_code == 200, (query, response.text)
        assert _uids(response.json()) == {community[name].StudyInstanceUID for name in expected}, query


def test_fuzzymatching_is_accepted_and_already_case_insensitive(
    api: ApiClient, community: dict[str, Dataset]
) -> None:
    response = _get(api, "/dicomweb/studies?PatientName=wang*&fuzzymatching=true")
    assert _uids(response.json()) == {community["wang"].StudyInstanceUID}


def test_scope_hides_other_organisations(api: ApiClient, community: dict[str, Dataset]) -> None:
    everything = {study.StudyInstanceUID for study in community.values()}
    assert _uids(_get(api, "/dicomweb/studies", "specialist").json()) == everything
    assert _uids(_get(api, "/dicomweb/studies", "sono1").json()) == {
        community["wang"].StudyInstanceUID,
        community["wang2"].StudyInstanceUID,
    }
    assert _uids(_get(api, "/dicomweb/studies", "sono2").json()) == {
        community["li"].StudyInstanceUID,
        community["zhao"].StudyInstanceUID,
    }
    assert _get(api, "/dicomweb/studies?PatientName=李*", "sono1").json() == []


def test_study_scoped_search_outside_scope_is_empty_and_audited_denied(
    api: ApiClient, community: dict[str, Dataset]
) -> None:
    li = community["li"].StudyInstanceUID
    response = _get(api, f"/dicomweb/studies/{li}/series", "sono1")
    assert response.status_code == 200
    assert response.json() == []
    audit = api.client.app.state.audit  # type: ignore[attr-defined]
    (record,) = audit.query(actor="sono1", study_instance_uid=li)
    assert record["outcome"] == "denied"
    assert record["interface"] == "dicomweb"


def test_series_and_instances(api: ApiClient, community: dict[str, Dataset]) -> None:
    wang = community["wang"]
    series = _get(api, f"/dicomweb/studies/{wang.StudyInstanceUID}/series").json()
    assert _uids(series, "0020000E") == {wang.SeriesInstanceUID}
    assert series[0]["00201209"] == {"vr": "IS", "Value": [2]}
    assert series[0]["00081190"]["Value"][0].endswith(f"/series/{wang.SeriesInstanceUID}")
    instances = _get(
        api, f"/dicomweb/studies/{wang.StudyInstanceUID}/series/{wang.SeriesInstanceUID}/instances"
    ).json()
    assert len(instances) == 2
    assert [item["00200013"]["Value"][0] for item in instances] == [1, 2]
    assert instances[0]["00080016"]["Value"] == [wang.SOPClassUID]
    assert instances[0]["00081190"]["Value"][0].endswith(f"/instances/{instances[0]['00080018']['Value'][0]}")
    assert len(_get(api, f"/dicomweb/studies/{wang.StudyInstanceUID}/instances").json()) == 2
    all_series = _get(api, "/dicomweb/series?Modality=US", "specialist").json()
    assert len(all_series) == 3
    assert all("00100010" in item for item in all_series)  # study attributes included at /series
    ecg = _get(api, "/dicomweb/instances?SOPClassUID=1.2.840.10008.5.1.4.1.1.9.1.1", "specialist").json()
    assert _uids(ecg) == {community["li"].StudyInstanceUID}


def test_matching_keys_date_range_uid_list_and_modalities(
    api: ApiClient, community: dict[str, Dataset]
) -> None:
    a, b = community["wang"].StudyInstanceUID, community["wang2"].StudyInstanceUID
    assert _uids(_get(api, f"/dicomweb/studies?StudyInstanceUID={a},{b}").json()) == {a, b}
    assert _uids(_get(api, f"/dicomweb/studies?StudyInstanceUID={a}%5C{b}").json()) == {a, b}
    assert len(_get(api, "/dicomweb/studies?StudyDate=20260101-20261231").json()) == 2
    assert _get(api, "/dicomweb/studies?StudyDate=20270101-").json() == []
    assert len(_get(api, "/dicomweb/studies?ModalitiesInStudy=CT,US", "specialist").json()) == 3
    assert _uids(_get(api, "/dicomweb/studies?PatientID=P3", "specialist").json()) == {
        community["li"].StudyInstanceUID
    }


def test_includefield_limit_offset(api: ApiClient, community: dict[str, Dataset]) -> None:
    body = _get(
        api, "/dicomweb/studies?includefield=00080080,IssuerOfPatientID&includefield=Manufacturer"
    ).json()
    assert body[0]["00080080"]["Value"] == ["Township Health Centre 1"]
    assert body[0]["00100021"]["Value"] == ["TOWN01"]
    assert body[0]["00080070"] == {"vr": "LO"}  # not indexed: returned empty
    everything = _get(api, "/dicomweb/studies?includefield=all", "specialist").json()
    assert len(everything) == 4
    pages = [
        _get(api, f"/dicomweb/studies?limit=3&offset={offset}", "specialist").json() for offset in (0, 3)
    ]
    assert [len(page) for page in pages] == [3, 1]
    assert _uids(pages[0]) | _uids(pages[1]) == _uids(everything)


def test_results_over_the_maximum_carry_a_warning(api: ApiClient, community: dict[str, Dataset]) -> None:
    api.client.app.state.settings = api.settings.model_copy(update={"http_qido_max_results": 2})  # type: ignore[attr-defined]
    try:
        response = _get(api, "/dicomweb/studies", "specialist")
        assert len(response.json()) == 2
        assert response.headers["warning"].startswith("299 ")
        assert "warning" not in _get(api, "/dicomweb/studies?limit=1", "specialist").headers
    finally:
        api.client.app.state.settings = api.settings  # type: ignore[attr-defined]


def test_no_match_is_an_empty_array(api: ApiClient) -> None:
    response = _get(api, "/dicomweb/studies?PatientID=nobody")
    assert response.status_code == 200
    assert response.json() == []


_BAD_QUERIES = (
    ("Foo=1", "Foo"),
    ("0009ABCD=1", "0009ABCD"),
    ("Manufacturer=GE", "Manufacturer"),
    ("Modality=US", "Modality"),
    ("NumberOfStudyRelatedSeries=2", "NumberOfStudyRelatedSeries"),
    ("includefield=Bogus", "Bogus"),
    ("limit=0", "limit"),
    ("limit=ten", "limit"),
    ("offset=-1", "offset"),
    ("fuzzymatching=maybe", "fuzzymatching"),
    ("PatientID=a&PatientID=b", "PatientID"),
    ("00101002.00100020=x", "00101002.00100020"),
    # Numbers SQL cannot bind and characters PostgreSQL refuses are 400, not a server error.
    ("offset=9223372036854775808", "offset"),
    ("limit=2147483648", "limit"),
    ("PatientID=P1%00", "PatientID"),
    ("StudyDescription=%1B%24B", "StudyDescription"),
    ("includefield=", "includefield"),
    ("includefield=,", "includefield"),
)


def test_bad_queries_are_400_problems_naming_the_key(api: ApiClient) -> None:
    for query, named in _BAD_QUERIES:
        response = _get(api, f"/dicomweb/studies?{query}")
        assert response.status_code == 400, (query, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert named in response.json()["detail"], query


def test_integer_keys_out_of_range_are_400(api: ApiClient) -> None:
    for query in ("SeriesNumber=2147483648", "InstanceNumber=-2147483649"):
        response = _get(api, f"/dicomweb/instances?{query}")
        assert response.status_code == 400, (query, response.text)
        assert query.partition("=")[0] in response.json()["detail"]
    assert _get(api, "/dicomweb/series?SeriesNumber=2147483647").json() == []
    assert _get(api, "/dicomweb/series?SeriesNumber=one").json() == []  # not a number: matches nothing


def test_study_keys_match_at_lower_levels(api: ApiClient, community: dict[str, Dataset]) -> None:
    series = _get(api, "/dicomweb/series?ModalitiesInStudy=US&PatientID=P1")
    assert series.status_code == 200, series.text
    assert _uids(series.json(), "0020000E") == {community["wang"].SeriesInstanceUID}
    instances = _get(
        api, f"/dicomweb/studies/{community['wang'].StudyInstanceUID}/instances?ModalitiesInStudy=US"
    )
    assert instances.status_code == 200, instances.text
    assert len(instances.json()) == 2


def test_invalid_uid_in_path_is_400(api: ApiClient) -> None:
    for path in ("/dicomweb/studies/1.2.abc/series", "/dicomweb/studies/1.2.3/series/01.2/instances"):
        response = _get(api, path)
        assert response.status_code == 400
        assert response.json()["code"] == "invalid-uid"


def test_study_uid_given_twice_is_400(api: ApiClient) -> None:
    response = _get(api, "/dicomweb/studies/1.2.3/series?StudyInstanceUID=1.2.4")
    assert response.status_code == 400


def test_unauthenticated_and_unacceptable(api: ApiClient) -> None:
    response = api.client.get("/dicomweb/studies")  # type: ignore[attr-defined]
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert _get(api, "/dicomweb/studies", accept="application/dicom+xml").status_code == 406
    assert _get(api, "/dicomweb/studies", accept="application/json").status_code == 200


def test_each_search_is_audited_with_level_and_count(api: ApiClient, community: dict[str, Dataset]) -> None:
    _get(api, "/dicomweb/studies?PatientID=P1", "doctor1")
    audit = api.client.app.state.audit  # type: ignore[attr-defined]
    (record,) = [r for r in audit.query(actor="doctor1") if r["action"] == "query"]
    assert record["outcome"] == "success"
    assert record["patient_id"] == "P1"
    assert record["detail"] == f"{Level.STUDY.value} level, 1 matches"


def test_every_dicomweb_route_is_documented(api: ApiClient) -> None:
    schema = api.client.get("/openapi.json").json()  # type: ignore[attr-defined]
    operations = {
        (path, method): operation
        for path, item in schema["paths"].items()
        if path.startswith("/dicomweb")
        for method, operation in item.items()
    }
    assert len(operations) == 21  # QIDO 6, WADO 13, STOW 2
    for (path, method), operation in operations.items():
        assert operation["summary"], (path, method)
        assert {"401", "400"} <= set(operation["responses"]), (path, method)
        success = operation["responses"].get("200")
        assert success is not None, (path, method)
        assert success["content"], (path, method)
    stow = schema["paths"]["/dicomweb/studies"]["post"]
    assert {"200", "202", "409", "413", "415"} <= set(stow["responses"])
    assert "multipart/related" in stow["requestBody"]["content"]


def test_error_answers_are_documented_as_problems(api: ApiClient) -> None:
    schema = api.client.get("/openapi.json").json()  # type: ignore[attr-defined]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert {"type", "title", "status", "detail", "instance", "code"} <= set(
        schema["components"]["schemas"]["Problem"]["properties"]
    )
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if operation.get("security"):
                assert "401" in operation["responses"], (path, method)
            for status, response in operation["responses"].items():
                if status >= "400" and not (path.startswith("/dicomweb/studies") and status == "409"):
                    assert list(response["content"]) == ["application/problem+json"], (path, method, status)


_KEYWORDS = (
    *DEFAULT_RETURN_KEYS[Level.STUDY],
    *DEFAULT_RETURN_KEYS[Level.SERIES],
    *DEFAULT_RETURN_KEYS[Level.IMAGE],
)
_INDEX_VALUES = st.one_of(
    st.none(),
    st.text(alphabet=st.sampled_from('a王^=\\"\x00\n 1.-e'), max_size=12),
    st.integers(-(2**31), 2**31 - 1),
    st.sampled_from(["12", "1.50", "-0", "1e3", "nan", "inf", "3\\4"]),
)


@given(st.lists(st.dictionaries(st.sampled_from(_KEYWORDS), _INDEX_VALUES), max_size=4))
def test_search_json_text_is_the_dicom_json_of_the_rows(rows: list[dict[str, Any]]) -> None:
    """The fast writer of search answers gives exactly the objects of the reference builder."""
    constants = {"00080056": {"vr": "CS", "Value": ["ONLINE"]}}

    def url(row: Any) -> str:
        return f"http://h/dicomweb/studies/{row.get('StudyInstanceUID')}"

    expected = rows_to_json(
        rows,
        _KEYWORDS,
        constants=constants,
        computed={"00081190": lambda row: {"vr": "UR", "Value": [url(row)]}},
    )
    # As the index gives them: a column per keyword any row has (and the one RetrieveURL is
    # made of), values in column order; other keywords are no column at all.
    columns = sorted({"StudyInstanceUID", *(keyword for row in rows for keyword in row)})
    table = [tuple(row.get(keyword) for keyword in columns) for row in rows]
    text = rows_to_json_bytes(
        columns,
        table,
        _KEYWORDS,
        constants=constants,
        computed={"00081190": ("UR", ("StudyInstanceUID",), lambda uid: url({"StudyInstanceUID": uid}))},
    )
    assert json.loads(text) == expected
