"""The app at / behind every API route, with its security headers (issue 7)."""

from __future__ import annotations

from tests.conftest import ApiClient
from web_client import STATIC_DIR


def test_the_app_is_served_at_the_root_with_strict_security_headers(api: ApiClient) -> None:
    response = api.client.get("/")  # type: ignore[attr-defined]
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    csp = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "unsafe" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"

    script = api.client.get("/js/main.js")  # type: ignore[attr-defined]
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert script.headers["content-security-policy"] == csp
    missing = api.client.get("/no-such-page.html")  # type: ignore[attr-defined]
    assert missing.status_code == 404
    assert missing.headers["x-content-type-options"] == "nosniff"


def test_the_app_never_shadows_the_api(api: ApiClient) -> None:
    client = api.client
    unknown = client.get("/api/no-such-route")  # type: ignore[attr-defined]
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    wrong_method = client.delete("/api/consults")  # type: ignore[attr-defined]
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == "application/problem+json"
    for path in ("/dicomweb/no-such", "/fhir/no-such", "/healthz/x"):
        answer = client.get(path)  # type: ignore[attr-defined]
        assert answer.headers["content-type"] == "application/problem+json", path
    assert client.get("/healthz").json()["status"] == "ok"  # type: ignore[attr-defined]
    assert client.get("/metrics").status_code == 200  # type: ignore[attr-defined]
    docs = client.get("/docs")  # type: ignore[attr-defined]
    assert docs.status_code == 200
    assert "content-security-policy" not in docs.headers, "Swagger UI keeps working"
    paths = client.get("/openapi.json").json()["paths"]  # type: ignore[attr-defined]
    assert "/" not in paths
    assert not [path for path in paths if path.startswith(("/js", "/css", "/i18n"))]
    assert client.get("/api/consults").status_code == 401  # type: ignore[attr-defined]
