"""End-to-end tests in a real browser: headless Chromium (Debian's, never a downloaded one)
drives the studio served by `python app.py` on the tiny random-weight model.

They prove what the API tests cannot: that the page's widgets are wired to the right events,
that a gallery image can be fetched from the page, and that a brush stroke painted with the
mouse on the inpaint editor reaches the server as the mask.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from .conftest import start_server, stop_server

CHROMIUM = "/usr/bin/chromium"
# CI (.ci/run) sets STUDIO_REQUIRE_BROWSER=1: there a missing browser is a failure, not a skip.
REQUIRED = os.environ.get("STUDIO_REQUIRE_BROWSER") == "1"
if not os.path.exists(CHROMIUM):
    if REQUIRED:
        raise RuntimeError(f"{CHROMIUM} is missing but STUDIO_REQUIRE_BROWSER=1")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
if REQUIRED:
    import playwright.sync_api as sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GENERATION_TIMEOUT_MS = 60_000
UI_TIMEOUT_MS = 30_000
STEPS = "3"  # the tiny model is fast at any step count, but fewer steps keep the runs short


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server, request):
    """A fresh browser context (so a fresh Gradio session) on the studio's page. On failure a
    screenshot is left in the temp folder."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(server.url, wait_until="domcontentloaded")
    page.wait_for_selector("#txt2img-prompt textarea")
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:
        shot = Path(tempfile.gettempdir()) / f"test_browser-{request.node.name}.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failing page: {shot}")
        except Exception:  # noqa: BLE001 - the screenshot is only a debugging aid
            pass
    context.close()


# ---------------------------------------------------------------- helpers


def pngs(folder: Path) -> set[Path]:
    return set(folder.rglob("*.png")) if folder.exists() else set()


def new_png(server, before: set[Path], timeout: float = 10.0) -> Path:
    """The newest PNG saved since `before` was taken."""
    deadline = time.time() + timeout
    while True:
        added = sorted(pngs(server.outputs) - before, key=lambda p: p.stat().st_mtime)
        if added or time.time() > deadline:
            break
        time.sleep(0.2)
    assert added, f"no new PNG in {server.outputs}\n{server_log(server)}"
    return added[-1]


def server_log(server, lines: int = 40) -> str:
    try:
        text = server.log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "server log (tail):\n" + "\n".join(text[-lines:])


def open_tab(page, tab: str) -> None:
    page.click(f"#tab-{tab}-button")
    page.wait_for_selector(f"#tab-{tab}-button[aria-selected=true]")


def set_steps(page, tab: str, steps: str = STEPS) -> None:
    box = page.locator(f"#{tab}-steps input[type=number]")
    box.fill(steps)
    box.press("Enter")


def gallery_image(page, tab: str, server, info_before: str = ""):
    """Wait for the first saved image of a tab's gallery — live previews come first, and the
    parameters box is filled only with the result — and fail with the page's error toasts and
    the server log if none comes."""
    img = page.locator(f"#{tab}-gallery img").first
    try:
        page.wait_for_function(
            "([sel, before]) => { const t = document.querySelector(sel);"
            " return t && t.value.includes('Seed:') && t.value !== before; }",
            arg=[f"#{tab}-info textarea", info_before], timeout=GENERATION_TIMEOUT_MS)
        img.wait_for(state="visible", timeout=GENERATION_TIMEOUT_MS)
    except sync_api.TimeoutError:
        toasts = page.locator(".toast-body").all_inner_texts()
        pytest.fail(f"no image in #{tab}-gallery; toasts: {toasts}\n{server_log(server)}")
    return img


def expect_toast(page, text: str) -> None:
    sync_api.expect(page.locator(".toast-body.error", has_text=text).first).to_be_visible(
        timeout=UI_TIMEOUT_MS)


def generate_txt2img(page, server, prompt: str) -> str:
    open_tab(page, "txt2img")
    page.fill("#txt2img-prompt textarea", prompt)
    set_steps(page, "txt2img")
    info_before = page.input_value("#txt2img-info textarea")
    page.click("#txt2img-generate")
    return gallery_image(page, "txt2img", server, info_before).get_attribute("src")


