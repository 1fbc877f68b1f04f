"""What the Compare and Teaching tabs' events do: named callbacks over the app's state (ui.state.ComparisonApp),
each returning the updates of the components app.py lists as its outputs, in that order. Plain methods, so that
each is tested without a browser (tests/test_app_events.py); app.py lays out the components and wires them here.

One result column, model-input preview and teaching row per model: `SLOTS`, as many as a comparison takes.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from zoo.inference import ModelResult

from .comparison import MAX_MODELS
from .examples import Example
from .formatting import (column_details, column_header, label_classes, label_scores, models_table_markdown,
                         ood_banner, probabilities_title, trust_markdown)
from .heatmaps import heatmap_for_display
from .state import ComparisonApp, metadata_record
from .teaching import (PLOT_CAPTIONS, TEACHING_HEADERS, ExampleOODChecks, column_widths, params_figure,
                       teaching_markdown, teaching_sections, teaching_table, trust_lesson, with_mode_comparison)
from .train_tab import session_of
from .upload_names import displayable_upload
from .volume import VolumeView, view_note
from .window import WINDOW_MANUAL, chosen_window, window_note

__all__ = ["SLOTS", "AppEvents", "ExamplePicker", "probabilities", "result_columns"]

SLOTS = range(MAX_MODELS)


def probabilities(results: Sequence[ModelResult] | None, raw: bool) -> list[gr.Label]:
    """Each column's probabilities: calibrated unless `raw`, greyed out when the OOD check flagged the image."""
    labels = [gr.Label(label_scores(r, raw), label=probabilities_title(r, raw), elem_classes=label_classes(r))
              for r in (results or [])[:len(SLOTS)]]
    return labels + [gr.Label(None)] * (len(SLOTS) - len(labels))


def _hidden_column() -> list[Any]:
    """(column, header, OOD banner, label, trust, heatmap, details) of an unused result column."""
    return [gr.Column(visible=False), "", gr.Markdown(visible=False), None, "", gr.Image(None), ""]


def result_columns(results: Sequence[ModelResult], labels: list[gr.Label]) -> list[Any]:
    """The result columns' updates, seven components per slot: a shown column per result, the rest hidden."""
    updates = []
    for i in SLOTS:
        if i >= len(results):
            updates += _hidden_column()
            continue
        result = results[i]
        banner, picture = ood_banner(result), heatmap_for_display(result)
        updates += [gr.Column(visible=True), column_header(result), gr.Markdown(banner, visible=bool(banner)),
                    labels[i], trust_markdown(result), gr.Image(picture, visible=picture is not None),
                    column_details(result)]
    return updates


