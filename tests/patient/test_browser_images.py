"""The image side of the patient page in a real browser: the chest diagram after reading a report, a CT
series opened from files, the windows (pixels checked), the slice control, the jump to a cited slice,
the text-only note; no identifier from the DICOM tags anywhere on the page. A screenshot is saved
under `test-output/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.patient.dicom_util import SECRETS, ct_series
from tests.patient.test_browser import OUTPUT, browser, open_page, templates_url  # noqa: F401 - fixtures
from verticals.patient.examples import examples

pytestmark = pytest.mark.slow

# the first pixel of ct_series' image 45 (HU -1000 + 100 = -900) through each window, by the DICOM formula:
# mediastinum (40 / 400) is black below -160; lung (-600 / 1500): (-900 + 600.5) / 1499 + 0.5 = 0.3002 -> 77
CORNER = {"mediastinum": 0, "lung": 77, "bone": 0}


def corner(page: Any) -> int:
    """The red channel of the shown slice's top-left pixel, read back through a canvas."""
    return page.evaluate("""() => { const img = document.querySelector('#slice-image');
        const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0); return g.getImageData(0, 0, 1, 1).data[0]; }""")


def shown(page: Any, label: str) -> None:
    page.wait_for_function(f"() => document.querySelector('#slice-label').textContent.trim() === {label!r} "
                           "&& document.querySelector('#slice-image').complete "
                           "&& document.querySelector('#slice-image').naturalWidth > 0")


def test_a_ct_series_the_diagram_and_a_cited_slice(templates_url: str, open_page: Any, tmp_path: Path) -> None:  # noqa: F811
    view = open_page(templates_url)
    page = view.page
    view.read(examples()["ct_01"].text)  # cites series 3, images 45, 162 and 118
    page.wait_for_selector("#diagram-view:not([hidden]) #diagram-figure svg")
    lit = page.evaluate("() => [...document.querySelectorAll('#diagram-figure path.lit')].map(p => p.id).sort()")
    maybe = page.evaluate("() => [...document.querySelectorAll('#diagram-figure path.maybe')].map(p => p.id)")
    assert lit == ["heart", "left_lower_lobe", "left_upper_lobe", "right_middle_lobe", "right_upper_lobe"]
    assert maybe == ["lingula"]
    listed = page.locator("#diagram-list li").all_inner_texts()
    assert any(item.startswith("right upper lobe: ") and "lung nodule" in item for item in listed)
    assert any("lingula" in item and "the report is not sure" in item for item in listed)
    filled = page.evaluate("() => getComputedStyle(document.querySelector('#right_upper_lobe')).fill")
    assert filled == "rgb(246, 196, 83)"  # styled by app.css: the drawing's own <style> is not run

    cite = page.locator(".cite-image", has_text="series 3, image 45").first
    cite.click()
    assert "first open your scan images" in page.locator("#image-error").inner_text()
    assert "reads your report, not the images" in page.locator("#images-model-note").inner_text()

    files = sorted(p for p in ct_series(tmp_path / "cd").iterdir() if p.name.startswith("IM"))
    page.set_input_files("#image-files", [str(f) for f in files])
    page.wait_for_function("() => document.querySelector('#image-status').textContent.includes('Opened 3 images')")
    shown(page, "Series 3, image 45 (2 of 3)")  # the first image the report cites, among those opened
    assert corner(page) == CORNER["mediastinum"]
    for window in ("lung", "bone"):
        page.check(f"#window-{window}")
        page.wait_for_function(f"() => document.querySelector('#slice-image').alt.includes({window[:4]!r})")
        shown(page, "Series 3, image 45 (2 of 3)")
        page.wait_for_function(f"""() => {{ const img = document.querySelector('#slice-image');
            const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(img, 0, 0);
            return g.getImageData(0, 0, 1, 1).data[0] === {CORNER[window]}; }}""")
    page.check("#window-lung")
    page.focus("#slice-range")
    page.keyboard.press("ArrowRight")
    shown(page, "Series 3, image 46 (3 of 3)")
    assert page.locator("#slice-next").is_disabled()
    assert page.get_attribute("#slice-range", "aria-valuetext") == "Series 3, image 46 (3 of 3)"
    cite.click()  # back to the slice the sentence cites
    shown(page, "Series 3, image 45 (2 of 3)")
    assert page.evaluate("() => document.activeElement.id") == "slice-range"
    page.locator(".cite-image", has_text="series 3, image 162").first.click()
    assert "is not among the images you opened" in page.locator("#image-error").inner_text()
    OUTPUT.mkdir(exist_ok=True)
    page.locator("#images-panel").scroll_into_view_if_needed()
    page.screenshot(path=str(OUTPUT / "patient-images.png"), full_page=True)
    text = page.locator("body").inner_text()
    for secret in SECRETS:
        assert secret not in text
    assert view.problems == []

    page.click("#clear")
    page.wait_for_function("() => document.querySelector('#viewer').hidden")
    assert page.evaluate("() => document.querySelector('#diagram-figure').children.length") == 0
    assert page.input_value("#image-files") == ""