def white_pixels(page, clip: dict) -> int:
    """Pure-white pixels in a screenshot of `clip` (the brush is fixed to #ffffff)."""
    from PIL import Image
    shot = Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")
    counts = {color: n for n, color in shot.getcolors(shot.width * shot.height)}
    return counts.get((255, 255, 255), 0)


def stroke(page, canvas: str, points, corner: tuple[int, int], counted) -> None:
    """Drag the mouse through `points` (offsets from the middle of the `canvas` selector's first
    element) and wait until the 80 px square at `corner` (an offset too) shows 400 more pixels
    that `counted(page, clip)` counts: the stroke is on the canvas."""
    element = page.locator(canvas).first
    element.wait_for(state="visible")
    element.scroll_into_view_if_needed()
    box = element.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    clip = {"x": cx + corner[0], "y": cy + corner[1], "width": 80, "height": 80}
    before = counted(page, clip)
    page.mouse.move(cx + points[0][0], cy + points[0][1])
    page.mouse.down()
    for dx, dy in points[1:]:
        page.mouse.move(cx + dx, cy + dy, steps=3)
    page.mouse.up()
    deadline = time.time() + 10
    while (now := counted(page, clip)) < before + 400 and time.time() < deadline:
        time.sleep(0.2)
    assert now >= before + 400, f"the stroke did not show on {canvas} ({before} -> {now})"


def send_to_inpaint_with_brush(page, server):
    """A txt2img picture sent to the inpainting tab, its editor's brush picked; the canvas."""
    generate_txt2img(page, server, "a red circle")
    page.click("#txt2img-send-inpaint")
    page.wait_for_selector("#tab-inpaint-button[aria-selected=true]")
    editor = page.locator("#inpaint-editor")
    canvas = editor.locator("canvas").first
    canvas.wait_for(state="visible")
    # Once the sent image is loaded the editor switches to its brush by itself; pick it by
    # hand if it has not done so.
    try:
        page.wait_for_selector("#inpaint-editor button[aria-label=Brush].highlight", timeout=10_000)
    except sync_api.TimeoutError:
        editor.locator("button[aria-label=Brush]").click()
        page.wait_for_selector("#inpaint-editor button[aria-label=Brush].highlight")
    return canvas


def paint_stroke(page, canvas) -> None:
    """A white stroke across the middle of the picture (which the editor centres in its canvas),
    seen on the canvas. Each pointer move costs the software-rendered WebGL canvas ~0.2 s, so
    few steps."""
    canvas.scroll_into_view_if_needed()  # a click below may have scrolled the page down
    box = canvas.bounding_box()  # viewport coordinates, as the mouse and the clip want
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    middle = {"x": cx - 50, "y": cy - 50, "width": 100, "height": 100}
    white_before = white_pixels(page, middle)
    page.mouse.move(cx - 60, cy - 20)
    page.mouse.down()
    page.mouse.move(cx + 60, cy, steps=4)
    page.mouse.move(cx - 60, cy + 20, steps=4)
    page.mouse.up()
    wanted = white_before + 100 * 100 // 4
    deadline = time.time() + 10
    while (white := white_pixels(page, middle)) < wanted and time.time() < deadline:
        time.sleep(0.2)
    assert white >= wanted, f"the brush stroke did not show on the canvas ({white_before} -> {white})"


# ---------------------------------------------------------------- tests


def test_txt2img_in_browser(page, server):
    before = pngs(server.outputs)
    src = generate_txt2img(page, server, "a red circle on a blue background")
    assert src, "the gallery image has no src"

    response = page.request.get(src)
    assert response.ok, f"GET {src} -> {response.status}"
    body = response.body()
    assert body[:8] == PNG_SIGNATURE, f"{src} is not a PNG: {body[:16]!r}"

    saved = new_png(server, before)
    assert saved.read_bytes()[:8] == PNG_SIGNATURE
    # The gallery shows the very file the studio saved (same name, metadata and pixels).
    assert Path(unquote(urlparse(src).path)).name == saved.name
    assert body == saved.read_bytes()

    used_seed = page.input_value("#txt2img-used-seed input")
    assert used_seed and int(used_seed) >= 0
    info = page.input_value("#txt2img-info textarea")
    assert f"Seed: {used_seed}" in info and f"Steps: {STEPS}," in info, info


