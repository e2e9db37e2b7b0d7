"""Evaluation: the FID Inception network, FID / sFID / IS / precision / recall, and FD-FMNIST for small runs."""
from .fmnist import evaluate_fmnist_for_training, fmnist_scorer, fmnist_scores, generate_samples
from .inception import InceptionV3Features
from .metrics import RunningStats, frechet_distance, gaussian_stats, inception_score, precision_recall

__all__ = ["InceptionV3Features", "RunningStats", "evaluate_fmnist_for_training", "fmnist_scorer", "fmnist_scores",
           "frechet_distance", "gaussian_stats", "generate_samples", "inception_score", "precision_recall"]
