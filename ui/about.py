"""The app's prose: titles, explanations of the transfer modes, hints. Kept apart from the layout so that
text can change without touching the wiring (the layout of Hugging Face's leaderboard Spaces)."""
from __future__ import annotations

from zoo.assets import MEDICAL_CLASSIFIERS

__all__ = [
    "EXAMPLES_LABEL", "FILE_TYPES_HELP", "INPUTS_HELP", "INTRO", "MODE_TEXT", "NO_IMAGE",
    "TEACHING_INTRO", "TITLE", "TRUST_TEXT", "TRAIN_INTRO", "CLASS_BY_CLASS_HELP", "examples_note", "studies_intro",
    "zoo_intro",
]

TITLE = "Transfer-learning model zoo: compare models"
INTRO = ("# Transfer-learning model zoo\nSeveral models judge the same image, side by side. "
         "A teaching and research tool, **not a medical device**.")
FILE_TYPES_HELP = "PNG, JPEG, BMP, TIFF, GIF, DICOM (.dcm) or a NIfTI volume (.nii, .nii.gz)"
NO_IMAGE = f"Upload an image first ({FILE_TYPES_HELP}), or click an example."
EXAMPLES_LABEL = ("Examples (click one): chest X-rays and brain MRIs with true labels, fundus/CT/MR scans, DICOM "
                  "radiographs and ultrasound, a brain MRI volume, digits")


def examples_note() -> str:
    """What a user must know before reading the OOD check on the examples: the chest X-rays and brain MRIs are the
    imported classifiers' own evaluation images, and those models' OOD feature bank holds every one of them."""
    imported = [f"the **{c.package}** classifier on all {c.num_images} of its packaged {c.modality} images"
                for c in MEDICAL_CLASSIFIERS.values()]
    return ("**Which models have seen these images.** The chest X-rays and brain MRIs are the imported "
            f"classifiers' own evaluation images: {' and '.join(imported)} were evaluated on them, and each model's "
            "out-of-distribution (OOD) check keeps every one of those images in its feature bank. Their OOD score "
            "on them is therefore about 0.000 by construction: it shows nothing about the check. To see the check "
            "at work, try the fundus photo, the CT or MR slice, or an image of your own. The digits come from a "
            "digits demo run's test split when one is installed: never seen in training.")
INPUTS_HELP = ("**What each model reads**: the image after the model's own preprocessing (channels, resize, "
               "crop), at its input size, enlarged with visible pixels.")

TEACHING_INTRO = ("How the selected models were trained: what each transfer mode froze and trained, and what it "
                  "reached. Change the selection on the Compare tab.")

TRAIN_INTRO = (
    "## Do transfer learning yourself\n"
    "Pick labelled images (the packaged chest X-rays and brain MRIs train offline in seconds, or your own), a "
    "backbone pretrained on ImageNet and a transfer mode, then **Train**. With **feature extraction** the backbone is "
    "frozen and only a new head learns from your images; **fine-tuning** lets every layer move; **from scratch** "
    "starts from random weights and shows what the pretrained features were worth. Under 100 images the models are "
    "judged by stratified k-fold cross-validation (every image is scored once by a model that never saw it), with "
    "95% intervals; from 100 images on, by a held-out test split with calibration and an out-of-distribution check. "
    "**Learning curve** trains on 1, 2, 4, … labelled images per class: frozen features against a network from "
    "scratch. Trained models join the Compare tab's list for this browser session and are deleted when you close "
    "the page: download them to keep them.")
CLASS_BY_CLASS_HELP = ("Name each class and drop its images (PNG, JPEG, DICOM, …; at least 2 per class, 2 to 10 "
                       "classes).")

MODE_TEXT = {
    "scratch": "**Scratch**: every weight starts random and every weight trains. It needs the most data and "
               "epochs; a small network can still do well on a simple task.",
    "feature-extraction": "**Feature extraction**: the ImageNet-trained backbone is frozen and only the new head "
                          "trains (Mukhlif et al.'s review, section 2.1). The backbone runs once over the data, so training is "
                          "fast, but the features stay the ones learned on ImageNet.",
    "partial-fine-tune": "**Partial fine-tuning**: the head and the last stages of the backbone train; the early, "
                         "generic stages stay frozen.",
    "fine-tune": "**Fine-tuning**: start from the ImageNet weights and train everything, the head with a larger "
                 "learning rate. Usually the most accurate with little data, at the cost of training every parameter.",
}

TRUST_TEXT = {
    "intro": "### Can an answer be trusted?\nEvery model gives probabilities for every image, even for an image it "
             "has never seen the like of. Three checks, fitted at the end of training (never on the test split), "
             "say how far to trust them.",
    "calibration": "**Calibration.** Of the images a model calls 80% sure, about 80% should be right. The "
                   "expected calibration error (ECE) is the gap between confidence and accuracy, averaged over "
                   "15 equal-width confidence bins (0 is perfect). Temperature scaling (\"On Calibration of "
                   "Modern Neural Networks\") divides the logits by one number T: T > 1 softens an over-confident "
                   "model, T < 1 sharpens a shy one, and the top class never changes; the reliability diagrams "
                   "below show the bins before and after. **Prediction sets** (split conformal prediction, \"A "
                   "Gentle Introduction to Conformal Prediction and Distribution-Free Uncertainty "
                   "Quantification\") list the classes a model cannot rule out: on images like its validation "
                   "images the 90% set holds the true class 9 times in 10. These models' numbers:",
    "ood": "**Out-of-distribution check** (\"Out-of-Distribution Detection with Deep Nearest Neighbors\"). "
           "Probabilities always add up to 1, so a digit model calls a retina photo a 4 with confidence. The check "
           "compares the image's features with those of the nearest training image; when it is farther than a "
           "threshold that 95% of the validation images pass, the image is flagged and the answer is not "
           "meaningful, however confident. These models' checks:",
    "examples": "**What the check did on the examples** (each model on each example image of the Compare tab; "
                "score = each model's own OOD score, by default 1 - cosine similarity to the nearest training "
                "image; flagged above the threshold):",
}


def studies_intro(count: int) -> str:
    """The heading of the study reports on the Teaching tab."""
    if count:
        return f"### Studies\n{count} report(s) from `python -m train.study`, measured on this machine's data:"
    return ("### Studies\nNo study reports yet: run `python -m train.study imbalance|transfer|init --data digits` "
            "to compare remedies, transfer modes and initialisations.")


def zoo_intro(count: int) -> str:
    """The first line of the Model zoo tab."""
    return (f"Every architecture registered in the zoo ({count}), trained or not. "
            "Train one with `python -m train --arch NAME --mode MODE --data SPEC`.")