def test_the_embedded_default_paints_the_prompt_in_browser(browser, tmp_path):
    """Issue 3's done check, as an artist does it: `python app.py` with no --model (the embedded
    default, offline), "a red circle on a blue background" typed in the browser and generated at
    the page's default settings (seed fixed at 1 so the run is repeatable; at these defaults 14 of
    seeds 0-15 give a red circle on blue with the model of 2026-12-06, seeds 0 and 14 another shape;
    the model before gave 16 of 16): the project's pixel checker reads the saved picture."""
    from PIL import Image

    from studio.config import EMBEDDED_MODEL
    from embedded.checker import check
    from embedded.world import Obj, Scene
    if not (EMBEDDED_MODEL / "model_index.json").is_file():
        pytest.skip("assets/embedded-model is not built")
    srv = start_server(None, tmp_path / "outputs", tmp_path / "server.log")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(srv.url, wait_until="domcontentloaded")
        page.fill("#txt2img-prompt textarea", "a red circle on a blue background")
        seed = page.locator("#txt2img-seed input")
        seed.fill("1")
        seed.press("Enter")
        before = pngs(srv.outputs)
        page.click("#txt2img-generate")
        src = gallery_image(page, "txt2img", srv).get_attribute("src")
        saved = new_png(srv, before)
        assert Path(unquote(urlparse(src).path)).name == saved.name
        info = page.input_value("#txt2img-info textarea")
        assert "Steps: 20," in info and "Seed: 1," in info, info   # the defaults, the fixed seed
        score = check(Image.open(saved), Scene((Obj("circle", "red", "large", "center"),), "blue"))
        assert score.colour and score.background and score.shape, score.found
    finally:
        context.close()
        stop_server(srv)


def test_inpaint_paint_stroke_in_browser(page, server):
    from studio.outputs.metadata import read_metadata

    canvas = send_to_inpaint_with_brush(page, server)
    page.fill("#inpaint-prompt textarea", "a blue square")
    set_steps(page, "inpaint")

    # Without a stroke the server refuses: this is what makes the success below prove that
    # the painted stroke reached it.
    page.click("#inpaint-generate")
    expect_toast(page, "The mask is empty")

    paint_stroke(page, canvas)

    before = pngs(server.outputs)
    info_before = page.input_value("#inpaint-info textarea")
    page.click("#inpaint-generate")
    src = gallery_image(page, "inpaint", server, info_before).get_attribute("src")

    saved = new_png(server, before)
    assert Path(unquote(urlparse(src).path)).name == saved.name
    parameters, data = read_metadata(saved)
    assert data is not None, f"{saved} has no JSON metadata"
    assert data["mode"] == "inpaint"
    assert data["mask_sha256"] is not None
    assert data["prompt"] == "a blue square"
    assert parameters and "Denoising strength" in parameters


def test_bad_input_shows_message(page, server):
    open_tab(page, "inpaint")
    page.fill("#inpaint-prompt textarea", "anything")
    page.click("#inpaint-generate")
    expect_toast(page, "Upload an image to inpaint first.")

    # The page (and its session) stays usable after the error.
    before = pngs(server.outputs)
    src = generate_txt2img(page, server, "still working")
    assert page.request.get(src).body()[:8] == PNG_SIGNATURE
    new_png(server, before)


def test_live_follows_the_painted_mask_in_browser(page, server):
    """Live on the inpainting tab: switched on before any stroke, it says the mask is empty; a
    stroke painted with the mouse draws a live picture; nothing is saved until Keep, which saves
    the inpainting with its mask."""
    from studio.outputs.metadata import read_metadata

    canvas = send_to_inpaint_with_brush(page, server)
    page.fill("#inpaint-prompt textarea", "a blue square")
    set_steps(page, "inpaint")
    before = pngs(server.outputs)
    page.click("#inpaint-live input")
    status = page.locator("#inpaint-live-status")
    sync_api.expect(status).to_contain_text("The mask is empty", timeout=GENERATION_TIMEOUT_MS)
    paint_stroke(page, canvas)
    sync_api.expect(status).to_contain_text("ms a picture", timeout=GENERATION_TIMEOUT_MS)
    sync_api.expect(page.locator("#inpaint-live-picture img")).to_be_visible()
    assert pngs(server.outputs) == before, "a live picture was saved without Keep"
    page.click("#inpaint-live-keep")
    _, data = read_metadata(new_png(server, before))
    assert data["mode"] == "inpaint" and data["mask_sha256"] and data["prompt"] == "a blue square"


