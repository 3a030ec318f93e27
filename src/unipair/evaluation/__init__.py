"""Evaluation: metrics, missing-modality robustness, modality contributions, reports."""
