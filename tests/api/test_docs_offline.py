"""The API documentation works air-gapped (issue 13 item 11): /docs (Swagger UI) and /redoc load
their scripts, styles and icon from Enclave itself, never from a CDN, and GET / leads there.

The real check runs a real `enclave up` and headless Chromium together in a network namespace
of their own with nothing but loopback: Swagger UI's operation blocks (with Enclave's routes)
and ReDoc's operations exist in the DOM, and Swagger UI's coloured method badges in a
screenshot, only if the page's JavaScript loaded and ran. Without Chromium the module is
skipped, except in CI (``CI=true``: scripts/test.sh installs it) where it fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from matplotlib import image

from tests.conftest import CLI

PORT = 18_080  # inside a network namespace of the test's own: no other listener there
# Swagger UI's method badge colours (swagger-ui.css): GET, POST, DELETE.
BADGES = {"GET": (97, 175, 254), "POST": (73, 204, 144), "DELETE": (249, 62, 62)}

SCRIPT = r"""
set -e
ip link set lo up
"$@" up --port {port} >"$OUT/server.log" 2>&1 &
server=$!
trap 'kill $server; wait $server || true' EXIT
for _ in $(seq 300); do
  "$1" -c 'import urllib.request as u; u.urlopen("http://127.0.0.1:{port}/healthz", timeout=1)' 2>/dev/null && break
  sleep 0.1
done
# Nothing but loopback: an address on the public internet cannot even be routed to.
if "$1" -c 'import socket; socket.create_connection(("1.1.1.1", 443), timeout=2)' 2>/dev/null; then
  echo "the namespace reaches the network" >&2; exit 3
fi
browse() {{
  timeout 90 chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-extensions \
    --user-data-dir="$OUT/profile" --virtual-time-budget=15000 --window-size=1280,1600 "$@"
}}
browse --dump-dom http://127.0.0.1:{port}/docs >"$OUT/docs.html" 2>>"$OUT/chromium.log"
browse --dump-dom http://127.0.0.1:{port}/redoc >"$OUT/redoc.html" 2>>"$OUT/chromium.log"
browse --screenshot="$OUT/docs.png" http://127.0.0.1:{port}/docs 2>>"$OUT/chromium.log"
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if found is None or missing:
        why = f"needs chromium, unshare and ip ({', '.join(missing or ['chromium'])} missing)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return found


def test_docs_render_with_no_network(chromium: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "ENCLAVE_HOME": str(tmp_path / "home"), "OUT": str(out)}
    env.pop("http_proxy", None), env.pop("https_proxy", None)
    ran = subprocess.run(
        ["unshare", "--net", "bash", "-c", SCRIPT.format(port=PORT), "enclave-docs", *CLI],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    server_log = (out / "server.log").read_text() if (out / "server.log").exists() else ""
    assert ran.returncode == 0, ran.stderr + server_log

    docs = (out / "docs.html").read_text()
    paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', docs))
    assert {"/v1/jobs", "/v1/regions", "/v1/chat/completions", "/healthz"} <= paths, sorted(paths)
    assert not re.search(r'(src|href)="https?://(?!127\.0\.0\.1)', docs)  # nothing from elsewhere

    redoc = (out / "redoc.html").read_text()
    assert "api-content" in redoc and 'data-section-id="tag/jobs' in redoc, redoc[:2000]

    shot = (image.imread(out / "docs.png")[..., :3] * 255).round().astype(int)
    for method, colour in BADGES.items():
        assert (shot == colour).all(axis=-1).sum() > 1000, f"no {method} badges in the screenshot"


def test_root_leads_to_the_docs_and_the_pages_name_no_other_host(client: TestClient) -> None:
    root = client.get("/", follow_redirects=False)
    assert (root.status_code, root.headers["location"]) == (307, "/docs")
    for page, assets in (
        ("/docs", ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")),
        ("/redoc", ("redoc.standalone.js", "favicon.png")),
    ):
        html = client.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "http://" not in html.text and "https://" not in html.text, html.text
        for asset in assets:
            assert f'"/docs-assets/{asset}"' in html.text
            served = client.get(f"/docs-assets/{asset}")
            assert served.status_code == 200 and len(served.content) > 1000
    assert client.get("/docs-assets/../app.py").status_code == 404
    missing = client.get("/docs-assets/nope.js")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert "/docs" not in client.get("/openapi.json").json()["paths"]


def test_screenshot_check_sees_a_blank_page_as_blank() -> None:
    """The badge check cannot pass on a page whose JavaScript did not run (all white)."""
    blank = np.full((1600, 1280, 3), 255)
    assert all((blank == colour).all(axis=-1).sum() == 0 for colour in BADGES.values())
