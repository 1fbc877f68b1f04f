"""The app's glossary: one short meaning per technical term the Compare and Teaching tabs show, attached where the
term appears as an <abbr title=...> (hovering shows the meaning; the dotted underline says there is one).

A hover, not a link to a glossary section: the terms appear on two tabs and Gradio shows one tab at a time, so an
anchor on the other tab would not scroll anywhere; the hover works in place, in every Markdown block (Gradio's
sanitizer keeps <abbr title>). The full list is also shown as a section (glossary_markdown) for touch screens.
"""
from __future__ import annotations

import html
import re
from typing import NamedTuple

__all__ = ["GLOSSARY", "Term", "abbr", "explain_terms", "glossary_markdown"]


class Term(NamedTuple):
    """A glossary entry: its name, what it means in this app, and how the app writes it (a regular expression)."""

    name: str
    meaning: str
    pattern: str


# no "|" in a meaning: the texts can be Markdown table cells. Mode names never match inside a hyphenated model id
# (lenet5-scratch-digits)
GLOSSARY: tuple[Term, ...] = (
    Term("ECE", "Expected calibration error: the gap between how sure a model says it is and how often it is right, "
         "averaged over confidence bins. 0 is perfect.", r"\bECE\b"),
    Term("temperature T", "Temperature scaling divides the logits by one number T before the softmax: T > 1 makes an "
         "over-confident model less sure, T < 1 more sure. The top class never changes.", r"\bT(?= ?[=<>])"),
    Term("raw softmax", "The model's probabilities as it outputs them, before any calibration.", r"\braw softmax\b"),
    Term("calibrated", "Probabilities corrected by temperature scaling so that, of the answers given with 80% "
         "confidence, about 80% are right.", r"(?<![A-Za-z-])[Cc]alibrated(?![A-Za-z])"),
    Term("prediction set", "The classes the model cannot rule out (split conformal prediction): on images like its "
         "validation images, the 90% set holds the true class 9 times in 10.", r"\b\d+% set\b|\b[Pp]rediction sets?\b"),
    Term("OOD check", "Out-of-distribution check: is the image like the images the model learned from? If its "
         "score is above the threshold, the answer is not meaningful, however confident.",
         r"\bOOD check\b|\b[Oo]ut-of-distribution check\b"),
    Term("OOD score", "How unlike the model's training images this image's features are, by the method its run "
         "folder names: by default 1 - the cosine similarity to the nearest image in the model's feature bank (0 for "
         "an image the bank holds); or the Mahalanobis distance to the nearest class mean. Larger is stranger.",
         r"\bscore(?= ?[>=≤\d])"),
    Term("OOD threshold", "The score that 95% of the model's validation images stay under; above it, the image is "
         "flagged as unlike the training images.", r"\bthreshold\b"),
    Term("leave-one-out", "Each image is scored against all the others but itself, so an image cannot match "
         "itself: how the threshold is set when the bank holds every image there is.",
         r"(?<![A-Za-z-])leave-one-out(?![A-Za-z])"),
    Term("|Δ logit|", "The largest absolute difference between the logits (the scores before the softmax) of the "
         "exported ONNX model and of PyTorch on the same inputs: how exactly the fast backend copies the original.",
         r"\|Δ logit\|"),
    Term("backend", "The engine that runs the model: ONNX Runtime (fast, exported and checked against PyTorch) or "
         "PyTorch itself.", r"\bRuns on\b|\bbackend\b"),
    Term("target layer", "The layer whose activations Grad-CAM weighs to draw the heatmap (e.g. backbone.act4: "
         "the backbone's last activation), usually the last one that still has a spatial map.",
         r"\blayer `([^`\n]+)`"),
    Term("Grad-CAM", "A heatmap of the image regions that raised the top class's score the most (gradient-weighted "
         "class activation mapping).", r"\bGrad-CAM\b"),
    Term("feature extraction", "Transfer mode: the ImageNet-trained backbone is frozen and only a new head learns. "
         "Fast, needs little data.", r"(?<![\w-])[Ff]eature[- ]extraction(?![\w-])"),
    Term("fine-tuning", "Transfer mode: start from ImageNet weights and let every layer learn (partial fine-tuning: "
         "only the last stages and the head).", r"(?<![\w-])[Ff]ine-tun(?:ing|e)(?![\w-])"),
    Term("scratch", "Training from random weights, no pretrained features: shows what the pretraining was worth.",
         r"(?<![\w-])[Ss]cratch(?![\w-])"),
)


def abbr(text: str, meaning: str) -> str:
    """`text` with `meaning` shown on hover (HTML that Gradio's Markdown keeps)."""
    return f'<abbr title="{html.escape(meaning, quote=True)}">{text}</abbr>'


def explain_terms(markdown: str) -> str:
    """`markdown` with the first mention of each glossary term wrapped in an <abbr> carrying its meaning.

    Code spans are left as written, except a layer name after the word "layer": the name is the term there."""
    tokens: list[str] = []  # what each placeholder stands for: a later term must not match inside a meaning

    def hold(html_text: str) -> str:
        tokens.append(html_text)
        return f"\x00{len(tokens) - 1}\x00"

    layer = next(t for t in GLOSSARY if t.name == "target layer")
    markdown = re.sub(layer.pattern,
                      lambda m: "layer " + hold(abbr(f"<code>{html.escape(m.group(1))}</code>", layer.meaning)),
                      markdown, count=1)
    parts = re.split(r"(`[^`\n]*`)", markdown)  # odd items: code spans, never rewritten (nor matched by `layer`)
    for term in GLOSSARY:
        for i in range(0, len(parts), 2):
            parts[i], found = re.subn(term.pattern, lambda m: hold(abbr(m.group(0), term.meaning)), parts[i], count=1)
            if found:
                break
    return re.sub("\x00(\\d+)\x00", lambda m: tokens[int(m.group(1))], "".join(parts))


def glossary_markdown() -> str:
    """Every glossary term with its meaning, as a Markdown list (the section under the examples)."""
    return "\n".join(f"- **{term.name}**: {term.meaning}" for term in GLOSSARY)
