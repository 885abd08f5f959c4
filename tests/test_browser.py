"""The app in a real browser: Debian's Chromium, headless, driven by Playwright, as a visitor would use it.

`python app.py` runs in a subprocess (tests/servers.py, shared with test_app_http.py when their layouts agree)
on a checkpoint folder that has all eleven architectures: the trained checkpoints (linked) and random weights
for any not trained yet. The page is 1400 px wide; the layout checks (nothing cut, nothing covered) hold there.
Each test keeps a full-page screenshot of its tab under its own tmp_path (also when it fails).

Skipped, with the reason, only where /usr/bin/chromium or the playwright package is missing; `.ci/run`
installs both. Playwright's own browser download is not used.
"""
from __future__ import annotations

import io
import re
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import CIFAR10, REPO_ROOT
from PIL import Image, ImageChops, ImageStat
from servers import shared_app, trained

from architectures import list_models, model_class

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing "
                                                              "(pip install -r requirements-dev.txt)")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
LOAD_TIMEOUT_MS = 60_000  # generous but bounded: CI's two cores also run the rest of the suite
RUN_TIMEOUT_MS = 90_000  # one model run (Classify) or all eleven (Compare)
VIEWPORT = {"width": 1400, "height": 1000}
SE_ARCH = "senet"
NON_SE_ARCHS = ("resnet", "vgg")  # the first that is not the default is picked before SENet
PHOTO = sorted((REPO_ROOT / "examples").glob("*.jpg"))[0]  # a real photo, larger than 32 x 32


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    layout = {name: "trained" if trained(name) else "random" for name in list_models()}
    return shared_app(request, tmp_path_factory, layout)[1]


@pytest.fixture(scope="module")
def browser():
    playwright = sync_api.sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(server, browser):
    """A fresh page on the app, loaded; its uncaught JavaScript errors are collected in ``page.js_errors``."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(LOAD_TIMEOUT_MS)
    page.js_errors = []
    page.on("pageerror", lambda error: page.js_errors.append(str(error)))
    page.goto(server["url"], timeout=LOAD_TIMEOUT_MS)
    page.locator("#classify-image input[type=file]").wait_for(state="attached")
    yield page
    context.close()
    assert server["process"].poll() is None, "the server died"


@contextmanager
def screenshot(page, path: Path):
    """A full-page screenshot to ``path`` once the block is done, passed or failed."""
    try:
        yield
    finally:
        page.screenshot(path=path, full_page=True)
        print(f"screenshot: {path}")


def wait_until_idle(page, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
    """Until no event is running or queued: every status tracker hidden on two polls half a second apart."""
    deadline = time.monotonic() + timeout_ms / 1000
    calm = 0
    while calm < 2:
        calm = calm + 1 if page.locator("[data-testid=status-tracker]:not(.hide)").count() == 0 else 0
        assert time.monotonic() < deadline, f"the app was still busy after {timeout_ms / 1000:.0f} s"
        page.wait_for_timeout(500)


def assert_no_errors(page) -> None:
    toasts = page.locator("[data-testid=toast-body].error")
    assert toasts.count() == 0, f"error shown: {toasts.all_inner_texts()}"
    assert not page.js_errors, page.js_errors


def pick_architecture(page, name: str) -> None:
    display = model_class(name).display_name
    page.locator("#architecture input").click()
    page.get_by_role("option", name=re.compile("^" + re.escape(display) + r"\s")).click()
    sync_api.expect(page.locator("#architecture input")).to_have_value(re.compile("^" + re.escape(display)))


def loaded_image(page, img) -> Image.Image:
    """The picture an <img> shows, once the browser has decoded it, as the server sent it."""
    # On screen first: a lazily loaded picture far below the fold never loads (it stays 0 px high, "hidden"), and
    # its decode() would never settle.
    img.scroll_into_view_if_needed(timeout=RUN_TIMEOUT_MS)
    sync_api.expect(img).to_be_visible(timeout=RUN_TIMEOUT_MS)
    img.evaluate("i => i.decode()")  # rejects when the browser cannot decode it
    width = img.evaluate("i => i.naturalWidth")
    response = page.request.get(img.get_attribute("src"))
    assert response.ok, (response.status, img.get_attribute("src"))
    picture = Image.open(io.BytesIO(response.body()))
    assert width == picture.width > 0
    return picture.convert("RGB")


def cut_texts(locator) -> list[str]:
    """The texts among ``locator``'s elements that do not fit their box (their end is hidden)."""
    return locator.evaluate_all("els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)")


