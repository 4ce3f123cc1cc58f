"""Hostile requests to the JSON API, table-driven and in-process (docs/api.md: errors).

Every case must be refused with the 4xx status the table names (never a 500), as a JSON
`{"error": ...}` of one line that names the key, field or file at fault, and the refusal must write
nothing: no queued job, no stored upload, no new file under the runs folder.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from viewer_helpers import make_run

from gen3d.server.app import create_app
from gen3d.server.guards import AccessPolicy
from gen3d.server.jobkinds import JOB_KINDS
from gen3d.server.jobqueue import QUEUE_FILE, JobQueue
from gen3d.server.submissions import MAX_JSON_BYTES
from gen3d.server.uploads import MAX_UPLOAD_BYTES

DONE_RUN = "20250101-000000-text-to-3d-box"
TOKEN = "hostile-test-token-0123456789"
LOOPBACK = "http://127.0.0.1"
NESTED = "[" * 100_000 + "]" * 100_000


def png(size=(8, 8), mode="RGB", fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format=fmt)
    return buffer.getvalue()


def post_json(body, **extra) -> dict:
    return {"method": "POST", "url": "/api/jobs", "json": body, **extra}


def post_raw(content: bytes, content_type: str | None = "application/json") -> dict:
    headers = {"content-type": content_type} if content_type else {}
    return {"method": "POST", "url": "/api/jobs", "content": content, "headers": headers}


def post_form(data: dict, files=None) -> dict:
    return {"method": "POST", "url": "/api/jobs", "data": data, "files": files}


def get(url: str, **extra) -> dict:
    return {"method": "GET", "url": url, **extra}


def selftest(**options) -> dict:
    return post_json({"kind": "selftest", "options": options})


def text3d(**options) -> dict:
    return post_json({"kind": "text-to-3d", "options": {"prompt": "a cube", **options}})


def scene(path: str) -> dict:
    return post_json({"kind": "reconstruct", "options": {"scene": path}})


# (case id, request, expected status, fragment the error must contain); "{outside}" and "{runs}" are
# replaced by a folder outside the runs folder and the runs folder itself.
CASES = [
    # bodies that are not what they claim to be
    ("json-truncated", post_raw(b'{"kind": "selftest"'), 400, "request body: not valid JSON"),
    ("json-array-body", post_json(["selftest"]), 400, "request body"),
    ("json-string-body", post_json("selftest"), 400, "request body"),
    ("json-invalid-utf8", post_raw(b"\xff\xfe{}"), 400, "request body"),
    ("json-nested-100k", post_raw(NESTED.encode()), 400, "nested too deeply"),
    ("json-nested-in-options", post_raw(b'{"kind": "selftest", "options": {"seed": ' + NESTED.encode() + b"}}"), 400,
     "nested too deeply"),
    ("json-5000-digit-int", post_raw(b'{"kind": "selftest", "options": {"seed": ' + b"9" * 5000 + b"}}"), 400,
     "request body: not valid JSON"),
    ("json-over-limit", post_raw(b'{"kind": "' + b"x" * MAX_JSON_BYTES + b'"}'), 413, "request body"),
    ("json-nan-seed", post_raw(b'{"kind": "selftest", "options": {"seed": NaN}}'), 400, "options.seed"),
    ("json-infinite-float", post_raw(b'{"kind": "selftest", "options": {"step_seconds": Infinity}}'), 400,
     "options.step_seconds"),
    ("content-type-text", post_raw(b"kind=selftest", "text/plain"), 415, "application/json"),
    ("content-type-missing", post_raw(b'{"kind": "selftest"}', None), 415, "application/json"),
    ("unknown-top-level-key", post_json({"kind": "selftest", "options": {}, "run_as": "root"}), 400, "run_as"),
    ("kind-missing", post_json({"options": {}}), 400, "kind"),
    ("kind-list", post_json({"kind": ["selftest"]}), 400, "kind"),
    ("kind-number", post_json({"kind": 7}), 400, "kind"),
    ("kind-unknown", post_json({"kind": "rm-rf"}), 400, "kind: unknown job kind"),
    ("kind-huge", post_json({"kind": "k" * 100_000}), 400, "kind: unknown job kind"),
    ("kind-traversal", post_json({"kind": "../selftest"}), 400, "kind: unknown job kind"),
    ("options-list", post_json({"kind": "selftest", "options": [1, 2]}), 400, "options"),
    ("options-string", post_json({"kind": "selftest", "options": "steps=3"}), 400, "options"),
    ("option-unknown", selftest(colour="red"), 400, "options.colour"),
    ("option-dunder", selftest(__class__="x"), 400, "options.__class__"),
    # wrong types and ranges
    ("steps-string", selftest(steps="many"), 400, "options.steps"),
    ("steps-bool", selftest(steps=True), 400, "options.steps"),
    ("steps-fraction", selftest(steps=1.5), 400, "options.steps"),
    ("steps-huge", selftest(steps=10**30), 400, "options.steps"),
    ("steps-zero", selftest(steps=0), 400, "options.steps"),
    ("step-seconds-negative", selftest(step_seconds=-1), 400, "options.step_seconds"),
    ("fail-not-bool", selftest(fail="maybe"), 400, "options.fail"),
    ("prompt-object", post_json({"kind": "text-to-3d", "options": {"prompt": {"$ne": ""}}}), 400, "options.prompt"),
    ("prompt-empty", post_json({"kind": "text-to-3d", "options": {"prompt": "   "}}), 400, "options.prompt"),
    ("prompt-too-long", post_json({"kind": "text-to-3d", "options": {"prompt": "a" * 10_000}}), 400,
     "options.prompt"),
    ("prompt-nul", post_json({"kind": "text-to-3d", "options": {"prompt": "a\x00b"}}), 400, "options.prompt"),
    ("prompt-newline", post_json({"kind": "text-to-3d", "options": {"prompt": "a\n--out /etc"}}), 400,
     "options.prompt"),
    ("prior-traversal", text3d(prior="../../etc"), 400, "options.prior"),
    ("prior-uppercase-shell", text3d(prior="$(reboot)"), 400, "options.prior"),
    ("prior-unknown", text3d(prior="gpt-5"), 400, "options.prior: unknown prior 'gpt-5'"),
    ("set-dict", text3d(set={"a": "b"}), 400, "options.set"),
    ("set-too-many", text3d(set=[f"k{i}=1" for i in range(33)]), 400, "options.set"),
    ("set-not-override", text3d(set=["--out=/tmp/x"]), 400, "options.set"),
    ("set-number-item", text3d(set=[5]), 400, "options.set"),
    ("views-negative", post_json({"kind": "reconstruct", "options": {"scene": "{runs}/scene", "views": -3}}), 400,
     "options.views"),
    # seeds (the server's range is 0 .. 2**31 - 1)
    ("seed-negative", selftest(seed=-1), 400, "options.seed"),
    ("seed-over-range", selftest(seed=2**31), 400, "options.seed"),
    ("seed-400-digits", selftest(seed=10**400), 400, "options.seed"),
    ("seed-text", selftest(seed="12abc"), 400, "options.seed"),
    ("seed-bool", selftest(seed=True), 400, "options.seed"),
    ("seed-fraction", selftest(seed=1.5), 400, "options.seed"),
    ("seed-list", selftest(seed=[1]), 400, "options.seed"),
    # files on the server: confined to the runs folder (and the bundled configs)
    ("scene-etc", scene("/etc"), 400, "options.scene: /etc is outside"),
    ("scene-relative-escape", scene("../../../../../../etc"), 400, "options.scene"),
    ("scene-outside-runs", scene("{outside}"), 400, "is outside the folders"),
    ("scene-symlink-out", scene("{runs}/link-out"), 400, "is outside the folders"),
    ("scene-nul", scene("/tmp/a\x00b"), 400, "options.scene"),
    ("scene-not-a-string", scene(["/etc"]), 400, "options.scene"),
    ("config-passwd", text3d(config="/etc/passwd"), 400, "options.config: /etc/passwd is outside"),
    ("config-home", text3d(config="~root/.bashrc"), 400, "options.config"),
    ("config-unknown-user", text3d(config="~no-such-user-gen3d/x.yaml"), 400, "options.config"),
    ("config-not-yaml-in-runs", text3d(config="{runs}/queue.sqlite3"), 400, "options.config"),
    ("image-server-path", post_json({"kind": "image-to-3d", "options": {"image": "/etc/passwd"}}), 400,
     "options.image: /etc/passwd is outside"),
    ("set-path-outside", text3d(set=["data.root=/etc"]), 400, "options.set: /etc is outside"),
    ("set-home-path", text3d(set=["model_path=~/.ssh"]), 400, "options.set"),
    ("set-path-nul", text3d(set=["model_path=/x\x00y"]), 400, "options.set"),
    # resume
    ("resume-finished-run", post_json({"kind": "resume", "options": {"run": DONE_RUN}}), 400, "already done"),
    ("resume-traversal", post_json({"kind": "resume", "options": {"run": "../" + DONE_RUN}}), 400, "options.run"),
    ("resume-huge-id", post_json({"kind": "resume", "options": {"run": "r" * 5000}}), 400, "options.run"),
    ("resume-missing", post_json({"kind": "resume", "options": {}}), 400, "options.run: is required"),
    # ids and query parameters
    ("job-id-40-digits", get("/api/jobs/" + "9" * 40), 422, "job_id"),
    ("cancel-id-40-digits", {"method": "POST", "url": "/api/jobs/" + "9" * 40 + "/cancel"}, 422, "job_id"),
    ("job-output-id-huge", get("/api/jobs/" + "9" * 5000 + "/output"), 422, "job_id"),
    ("job-id-zero", get("/api/jobs/0"), 422, "job_id"),
    ("job-id-negative", get("/api/jobs/-1"), 422, "job_id"),
    ("job-id-text", get("/api/jobs/abc"), 422, "job_id"),
    ("job-missing", get("/api/jobs/424242"), 404, "no job 424242"),
    ("jobs-status-unknown", get("/api/jobs?status=" + "x" * 5000), 400, "status"),
    ("run-id-huge", get("/api/runs/" + "a" * 5000), 404, "no run"),
    ("run-id-dotdot", get("/api/runs/..%2F..%2Fetc"), 404, "no API endpoint"),
    ("run-file-traversal", get(f"/api/runs/{DONE_RUN}/files/..%2F..%2Fqueue.sqlite3"), 404, "no file"),
    ("run-file-huge-path", get(f"/api/runs/{DONE_RUN}/files/" + "d/" * 3000 + "x"), 404, "no file"),
    ("events-since-huge", get(f"/api/runs/{DONE_RUN}/events?since=" + "9" * 5000), 422, "since"),
    ("unknown-endpoint", get("/api/admin"), 404, "/api/admin"),
    # who may ask
    ("host-rebinding", get("/api/runs", headers={"host": "attacker.example:7860"}), 421, "Host 'attacker.example"),
    ("host-rebinding-page", get("/", headers={"host": "attacker.example"}), 421, "--allow-host"),
    ("host-lookalike", get("/api/runs", headers={"host": "127.0.0.1.attacker.example"}), 421, "Host"),
    ("host-empty", get("/api/runs", headers={"host": ""}), 400, "Host"),
    ("cross-origin-post", selftest() | {"headers": {"origin": "http://attacker.example"}}, 403, "attacker.example"),
    ("token-missing", get("/api/runs", client="token"), 401, "token"),
    ("token-wrong-bearer", get("/api/runs", client="token", headers={"authorization": "Bearer nope"}), 401,
     "wrong token"),
    ("token-wrong-query", get("/api/runs?token=nope", client="token"), 401, "wrong token"),
    ("token-wrong-cookie", get("/api/runs", client="token", cookies={AccessPolicy(token=TOKEN).cookie_name: "nope"}),
     401, "wrong token"),
    ("token-basic-scheme", get("/api/runs", client="token", headers={"authorization": f"Basic {TOKEN}"}), 401,
     "token"),
    ("token-missing-on-submit", selftest() | {"client": "token"}, 401, "token"),
    ("token-wrong-on-page", get("/?token=nope", client="token"), 401, "wrong token"),
    # uploads
    ("upload-oversized", post_form({"kind": "image-to-3d"},
                                   {"image": ("a.png", b"\x89PNG" + b"\0" * (MAX_UPLOAD_BYTES + 1024))}), 413, "MiB"),
    ("upload-not-an-image", post_form({"kind": "image-to-3d"}, {"image": ("a.png", b"#!/bin/sh\nrm -rf /")}), 400,
     "options.image"),
    ("upload-gif", post_form({"kind": "image-to-3d"}, {"image": ("a.gif", png(fmt="GIF"))}), 400, "options.image"),
    ("upload-too-many-pixels", post_form({"kind": "image-to-3d"}, {"image": ("a.png", png((8000, 7000), "1"))}), 400,
     "megapixels"),
    ("upload-two-files", post_form({"kind": "image-to-3d"}, [("image", ("a.png", png())), ("image", ("b.png", png()))]),
     400, "request body"),
    ("upload-unknown-field", post_form({"kind": "image-to-3d", "out": "/etc"}, {"image": ("a.png", png())}), 400,
     "out: unknown form field"),
    ("upload-options-nested", post_form({"kind": "image-to-3d", "options": NESTED}, {"image": ("a.png", png())}), 400,
     "options: JSON nested too deeply"),
    ("upload-options-not-json", post_form({"kind": "image-to-3d", "options": "{seed: 1"}, {"image": ("a.png", png())}),
     400, "options: not valid JSON"),
    ("upload-kind-missing", post_form({"options": "{}"}, {"image": ("a.png", png())}), 400, "kind"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Runs folder with one finished run and a symlink out; an open and a token-protected server on it."""
    root = tmp_path_factory.mktemp("hostile")
    runs, outside = root / "runs", root / "outside"
    runs.mkdir()
    outside.mkdir()
    (outside / "transforms.json").write_text("{}")
    make_run(runs, DONE_RUN, inputs={"prompt": "a box"})
    (runs / "scene").mkdir()
    (runs / "scene" / "transforms.json").write_text("{}")
    os.symlink(outside, runs / "link-out")
    kinds = set(JOB_KINDS)
    clients = {"open": TestClient(create_app(runs, available=kinds), base_url=LOOPBACK),
               "token": TestClient(create_app(runs, available=kinds, policy=AccessPolicy(token=TOKEN)),
                                   base_url=LOOPBACK)}
    return {"runs": runs, "outside": outside, "clients": clients}


