"""Studies that measure choices instead of asserting them (seed 001): imbalance remedies, transfer
modes and initialisation schemes, each trained with ``python -m train`` and reported as tables and plots.

    python -m train.study imbalance --data digits-imbalanced --arch lenet5 --img-size 32 --seeds 3
    python -m train.study transfer --data digits --arch efficientnet_lite0 --img-size 64
    python -m train.study init --data digits --arch lenet5 --img-size 32

or from Python, with the options of the study's config dataclass::

    run_init_study(InitConfig(epochs=3), out="weights/studies/init-short")
    run_imbalance_study(seeds=5, remedies=["plain-ce", "margin"])

Every run of a study uses the same split (``--split-seed``); seeds change only initialisation and
order. Each run keeps the weights of its best *validation* epoch; nothing is chosen on the test split,
which is scored once per run and reported as measured, including when a remedy does not help.

Report folder (default ``weights/studies/<study>/``, gitignored; the app's teaching tab lists the
folders under ``weights/studies/`` that hold a ``results.json``)::

    weights/studies/<study>/
      report.md          the report: what was compared and how, the measured tables, the plots, the command
      results.json       {"study", "title", "created", "command", "config", "summary": [row per variant],
                          "runs": [raw result per run], "plots": [file names], "report": "report.md"}
      study_config.yaml  the resolved options
      <study>.png        the plot(s) named in results.json["plots"]
      runs/<variant>-seed<k>/   each training run, in python -m train's run-folder layout
      gan/               (imbalance) the DCGAN run folder (python -m train.gan)
      synthetic/         (imbalance) its synthetic images, manifest.json and quality/quality.{md,json}

Modules: ``common`` (options, split, runs, report folder, statistics), one per study (``imbalance``,
``transfer``, ``init``), ``cli`` (the command line, built from the config dataclasses).
"""
from .cli import STUDIES, build_parser, main
from .common import STUDIES_DIR, StudyConfig
from .imbalance import REMEDIES, ImbalanceConfig, run_imbalance_study
from .init import InitConfig, run_init_study
from .transfer import TRANSFER_MODES, TransferConfig, run_transfer_study

__all__ = ["STUDIES", "REMEDIES", "TRANSFER_MODES", "run_imbalance_study", "run_transfer_study",
           "run_init_study", "main", "STUDIES_DIR",
           "StudyConfig", "ImbalanceConfig", "TransferConfig", "InitConfig", "build_parser"]
