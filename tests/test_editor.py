"""The web editor, driven in a real browser (the system's Chromium through Playwright) and through its
HTTP API: selecting a segment by clicking, a slider edit that changes only that segment, undo back to
the original pixels, painting and projecting a region (cancelled once, then run), an edit of the
region layer that changes only the region, export (PNG, a result folder that the API and bin/edit
continue from, the pasted-back photo of an aligned result); the token, host and body-size guards,
export names that cannot leave the working folder or replace a foreign file, errors as messages on
the page; and bin/editor serving a saved result.

One server and one browser serve every browser test; the result is made of three known codes with
hard masks (the tiny 32 px generator), so "outside the segment" is exact."""

import asyncio
import base64
import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from io import BytesIO
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from chunkygan_jax import editing, io
from chunkygan_jax.errors import ChunkyGANError
from chunkygan_jax.editor import Document, Edit, EditorSession
from chunkygan_jax.editor.server import MAX_BODY, RunningEditor, Timeouts, make_app
from chunkygan_jax.editor.session import MAX_HISTORY
from chunkygan_jax.inversion import InversionSettings
from chunkygan_jax.results import InversionResult, load_result

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
STEPS = 50  # region projections: one compiled projector for the cancelled run and the real one


# ------------------------------------------------------------------------------------------ fixtures
def _labels(r):
    lab = np.zeros((r, r), np.int64)
    lab[:, r // 2:] = 1
    lab[r // 2:, : r // 3] = 2
    return lab


_codes_and_images = jax.jit(lambda g, z: (g.mapping(z)[:, :1], g.synthesis(g.mapping(z))))


def make_result(g, *, settings=None):
    """Three W codes composited with hard masks: left-top, right half, left-bottom corner."""
    r = g.resolution
    ws, imgs = _codes_and_images(g, jnp.asarray(np.random.RandomState(5).randn(3, g.config.z_dim).astype(np.float32)))
    ws, imgs = np.asarray(ws), np.asarray(imgs, np.float32)
    lab = _labels(r)
    masks = np.stack([(lab == i).astype(np.float32) for i in range(3)])
    comp = np.einsum("nhw,nhwc->hwc", masks, imgs).astype(np.float32)
    base = InversionSettings(segments=3, space="w", steps=3, lambda_reg=0.0, lpips_net="alex",
                             lpips_resolution="full").to_dict()
    return InversionResult(target=np.clip(comp, -1, 1), composite=comp, segment_images=imgs, masks=masks,
                           latents={"codes": ws}, loss_history=np.zeros(3, np.float32),
                           final_losses={"lpips": 0.0}, settings=dict(base, **(settings or {})))


@pytest.fixture(scope="module")
def g(tiny_generator):
    return tiny_generator


@pytest.fixture(scope="module")
def directions(g, tmp_path_factory):
    folder = tmp_path_factory.mktemp("directions")
    for k in range(2):
        np.save(folder / f"dir{k}.npy", np.random.RandomState(k).randn(g.num_ws, g.w_dim).astype(np.float32))
    (folder / "broken.npy").write_bytes(b"not a numpy file")
    return folder


@pytest.fixture(scope="module")
def editor(g, directions, tiny_checkpoint, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("editor_work")
    (workdir / "edit.png").write_bytes(b"the user's own file")  # the editor must never replace it
    session = EditorSession(make_result(g, settings={"generator": str(tiny_checkpoint)}), g, workdir=workdir,
                            directions=directions, region_steps=STEPS, pca=2)
    running = RunningEditor(session)
    yield running
    running.stop()
    session.close()


@pytest.fixture(scope="module")
def page(editor):
    pw = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        # bypass_csp lets Playwright evaluate its own wait conditions; the page keeps its policy header
        pg = browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(editor.url)
        pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
        pg.js_errors = errors
        yield pg
        browser.close()


def request(editor, path, *, method="GET", body=None, token=True, headers=None):
    """(status, headers, body bytes) of a request to the editor, as a non-browser client makes it: the
    token in its header, POST bodies typed (JSON, or octet-stream for an uploaded direction)."""
    url = editor.base + path
    headers = dict(headers or {})
    if token:
        headers.setdefault("X-Editor-Token", editor.token)
    if method == "POST":
        headers.setdefault("Content-Type", "application/octet-stream" if path.startswith("/api/directions")
                           else "application/json")
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def image(editor, name="current"):
    status, _, data = request(editor, f"/api/image/{name}.png?t={time.monotonic()}")
    assert status == 200, data
    return np.asarray(Image.open(BytesIO(data)).convert("RGB")).astype(np.int16)


def stage_point(page, r, x, y):
    """Page coordinates of image pixel (x, y)'s centre."""
    box = page.locator("#stage").bounding_box()
    return box["x"] + (x + 0.5) * box["width"] / r, box["y"] + (y + 0.5) * box["height"] / r


def move_slider(page, row_index, value):
    """Drag a direction slider to `value` (input events while moving, change on release) and wait for
    the new document version."""
    version = page.evaluate("document.body.dataset.version")
    page.locator("#directions .direction").nth(row_index).locator("input[type=range]").evaluate(
        "(el, v) => { for (const x of [v / 2, v]) { el.value = String(x); el.dispatchEvent(new Event('input')); }"
        " el.dispatchEvent(new Event('change')); }", value)
    page.wait_for_function(f"document.body.dataset.version !== '{version}'", timeout=60_000)


def wait_version_change(page, version):
    page.wait_for_function(f"document.body.dataset.version !== '{version}'", timeout=60_000)


# ------------------------------------------------------------------------------------------ the browser
def test_page_shows_views_and_clicking_selects_the_segment_under_the_pointer(page, editor, g):
    r = g.resolution
    assert page.inner_text("#selection") == "all segments"
    page.mouse.click(*stage_point(page, r, 3, 3))  # segment 0 (left, top)
    assert page.inner_text("#selection") == "segments 0"
    page.mouse.click(*stage_point(page, r, 2, r - 2))  # segment 2 (left, bottom corner)
    assert page.inner_text("#selection") == "segments 0, 2"
    page.mouse.click(*stage_point(page, r, 2, r - 2))  # again: deselected
    assert page.inner_text("#selection") == "segments 0"
    # views and overlays
    page.check("input[name=view][value=photo]")
    page.wait_for_function("document.getElementById('stage').dataset.version === 'still'")
    assert "api/image/photo.png" in page.get_attribute("#view", "src")
    page.check("#show-masks")
    lit = page.evaluate("() => { const d = document.getElementById('overlay').getContext('2d')"
                        ".getImageData(0, 0, 32, 32).data; let n = 0; for (let i = 3; i < d.length; i += 4)"
                        " n += d[i] > 0; return n; }")
    assert lit == r * r  # the masks cover the image
    page.uncheck("#show-masks")
    page.check("input[name=view][value=current]")
    names = page.locator("#directions .direction .name").all_inner_texts()
    assert names == ["dir0", "dir1", "PCA 0", "PCA 1"]  # broken.npy is refused, with a message
    assert "broken.npy" in page.inner_text("#direction-errors")


def test_slider_changes_only_the_selected_segment_and_undo_restores_it(page, editor, g):
    r = g.resolution
    original = image(editor)
    np.testing.assert_array_equal(original, image(editor, "projection"))
    move_slider(page, 0, 3.0)
    assert page.locator("#edits li").all_inner_texts() == ["file:dir0.npy × 3 on segments 0"]
    edited = image(editor)
    changed = np.any(edited != original, axis=-1)
    inside = _labels(r) == 0
    assert changed[inside].mean() > 0.5, "the edit did not change the selected segment"
    assert not changed[~inside].any(), "pixels outside the selected segment changed"
    # the slider shows the edit's strength; undo brings back the original pixels exactly
    assert page.locator("#directions .direction").nth(0).locator("input[type=range]").input_value() == "3"
    version = page.evaluate("document.body.dataset.version")
    page.click("#undo")
    wait_version_change(page, version)
    np.testing.assert_array_equal(image(editor), original)
    assert page.locator("#directions .direction").nth(0).locator("input[type=range]").input_value() == "0"
    assert page.is_enabled("#redo")


def test_errors_show_as_messages_on_the_page(page, editor):
    page.check("input[name=tool][value=select]")
    page.click("#fill")  # nothing painted
    assert page.inner_text("#message") == "paint the holes to fill first"
    # a server-side refusal: the page shows the server's message, never a traceback
    page.evaluate("document.getElementById('steps').value = '0'")
    page.check("input[name=tool][value=paint]")
    x, y = stage_point(page, 32, 20, 10)
    page.mouse.click(x, y)
    try:
        page.click("#project")
        # the earlier message is an error too: wait for the server's answer to replace it
        page.wait_for_function(
            "(m => m.className === 'error' && m.textContent !== 'paint the holes to fill first')"
            "(document.getElementById('message'))")
        text = page.inner_text("#message")
        assert text.startswith("steps must be an integer in 1..") and "Traceback" not in text
    finally:  # the page is shared with the next tests
        page.click("#clear-region")
        page.fill("#steps", str(STEPS))
    assert page.js_errors == []


def test_paint_project_with_cancel_then_edit_the_region(page, editor, g):
    r = g.resolution
    page.check("input[name=tool][value=paint]")
    x0, y0 = stage_point(page, r, 20, 8)
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 9):
        page.mouse.move(*stage_point(page, r, 20 + k, 8 + 2 * k))
    page.mouse.up()
    # cancelled between steps: the projection stops at its first progress report, before the end
    page.click("#project")
    page.click("#cancel")
    page.wait_for_selector("#task-status[data-state='cancelled']", timeout=120_000)
    done = re.search(rf"cancelled after (\d+) of {STEPS} steps", page.inner_text("#task-status"))
    assert done and 0 < int(done.group(1)) < STEPS, page.inner_text("#task-status")
    assert page.locator("#layers li").count() == 1  # no layer was added
    # run it
    page.click("#project")
    page.wait_for_selector("#task-status[data-state='done']", timeout=120_000)
    page.wait_for_function("document.querySelectorAll('#layers li').length === 2")
    assert page.locator("#layers li").nth(1).inner_text().strip().startswith("Region layer 1")
    assert page.is_checked("#layers li:nth-child(2) input")  # the new layer is the edit target
    before = image(editor)
    move_slider(page, 1, 4.0)
    assert page.locator("#edits li").all_inner_texts() == ["file:dir1.npy × 4 on region layer 1"]
    after = image(editor)
    status, _, data = request(editor, "/api/image/region-1.png")
    region = np.asarray(Image.open(BytesIO(data)))[..., 3] > 0
    changed = np.any(after != before, axis=-1)
    assert changed[region].any() and not changed[~region].any()
    # Poisson compositing of the region layer, and back
    version = page.evaluate("document.body.dataset.version")
    page.check("#poisson")
    wait_version_change(page, version)
    assert not np.array_equal(image(editor), after)
    version = page.evaluate("document.body.dataset.version")
    page.uncheck("#poisson")
    wait_version_change(page, version)
    np.testing.assert_array_equal(image(editor), after)


def test_export_writes_png_and_a_result_to_continue_from(page, editor, g, directions, tmp_path):
    workdir = editor.session.workdir
    page.fill("#export-name", "edit")
    page.click("#export")
    page.wait_for_selector("#exported li")
    listed = page.locator("#exported li").all_inner_texts()
    # edit.png was there before the editor: it is kept, and the export takes the next free name
    assert listed == ["edit-2.png", "edit-2_result/ (a result folder for bin/edit)"]
    assert (workdir / "edit.png").read_bytes() == b"the user's own file"
    png = np.asarray(Image.open(workdir / "edit-2.png").convert("RGB")).astype(np.int16)
    assert png.shape == (g.resolution, g.resolution, 3)
    np.testing.assert_array_equal(png, image(editor))
    # the download link serves that file
    href = page.get_attribute("#exported a", "href")
    assert "token" not in href  # the page's links never carry the token: its cookie does
    status, _, data = request(editor, "/" + href)
    assert status == 200 and data == (workdir / "edit-2.png").read_bytes()
    # the result folder loads and continues: the API reproduces its image, bin/edit's code path edits it
    saved = load_result(workdir / "edit-2_result")
    assert saved.settings["editor"]["edits"][0]["direction"] == "file:dir1.npy"
    np.testing.assert_allclose(io.to_uint8(saved.composite), png, atol=1)
    again = editing.edit_result(saved, g, [])
    np.testing.assert_allclose(again.composite, saved.composite, atol=1e-5)
    out = tmp_path / "continued.png"
    editing.edit_saved_result(workdir / "edit-2_result", out,
                              editing.SavedEdit(direction=directions / "dir0.npy", strength=2.0))
    assert Image.open(out).size == (g.resolution,) * 2
    # exporting again under the same name replaces only the editor's own files
    status, _, body = request(editor, "/api/export", method="POST", body=json.dumps({"name": "edit"}).encode())
    assert status == 200 and json.loads(body)["files"] == ["edit-2.png", "edit-2_result"]
    assert {p.name for p in workdir.iterdir()} == {"edit-2_result", "edit-2.png", "edit.png"}
    assert page.js_errors == []


def test_fill_holes_adds_a_layer_that_keeps_the_image_outside_the_correction_region(editor, g):
    r = g.resolution
    box = np.zeros((r, r), np.uint8)
    box[4:12, 4:12] = 255  # inside segment 0, which has no edit: the same compiled projector as above
    buf = BytesIO()
    Image.fromarray(box).save(buf, format="PNG")
    body = {"region": "<svg>%%", "steps": STEPS, "target": {"segments": "all"}}
    status, _, data = request(editor, "/api/task/fill", method="POST", body=json.dumps(body).encode())
    assert status == 400 and json.loads(data)["error"] == "the region is not base64-encoded PNG data"
    body["region"] = base64.b64encode(b"GIF89a").decode()
    status, _, data = request(editor, "/api/task/fill", method="POST", body=json.dumps(body).encode())
    assert status == 400 and json.loads(data)["error"] == "the region must be a PNG image"
    body["region"] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    status, _, data = request(editor, "/api/task/fill", method="POST", body=json.dumps(body).encode())
    assert status == 400 and json.loads(data)["error"].startswith("hole filling starts from one code")
    before = image(editor)
    body["target"] = {"segments": [0]}
    status, _, data = request(editor, "/api/task/fill", method="POST", body=json.dumps(body).encode())
    assert status == 200 and json.loads(data)["state"] == "running"
    status, _, data = request(editor, "/api/edits", method="POST", body=b"{}")
    assert status == 409 and "running" in json.loads(data)["error"]  # the document waits for the task
    deadline = time.monotonic() + 120
    while (task := json.loads(request(editor, "/api/task")[2])["task"])["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert task["state"] == "done", task
    state = json.loads(request(editor, "/api/state")[2])
    assert [l["kind"] for l in state["document"]["layers"]] == ["region", "fill"]
    changed = np.any(image(editor) != before, axis=-1)
    assert not changed[box == 0].any()


# ------------------------------------------------------------------------------------------ the guards
def test_every_request_needs_the_token_and_a_local_host(editor):
    for path in ("/", "/api/state", "/static/app.js", "/api/image/photo.png"):
        assert request(editor, path, token=False)[0] == 403
        assert request(editor, path + "?token=wrong" + editor.token[:-1], token=False)[0] == 403
        assert request(editor, path)[0] == 200
    status, _, body = request(editor, "/api/state", token=False, headers={"X-Editor-Token": editor.token})
    assert status == 200 and json.loads(body)["segments"] == 3
    assert request(editor, "/api/state", headers={"Host": "evil.example:80"})[0] == 403
    status, headers, body = request(editor, "/")
    assert "default-src 'self'" in headers["content-security-policy"]
    assert editor.token not in body.decode()  # the page never holds it: a cookie carries it
    assert editor.address[0] == "127.0.0.1"


def _post_large(editor, *, chunked: bool):
    """POST a body of MAX_BODY + 1 MiB: announced by Content-Length (refused before it is read), or
    sent in chunks without a length (refused once the bytes read pass the limit)."""
    host, port = editor.address
    conn = http.client.HTTPConnection(host, port, timeout=60)
    path = "/api/directions?name=big.npy"
    headers = {"X-Editor-Token": editor.token, "Content-Type": "application/octet-stream"}
    if chunked:
        conn.request("POST", path, body=(b"x" * (1 << 20) for _ in range((MAX_BODY >> 20) + 1)),
                     encode_chunked=True, headers=headers)
    else:
        conn.putrequest("POST", path)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(MAX_BODY + (1 << 20)))
        conn.endheaders()  # the body never comes: the answer must not wait for it
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def test_bodies_are_bounded_and_errors_are_json_messages(editor):
    for chunked in (False, True):
        status, body = _post_large(editor, chunked=chunked)
        assert status == 413 and "too large" in body["error"]
    status, _, body = request(editor, "/api/edits", method="POST", body=b"{not json",
                           headers={"Content-Type": "application/json"})
    assert status == 400 and json.loads(body)["error"] == "the request body is not JSON"
    edit = {"kind": "direction", "direction": "../../etc/passwd", "strength": 1, "target": {"segments": "all"}}
    status, _, body = request(editor, "/api/edits", method="POST", body=json.dumps({"edit": edit}).encode())
    assert status == 400 and json.loads(body)["error"].startswith("unknown direction")
    status, _, body = request(editor, "/api/image/secret.png")
    assert status == 404 and "error" in json.loads(body)
    status, _, body = request(editor, "/api/directions?name=x.npy", method="POST", body=b"\x93NUMPY garbage")
    assert status == 400 and "not a numpy .npy direction file" in json.loads(body)["error"]
    # an uploaded direction: checked against the generator, kept in memory, a new id per upload
    buf = BytesIO()
    np.save(buf, np.ones((editor.session.num_ws, 7), np.float32))
    status, _, body = request(editor, "/api/directions?name=..%2Fup.npy", method="POST", body=buf.getvalue())
    assert status == 400 and "direction has shape (8, 7)" in json.loads(body)["error"]
    buf = BytesIO()
    np.save(buf, np.ones(editor.session.generator.w_dim, np.float32))
    for expected in ("upload:up", "upload:up-2"):
        status, _, body = request(editor, "/api/directions?name=..%2Fup.npy", method="POST", body=buf.getvalue())
        assert status == 200 and json.loads(body)["directions"][-1]["id"] == expected


def test_downloads_and_exports_stay_inside_the_working_folder(editor):
    workdir = editor.session.workdir
    (workdir / "foreign.png").write_bytes(b"not ours")
    for name in ("foreign.png", "..%2Fedit.png", "%2Fetc%2Fpasswd", "edit.png"):
        assert request(editor, f"/api/files/{name}")[0] == 404
    status, _, body = request(editor, "/api/export", method="POST",
                           body=json.dumps({"name": "../../../tmp/../x/.hidden"}).encode())
    assert status == 200, body
    files = json.loads(body)["files"]
    assert files == ["tmp-x-.hidden.png", "tmp-x-.hidden_result"]
    assert all((workdir / f).exists() and (workdir / f).resolve().parent == workdir for f in files)


def test_document_edits_replace_by_key_and_strength_zero_removes(g, tmp_path):
    session = EditorSession(make_result(g), g, workdir=tmp_path)
    e = Edit(("segments", (0,)), "style", 2.0, style_layer="b8.conv0", channel=3)
    doc = Document().with_edit(e)
    doc = doc.with_edit(Edit(("segments", (1,)), "style", 1.0, style_layer="b8.conv0", channel=3))
    doc = doc.with_edit(Edit(("segments", (0,)), "style", 5.0, style_layer="b8.conv0", channel=3))
    assert [(x.target, x.strength) for x in doc.edits] == [(("segments", (0,)), 5.0), (("segments", (1,)), 1.0)]
    doc = doc.with_edit(Edit(("segments", (0,)), "style", 0.0, style_layer="b8.conv0", channel=3))
    assert [x.target for x in doc.edits] == [("segments", (1,))]
    # the target is normalised: every segment listed is "all"
    assert session.parse_target({"segments": [2, 0, 1]}, Document()) == ("segments", ())
    session.close()


def test_a_result_saved_without_segment_images_opens_with_them_rendered(g, tmp_path):
    """store='none' drops the segment images from a saved result; the editor renders them from the codes."""
    from chunkygan_jax.results import load_result

    result = make_result(g)
    loaded = load_result(result.save(tmp_path / "result", store="none"))
    assert loaded.segment_images is None
    session = EditorSession(loaded, g, workdir=tmp_path)
    np.testing.assert_allclose(session.segment_images, result.segment_images, atol=1e-4)
    session.close()


def _changed_only_in(before, after, inside):
    changed = np.any(io.to_uint8(after) != io.to_uint8(before), axis=-1)
    return changed[inside].mean() > 0.3 and not changed[~inside].any()


def test_principal_direction_sliders_edit_the_chosen_segment(g, tmp_path, monkeypatch):
    monkeypatch.setenv("CHUNKYGAN_CACHE", str(tmp_path / "cache"))  # the directions are cached there
    session = EditorSession(make_result(g), g, workdir=tmp_path, pca=3)
    assert [d["id"] for d in session.state()["directions"]] == ["pca:0", "pca:1", "pca:2"]
    before = session.render()
    state = session.commit({"kind": "direction", "direction": "pca:1", "strength": 3.0, "layers": [0, 4],
                            "target": {"segments": [1]}})
    assert state["document"]["edits"] == [{"kind": "direction", "strength": 3.0, "target": {"segments": [1]},
                                           "direction": "pca:1", "layers": [0, 4]}]
    assert _changed_only_in(before, session.render(), _labels(g.resolution) == 1)
    session.close()


def _demo_result(demo_cache):
    """The demo generator and a hand-made 3-segment result of it in z (three random codes, three bands)."""
    from chunkygan_jax import demo

    dcgan = demo.load_demo_generator(cache_dir=demo_cache, fetch=False)
    r = dcgan.resolution
    z = np.random.RandomState(2).randn(3, dcgan.z_dim).astype(np.float32)
    imgs = np.asarray(jax.jit(lambda gen, c: gen.synthesize(c, "z"))(dcgan, jnp.asarray(z)), np.float32)
    masks = np.stack([(_labels(r) == i).astype(np.float32) for i in range(3)])
    comp = np.einsum("nhw,nhwc->hwc", masks, imgs)
    result = InversionResult(target=np.clip(comp, -1, 1), composite=comp, segment_images=imgs, masks=masks,
                             latents={"codes": z}, loss_history=np.zeros(1, np.float32), final_losses={},
                             settings=InversionSettings(segments=3, space="z", steps=1).to_dict())
    return dcgan, result


def test_the_demo_generator_edits_in_z_space(demo_cache, tmp_path):
    dcgan, result = _demo_result(demo_cache)
    (tmp_path / "dirs").mkdir()
    np.save(tmp_path / "dirs" / "d.npy", np.random.RandomState(0).randn(dcgan.z_dim).astype(np.float32))
    session = EditorSession(result, dcgan, workdir=tmp_path, directions=tmp_path / "dirs", pca=0)
    state = session.state()
    assert state["editable"] and state["num_ws"] is None and state["styles"] == []
    before = session.render()
    np.testing.assert_allclose(before, np.asarray(editing.render(dcgan, result.latents, result.masks)), atol=1e-5)
    edit = {"kind": "direction", "direction": "file:d.npy", "strength": 2.0, "target": {"segments": [2]}}
    session.commit(edit)
    assert _changed_only_in(before, session.render(), _labels(dcgan.resolution) == 2)
    with pytest.raises(ChunkyGANError, match="has no ws rows"):  # never silently ignored
        session.commit(dict(edit, layers=[0, 1]))
    with pytest.raises(ChunkyGANError, match="StyleSpace edits need a StyleGAN2"):
        session.parse_edit({"kind": "style", "layer": 0, "channel": 0, "strength": 1, "target": "all"})
    session.undo()
    np.testing.assert_array_equal(session.render(), before)
    session.close()


def test_export_of_an_aligned_result_pastes_back_into_the_photo(g, tmp_path):
    photo = (np.random.RandomState(3).rand(40, 48, 3) * 255).astype(np.uint8)
    photo_path = tmp_path / "photo.png"
    Image.fromarray(photo).save(photo_path)
    quad = [[10.0, 6.0], [10.0, 30.0], [34.0, 30.0], [34.0, 6.0]]  # TL, BL, BR, TR
    alignment = {"quad": quad, "landmarks": {}, "face": 0, "faces_found": 1, "photo_size": [48, 40]}
    work = tmp_path / "work"
    work.mkdir()
    session = EditorSession(make_result(g, settings={"alignment": alignment, "image": str(photo_path)}), g,
                            workdir=work)
    out = session.export("face")
    assert out["files"] == ["face.png", "face_result", "face_pasted.png"] and out["notes"] == []
    pasted = np.asarray(Image.open(work / "face_pasted.png").convert("RGB"))
    assert pasted.shape == photo.shape
    np.testing.assert_array_equal(pasted[:, :8], photo[:, :8])  # outside the quad: the photo itself
    assert np.any(pasted[10:26, 14:30] != photo[10:26, 14:30])
    # the photo is gone: the PNG and the result are still written, and the page is told why
    photo_path.unlink()
    out = session.export("face")
    assert out["files"] == ["face.png", "face_result"] and "is not there" in out["notes"][0]
    session.close()


# ------------------------------------------------------------------------------------------ bin/editor
def test_bin_editor_serves_a_saved_result_and_refuses_bad_input(g, tiny_checkpoint, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    tool = [sys.executable, str(ROOT / "bin" / "editor")]
    saved = make_result(g, settings={"generator": str(tiny_checkpoint)}).save(tmp_path / "result")
    cwd = tmp_path / "cwd"  # no --workdir: the exports' folder goes under the cache, never here
    cwd.mkdir()
    proc = subprocess.Popen(tool + [f"--latents={saved}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=cwd)
    try:
        # while it starts: --help, and a command line without a result or a photo
        help_ = subprocess.run(tool + ["--help"], capture_output=True, text=True, env=env, timeout=120)
        assert help_.returncode == 0 and "--latents" in help_.stdout and "127.0.0.1" in help_.stdout
        bad = subprocess.run(tool + [f"--workdir={tmp_path / 'w0'}"], capture_output=True, text=True, env=env,
                             timeout=120)
        assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
        assert bad.stderr.startswith("error: give either --latents") and not (tmp_path / "w0").exists()
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.match(r"editor: (http://127\.0\.0\.1:\d+/\?token=[\w-]+)$", line.strip())
            url = m.group(1) if m else None
        assert url, proc.stderr.read() if proc.poll() is not None else "no URL printed"
        base, token = url.split("/?token=")
        with urllib.request.urlopen(f"{base}/api/state?token={token}", timeout=30) as resp:
            state = json.loads(resp.read())
        workdir = Path(state["workdir"])
        assert state["segments"] == 3 and workdir.parent == (Path(os.environ["CHUNKYGAN_CACHE"]) / "editor").resolve()
        assert workdir.is_dir() and list(cwd.iterdir()) == []
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}/api/state", timeout=30)
        assert e.value.code == 403
        proc.send_signal(signal.SIGINT)  # stops the server; nothing was exported: the folder goes too
        out, _ = proc.communicate(timeout=60)
        assert "nothing exported: removed" in out and not workdir.exists() and list(cwd.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


# ------------------------------------------------------------------------------------------ hostile and concurrent use
def _region_png(r, box=(4, 12)) -> str:
    mask = np.zeros((r, r), np.uint8)
    mask[box[0]:box[1], box[0]:box[1]] = 255
    buf = BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def fresh(g, directions, tmp_path):
    """A new session and server of its own (a clean document), with short timeouts."""
    session = EditorSession(make_result(g), g, workdir=tmp_path, directions=directions, region_steps=STEPS, pca=0)
    running = RunningEditor(session, timeouts=Timeouts(headers=0.5, body=1.0, keep_alive=0.5))
    yield running
    running.stop()
    session.close()


def _post(editor, path, body):
    status, _, data = request(editor, path, method="POST", body=json.dumps(body).encode())
    return status, json.loads(data)


def _wait_task(editor, timeout=120):
    deadline = time.monotonic() + timeout
    while (task := json.loads(request(editor, "/api/task")[2])["task"])["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return task


def _edit(strength, direction="file:dir0.npy", target=None):
    return {"kind": "direction", "direction": direction, "strength": strength, "target": target or {"segments": [1]}}


def test_a_commit_queued_before_a_task_is_kept_when_the_task_lands(fresh, g):
    """The first row: a commit still on the worker when a projection starts. The projection runs after
    it, on the document with the edit, and lands as a new change on top: the edit stays."""
    session = fresh.session
    gate = threading.Event()
    session.executor.submit(gate.wait)  # the worker is busy: the commit below waits in its queue
    committed = session.request("commit", _edit(2.0))
    status, task = _post(fresh, "/api/task/project", {"region": _region_png(g.resolution), "steps": STEPS})
    assert status == 200 and task["state"] == "running"
    gate.set()
    assert committed.result(60)["document"]["edits"][0]["strength"] == 2.0
    assert _wait_task(fresh)["state"] == "done"
    doc = json.loads(request(fresh, "/api/state")[2])["document"]
    assert [e["strength"] for e in doc["edits"]] == [2.0] and len(doc["layers"]) == 1
    # undo takes back the layer only, then the edit
    assert _post(fresh, "/api/undo", {})[1]["document"]["edits"][0]["strength"] == 2.0
    assert _post(fresh, "/api/undo", {})[1]["document"]["edits"] == []


def test_a_commit_and_a_task_started_at_the_same_moment_lose_nothing(fresh, g):
    region = _region_png(g.resolution)
    for k in range(4):
        barrier, out = threading.Barrier(2), {}

        def commit():
            barrier.wait()
            out["commit"] = _post(fresh, "/api/edits", {"edit": _edit(float(k + 1), target={"segments": [k % 3]})})

        def task():
            barrier.wait()
            out["task"] = _post(fresh, "/api/task/project", {"region": region, "steps": STEPS})

        threads = [threading.Thread(target=commit), threading.Thread(target=task)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert out["task"][0] == 200, out
        assert out["commit"][0] in (200, 409), out  # 409: the task was first, and the commit would wait
        assert _wait_task(fresh)["state"] == "done"
        doc = json.loads(request(fresh, "/api/state")[2])["document"]
        assert len(doc["layers"]) == k + 1
        if out["commit"][0] == 200:
            assert {"segments": [k % 3]} in [e["target"] for e in doc["edits"] if e["strength"] == k + 1]


def test_requests_that_would_wait_for_a_task_get_409_at_once(fresh, g):
    status, _ = _post(fresh, "/api/task/project", {"region": _region_png(g.resolution), "steps": STEPS})
    assert status == 200
    buf = BytesIO()
    np.save(buf, np.ones(g.w_dim, np.float32))
    try:
        t0 = time.monotonic()
        status, _, body = request(fresh, "/api/directions?name=d.npy", method="POST", body=buf.getvalue())
        assert status == 409 and "running" in json.loads(body)["error"]
        for path, body in (("/api/edits", {"edit": _edit(1.0)}), ("/api/preview", {"edit": _edit(1.0)}),
                           ("/api/undo", {}), ("/api/export", {"name": "x"}), ("/api/blend", {"blend": "mask"})):
            assert _post(fresh, path, body)[0] == 409, path
        assert time.monotonic() - t0 < 5  # answered, not queued behind the projection
    finally:
        _post(fresh, "/api/cancel", {})
        _wait_task(fresh)


def test_request_bodies_are_checked_strictly_and_refused_with_one_line(editor):
    version = editor.session.version
    bad = [  # (body bytes, what the message says)
        (json.dumps({"edit": _edit(True)}), "strength must be a number, got true"),
        (json.dumps({"edit": _edit("1")}), 'strength must be a number, got "1"'),
        (json.dumps({"edit": _edit(None)}), "strength must be a number"),
        ('{"edit": {"kind": "direction", "direction": "file:dir0.npy", "strength": 1' + "0" * 400 + "}}",
         "more than 20 digits"),
        (json.dumps({"edit": _edit(10 ** 18)}), "strength must lie in [-100, 100]"),
        ('{"edit": {"kind": "direction", "direction": "file:dir0.npy", "strength": 1e999}}', "out of range"),
        ('{"edit": {"kind": "direction", "direction": "file:dir0.npy", "strength": NaN}}', "must be finite"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than"),
        ('{"a": "' + "[" * 10_000 + '"}', "unknown field 'a'"),  # brackets inside strings do not count
        (json.dumps({"edit": dict(_edit(1.0), layers=[-5, 99])}), "out of bounds"),
        (json.dumps({"edit": dict(_edit(1.0), layers=[0, 2.5])}), "layers[] must be an integer"),
        (json.dumps({"edit": dict(_edit(1.0), colour="red")}), "unknown field 'colour'"),
        (json.dumps({"edit": _edit(1.0, target={"segments": [True]})}), "must be an integer, got true"),
        (json.dumps({"edit": {"kind": "style", "layer": "b8.conv0", "channel": "3", "strength": 1}}),
         "channel must be an integer"),
        (json.dumps({"edit": [1, 2]}), "edit must be a JSON object"),
    ]
    for body, message in bad:
        status, _, data = request(editor, "/api/edits", method="POST", body=body.encode())
        assert status == 400 and message in json.loads(data)["error"], (body[:80], data)
    for path, body, message in (("/api/blend", {"blend": 1}, "blend must be 'mask' or 'poisson'"),
                                ("/api/task/project", {"region": "x", "steps": True}, "steps must be an integer"),
                                ("/api/task/project", {"region": "x", "steps": 1.0}, "steps must be an integer"),
                                ("/api/export", {"name": ["a"]}, "name must be a string"),
                                ("/api/undo", {"steps": 2}, "unknown field 'steps'")):
        status, data = _post(editor, path, body)
        assert status == 400 and message in data["error"], (path, data)
    assert editor.session.version == version  # nothing changed


def test_uploaded_arrays_are_checked_before_allocation_and_bounded(editor, g):
    def upload(data):
        status, _, body = request(editor, "/api/directions?name=d.npy", method="POST", body=data)
        return status, json.loads(body)

    head = BytesIO()  # declares 10^12 float64 values in a file of a few bytes
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 12,)})
    status, body = upload(head.getvalue() + b"\0" * 64)
    assert status == 400 and "declares 1000000000000 values" in body["error"]
    for array, message in ((np.full(g.w_dim, 1e38, np.float32), "direction values must lie in"),
                           (np.array(["a"] * g.w_dim), "dtype must be float32 or float64"),
                           (np.ones(g.w_dim, np.float16), "dtype must be float32 or float64")):
        buf = BytesIO()
        np.save(buf, array)
        status, body = upload(buf.getvalue())
        assert status == 400 and message in body["error"], body
    buf = BytesIO()
    np.save(buf, np.ones(g.w_dim, np.float32))
    status, body = upload(buf.getvalue()[:-4])  # one value short
    assert status == 400 and "holds 252 bytes" in body["error"]


def test_a_global_edit_keeps_the_segment_code_and_the_masks_as_the_api_does(g, directions, tmp_path):
    """The one rule for global edits (docs/editing.md): X^S and the masks stay as the inversion left them,
    in the editor as in `editing.edit_result` and bin/edit; the segment images move."""
    from chunkygan_jax.editing import DirectionEdit
    from chunkygan_jax.results import load_result

    result = make_result(g)
    xs = np.random.RandomState(7).randn(g.num_ws, g.w_dim).astype(np.float32)
    result.latents["segment_code"] = xs
    session = EditorSession(result, g, workdir=tmp_path, directions=directions, pca=0)
    ident = next(d["id"] for d in session.state()["directions"] if "dir0" in d["id"])
    session.commit({"kind": "direction", "direction": ident, "strength": 3.0, "target": "all"})
    assert session.export("global")["files"] == ["global.png", "global_result"]
    out = load_result(tmp_path / "global_result")
    np.testing.assert_array_equal(out.latents["segment_code"], xs)
    np.testing.assert_array_equal(out.masks, result.masks)
    api = editing.edit_result(result, g, [DirectionEdit(np.load(directions / "dir0.npy"), 3.0)])
    np.testing.assert_array_equal(api.latents["segment_code"], xs)
    np.testing.assert_allclose(out.composite, api.composite, atol=1e-5)
    np.testing.assert_allclose(session.render(), api.composite, atol=1e-4)  # what the page shows
    assert np.abs(out.composite - result.composite).max() > 0.05  # the edit did change the image
    session.close()


def test_the_largest_edit_of_the_largest_direction_stays_finite(g, tmp_path):
    from chunkygan_jax.editor.session import MAX_DIRECTION_VALUE, MAX_STRENGTH
    session = EditorSession(make_result(g), g, workdir=tmp_path, pca=0)
    buf = BytesIO()
    np.save(buf, np.full((g.num_ws, g.w_dim), MAX_DIRECTION_VALUE, np.float32))
    ident = session.add_direction("big.npy", buf.getvalue())["directions"][-1]["id"]
    for strength in (MAX_STRENGTH, -MAX_STRENGTH):
        session.commit({"kind": "direction", "direction": ident, "strength": strength, "target": "all"})
        assert np.all(np.isfinite(session.render()))
    session.close()


def test_browsers_need_the_editors_origin_json_and_the_cookie(fresh):
    base, token = fresh.base, fresh.token
    port = fresh.address[1]
    edit = json.dumps({"edit": _edit(1.0)}).encode()

    def post(headers, body=edit, path="/api/edits"):
        return request(fresh, path, method="POST", body=body, token=False, headers=headers)[0]

    json_type = {"Content-Type": "application/json"}
    assert post({"X-Editor-Token": token, "Origin": "https://evil.com", **json_type}) == 403
    assert post({"X-Editor-Token": token, "Content-Type": "text/plain"}) == 415
    assert post({"X-Editor-Token": token, "Content-Type": "application/x-www-form-urlencoded"}) == 415
    assert post({"X-Editor-Token": token, "Content-Type": "multipart/form-data; boundary=x"}, path="/api/undo",
                body=b"") == 415
    assert request(fresh, f"/api/edits?token={token}", method="POST", body=edit, token=False)[0] == 403
    # the printed address sets the cookie and redirects to a URL without the token
    conn = http.client.HTTPConnection(*fresh.address, timeout=30)
    conn.request("GET", f"/?token={token}")
    resp = conn.getresponse()
    resp.read()
    cookie = resp.getheader("set-cookie")
    assert resp.status == 303 and resp.getheader("location") == "/"
    assert cookie.startswith(f"chunkygan_editor_{port}={token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": cookie.split(";")[0]}
    assert request(fresh, "/static/app.js", token=False, headers=jar)[0] == 200
    assert request(fresh, "/static/app.js", token=False, headers={"Cookie": f"chunkygan_editor_{port}=x"})[0] == 403
    # a page's POST: the cookie and its own origin (browsers always send it with a POST)
    assert post({**jar, **json_type, "Origin": f"http://127.0.0.1:{port}"}) == 200
    assert post({**jar, **json_type, "Origin": f"http://localhost:{port + 1}"}) == 403
    assert post({**jar, **json_type}) == 403  # no Origin: only with the token header
    conn.close()


def test_downloads_refuse_a_link_or_another_file_put_in_place_of_an_export(fresh, tmp_path_factory):
    workdir = fresh.session.workdir
    status, out = _post(fresh, "/api/export", {"name": "shot"})
    assert status == 200 and request(fresh, "/api/files/shot.png")[0] == 200
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_bytes(b"outside the working folder")
    (workdir / "shot.png").unlink()
    (workdir / "shot.png").symlink_to(outside)
    status, _, body = request(fresh, "/api/files/shot.png")
    assert status == 404 and b"outside" not in body
    (workdir / "shot.png").unlink()
    os.link(outside, workdir / "shot.png")  # a hard link: no link to follow, but not the file written
    assert request(fresh, "/api/files/shot.png")[0] == 404


def _closed_within(sock, seconds) -> bytes:
    """What the server sent before closing `sock`, which must happen within `seconds`."""
    sock.settimeout(seconds)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_slow_clients_are_cut_off_and_a_disconnect_is_no_error(fresh, capfd, caplog):
    host, port = fresh.address
    token = fresh.token
    caplog.set_level(logging.WARNING)
    stalled = []
    for k in range(20):  # headers that never end, and connections that never say anything
        s = socket.create_connection((host, port))
        if k % 2:
            s.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        stalled.append(s)
    t0 = time.monotonic()
    status, _, _ = request(fresh, "/api/state")  # served meanwhile
    assert status == 200 and time.monotonic() - t0 < 5
    for s in stalled:
        assert _closed_within(s, 10) == b""
        s.close()
    # a chunked body that never ends: 408, then the connection is closed
    s = socket.create_connection((host, port))
    s.sendall(f"POST /api/edits HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Editor-Token: {token}\r\n"
              "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n".encode())
    assert _closed_within(s, 10).startswith(b"HTTP/1.1 408 ")
    s.close()
    # an idle keep-alive connection is closed after its answer
    s = socket.create_connection((host, port))
    s.sendall(f"GET /api/task HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Editor-Token: {token}\r\n\r\n".encode())
    assert _closed_within(s, 10).startswith(b"HTTP/1.1 200 ")
    s.close()
    # a client that goes away in the middle of its body
    s = socket.create_connection((host, port))
    s.sendall(f"POST /api/edits HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Editor-Token: {token}\r\n"
              "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"edit\"".encode())
    time.sleep(0.2)
    s.close()
    time.sleep(0.3)
    assert request(fresh, "/api/state")[0] == 200
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


def test_bin_editor_without_the_editor_extra_names_it(tmp_path):
    code = ("import runpy, sys; sys.modules['starlette'] = None; "  # what an install without the extra sees
            f"sys.argv = ['editor', '--latents={tmp_path}']; runpy.run_path({str(ROOT / 'bin' / 'editor')!r}, "
            "run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert "needs the 'editor' extra" in out.stderr and "chunkygan_jax[editor]" in out.stderr


# ------------------------------------------------------------------------------------------ property test of the API
class AsgiClient:
    """Requests straight into the editor's ASGI application (the one the server runs, guard included)
    on one event loop of its own thread (the browser tests' driver holds this thread's), without
    sockets: thousands of requests in seconds."""

    def __init__(self, app, token, port=8765):
        self.app, self.token, self.port = app, token, port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def __call__(self, method, path, body=b"", headers=None):
        headers = {"host": f"127.0.0.1:{self.port}", "x-editor-token": self.token, **(headers or {})}
        if method == "POST":
            headers.setdefault("content-type", "application/json")
        return asyncio.run_coroutine_threadsafe(self._call(method, path, body, headers), self.loop).result(120)

    async def _call(self, method, path, body, headers):
        raw_path, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode(),
                 "root_path": "", "server": ("127.0.0.1", self.port), "client": ("127.0.0.1", 40000),
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items() if v is not None]}
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        out = {"status": None, "body": b""}

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
            else:
                out["body"] += message.get("body", b"")

        await self.app(scope, receive, send)
        return out["status"], out["body"]

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class DocumentModel:
    """What the document must be: the replay of the accepted changes, kept independently of the
    session (edits keyed by target, kind and direction or channel; strength 0 removes; a change that
    changes nothing is no change; the history holds MAX_HISTORY documents)."""

    def __init__(self, num_ws, segments):
        self.num_ws, self.n = num_ws, segments
        self.history, self.pos = [((), "mask")], 0

    @property
    def doc(self):
        return self.history[self.pos]

    def normal(self, e):
        t = e.get("target")
        segs = "all" if t in (None, "all") or t["segments"] == "all" else sorted(set(t["segments"]))
        segs = "all" if segs in ([], list(range(self.n))) else segs
        out = {"kind": e["kind"], "strength": float(e["strength"]), "target": {"segments": segs}}
        if e["kind"] == "direction":
            layers = e.get("layers")
            out.update(direction=e["direction"], layers=None if layers in (None, [0, self.num_ws]) else layers)
        else:
            out.update(layer=e["layer"], channel=e["channel"])
        return out

    @staticmethod
    def key(e):
        return json.dumps({k: v for k, v in e.items() if k != "strength"}, sort_keys=True)

    def _push(self, doc):
        if doc == self.doc:
            return
        del self.history[self.pos + 1:]
        self.history.append(doc)
        if len(self.history) > MAX_HISTORY:
            del self.history[0]
        self.pos = len(self.history) - 1

    def commit(self, e):
        e = self.normal(e)
        edits = [json.loads(x) for x in self.doc[0]]
        same = [i for i, x in enumerate(edits) if self.key(x) == self.key(e)]
        if same:
            if e["strength"] == 0.0:
                del edits[same[-1]]
            else:
                edits[same[-1]] = e
        elif e["strength"] != 0.0:
            edits.append(e)
        self._push((tuple(json.dumps(x, sort_keys=True) for x in edits), self.doc[1]))

    def blend(self, b):
        self._push((self.doc[0], b))

    def undo(self) -> bool:
        self.pos -= self.pos > 0
        return True

    def as_json(self):
        return {"edits": [json.loads(x) for x in self.doc[0]], "layers": [], "blend": self.doc[1]}


@pytest.fixture(scope="module")
def api(g, directions, tmp_path_factory):
    """One session behind the in-process client, and its model, for every example."""
    session = EditorSession(make_result(g), g, workdir=tmp_path_factory.mktemp("api_work"), directions=directions,
                            pca=0)
    client = AsgiClient(make_app(session, "t0ken"), "t0ken")
    yield client, DocumentModel(g.num_ws, 3), session
    client.close()
    session.close()


def _requests():
    """A strategy of API requests, valid and invalid: (name, method, path, body bytes, headers, edit or
    None). Strengths and targets come from small sets so that most renders hit the cache."""
    from hypothesis import strategies as st

    targets = st.sampled_from([None, "all", {"segments": "all"}, {"segments": [0]}, {"segments": [2, 1]},
                               {"segments": [1, 2]}, {"segments": [0, 1, 2]}, {"segments": []}])
    strengths = st.sampled_from([-1, 0, 1, 2.5])
    direction = st.fixed_dictionaries({"kind": st.just("direction"), "strength": strengths, "target": targets,
                                       "direction": st.sampled_from(["file:dir0.npy", "file:dir1.npy"]),
                                       "layers": st.sampled_from([None, [0, 8], [2, 6]])})
    style = st.fixed_dictionaries({"kind": st.just("style"), "strength": strengths, "target": targets,
                                   "layer": st.just("b8.conv0"), "channel": st.sampled_from([0, 3])})
    valid = st.one_of(direction, style)
    corruptions = st.sampled_from([
        ("strength", True), ("strength", "1"), ("strength", 10 ** 401), ("strength", 101), ("strength", None),
        ("strength", [1]), ("target", {"segments": [5]}), ("target", {"layer": 7}), ("target", {"segments": [-1]}),
        ("target", "some"), ("layers", [-5, 99]), ("layers", [3, 3]), ("layers", [0.5, 2]), ("direction", "nope"),
        ("direction", 3), ("kind", "bogus"), ("extra", 1), ("channel", 999)])
    invalid = st.tuples(valid, corruptions).map(lambda vc: dict(vc[0], **{vc[1][0]: vc[1][1]}))
    edit_request = lambda name, path: st.one_of(  # noqa: E731
        valid.map(lambda e: (name, "POST", path, json.dumps({"edit": e}).encode(), None, e)),
        invalid.map(lambda e: (name + "_bad", "POST", path, json.dumps({"edit": e}).encode(), None, e)))
    junk = st.sampled_from([
        b"[" * 50_000 + b"]" * 50_000, b'{"edit": {"kind": "direction", "strength": NaN}}', b"{not json",
        b'{"edit": {"kind": "direction", "direction": "file:dir0.npy", "strength": 1' + b"0" * 400 + b"}}",
        b"\xff\xfe", b"[]", b'"edit"', b'{"edit": {"kind": "direction", "strength": 1e999}}'])
    bad_headers = st.sampled_from([{"content-type": "text/plain"}, {"origin": "https://evil.com"},
                                   {"x-editor-token": "wrong"}, {"host": "evil.example"},
                                   {"content-type": "application/x-www-form-urlencoded"}])
    return st.one_of(
        edit_request("commit", "/api/edits"), edit_request("commit", "/api/edits"),
        edit_request("preview", "/api/preview"),
        st.just(("undo", "POST", "/api/undo", b"", None, None)),
        st.just(("redo", "POST", "/api/redo", b"{}", None, None)),
        st.just(("undo_redo", None, None, None, None, None)),
        st.sampled_from(["mask", "poisson", "none", 1, True, None]).map(
            lambda b: ("blend", "POST", "/api/blend", json.dumps({"blend": b}).encode(), None, b)),
        junk.map(lambda body: ("junk", "POST", "/api/edits", body, None, None)),
        st.tuples(valid, bad_headers).map(lambda vh: ("refused", "POST", "/api/edits",
                                                      json.dumps({"edit": vh[0]}).encode(), vh[1], None)),
        st.just(("state", "GET", "/api/state", b"", None, None)),
        st.just(("task", "POST", "/api/task/project", json.dumps({"region": "x", "steps": 0}).encode(), None, None)),
    )


def test_the_api_under_random_request_sequences_keeps_its_invariants(api):
    """Random sequences of valid and invalid requests: never a 5xx; the document is always the replay of
    the accepted changes; undo then redo gives back the same document."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client, model, session = api

    def state():
        status, body = client("GET", "/api/state")
        assert status == 200
        return json.loads(body)

    def check(s=None):
        s = s or state()
        assert s["document"] == model.as_json()
        assert (s["can_undo"], s["can_redo"]) == (model.pos > 0, model.pos < len(model.history) - 1)

    @settings(max_examples=500, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(_requests(), min_size=1, max_size=6))
    def run(sequence):
        for name, method, path, body, headers, value in sequence:
            if name == "undo_redo":
                before = state()
                undone, _ = client("POST", "/api/undo", b"{}")
                redone, _ = client("POST", "/api/redo", b"{}")
                if undone == 200:
                    assert redone == 200 and state()["document"] == before["document"]
                else:
                    assert undone == 400 and redone in (200, 400)
                    if redone == 200:
                        model.pos += 1
                check()
                continue
            status, data = client(method, path, body, headers)
            assert status < 500, (name, status, data)
            if name in ("commit", "preview"):
                assert status == 200, (name, value, data)  # every valid edit is accepted
            if name == "commit":
                model.commit(value)
            elif name == "blend" and status == 200:
                model.blend(value)
            elif name == "undo":
                assert status == (200 if model.pos > 0 else 400)
                model.pos -= model.pos > 0
            elif name == "redo":
                assert status == (200 if model.pos < len(model.history) - 1 else 400)
                model.pos += model.pos < len(model.history) - 1
            elif name == "refused":
                assert status in (403, 415), status
            elif name in ("junk", "task", "commit_bad", "preview_bad"):
                assert status == 400, (name, data)
            elif name == "preview":
                assert data.startswith(b"\x89PNG")
            if status >= 400:
                assert "error" in json.loads(data)
            # a change answers with the new state; anything else leaves the document as it was
            check(json.loads(data) if status == 200 and name in ("commit", "undo", "redo", "blend") else None)

    run()


def test_an_unexpected_error_is_a_500_logged_once_without_the_body(caplog):
    """A 500 is a bug: the page gets a line without the exception's text, the log gets the traceback
    once with the method and path, never the request's body."""
    from starlette.requests import Request

    from chunkygan_jax.editor.server import _endpoint

    @_endpoint
    async def broken(request):
        await request.body()
        return {}["missing"]  # a bug: KeyError

    scope = {"type": "http", "method": "POST", "path": "/api/x", "headers": [], "query_string": b""}
    messages = [{"type": "http.request", "body": b"SECRET-BODY", "more_body": False}]

    async def receive():
        return messages.pop(0)

    caplog.set_level(logging.INFO, logger="chunkygan_jax.editor")
    out = []  # asyncio.run in a thread of its own: the browser tests' driver holds this thread's loop
    worker = threading.Thread(target=lambda: out.append(asyncio.run(broken(Request(scope, receive)))))
    worker.start()
    worker.join(60)
    response = out[0]
    assert response.status_code == 500
    assert json.loads(response.body) == {"error": "internal error (KeyError); the editor's terminal has the details"}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info and "POST /api/x" in errors[0].getMessage()
    assert "SECRET" not in caplog.text


# ------------------------------------------------------------------------------------------ new direction
@pytest.fixture
def demo_editor(demo_cache, tmp_path, monkeypatch):
    """An editor on the demo generator (a hand-made 3-segment result in z), its principal directions cached
    beside it (shared with tests/test_labelled_directions.py)."""
    from chunkygan_jax.editing import labelled

    monkeypatch.setenv("CHUNKYGAN_CACHE", str(demo_cache))
    dcgan, result = _demo_result(demo_cache)
    labelled.panel_seeds(dcgan, 0, 48)  # the principal directions the panel and the fit use, computed once
    session = EditorSession(result, dcgan, workdir=tmp_path, pca=0)
    running = RunningEditor(session)
    yield running
    running.stop()
    session.close()


def test_new_direction_panel_labels_fits_and_saves_a_slider(page, demo_editor):
    """The issue's criterion: in the browser, 20 samples of the demo generator labelled by a property
    computed here from their pixels (the top third's brightness): of the panel's first 40 samples, the 10
    brightest "yes" and the 10 darkest "no", the rest skipped. The page shows the library's held-out
    accuracy for those labels, at least 0.8; the saved direction becomes a slider and brightens the top
    third of held-out samples (darkens it at -2); bad bodies get 400."""
    from chunkygan_jax.editing import labelled
    from chunkygan_jax.editing.render import render_segments

    editor, g = demo_editor, demo_editor.session.generator
    # a page of its own in the module's browser: the module's page stays as it is
    tab = page.context.browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    errors = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(editor.url)
    tab.wait_for_selector("body[data-ready='1']", timeout=30_000)
    tab.wait_for_selector("#samples .sample img", timeout=60_000)
    for _ in range(3):
        tab.click("#more-samples")
    tab.wait_for_selector("#samples .sample:nth-child(48)", timeout=60_000)
    seeds = [int(s) for s in tab.eval_on_selector_all("#samples .sample", "els => els.map(e => e.dataset.seed)")]
    assert seeds == labelled.panel_seeds(g, 0, 48) and len(set(seeds)) == 48  # spread samples, in order
    r = g.resolution
    top = {}
    for s in seeds[:40]:
        status, _, body = request(editor, f"/api/sample/{s}.png")
        assert status == 200
        top[s] = np.asarray(Image.open(BytesIO(body)).convert("RGB"), np.float32)[: r // 3].mean()
    np.testing.assert_allclose(  # the tile is the generator's sample of that seed
        np.asarray(Image.open(BytesIO(request(editor, f"/api/sample/{seeds[5]}.png")[2]))),
        io.to_uint8(labelled.sample_images(g, [seeds[5]])[0]))
    ranked = sorted(top, key=top.get)
    labels = {s: 0 for s in ranked[:10]} | {s: 1 for s in ranked[-10:]}
    for s in seeds[:40]:
        mark = {0: "no", 1: "yes"}.get(labels.get(s), "skip")
        tab.locator(f"#samples .sample[data-seed='{s}'] button[data-label='{mark}']").click()
    assert tab.inner_text("#fit-status") == "10 yes, 10 no"
    tab.fill("#direction-name", "light top")
    tab.click("#fit")
    tab.wait_for_selector("#fit-status[data-accuracy]", timeout=60_000)
    expected = labelled.direction_from_labels(g, list(labels), list(labels.values()))
    shown = float(tab.get_attribute("#fit-status", "data-accuracy"))
    assert shown == pytest.approx(expected.record["accuracy"]) and shown >= 0.8  # measured: 0.85
    assert expected.record["components"] == labelled.default_components(g) and tab.is_visible("#fit-preview")
    tab.click("#save-direction")
    tab.wait_for_selector("#directions .direction[data-direction='labelled:light-top']", timeout=60_000)
    workdir = editor.session.workdir
    np.testing.assert_allclose(np.load(workdir / "light-top.npy"), expected.direction, atol=1e-5)
    record = json.loads((workdir / "light-top.json").read_text())
    assert record["name"] == "light-top" and record["labels"] == len(labels) == 20
    held = g.sample_codes(40, 1234)  # i.i.d. samples of seed 1234's stream, none of them labelled
    assert 1234 not in labels
    moved = np.concatenate([held, held + 2 * expected.direction, held - 2 * expected.direction])
    base, up, down = np.asarray(render_segments(g, moved, "z"))[:, : r // 3].mean(axis=(1, 2, 3)).reshape(3, -1)  # one program
    assert np.mean(up > base) >= 0.9 and np.mean(down < base) >= 0.9
    assert not errors
    for body in ({"labels": [[1, 2]]}, {"labels": [[-1, 1]]}, {"labels": "x"}, {"labels": [], "save": "yes"}):
        status, _, text = request(editor, "/api/labelled", method="POST", body=json.dumps(body).encode())
        assert status == 400, (body, text)
    status, _, text = request(editor, "/api/labelled", method="POST", body=b'{"labels": [[1, 1], [2, 0]]}')
    assert status == 400 and b"too few labels of a class" in text
    assert request(editor, "/api/sample/99999999999.png")[0] == 404
    for query in ("start=-1", "count=101", "start=x"):
        status, _, text = request(editor, f"/api/samples?{query}")
        assert status == 400 and b"an integer" in text, (query, text)
    tab.close()


def test_channels_acting_on_the_selected_segment(page, editor, g):
    """The StyleSpace channels ranked for the one selected segment are the library's, and a click on one
    puts it into the StyleSpace channel controls."""
    r = g.resolution
    page.check("#layers li:nth-child(1) input")  # the segments of the projection, not a region layer
    page.check("input[name=tool][value=select]")
    page.click("#clear-region")
    page.click("#clear-selection")
    page.click("#find-channels")
    page.wait_for_selector("#message.error")
    assert "select one segment" in page.inner_text("#message")
    page.locator("#stage").scroll_into_view_if_needed()  # the panels above may have scrolled the page
    page.mouse.click(*stage_point(page, r, r - 3, r // 2))  # segment 1 (the right half)
    assert page.inner_text("#selection") == "segments 1"
    page.click("#find-channels")
    page.wait_for_selector("#localized li button", timeout=120_000)
    expected = editing.localized_channels(editor.session.result, g, 1, top=8)
    shown = page.eval_on_selector_all("#localized button", "els => els.map(e => [e.dataset.layer, +e.dataset.channel])")
    assert shown == [[c["layer"], c["channel"]] for c in expected] and expected[0]["locality"] > 0.5
    page.locator("#localized button").nth(1).click()
    assert page.input_value("#style-layer") == expected[1]["layer"]
    assert page.input_value("#style-channel") == str(expected[1]["channel"])
    for body in ({"segment": 1, "region": "x"}, {}, {"segment": -1}, {"segment": 1, "top": 0}):
        status, _, text = request(editor, "/api/localized", method="POST", body=json.dumps(body).encode())
        assert status == 400, (body, text)
    status, _, text = request(editor, "/api/localized", method="POST", body=b'{"segment": 9}')
    assert status == 400 and b"unknown segment 9" in text