def assert_table_fits(table) -> None:
    """Every column of a rendered gr.Dataframe lies within the table's box, and no header or cell is cut."""
    right = table.bounding_box()["x"] + table.bounding_box()["width"]
    for header in table.locator("[role=columnheader]").all():
        box = header.bounding_box()
        assert box and box["x"] + box["width"] <= right + 1, (header.inner_text(), box, right)
    assert not cut_texts(table.locator("[role=columnheader], [role=gridcell]")), cut_texts(
        table.locator("[role=columnheader], [role=gridcell]"))


def assert_whole_pictures(gallery) -> None:
    """Every picture of a gallery is shown whole: at its own aspect ratio, inside the gallery's box (no inner
    scrolling), with its caption below it rather than over it."""
    assert gallery.locator(".grid-wrap").evaluate("e => e.scrollHeight <= e.clientHeight + 1"), "the gallery scrolls"
    for item in gallery.locator(".thumbnail-item").all():
        shown = item.locator("img").evaluate(
            "i => { const box = i.getBoundingClientRect(); return [i.naturalWidth / i.naturalHeight, "
            "box.width / box.height, getComputedStyle(i).objectFit, box.bottom]; }")
        natural, drawn, fit, bottom = shown
        assert fit == "contain" and abs(drawn - natural) <= 0.02 * natural, shown
        caption = item.locator(".caption-label").bounding_box()
        assert caption["y"] >= bottom - 1, (caption, bottom)  # below the picture, not over it


def grid_cells(table, header: str) -> list[str]:
    """The texts of one column of a rendered gr.Dataframe."""
    headers = [text.strip() for text in table.locator("[role=columnheader]").all_inner_texts()]
    assert header in headers, headers
    return [text.strip() for text in
            table.locator(f"[role=gridcell][data-col='{headers.index(header)}']").all_inner_texts()]


def test_classify_shows_label_overlay_and_se_attention(page, tmp_path):
    architecture = page.locator("#architecture input")
    default = architecture.input_value()
    se_plot, se_map = page.locator("#se-plot"), page.locator("#se-map")
    with screenshot(page, tmp_path / "classify.png"):
        # A plain architecture hides the SE section; SENet shows it.
        plain = next(name for name in NON_SE_ARCHS if not default.startswith(model_class(name).display_name))
        pick_architecture(page, plain)
        sync_api.expect(se_plot).to_be_hidden()
        sync_api.expect(se_map).to_be_hidden()
        pick_architecture(page, SE_ARCH)
        sync_api.expect(se_plot).to_be_visible()
        sync_api.expect(se_map).to_be_visible()

        page.locator("#classify-image input[type=file]").set_input_files(PHOTO)  # an upload classifies at once,
        sync_api.expect(page.locator("#cam-overlay img")).to_be_visible(timeout=RUN_TIMEOUT_MS)  # ending with this
        wait_until_idle(page)
        joins = []
        page.on("request", lambda request: joins.append(request.url) if "/queue/join" in request.url else None)
        page.locator("#classify-run").click()
        deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
        while len(joins) < 3:  # the button runs the chain: label, then details, then the explanation
            assert time.monotonic() < deadline, f"the Classify button sent {len(joins)} of its 3 requests"
            page.wait_for_timeout(100)
        wait_until_idle(page)

        # The label: a CIFAR-10 class on top, five classes with their bars, and the note agrees (and names SENet).
        label = page.locator("#top5 [data-testid=label-output-value]")
        sync_api.expect(label).to_have_text(re.compile("^(" + "|".join(CIFAR10) + ")$"), timeout=RUN_TIMEOUT_MS)
        top = label.inner_text().strip()
        bars = page.locator("#top5 [data-testid$=-confidence-set]")
        sync_api.expect(bars).to_have_count(5)
        shown = [text.strip() for text in page.locator("#top5 [data-testid$=-confidence-set] dt").all_inner_texts()]
        assert shown[0] == top and set(shown) <= set(CIFAR10) and len(set(shown)) == 5, shown
        sync_api.expect(page.locator("#ood-note")).to_contain_text(f"{top} at")
        sync_api.expect(page.locator("#ood-note")).to_contain_text(f"by {model_class(SE_ARCH).display_name}")

        # The Grad-CAM overlay: decoded by the browser, the upload's size, and visibly not the upload itself.
        overlay = loaded_image(page, page.locator("#cam-overlay img"))
        with Image.open(PHOTO) as original:
            original = original.convert("RGB")
        assert overlay.size == original.size
        difference = ImageStat.Stat(ImageChops.difference(overlay, original)).mean
        assert sum(difference) / 3 > 10, f"the overlay looks like the bare upload (mean difference {difference})"

        # SE attention: the plot of this image's excitations, and the SE-weighted map over the upload.
        plot = loaded_image(page, se_plot.locator("img"))
        assert min(plot.size) > 100
        assert loaded_image(page, se_map.locator("img")).size == original.size
        assert_no_errors(page)