class AppEvents:
    """The Compare and Teaching tabs' callbacks over one app's state (bound methods: gradio sees their
    gr.Request and gr.Progress parameters)."""

    def __init__(self, app: ComparisonApp, example_checks: ExampleOODChecks | None = None):
        self.app = app
        # the Teaching tab's OOD table: computed when first shown, remembered
        self.example_checks = example_checks or ExampleOODChecks()

    def compare(self, path: str | None, ids: list[str] | None, age: float | None, sex: str | None, site: str | None,
                top_k: float, raw: bool, cam: bool, window_choice: str | None, center: float | None,
                width: float | None, request: gr.Request, progress: Any = gr.Progress(),
                view: VolumeView | None = None) -> list[Any]:
        """The Compare button: (summary, records, the results kept for redrawing, the result columns' updates);
        `view` (axis, slice) is the slice of a volume upload the page shows."""
        app = self.app
        try:  # an example's true label is known: the summary then says which models were right
            comparison = app.compare(path, ids, metadata_record(age, sex, site), int(top_k), cam=bool(cam),
                                     progress=progress, true_label=app.true_label(path), session=session_of(request),
                                     window=chosen_window(window_choice, center, width), view=view)
        except gr.Error as e:  # a bad image or selection: say so where the answer would be, keep the page
            gr.Warning(e.message, title=e.title)
            return [f"**⚠ {e.title}:** {e.message}", None, [], *_hidden_column() * len(SLOTS)]
        columns = result_columns(comparison.results, probabilities(comparison.results, raw))
        summary = comparison.summary.markdown + window_note(comparison.image_info) + view_note(comparison.image_info)
        return [summary, comparison.records(), comparison.results, *columns]

    def model_inputs(self, path: str | None, ids: list[str] | None, window_choice: str | None,
                     center: float | None, width: float | None, request: gr.Request,
                     view: VolumeView | None = None) -> list[Any]:
        """What each selected model reads: (the group shown when there is any, then column, picture, caption per
        slot)."""
        shown = self.app.model_inputs(path, ids, session_of(request), chosen_window(window_choice, center, width),
                                      view)
        updates = [gr.Group(visible=bool(shown))]
        for i in SLOTS:
            picture, caption = shown[i] if i < len(shown) else (None, "")
            updates += [gr.Column(visible=i < len(shown)), picture, caption]
        return updates

    def selection(self, ids: list[str] | None, request: gr.Request) -> tuple[Any, ...]:
        """A new selection (and the page's load): the metadata inputs, and the Teaching tab's text, figures and a
        row per model (column, title, then column, picture, caption per plot)."""
        app, session = self.app, session_of(request)
        chosen = app.selected_entries(ids or [], session)
        show, sex_choices, site_choices = app.metadata_fields(ids, session)
        offered = [*app.trained.entries(session).values(), *app.entries.values()]
        lesson, added = with_mode_comparison(chosen, offered, slots=len(SLOTS))  # the modes always side by side
        sections, table = teaching_sections(lesson), teaching_table(lesson)
        rows = []
        for i in SLOTS:
            section = sections[i] if i < len(sections) else None
            rows += [gr.Column(visible=section is not None), section.title if section else ""]
            for kind in PLOT_CAPTIONS:
                picture, caption = section.figures.get(kind, (None, "")) if section else (None, "")
                rows += [gr.Column(visible=picture is not None), picture, caption]
        return (gr.Group(visible=show), gr.Dropdown(choices=sex_choices), gr.Dropdown(choices=site_choices),
                "\n\n".join(filter(None, [added, teaching_markdown(lesson)])), params_figure(lesson),
                gr.Dataframe(table, column_widths=column_widths(TEACHING_HEADERS, table)), trust_lesson(chosen),
                *rows)

    def rescan(self, ids: list[str] | None, request: gr.Request) -> tuple[gr.CheckboxGroup, str]:
        """Rescan the weights folder: the models on offer (the selection keeps those still there), and their table."""
        self.app.refresh()
        return self.app.model_picker(ids, session_of(request)), models_table_markdown(list(self.app.entries.values()))

    def example_ood_table(self, ids: list[str] | None) -> str:
        """The Teaching tab opened: what each selected model's OOD check says of every example image."""
        app = self.app
        return self.example_checks.markdown(app.selected_entries(ids or []), app.examples, app.cache)

    @staticmethod
    def uploaded_file(path: str | None) -> str | None:
        """The "Replace image…" button's upload becomes the image input's file, under a name shown as it is."""
        return displayable_upload(path)

    @staticmethod
    def renamed_upload(path: str | None) -> Any:
        """An upload dropped on the image input whose name holds bidirectional or control characters: the same
        file under its printable name, which the file widget then shows; otherwise nothing changes."""
        shown = displayable_upload(path)
        return gr.skip() if shown == path else shown

    @staticmethod
    def manual_window() -> str:
        """"Apply this centre and width": the window menu says the window is the typed one."""
        return WINDOW_MANUAL


class ExamplePicker:
    """A click on the examples gallery puts that example into a file input."""

    def __init__(self, examples: Sequence[Example], file_input: gr.File):
        self.examples, self.file_input = examples, file_input

    def pick(self, evt: gr.SelectData) -> str | None:
        """The clicked example's copy in Gradio's cache, made at click time (the cache is emptied by age)."""
        return self.file_input.move_resource_to_block_cache(self.examples[evt.index].path)