@pytest.fixture(scope="module")
def picker_server(tiny_model, tmp_path_factory):
    """A studio with a models folder holding one original-layout SD 1.x file, and a Flux.1 dev
    transformer in Black Forest Labs' layout with its parts as ComfyUI keeps them."""
    from diffusers import DiffusionPipeline

    from studio.families.tiny import write_tiny_flux
    from tests.conftest import start_server, stop_server
    from tests.dit_layout import write_comfyui_split
    from tests.ldm_layout import tiny_pipeline, write_single_file
    base = tmp_path_factory.mktemp("picker")
    (base / "models" / "checkpoints").mkdir(parents=True)
    write_single_file(tiny_pipeline("sd1"), "sd1", base / "models" / "checkpoints" / "tiny-sd1.safetensors")
    flux = DiffusionPipeline.from_pretrained(write_tiny_flux(base / "flux-folder", "dev"), local_files_only=True)
    write_comfyui_split(flux, base, "flux1-dev.safetensors")
    srv = start_server(tiny_model, base / "outputs", base / "server.log", "--models-dir", str(base / "models"))
    yield srv
    stop_server(srv)


def _fresh_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    return context, page


def test_model_picker_in_browser(browser, picker_server):
    context, page = _fresh_page(browser)
    try:
        page.goto(picker_server.url, wait_until="domcontentloaded")
        page.wait_for_selector("#model-picker input")
        sync_api.expect(page.locator("#model-banner")).to_contain_text("tiny SD-format")
        page.click("#model-picker input")
        page.locator("ul[role=listbox] li", has_text="tiny-sd1.safetensors").first.click()
        sync_api.expect(page.locator("#model-banner")).to_contain_text("SD 1.x", timeout=UI_TIMEOUT_MS)
        sync_api.expect(page.locator("#model-banner")).to_contain_text("512")
        generate_txt2img(page, picker_server, "a red circle")
        info = page.input_value("#txt2img-info textarea")
        assert "Model: tiny-sd1" in info, info
    finally:
        context.close()


def test_a_flux_file_picked_in_browser_shows_its_own_controls(browser, picker_server):
    """diffusion_models/flux1-dev.safetensors from the picker: the banner names Flux.1 dev, the
    txt2img tab shows Distilled CFG scale (hidden for SD), and its picture records it."""
    context, page = _fresh_page(browser)
    try:
        page.goto(picker_server.url, wait_until="domcontentloaded")
        page.wait_for_selector("#model-picker input")
        distilled = page.locator("#txt2img-distilled-cfg")
        sync_api.expect(distilled).to_be_hidden()
        page.click("#model-picker input")
        page.locator("ul[role=listbox] li", has_text="diffusion_models/flux1-dev.safetensors").first.click()
        sync_api.expect(page.locator("#model-banner")).to_contain_text("Flux.1 dev", timeout=UI_TIMEOUT_MS)
        sync_api.expect(distilled).to_be_visible()
        generate_txt2img(page, picker_server, "a red circle")
        info = page.input_value("#txt2img-info textarea")
        assert "Distilled CFG Scale: 3.5" in info and "Model: flux1-dev" in info, info
    finally:
        context.close()