def test_compare_fills_table_and_gallery(page, tmp_path):
    page.get_by_role("tab", name="Compare").click()
    with screenshot(page, tmp_path / "compare.png"):
        upload = page.locator("#compare-image input[type=file]")
        upload.wait_for(state="attached")
        upload.set_input_files(PHOTO)  # an upload runs the comparison (as "Compare all" does)
        summary = page.locator("#compare-summary")
        sync_api.expect(summary).to_contain_text("Majority vote", timeout=RUN_TIMEOUT_MS)
        wait_until_idle(page)

        table = page.locator("#compare-table")
        names = grid_cells(table, "architecture")
        assert sorted(names) == sorted(model_class(name).display_name for name in list_models()), names
        assert all(top in CIFAR10 for top in grid_cells(table, "top-1")), grid_cells(table, "top-1")
        majority = re.search(r"Majority vote: (\w+) \((\d+) of (\d+)", summary.inner_text())
        assert majority and majority[1] in CIFAR10 and majority[3] == str(len(list_models())), summary.inner_text()

        # Every map of the gallery carries its verdict in its caption.
        sync_api.expect(page.locator("#compare-gallery")).to_contain_text(
            re.compile(r"\((explains|faithful, centre|does not explain|inconclusive)\)"))

        thumbnails = page.locator("#compare-gallery img")
        sync_api.expect(thumbnails).to_have_count(len(list_models()))
        for index in (0, len(list_models()) - 1):
            loaded_image(page, thumbnails.nth(index))
        assert_whole_pictures(page.locator("#compare-gallery"))  # the captions below the maps, not over them
        assert all(re.search(r"\(\w+.*, \d+ ms\)", text) for text in grid_cells(table, "map"))
        assert_table_fits(table)  # the map column whole: "does not explain (chosen, 250 ms)"
        assert_no_errors(page)