def _fill(value, world):
    if isinstance(value, str):
        return value.replace("{runs}", str(world["runs"])).replace("{outside}", str(world["outside"]))
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, world) for v in value]
    return value


def _written(runs: Path) -> set[str]:
    """Everything under the runs folder but the queue database (whose WAL files any read may touch)."""
    return {str(p.relative_to(runs)) for p in runs.rglob("*") if not p.name.startswith(QUEUE_FILE)}


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 40 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("request_spec, status, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_request_is_refused_cleanly(world, request_spec: dict, status: int, fragment: str):
    spec = dict(request_spec)
    client = world["clients"][spec.pop("client", "open")]
    if "json" in spec:
        spec["json"] = _fill(spec["json"], world)
    cookies = spec.pop("cookies", None)
    before = _written(world["runs"])
    client.cookies.clear()
    if cookies:
        client.cookies.update(cookies)
    response = client.request(spec.pop("method"), spec.pop("url"), **spec)
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert fragment in error and "\n" not in error and len(error) < 600, error[:600]
    assert "Traceback" not in response.text
    assert _written(world["runs"]) == before
    assert JobQueue(world["runs"] / QUEUE_FILE).list() == []


def test_stream_with_a_huge_last_event_id_still_answers(world):
    headers = {"last-event-id": "9" * 5000}
    with world["clients"]["open"].stream("GET", f"/api/runs/{DONE_RUN}/stream", headers=headers) as response:
        assert response.status_code == 200
        assert "event: end" in response.read().decode()
