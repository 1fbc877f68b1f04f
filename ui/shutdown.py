"""Serve the app until Ctrl-C or SIGTERM (systemd, `docker stop`, `kill`), then delete what it wrote.

Python's default action for SIGTERM ends the process on the spot: no `finally`, no atexit handler. The uploads
(patient images, in Gradio's cache), the files the app generated there and the private examples folder then stayed
on disk, though the app promises to delete them at shutdown. Ctrl-C did not do much better: Gradio's `launch`
catches its KeyboardInterrupt and closes the server, whose shutdown would delete the files Gradio cached, but a
connected page (its heartbeat) keeps the server from finishing within the 5 s Gradio waits for it, so the uploads
stayed there too, and the process took 13 s to end (`docker stop` kills after 10 s). Here both signals take one
path: the files the app put in Gradio's cache are deleted as soon as the signal arrives, the whole demo is closed
(its queue and the pages' heartbeats too, so that the server ends within a second or two), `launch` returns as on
Ctrl-C, and the interpreter's exit runs the atexit handlers (the examples folder, ui/examples.py).
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import gradio as gr
from gradio.route_utils import delete_files_created_by_app

__all__ = ["serve_until_stopped"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve_until_stopped(demo: gr.Blocks, launch_kwargs: dict[str, Any]) -> None:
    """`demo.launch(**launch_kwargs)` in the main thread, stopped alike by Ctrl-C and SIGTERM; on the way out every
    file `demo` put in Gradio's cache (uploads, generated images) is deleted."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop_handler(demo))
    try:
        demo.launch(**launch_kwargs)  # returns once Gradio caught the KeyboardInterrupt and closed its server
    finally:
        delete_cached_files(demo)  # what arrived while the server closed


def delete_cached_files(demo: gr.Blocks) -> None:
    """Delete every file `demo` put in Gradio's cache, whatever its age (Gradio's own clean-up at shutdown)."""
    delete_files_created_by_app(demo, age=None)


def _stop_handler(demo: gr.Blocks) -> Callable[[int, FrameType | None], None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        # a second signal (an impatient supervisor, Ctrl-C twice) must not interrupt the clean-up the first one
        # started; SIGKILL still ends a shutdown that hangs
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        delete_cached_files(demo)
        demo.close(verbose=False)  # also ends the pages' heartbeats, which would hold the server open
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    return stop
