"""The README's screenshot: the app over a weights folder, a packaged chest X-ray compared by the default (medical)
selection, captured in Chromium as a visitor sees it.

    python scripts/screenshot.py --weights weights --out docs/images/compare.png [--width 1400]

Run it after `bash run.sh` has built the demo zoo (or on any weights folder). It serves the app on a free local port,
clicks the first chest X-ray example, presses Compare, waits for every column and saves the page down to the result
columns. Needs Playwright and Debian's chromium, as the browser tests do.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def capture(weights: Path, out: Path, width: int, example: str) -> None:
    """Serve the app over `weights`, compare the example whose caption contains `example`, save the page to `out`."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=180_000)  # the first comparison loads every model: minutes on a busy CPU

    import app

    settings = app.Settings(weights=weights)
    demo = app.build_demo(settings)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
                            **app.launch_kwargs(settings, demo))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.set_default_timeout(180_000)
            page.goto(url)
            page.locator("#compare-button").wait_for()
            page.get_by_text(example).first.click()
            expect(page.locator("#image-info")).not_to_be_empty()
            page.locator("#compare-button").click()
            expect(page.locator("#summary")).to_contain_text("True label")
            columns = page.locator(".model-column:visible")
            for i in range(columns.count()):
                expect(page.locator(f"#label-{i}")).to_contain_text("%")
            bottom = max(columns.nth(i).bounding_box()["y"] + columns.nth(i).bounding_box()["height"]
                         for i in range(columns.count()))
            time.sleep(1)  # let the last paint settle
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True,
                            clip={"x": 0, "y": 0, "width": width, "height": bottom + 16})
            browser.close()
    finally:
        demo.close()
    print(f"wrote {out} ({width} px wide)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=Path("weights"), help="the run folders to offer")
    parser.add_argument("--out", type=Path, default=Path("docs/images/compare.png"))
    parser.add_argument("--width", type=int, default=1400, help="the browser window's width in px")
    parser.add_argument("--example", default="chest X-ray, true label PNEUMONIA",
                        help="text of the example's caption to click")
    args = parser.parse_args()
    capture(args.weights, args.out, args.width, args.example)


if __name__ == "__main__":
    main()
