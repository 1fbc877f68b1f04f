"""Serving the app and driving Chromium, for the tests and benchmarks that need a live server or a real browser:
one free port, one way to launch, one browser per module."""
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is None,
                                    reason=f"{CHROMIUM} missing: apt-get install -y chromium (.ci/run installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(settings):
    """Build the app for `settings` and serve it on a free local port without blocking: -> (demo, url)."""
    import app

    demo = app.build_demo(settings)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **app.launch_kwargs(settings, demo))
    return demo, url


@contextmanager
def served_app(weights: Path, examples_dir: Path, **settings):
    """The app over `weights`, served on a free local port until the block ends: -> (demo, url, gradio client)."""
    import app
    from gradio_client import Client

    demo, url = serve(app.Settings(weights=weights, examples_dir=examples_dir, **settings))
    try:
        yield demo, url, Client(url, verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module's pages: a second sync Playwright cannot start while the first one runs."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class QueueRequests:
    """The events a page sends to the server, counted as Gradio's queue sees them: one `queue/join` request per
    handler run. A loop between listeners shows as requests that never stop."""

    def __init__(self, page):
        self.times: list[float] = []
        page.on("request", self._seen)

    def _seen(self, request) -> None:
        if "/queue/join" in request.url:
            self.times.append(time.monotonic())

    def since(self, start: float) -> int:
        return sum(t >= start for t in self.times)

    def settle(self, page, quiet_s: float = 4.0, limit_s: float = 45.0) -> None:
        """Wait until no request has been sent for `quiet_s`, keeping the page busy all the while (an idle headless
        page throttles its timers, which once hid an endless event loop from the suite); fail after `limit_s`."""
        start = time.monotonic()
        while time.monotonic() - start < limit_s:
            page.evaluate("() => document.querySelectorAll('*').length")
            last = max(self.times[-1] if self.times else start, start)
            if time.monotonic() - last >= quiet_s:
                return
            time.sleep(0.1)
        pytest.fail(f"the page kept sending requests for {limit_s:.0f} s ({self.since(start)} of them): "
                    "an event loop between listeners")
