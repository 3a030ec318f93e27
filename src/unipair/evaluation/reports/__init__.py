"""The built-in per-method reports; importing this package registers them
(see :mod:`unipair.evaluation.method_reports`)."""

from unipair.evaluation.reports import mla as mla  # registration
from unipair.evaluation.reports import pgm as pgm  # registration