def test_login_page_in_browser(browser, tiny_model, tmp_path):
    from tests.conftest import start_server, stop_server
    srv = start_server(tiny_model, tmp_path / "outputs", tmp_path / "server.log", "--auth", "ann:s3cret")
    context, page = _fresh_page(browser)
    try:
        page.goto(srv.url, wait_until="domcontentloaded")
        page.wait_for_selector("input[type=password]")
        assert page.locator("#txt2img-prompt").count() == 0      # nothing of the studio before login
        page.locator("input[type=text]").first.fill("ann")
        page.fill("input[type=password]", "wrong")
        page.locator("button[type=submit], button:has-text('Login')").first.click()
        sync_api.expect(page.get_by_text("Incorrect", exact=False).first).to_be_visible()
        page.locator("input[type=text]").first.fill("ann")      # the form is cleared after a failure
        page.fill("input[type=password]", "s3cret")
        page.locator("button[type=submit], button:has-text('Login')").first.click()
        page.wait_for_selector("#txt2img-prompt textarea")
    finally:
        context.close()
        stop_server(srv)


def test_png_info_drop_and_send_to_txt2img_in_browser(page, server, tmp_path):
    """A picture made elsewhere (A1111's parameters chunk) dropped on PNG Info shows what made
    it; "Send to txt2img" fills the prompt, negative prompt, sampler, steps, CFG, size and seed."""
    from PIL import Image, PngImagePlugin
    text = ("a yellow star on a grey background\nNegative prompt: blurry\nSteps: 7, Sampler: Euler a, "
            "Schedule type: Automatic, CFG scale: 5.5, Seed: 4242, Size: 64x128, Model: other")
    chunks = PngImagePlugin.PngInfo()
    chunks.add_text("parameters", text)
    path = tmp_path / "from-a1111.png"
    Image.new("RGB", (64, 128), (90, 90, 90)).save(path, pnginfo=chunks)

    open_tab(page, "pnginfo")
    page.locator("#pnginfo-image input[type=file]").set_input_files(str(path))
    page.wait_for_function("() => document.querySelector('#pnginfo-text textarea').value.includes('Seed: 4242')")
    assert page.input_value("#pnginfo-text textarea").startswith("Made with AUTOMATIC1111 (model other)")
    page.click("#pnginfo-send-txt2img")
    page.wait_for_selector("#tab-txt2img-button[aria-selected=true]")
    page.wait_for_function("() => document.querySelector('#txt2img-prompt textarea').value.includes('yellow star')")
    assert page.input_value("#txt2img-prompt textarea") == "a yellow star on a grey background"
    assert page.input_value("#txt2img-negative-prompt textarea") == "blurry"
    assert page.input_value("#txt2img-seed input") == "4242"
    assert page.input_value("#txt2img-steps input[type=number]") == "7"
    assert page.input_value("#txt2img-cfg-scale input[type=number]") == "5.5"
    assert page.input_value("#txt2img-height input[type=number]") == "128"
    assert page.input_value("#txt2img-scheduler input") == "Euler a"
    # and it generates with them: the saved picture has the sent seed and size
    before = pngs(server.outputs)
    info_before = page.input_value("#txt2img-info textarea")
    page.click("#txt2img-generate")
    gallery_image(page, "txt2img", server, info_before)
    from studio.outputs.metadata import read_metadata
    record = read_metadata(new_png(server, before))[1]
    assert (record["seed"], record["width"], record["height"], record["request"]["steps"]) == (4242, 64, 128, 7)


def pick(page, dropdown: str, option: str) -> None:
    page.click(f"{dropdown} input")
    page.locator("ul[role=listbox] li", has_text=option).first.click()