def test_a_portal_picture_has_no_windows_and_the_viewer_fits_a_phone(templates_url: str, open_page: Any,  # noqa: F811
                                                                      tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    picture = tmp_path / "portal.png"
    Image.fromarray((np.arange(256 * 256) % 251).astype(np.uint8).reshape(256, 256)).save(picture)
    view = open_page(templates_url, width=375, height=800)
    page = view.page
    page.set_input_files("#image-files", str(picture))
    page.wait_for_function("() => document.querySelector('#image-status').textContent.includes('Opened your picture')")
    shown(page, "Your picture")
    assert page.locator("#window-choice").is_hidden() and page.get_attribute("#slice-image", "alt") == "Your picture"
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow} px of sideways scrolling at 375 px"
    assert view.problems == []


def test_with_a_model_that_sees_images_the_question_carries_the_slice_on_screen(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    import io

    import numpy as np
    from PIL import Image

    from tests.patient.test_browser import Page
    from tests.patient.vision_util import Seer
    from tests.patient.web_util import running_app, running_asgi
    from verticals.llm import OpenAIModel
    from verticals.patient.web import WebSettings

    seer = Seer("The nodule might be in the upper part of the lung, on the left side of the picture.")
    with running_asgi(seer.app()) as vision:
        model = OpenAIModel(f"{vision}/v1", "seer", timeout=10.0, max_retries=0)
        with running_app(lambda: model, WebSettings(sees_images=True, model_slots=2)) as url:
            view = Page(browser, url)
            page = view.page
            try:
                page.wait_for_function("() => document.querySelector('#images-model-note').textContent"
                                       ".includes('can look at the picture on your screen')")
                view.read(examples()["ct_01"].text)
                files = sorted(p for p in ct_series(tmp_path / "cd").iterdir() if p.name.startswith("IM"))
                page.set_input_files("#image-files", [str(f) for f in files])
                shown(page, "Series 3, image 45 (2 of 3)")
                page.check("#window-lung")
                page.wait_for_function("() => document.querySelector('#slice-image').alt.includes('lung')")
                shown(page, "Series 3, image 45 (2 of 3)")
                result = view.ask("Where is the nodule?")
                on_screen = page.evaluate("""async () => { const b = await (await fetch(
                    document.querySelector('#slice-image').src)).arrayBuffer(); return [...new Uint8Array(b)]; }""")
                assert view.problems == []
            finally:
                view.close()
    assert result["source"].startswith("Written by the AI model, which was shown the picture on your screen")
    assert result["text"].startswith("Looking at the picture you have on screen")
    sent = np.asarray(Image.open(io.BytesIO(seer.images[-1])))
    assert np.array_equal(sent, np.asarray(Image.open(io.BytesIO(bytes(on_screen)))))  # the slice on screen
    assert sent[0, 0] == CORNER["lung"]