def test_a_small_upload_gets_a_large_overlay_and_a_verdict(page, tmp_path):
    """A CIFAR-sized upload: the overlay is drawn at 256 px or more, and the note opens with the verdict."""
    small = tmp_path / "small.png"
    with Image.open(PHOTO) as photo:
        photo.convert("RGB").resize((32, 32)).save(small)
    with screenshot(page, tmp_path / "classify_small.png"):
        page.locator("#classify-image input[type=file]").set_input_files(small)
        sync_api.expect(page.locator("#cam-overlay img")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        wait_until_idle(page)
        overlay = loaded_image(page, page.locator("#cam-overlay img"))
        assert min(overlay.size) >= 256, overlay.size
        shown = page.locator("#classify-image img").bounding_box()
        assert shown and min(shown["width"], shown["height"]) >= 200, shown  # the input is not a stamp either
        note = page.locator("#explain-note")
        sync_api.expect(note).to_contain_text(re.compile(
            r"^\W*(Explains this prediction|Faithful, but says no more|Does not explain this prediction|Inconclusive)"))
        sync_api.expect(page.locator("#faithfulness")).to_be_visible()
        # Four bars, and the axis titles whole (Vega ends a title that does not fit with "…").
        sync_api.expect(page.locator("#faithfulness .role-mark path, #faithfulness .role-mark rect")).to_have_count(4)
        titles = page.locator("#faithfulness .role-axis-title text").evaluate_all("els => els.map(e => e.textContent)")
        assert len(titles) == 2 and not any(title.endswith("…") for title in titles), titles
        box = page.locator("#faithfulness").bounding_box()
        for title in page.locator("#faithfulness .role-axis-title").all():  # and inside the plot's box
            inside = title.bounding_box()
            assert box["y"] <= inside["y"] and inside["y"] + inside["height"] <= box["y"] + box["height"] + 1, inside
        assert_no_errors(page)


def test_every_architecture_shows_its_block_diagram(page, tmp_path):
    diagram = page.locator("#architecture-diagram img")
    seen = set()
    with screenshot(page, tmp_path / "diagram.png"):
        for name in list_models():
            if not page.locator("#architecture input").input_value().startswith(model_class(name).display_name):
                pick_architecture(page, name)
            wait_until_idle(page)
            picture = loaded_image(page, diagram)
            assert picture.width >= 600, (name, picture.size)
            seen.add(picture.tobytes())
        assert len(seen) == len(list_models())  # one diagram each, drawn from each model
        assert_no_errors(page)


def test_model_zoo_plots_diagram_and_latency_without_a_click(page, tmp_path):
    page.get_by_role("tab", name="Model zoo").click()
    with screenshot(page, tmp_path / "zoo_plots.png"):
        for element in ("#zoo-plot img", "#zoo-evolution img", "#zoo-diagram img"):
            assert loaded_image(page, page.locator(element)).width >= 600, element
        table = page.locator("#zoo-table")
        deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
        while not all(grid_cells(table, "latency (ms)")):  # measured in the background after start-up
            assert time.monotonic() < deadline, grid_cells(table, "latency (ms)")
            page.get_by_role("button", name="Reload checkpoints").click()
            wait_until_idle(page)
        assert all(float(text) > 0 for text in grid_cells(table, "latency (ms)"))
        assert_no_errors(page)


def test_model_zoo_lists_all_eleven(page, tmp_path):
    page.get_by_role("tab", name="Model zoo").click()
    with screenshot(page, tmp_path / "zoo.png"):
        note = page.locator("#zoo-note")
        sync_api.expect(note).to_contain_text(f"{len(list_models())} of {len(list_models())} architectures")
        table = page.locator("#zoo-table")
        sync_api.expect(table.locator("[role=row][data-index]")).to_have_count(len(list_models()))
        assert sorted(grid_cells(table, "name")) == sorted(list_models())
        accuracies = [float(text) for text in grid_cells(table, "val accuracy")]
        assert accuracies == sorted(accuracies, reverse=True) and all(0 < a <= 1 for a in accuracies), accuracies
        wait_until_idle(page)
        assert_table_fits(table)  # "latency (ms)" and the hardware column whole, not cut at the right
        assert table.locator(".table-wrap, [role=grid]").first.evaluate(
            "e => e.scrollWidth <= e.clientWidth + 1"), "the zoo table scrolls sideways"
        assert_no_errors(page)


def _architecture_shown(page) -> str:
    shown = page.locator("#architecture input").input_value()
    return next(name for name in list_models() if shown.startswith(model_class(name).display_name + " "))


def test_look_inside_shows_every_stage_of_the_classify_choice(page, tmp_path):
    """Classify's upload and architecture, opened in Look inside: one picture per stage of the diagram, in order,
    each caption whole (not cut off), the probe chart beside them."""
    from architectures import create_model
    from explain.diagram import diagram_facts
    from explain.inside import TILE, stage_label

    page.locator("#classify-image input[type=file]").set_input_files(PHOTO)
    sync_api.expect(page.locator("#cam-overlay img")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    wait_until_idle(page)
    name = _architecture_shown(page)
    stages = diagram_facts(create_model(name))
    page.get_by_role("tab", name="Look inside").click()
    with screenshot(page, tmp_path / "inside.png"):
        pictures = page.locator("#inside-gallery img")
        sync_api.expect(pictures).to_have_count(len(stages), timeout=RUN_TIMEOUT_MS)
        wait_until_idle(page)
        for index in (0, len(stages) - 1):
            assert loaded_image(page, pictures.nth(index)).width >= 4 * TILE
        captions = page.locator("#inside-gallery .caption-label")
        texts = [text.strip() for text in captions.all_inner_texts()]
        assert [t.split(" · ")[:2] for t in texts] == [stage_label(s).split(" · ")[:2] for s in stages], texts
        cut = captions.evaluate_all("els => els.filter(e => e.scrollWidth > e.clientWidth + 1).length")
        assert cut == 0, f"{cut} captions are cut off"
        assert_whole_pictures(page.locator("#inside-gallery"))  # each stage's title drawn in it is whole
        assert loaded_image(page, page.locator("#inside-probes img")).width >= 600
        sync_api.expect(page.locator("#inside-note")).to_contain_text("activation × gradient")
        assert_no_errors(page)


def test_picture_titles_are_not_covered_and_compare_columns_fit(page, tmp_path):
    """The pictures that draw their own titles have no label over them; Compare's table shows every column whole."""
    page.get_by_role("tab", name="Model zoo").click()
    for element in ("#zoo-plot", "#zoo-evolution", "#zoo-diagram", "#zoo-probes", "#zoo-robustness", "#zoo-severity",
                    "#zoo-adversarial", "#zoo-transfer"):
        loaded_image(page, page.locator(f"{element} img"))
        assert page.locator(f"{element} [data-testid=block-label]:visible").count() == 0, element
        # The corner buttons sit above the picture, not over its title (the reliability diagram's, at its right).
        picture_top = page.locator(f"{element} img").bounding_box()["y"]
        for button in page.locator(f"{element} .icon-button-wrapper button:visible").all():
            box = button.bounding_box()
            assert box["y"] + box["height"] <= picture_top + 1, (element, box, picture_top)
    page.get_by_role("tab", name="Compare").click()
    with screenshot(page, tmp_path / "compare_table.png"):
        page.locator("#compare-image input[type=file]").set_input_files(PHOTO)
        sync_api.expect(page.locator("#compare-summary")).to_contain_text("Majority vote", timeout=RUN_TIMEOUT_MS)
        wait_until_idle(page)
        table = page.locator("#compare-table")
        right = table.bounding_box()["x"] + table.bounding_box()["width"]
        for header in table.locator("[role=columnheader]").all():
            box = header.bounding_box()
            assert box and box["x"] + box["width"] <= right + 1, (header.inner_text(), box, right)
        grid_cells(table, "agreement")


CAT = REPO_ROOT / "examples" / "cat_chelsea.jpg"


def test_corrupt_this_image_changes_what_the_model_sees(page, tmp_path):
    """Classify the example cat, then again under Gaussian noise at severity 5: the overlay (drawn on what the
    model sees) changes, and the note still names a CIFAR-10 class."""
    with screenshot(page, tmp_path / "classify_corrupted.png"):
        page.locator("#classify-image input[type=file]").set_input_files(CAT)
        sync_api.expect(page.locator("#cam-overlay img")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        wait_until_idle(page)
        before = loaded_image(page, page.locator("#cam-overlay img"))
        page.locator("#classify-corruption input").click()
        page.get_by_role("option", name="Gaussian noise").click()
        slider = page.locator("#classify-severity input[type=number]")
        slider.fill("5")
        slider.press("Enter")
        wait_until_idle(page)
        after = loaded_image(page, page.locator("#cam-overlay img"))
        assert ImageStat.Stat(ImageChops.difference(before.resize(after.size), after)).mean[0] > 5
        sync_api.expect(page.locator("#ood-note")).to_contain_text(re.compile("|".join(CIFAR10)))
        assert_no_errors(page)


def test_model_zoo_shows_robustness_plots_and_columns(page, tmp_path):
    page.get_by_role("tab", name="Model zoo").click()
    with screenshot(page, tmp_path / "zoo_robustness.png"):
        assert loaded_image(page, page.locator("#zoo-severity img")).width >= 600
        assert loaded_image(page, page.locator("#zoo-robustness img")).width >= 600  # bars beside reliability
        table = page.locator("#zoo-table")
        values = [text for text in grid_cells(table, "corruption accuracy") if text]
        assert values and all(0 < float(v) <= 1 for v in values), values
        assert all(0 <= float(v) < 1 for v in grid_cells(table, "ECE") if v)
        assert_no_errors(page)


def test_attack_this_image_flips_the_cat_and_offers_the_file(page, tmp_path):
    """PGD at 4/255 on the example cat with VGG: the panel appears with the perturbation (its scale written under
    it), a sentence on what changed and the PNG to download; the top-5 and the map are of the attacked view."""
    attack_row = page.locator("#perturbation")
    sync_api.expect(attack_row).to_be_hidden()  # no attack, no panel
    with screenshot(page, tmp_path / "classify_attacked.png"):
        pick_architecture(page, "vgg")
        page.locator("#classify-image input[type=file]").set_input_files(CAT)
        sync_api.expect(page.locator("#cam-overlay img")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        wait_until_idle(page)
        label = page.locator("#top5 [data-testid=label-output-value]")
        sync_api.expect(label).to_have_text("cat")
        before = loaded_image(page, page.locator("#cam-overlay img"))
        page.locator("#classify-epsilon input").click()
        page.get_by_role("option", name="4/255").click()
        page.locator("#classify-attack label", has_text="PGD").click()
        wait_until_idle(page)
        sync_api.expect(attack_row).to_be_visible()
        perturbation = loaded_image(page, page.locator("#perturbation img"))
        assert perturbation.height > perturbation.width >= 200  # the scale is written under the blown-up view
        note = page.locator("#attack-note")
        sync_api.expect(note).to_contain_text(re.compile(r"4/255 per pixel turned cat \(\d+%\) into \w+"))
        sync_api.expect(note).to_contain_text("The smallest budget at which PGD flips this image")
        assert label.inner_text().strip() in set(CIFAR10) - {"cat"}
        assert page.locator("#attacked-file a[href$='.png']").count() >= 1
        after = loaded_image(page, page.locator("#cam-overlay img"))
        assert ImageStat.Stat(ImageChops.difference(before.resize(after.size), after)).mean[0] > 1
        assert_no_errors(page)