def test_more_like_this_and_an_xyz_plot_in_browser(page, server):
    """"More like this" on a picture makes four variations around its seed; then a 2x2 seed x CFG
    plot from the txt2img tab: the count shows before it runs, and the grid comes first in the
    gallery and is the saved -grid.png, beside its four cells."""
    from studio.outputs.metadata import read_metadata
    open_tab(page, "txt2img")
    page.fill("#txt2img-seed input", "33")
    generate_txt2img(page, server, "a red circle")
    before = pngs(server.outputs)
    info_before = page.input_value("#txt2img-info textarea")
    page.click("#txt2img-more-like-this")
    page.wait_for_function(
        "([sel, before]) => { const t = document.querySelector(sel);"
        " return t && t.value.includes('Variation seed:') && t.value !== before; }",
        arg=["#txt2img-info textarea", info_before], timeout=GENERATION_TIMEOUT_MS)
    records = [read_metadata(p)[1] for p in sorted(pngs(server.outputs) - before)]
    assert len(records) == 4 and {r["seed"] for r in records} == {33}
    assert len({r["variation_seed"] for r in records}) == 4
    assert {r["request"]["variation_strength"] for r in records} == {0.2}

    page.click("#plot-panel > button")
    pick(page, "#plot-x-type", "Seed")
    page.fill("#plot-x-values textarea", "1, 2")
    pick(page, "#plot-y-type", "CFG scale")
    page.fill("#plot-y-values textarea", "4, 8")
    page.locator("#plot-y-values textarea").press("Tab")
    sync_api.expect(page.locator("#plot-count")).to_contain_text("4 picture(s)")
    page.fill("#txt2img-seed input", "-1")
    before = pngs(server.outputs)
    info_before = page.input_value("#txt2img-info textarea")
    page.click("#plot-run")
    src = gallery_image(page, "txt2img", server, info_before).get_attribute("src")
    added = pngs(server.outputs) - before
    grids = [p for p in added if p.name.endswith("-grid.png")]
    assert len(added) == 5 and len(grids) == 1
    assert Path(unquote(urlparse(src).path)).name == grids[0].name


def test_history_search_in_browser(page, server):
    """The History tab searches the index: a word of a prompt finds its pictures, another word
    none; the selected picture opens in PNG Info."""
    generate_txt2img(page, server, "a violet hexagon for the history")
    open_tab(page, "history")
    sync_api.expect(page.locator("#history-found")).to_contain_text("picture(s)")  # the first page is in
    page.fill("#history-words textarea", "violet hexagon")
    page.click("#history-search")
    sync_api.expect(page.locator("#history-found")).to_contain_text("1 picture(s)")
    sync_api.expect(page.locator("#history-gallery img").first).to_be_visible()
    page.click("#history-to-pnginfo")
    page.wait_for_selector("#tab-pnginfo-button[aria-selected=true]")
    page.wait_for_function("() => document.querySelector('#pnginfo-text textarea').value.includes('violet hexagon')")
    open_tab(page, "history")
    page.fill("#history-words textarea", "no-such-word-anywhere")
    page.click("#history-search")
    sync_api.expect(page.locator("#history-found")).to_contain_text("0 picture(s)")


def red_pixels(page, clip: dict) -> int:
    """Strongly red pixels in a screenshot of `clip` (the painter's first brush colour)."""
    import numpy as np
    from PIL import Image
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"), dtype=np.int16)
    return int(((shot[..., 0] > 180) & (shot[..., 1] < 80) & (shot[..., 2] < 80)).sum())


