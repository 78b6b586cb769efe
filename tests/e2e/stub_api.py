"""A stand-in for the Attrivue API, enough for the viewer: it serves the built frontend and
synthetic volumes with known red, blue and green content, so the browser test needs no backend,
database or worker. It follows the API contract (cookies, CSRF on writes, {detail} errors).
"""

from __future__ import annotations

import json
import mimetypes
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import nibabel as nib
import numpy as np

USERNAME = "reviewer"
PASSWORD = "stub-password"
SESSION = "stub-session"
CSRF = "stub-csrf-token"

SUBJECT_ID = 1
ATTRIBUTION_ID = 7
RUN_ID = 3
CONVERGENCE_DELTA = 0.00123

SHAPE = (64, 72, 56)
SPACING_MM = 2.5


@dataclass(frozen=True)
class SyntheticCase:
    """Volume files on one grid: an MR image, a signed relevance map and a 0/2 lesion mask."""

    image: Path
    relevance: Path
    # The same map as the server's display endpoint sends it (int8 + scl_slope).
    display: Path
    mask: Path
    stats: dict[str, float]


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _save_display(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    from backend.services.maps import encode_display

    path.write_bytes(encode_display(data, affine))
    return path


def write_synthetic_case(folder: Path) -> SyntheticCase:
    """A head-like ellipsoid with a bright lesion; positive relevance on the lesion and negative
    relevance in the mirrored healthy tissue, in the same axial plane."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])
    affine[:3, 3] = -np.array(SHAPE) * SPACING_MM / 2
    idx = np.indices(SHAPE).astype(np.float32)
    centre = (np.array(SHAPE, dtype=np.float32) - 1) / 2
    radii = np.array(SHAPE, dtype=np.float32) * np.array([0.42, 0.44, 0.4])
    r2 = sum(((idx[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    brain = r2 < 1.0
    texture = 8 * np.sin(idx[0] / 3.0) * np.cos(idx[1] / 4.0)
    image = np.where(brain, 70 + 50 * (1 - r2) + texture, 0).astype(np.float32)

    def distance2(offset: tuple[int, int, int]) -> np.ndarray:
        c = centre + np.array(offset, dtype=np.float32)
        return sum((idx[i] - c[i]) ** 2 for i in range(3))

    lesion_d2 = distance2((10, 6, 4))
    lesion = lesion_d2 <= 5.0**2
    image[lesion] = 190.0
    healthy_d2 = distance2((-12, 6, 4))
    relevance = np.exp(-lesion_d2 / (2 * 4.0**2)) - 0.6 * np.exp(-healthy_d2 / (2 * 5.0**2))
    relevance = (relevance * brain).astype(np.float32)
    mask = (lesion * 2).astype(np.uint8)

    stats = {
        "min": float(relevance.min()),
        "max": float(relevance.max()),
        "positive_mass": float(relevance[relevance > 0].sum()),
        "negative_mass": float(relevance[relevance < 0].sum()),
        "mean_abs": float(np.abs(relevance).mean()),
    }
    return SyntheticCase(
        image=_save(folder / "image.nii.gz", image, affine),
        relevance=_save(folder / "map.nii.gz", relevance, affine),
        display=_save_display(folder / "map.display.nii.gz", relevance, affine),
        mask=_save(folder / "mask.nii.gz", mask, affine),
        stats=stats,
    )


class StubApi:
    """Serves `dist` at / (SPA fallback) and the few API routes the viewer and login need."""

    def __init__(self, dist: Path, case: SyntheticCase) -> None:
        self.dist = dist
        self.case = case
        self.created = "2025-01-01T12:00:00Z"
        self.csrf_failures = 0
        self.user = {"id": 1, "username": USERNAME, "role": "user"}
        self.subject = {
            "id": SUBJECT_ID,
            "dataset_id": 1,
            "subject_key": "stub-lesion-01",
            "label": 1,
            "split": "test",
            "has_mask": True,
            "shape": list(SHAPE),
        }
        self.run = {
            "id": RUN_ID,
            "name": "stub run",
            "dataset_id": 1,
            "status": "succeeded",
            "config": {"epochs": 2, "batch_size": 2, "learning_rate": 0.001, "seed": 0},
            "metrics": {"test_auroc": 0.93},
            "job_id": 11,
            "created_at": self.created,
        }
        self.attribution = {
            "id": ATTRIBUTION_ID,
            "run_id": RUN_ID,
            "subject_id": SUBJECT_ID,
            "method": "integrated_gradients",
            "params": {"steps": 32, "baseline": "zero"},
            "status": "succeeded",
            "convergence_delta": CONVERGENCE_DELTA,
            "stats": case.stats,
            "job_id": 12,
            "created_at": self.created,
        }
        # Extra JSON routes (a callable is called with the parsed query), errors ({path: (status, detail)}), POST handlers and a count of the
        # GET requests per path, for pages beyond the viewer (tests add what they need).
        self.extra_json: dict[str, object] = {}
        self.errors: dict[str, tuple[int, str]] = {}
        self.post_routes: dict[str, object] = {}
        self.put_routes: dict[str, object] = {}
        self.patch_routes: dict[str, object] = {}
        self.delete_routes: dict[str, object] = {}
        self.extra_files: dict[str, Path] = {}
        # Server-Sent Events: path -> [(event, data)], sent at once and followed by "end".
        self.sse_routes: dict[str, list[tuple[str, object]]] = {}
        self.hits: dict[str, int] = {}
        # Seconds to wait before refusing a request without a session (a slow network).
        self.unauthenticated_delay = 0.0
        self.dataset = {
            "id": 1,
            "project_id": 1,
            "name": "stub dataset",
            "description": "synthetic",
            "created_at": self.created,
            "subject_count": 1,
        }

    def json_routes(self) -> dict[str, object]:
        listing = lambda items: {"data": items, "count": len(items)}  # noqa: E731
        return {
            "/api/v1/auth/me": self.user,
            "/api/v1/datasets": listing([self.dataset]),
            "/api/v1/datasets/1": self.dataset,
            "/api/v1/datasets/1/subjects": listing([self.subject]),
            "/api/v1/runs": listing([self.run]),
            f"/api/v1/runs/{RUN_ID}": self.run,
            f"/api/v1/subjects/{SUBJECT_ID}": self.subject,
            "/api/v1/attributions": listing([self.attribution]),
            f"/api/v1/attributions/{ATTRIBUTION_ID}": self.attribution,
            **self.extra_json,
        }

    def file_routes(self) -> dict[str, Path]:
        return {
            f"/api/v1/subjects/{SUBJECT_ID}/image.nii.gz": self.case.image,
            f"/api/v1/subjects/{SUBJECT_ID}/mask.nii.gz": self.case.mask,
            f"/api/v1/attributions/{ATTRIBUTION_ID}/map.nii.gz": self.case.relevance,
            f"/api/v1/attributions/{ATTRIBUTION_ID}/display.nii.gz": self.case.display,
            **self.extra_files,
        }

    def handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def cookies(self) -> dict[str, str]:
                jar = SimpleCookie(self.headers.get("Cookie", ""))
                return {key: morsel.value for key, morsel in jar.items()}

            def send_json(self, status: int, body: object, extra: list[str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for cookie in extra or []:
                    self.send_header("Set-Cookie", cookie)
                self.end_headers()
                self.wfile.write(data)

            def send_file(self, path: Path, content_type: str | None = None) -> None:
                data = path.read_bytes()
                guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", content_type or guessed)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def send_events(self, events: list[tuple[str, object]]) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                for name, data in [*events, ("end", {})]:
                    self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()
                self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                if not url.path.startswith("/api/"):
                    target = (stub.dist / url.path.lstrip("/")).resolve()
                    inside = target.is_relative_to(stub.dist.resolve())
                    if url.path != "/" and inside and target.is_file():
                        return self.send_file(target)
                    return self.send_file(stub.dist / "index.html", "text/html")
                if self.cookies().get("attrivue_session") != SESSION:
                    time.sleep(stub.unauthenticated_delay)
                    return self.send_json(401, {"detail": "Not authenticated"})
                stub.hits[url.path] = stub.hits.get(url.path, 0) + 1
                if url.path in stub.errors:
                    status, detail = stub.errors[url.path]
                    return self.send_json(status, {"detail": detail})
                if url.path in stub.sse_routes:
                    return self.send_events(stub.sse_routes[url.path])
                if url.path in stub.file_routes():
                    if url.path.endswith("mask.nii.gz") and parse_qs(url.query).get("drawing") != [
                        "true"
                    ]:
                        return self.send_json(400, {"detail": "the stub serves drawing masks only"})
                    return self.send_file(stub.file_routes()[url.path], "application/gzip")
                routes = stub.json_routes()
                if url.path in routes:
                    body = routes[url.path]
                    if callable(body):  # a dynamic route: called with the query
                        body = body(parse_qs(url.query))
                    return self.send_json(200, body)
                return self.send_json(404, {"detail": f"no such API route: {url.path}"})

            def do_DELETE(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                if self.cookies().get("attrivue_session") != SESSION:
                    return self.send_json(401, {"detail": "Not authenticated"})
                if self.headers.get("X-CSRF-Token") != self.cookies().get("attrivue_csrf"):
                    stub.csrf_failures += 1
                    return self.send_json(403, {"detail": "CSRF token missing or wrong"})
                if url.path in stub.delete_routes:
                    status, reply = stub.delete_routes[url.path]()  # type: ignore[operator]
                    return self.send_json(status, reply)
                return self.send_json(404, {"detail": f"no such API route: {url.path}"})

            def do_PATCH(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(length) if length else b""
                if self.cookies().get("attrivue_session") != SESSION:
                    return self.send_json(401, {"detail": "Not authenticated"})
                if self.headers.get("X-CSRF-Token") != self.cookies().get("attrivue_csrf"):
                    stub.csrf_failures += 1
                    return self.send_json(403, {"detail": "CSRF token missing or wrong"})
                if url.path in stub.patch_routes:
                    handler = stub.patch_routes[url.path]
                    status, reply = handler(json.loads(body or b"{}"))  # type: ignore[operator]
                    return self.send_json(status, reply)
                return self.send_json(404, {"detail": f"no such API route: {url.path}"})

            def do_PUT(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(length) if length else b""
                if self.cookies().get("attrivue_session") != SESSION:
                    return self.send_json(401, {"detail": "Not authenticated"})
                if self.headers.get("X-CSRF-Token") != self.cookies().get("attrivue_csrf"):
                    stub.csrf_failures += 1
                    return self.send_json(403, {"detail": "CSRF token missing or wrong"})
                if url.path in stub.put_routes:
                    status, reply = stub.put_routes[url.path](body)  # type: ignore[operator]
                    return self.send_json(status, reply)
                return self.send_json(404, {"detail": f"no such API route: {url.path}"})

            def do_POST(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(length) if length else b""
                if url.path == "/api/v1/auth/login":
                    form = json.loads(body or b"{}")
                    if form.get("username") != USERNAME or form.get("password") != PASSWORD:
                        return self.send_json(401, {"detail": "Incorrect username or password"})
                    cookies = [
                        f"attrivue_session={SESSION}; Path=/; HttpOnly; SameSite=Lax",
                        f"attrivue_csrf={CSRF}; Path=/; SameSite=Lax",
                    ]
                    token = {"access_token": "stub", "token_type": "bearer", "user": stub.user}
                    return self.send_json(200, token, cookies)
                if self.cookies().get("attrivue_session") != SESSION:
                    return self.send_json(401, {"detail": "Not authenticated"})
                if self.headers.get("X-CSRF-Token") != self.cookies().get("attrivue_csrf"):
                    stub.csrf_failures += 1
                    return self.send_json(403, {"detail": "CSRF token missing or wrong"})
                if url.path == "/api/v1/auth/logout":
                    return self.send_json(200, {"detail": "logged out"})
                if url.path in stub.post_routes:
                    handler = stub.post_routes[url.path]
                    # A multipart form (an upload) goes to its handler as the raw bytes.
                    multipart = self.headers.get("Content-Type", "").startswith("multipart/")
                    payload = body if multipart else json.loads(body or b"{}")
                    status, reply = handler(payload)  # type: ignore[operator]
                    return self.send_json(status, reply)
                return self.send_json(404, {"detail": f"no such API route: {url.path}"})

        return Handler


@dataclass
class RunningStub:
    base_url: str
    api: StubApi
    server: ThreadingHTTPServer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_stub(dist: Path, case: SyntheticCase) -> RunningStub:
    """Starts the stub on a free local port in a daemon thread."""
    api = StubApi(dist, case)
    server = ThreadingHTTPServer(("127.0.0.1", 0), api.handler())
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return RunningStub(base_url=f"http://{host}:{port}", api=api, server=server)


def add_scaled_map(
    running: RunningStub,
    folder: Path,
    attribution_id: int,
    factor: float,
    **fields: object,
) -> dict:
    """A second map of the stub's subject: the first one times `factor`, with its own fields
    (method, params, convergence_delta...); listed with the first one."""
    api = running.api
    image = nib.load(api.case.relevance)
    data = (np.asarray(image.dataobj) * factor).astype(np.float32)
    display = _save_display(folder / f"map-{attribution_id}.display.nii.gz", data, image.affine)
    stats = {k: v * factor for k, v in api.case.stats.items()}
    if factor < 0:  # a sign flip swaps the ends and the masses
        stats["min"], stats["max"] = stats["max"], stats["min"]
        stats["positive_mass"], stats["negative_mass"] = (
            stats["negative_mass"],
            stats["positive_mass"],
        )
        stats["mean_abs"] = -stats["mean_abs"]
    attribution = {**api.attribution, "id": attribution_id, "stats": stats, **fields}
    listed = api.extra_json.get("/api/v1/attributions", {"data": [api.attribution]})
    both = [*listed["data"], attribution]  # type: ignore[index]
    api.extra_json["/api/v1/attributions"] = {"data": both, "count": len(both)}
    api.extra_json[f"/api/v1/attributions/{attribution_id}"] = attribution
    api.extra_files[f"/api/v1/attributions/{attribution_id}/display.nii.gz"] = display
    return attribution
