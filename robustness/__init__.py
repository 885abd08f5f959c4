"""Corruption robustness (CIFAR-10-C) and calibration (ECE, temperature scaling) of the zoo's checkpoints."""
from .calibration import ece, fit_temperature, reliability
from .corruptions import CORRUPTIONS, LABELS, NONE, SEVERITIES, check, corrupt, corrupt_image
from .report import BASELINE, RESULT_NAME, card_sentence, load_result, relative_mce

__all__ = ["BASELINE", "CORRUPTIONS", "LABELS", "NONE", "RESULT_NAME", "SEVERITIES", "card_sentence", "check",
           "corrupt", "corrupt_image", "ece", "fit_temperature", "load_result", "relative_mce", "reliability"]