def test_regions_painted_on_the_painter_in_browser(page, server):
    """Painted regions as an artist makes them: a red patch painted with the mouse up and to the
    left on the Regional prompts painter; the picture made records the painting, the red region
    where it was painted, beside its two prompts."""
    import numpy as np
    from studio.outputs.metadata import read_metadata
    from studio.requests.parsers import REGION_COLOURS
    from studio.inputs import decode_base64
    open_tab(page, "txt2img")
    page.fill("#txt2img-prompt textarea", "a black background ADDCOL a red circle on a black background")
    set_steps(page, "txt2img")
    page.locator("#txt2img-regions-panel").get_by_text("Regional prompts").first.click()
    # a zigzag filling a patch up and to the left of the middle
    stroke(page, "#txt2img-regions-mask canvas", ((-80, -80), (-35, -80), (-35, -65), (-80, -65), (-80, -50),
                                                  (-35, -50), (-35, -35), (-80, -35)), (-90, -90), red_pixels)

    before = pngs(server.outputs)
    info_before = page.input_value("#txt2img-info textarea")
    page.click("#txt2img-generate")
    gallery_image(page, "txt2img", server, info_before)
    _, data = read_metadata(new_png(server, before))
    assert data["request"]["prompt"].startswith("a black background ADDCOL a red circle")
    painting = np.asarray(decode_base64("Painted regions", data["request"]["regions_mask"]).convert("RGB"), dtype=np.int16)
    red = np.all(np.abs(painting - np.array(REGION_COLOURS[0][1])) < 40, axis=2)
    ys, xs = np.nonzero(red)
    h, w = red.shape
    assert red.sum() > 0.005 * h * w, "no red region in the recorded painting"
    assert xs.mean() < w / 2 and ys.mean() < h / 2, (xs.mean(), ys.mean(), w, h)   # where it was painted
    assert not red[h // 2:, :].any() and not red[:, w // 2:].any()


def test_few_step_student_and_live_mode_in_browser(browser, tmp_path):
    """Issue 22 as an artist meets it: the embedded model's student picked in the model list sets
    its sampler, steps and CFG and greys out the negative prompt; Live on draws as the prompt is
    typed (no file written, the rate shown); Keep saves the picture with its metadata into the
    gallery; back on the embedded model the studio's settings return."""
    from studio.config import EMBEDDED_MODEL
    from studio.models.sources import STUDENT, STUDENT_FOLDER
    from studio.outputs.metadata import read_metadata
    if not (EMBEDDED_MODEL / STUDENT_FOLDER / "config.json").is_file():
        pytest.skip("the embedded model's student is not built")
    srv = start_server(None, tmp_path / "outputs", tmp_path / "server.log")
    context, page = _fresh_page(browser)
    try:
        page.goto(srv.url, wait_until="domcontentloaded")
        pick(page, "#model-picker", STUDENT)
        sync_api.expect(page.locator("#model-banner")).to_contain_text("Few-step (", timeout=UI_TIMEOUT_MS)
        sync_api.expect(page.locator("#txt2img-steps input[type=number]")).to_have_value("4")
        sync_api.expect(page.locator("#txt2img-scheduler input")).to_have_value("LCM")
        sync_api.expect(page.locator("#txt2img-negative-prompt textarea")).to_be_disabled()

        page.click("#txt2img-live input")
        prompt = page.locator("#txt2img-prompt textarea")
        prompt.press_sequentially("a red circle", delay=40)
        status = page.locator("#txt2img-live-status")
        sync_api.expect(status).to_contain_text("ms a picture", timeout=GENERATION_TIMEOUT_MS)  # the model is loaded
        prompt.press_sequentially(" on a blue background", delay=120)
        sync_api.expect(page.locator("#txt2img-live-picture img")).to_be_visible()
        assert not pngs(srv.outputs), "a live picture was saved without Keep"
        page.wait_for_function("() => document.querySelector('#txt2img-live-status').innerText"
                               ".includes('frames a second')", timeout=GENERATION_TIMEOUT_MS)

        shown = None               # Keep saves the picture shown: wait until the last keystroke's has come
        while shown != status.inner_text():
            shown = status.inner_text()
            page.wait_for_timeout(1500)
        page.click("#txt2img-live-keep")
        gallery_image(page, "txt2img", srv)
        kept = new_png(srv, set())
        parameters, data = read_metadata(kept)
        assert f"Model: {STUDENT}" in parameters and "Sampler: LCM" in parameters, parameters
        assert data["request"]["prompt"] == "a red circle on a blue background"

        page.click("#txt2img-live input")
        pick(page, "#model-picker", "embedded (shape world)")
        sync_api.expect(page.locator("#txt2img-steps input[type=number]")).to_have_value("20", timeout=UI_TIMEOUT_MS)
        sync_api.expect(page.locator("#txt2img-negative-prompt textarea")).to_be_enabled()
    finally:
        context.close()
        stop_server(srv)


def test_animation_tab_renders_frames_and_plays_the_video_in_browser(page, server):
    """The Animation tab: a schedule's curve is drawn as it is typed; Animate shows the frames as
    they finish, then a <video> that the browser decodes and plays (H.264 MP4)."""
    open_tab(page, "animation")
    frames = page.locator("#animation-frames input[type=number]")
    frames.fill("4")
    frames.press("Enter")
    page.click("#animation-camera button, #animation-camera .label-wrap")
    page.fill("#animation-zoom textarea", "0:(1.0), 3:(1.1)")
    page.wait_for_selector("#animation-zoom-curve img", timeout=UI_TIMEOUT_MS)
    page.click("#animation-diffusion button, #animation-diffusion .label-wrap")
    page.fill("#animation-steps textarea", "0:(3)")
    page.fill("#animation-prompts textarea", "0: a red circle\n3: a blue square")
    page.click("#animation-go")
    try:
        page.wait_for_function(
            "() => { const v = document.querySelector('#animation-video-out video');"
            " return v && v.currentSrc && v.readyState >= 2; }", timeout=GENERATION_TIMEOUT_MS)
    except sync_api.TimeoutError:
        toasts = page.locator(".toast-body").all_inner_texts()
        pytest.fail(f"no video in the Animation tab; toasts: {toasts}\n{server_log(server)}")
    playing = page.evaluate(
        "async () => { const v = document.querySelector('#animation-video-out video'); v.muted = true;"
        " await v.play(); await new Promise(r => setTimeout(r, 600));"
        " return {time: v.currentTime, width: v.videoWidth, paused: v.paused}; }")
    assert playing["time"] > 0 and playing["width"] > 0 and not playing["paused"], playing
    assert page.locator("#animation-strip img").count() >= 1
    assert "4 frames" in page.inner_text("#animation-status")
    assert len(list(server.outputs.glob("animations/*/frame_*.png"))) >= 4


def test_controlnet_sketch_pad_painted_in_browser(browser, control_server):
    """A ControlNet unit on the txt2img tab whose picture is a stroke drawn with the mouse on the
    sketch pad: an empty pad is refused, the preview shows the map, and the picture made records
    the unit."""
    from studio.outputs.metadata import read_metadata

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page.goto(control_server.url, wait_until="domcontentloaded")
        page.fill("#txt2img-prompt textarea", "a red circle")
        set_steps(page, "txt2img")
        page.locator("#txt2img-control-panel").get_by_text("ControlNet: place things").click()
        page.locator("#txt2img-control-1-enabled input").check()
        page.locator("#txt2img-control-1-source").get_by_text("the sketch pad").click()
        page.locator("#txt2img-control-1-model input").click()
        page.get_by_role("option", name="shapes").click()
        page.click("#txt2img-generate")
        expect_toast(page, "the sketch pad is empty")

        stroke(page, "#txt2img-control-1-sketch canvas",            # a zigzag inside the pad's picture
               ((-30, -30), (30, -30), (-30, 0), (30, 0), (-30, 30), (30, 30)), (-40, -40), white_pixels)

        before = pngs(control_server.outputs)              # Generate at once: the stroke is read at the click
        info_before = page.input_value("#txt2img-info textarea")
        page.click("#txt2img-generate")
        gallery_image(page, "txt2img", control_server, info_before)
        info = page.input_value("#txt2img-info textarea")
        assert 'ControlNet 0: "Module: canny, Model: shapes [' in info, info
        made = new_png(control_server, before)
        _, data = read_metadata(made)
        assert data["controlnet"][0]["model"] == "shapes"
        page.click("#txt2img-control-1-preview")
        page.locator("#txt2img-control-1-map img").wait_for(state="visible")

        # PNG Info puts the unit back into the panel (the stroke stays on the pad) and it generates again
        page.locator("#txt2img-control-1-enabled input").uncheck()
        open_tab(page, "pnginfo")
        page.locator("#pnginfo-image input[type=file]").set_input_files(str(made))
        page.wait_for_function("() => document.querySelector('#pnginfo-text textarea').value.includes('ControlNet 0')")
        page.click("#pnginfo-send-txt2img")
        page.wait_for_selector("#tab-txt2img-button[aria-selected=true]")
        page.wait_for_function("() => document.querySelector('#txt2img-control-1-enabled input').checked")
        assert page.input_value("#txt2img-control-1-model input") == "shapes"
        before = pngs(control_server.outputs)
        page.click("#txt2img-generate")          # the same settings and seed: the same parameters text, a new file
        _, again = read_metadata(new_png(control_server, before, timeout=GENERATION_TIMEOUT_MS / 1000))
        assert again["controlnet"][0]["model"] == "shapes" and again["seed"] == data["seed"]
    finally:
        context.close()
