"""Out-of-distribution scores, each chosen by the name its run folder declares (zoo/ood/base.py: the interface,
the registry, the one reader and writer of ood.safetensors). Importing a method's module registers it; a new
method is one new module here, its line below, and its JavaScript twin in web/private.js."""
from .base import (DEFAULT_OOD_METHOD, OOD_PASS_RATE, OODStatistics, ood_method, ood_method_names,
                   read_ood_statistics, register_ood_method, save_ood_statistics, threshold_at_pass_rate)
from .knn_cosine import KnnCosine, leave_one_out_scores
from .mahalanobis import Mahalanobis

__all__ = ["DEFAULT_OOD_METHOD", "OOD_PASS_RATE", "OODStatistics", "KnnCosine", "Mahalanobis", "ood_method",
           "ood_method_names", "read_ood_statistics", "register_ood_method", "save_ood_statistics",
           "threshold_at_pass_rate", "leave_one_out_scores"]
