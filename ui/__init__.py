"""The comparison app's pieces that are not layout: settings, example images, text formatting, the teaching
tab's prose and analytics, and the app's state. Plain Python (only `ui.state` imports gradio, for the
errors it shows), so each is testable without a browser; app.py lays them out and wires the events."""
