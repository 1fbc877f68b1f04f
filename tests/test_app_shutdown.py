"""A real `python app.py` process stopped with SIGTERM (systemd, docker stop, kill) or Ctrl-C (SIGINT) deletes the
uploaded file (Gradio's cache) and its private examples folder, and exits cleanly within seconds.
Before ui/shutdown.py, SIGTERM ended the process on the spot (exit -15) and both stayed on disk; Ctrl-C removed the
examples folder but left the upload (a connected client kept Gradio's server from finishing its own clean-up)."""
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _serve import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120  # cold start: imports and the examples; seconds on a free core


def _wait_until_answering(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode} before answering: {process.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not answer at {url} within {START_TIMEOUT_S} s")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_deletes_uploads_and_the_examples_folder_and_exits_cleanly(tmp_path, stop):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    port, cache, examples = free_port(), tmp_path / "gradio-cache", tmp_path / "examples"
    env = {**os.environ, "ZOO_APP_WEIGHTS": str(tmp_path / "none"), "ZOO_APP_EXAMPLES": str(examples),
           "GRADIO_TEMP_DIR": str(cache), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "ZOO_APP_OPEN_BROWSER": "0"}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_answering(process, url)
        folders = list(examples.glob("zoo-app-examples-*"))
        assert len(folders) == 1 and any(folders[0].iterdir()), "the app should have written its examples"
        upload = tmp_path / "patient-scan.png"
        shutil.copy(next(p for p in folders[0].iterdir() if p.suffix == ".png"), upload)
        client = Client(url, verbose=False)  # stays connected (its heartbeat) through the stop, as an open page
        with pytest.raises(AppError, match="Select 2 to 6 models"):  # the file is uploaded all the same
            client.predict(handle_file(str(upload)), ["one"], api_name="/compare")
        uploaded = list(cache.rglob(upload.name))
        assert uploaded, f"the upload should be in Gradio's cache {cache}"
        stopped_at = time.monotonic()
        process.send_signal(stop)
        out, err = process.communicate(timeout=60)
        stop_s = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert not folders[0].exists(), f"the examples folder outlived {stop.name}"
    assert not any(p.exists() for p in uploaded), f"the uploaded image outlived {stop.name}"
    assert stop_s < 8, f"{stop.name} took {stop_s:.1f} s to end the app; docker stop kills after 10 s"
