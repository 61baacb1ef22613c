"""The editor screenshot of README.md and docs/editor.md: a saved result opened in the editor, an edit on
one segment and a global one committed, the masks shown over the edited image; headless Chromium through
Playwright (as tests/test_editor.py drives it).

    bin/invert --image=astronaut.png --align --segments=8 --output_dir=out/astronaut
    python3 bench/editor_screenshot.py out/astronaut/result [--output docs/images/editor.png]

--panel_output=PATH also shoots the new-direction panel, after the first screenshot: its first 40 samples,
the 10 whose top third is brightest marked yes and the 10 darkest no (the rest skipped), fitted
(docs/editor.md's second screenshot):

    python3 bench/editor_screenshot.py out/face/result --output=out/editor.png \
        --panel_output=docs/images/editor_new_direction.png
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from chunkygan_jax.editor.launch import open_session, remove_if_empty  # noqa: E402
from chunkygan_jax.editor.server import RunningEditor  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("latents")
    ap.add_argument("--output", default="docs/images/editor.png")
    ap.add_argument("--panel_output", default=None, help="also the new-direction panel, labelled and fitted")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    session = open_session(latents=args.latents, workdir=tempfile.mkdtemp(prefix="editor-shot-"), pca=6)
    biggest = int(np.argmax(np.asarray(session.masks).sum(axis=(1, 2))))  # the largest segment
    session.commit({"kind": "direction", "direction": "pca:0", "strength": 2.0, "target": {"segments": [biggest]}})
    session.commit({"kind": "direction", "direction": "pca:2", "strength": -2.0, "target": "all"})
    editor = RunningEditor(session)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1240, "height": 800}, bypass_csp=True)
            page.goto(editor.url)
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            page.get_by_label("Segment masks").check()  # the masks over the edited image
            page.wait_for_timeout(3000)  # the edited image loads after the page is ready
            page.screenshot(path=args.output)
            if args.panel_output:
                shoot_panel(page, session.generator, args.panel_output)
            browser.close()
    finally:
        editor.stop()
        session.close()
        remove_if_empty(session.workdir)  # nothing was exported
    print(f"wrote {args.output}")


def shoot_panel(page, g, output) -> None:
    """Label the panel's first 40 samples by the brightness of their top third (10 yes, 10 no, the rest
    skipped), fit, and shoot the panel."""
    from chunkygan_jax.editing import labelled
    from chunkygan_jax.io import to_uint8

    seeds = labelled.panel_seeds(g, 0, 40)
    top = to_uint8(labelled.sample_images(g, seeds))[:, : g.resolution // 3].mean(axis=(1, 2, 3))
    ranked = [seeds[i] for i in np.argsort(top)]
    marks = {s: "no" for s in ranked[:10]} | {s: "yes" for s in ranked[-10:]}
    page.wait_for_selector("#samples .sample img", timeout=120_000)
    for _ in range(3):
        page.click("#more-samples")
    page.wait_for_selector("#samples .sample:nth-child(48)", timeout=60_000)
    for s in seeds:
        page.locator(f"#samples .sample[data-seed='{s}'] button[data-label='{marks.get(s, 'skip')}']").click()
    page.fill("#direction-name", "light top")
    page.click("#fit")
    page.wait_for_selector("#fit-status[data-accuracy]", timeout=120_000)
    page.wait_for_function("[...document.querySelectorAll('#label-section img')].every(i => i.complete)")
    page.locator("#label-section").screenshot(path=output)
    print(f"held-out accuracy {page.get_attribute('#fit-status', 'data-accuracy')}; wrote {output}")

if __name__ == "__main__":
    main()
