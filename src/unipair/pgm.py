"""Public PgM API: put PgM's partitioner, learners and decoder into your own multimodal model.

``PgMAdapter(encoders, widths, num_classes, config)`` wraps per-modality encoders; see
``docs/pgm_adapter.md``. The ``pgm`` method (``unipair.methods.pgm``) is the same adapter on the
built-in model.
"""

from unipair.models.pgm import (
    MODALITY_PARTS,
    SHARED_PARTS,
    PgMAdapter,
    PgMConfig,
    PgMOutputs,
    resolve_lr_mults,
    resolve_rho,
)

__all__ = [
    "MODALITY_PARTS",
    "SHARED_PARTS",
    "PgMAdapter",
    "PgMConfig",
    "PgMOutputs",
    "resolve_lr_mults",
    "resolve_rho",
]
