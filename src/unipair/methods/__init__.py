"""Learning methods behind one contract (:class:`Method`) and one registry."""

from unipair.methods import joint, ogm_ge, unimodal  # noqa: F401  (registration)
from unipair.methods import mla as mla  # registration
from unipair.methods import pgm as pgm  # registration
from unipair.methods.base import (
    AuxRun,
    EpochData,
    Method,
    MethodHparams,
    MethodTags,
    ParamGroup,
    Prediction,
    TrainStep,
)
from unipair.methods.registry import (
    create,
    describe_hparams,
    list_methods,
    register_method,
    validate_hparams,
)

__all__ = [
    "AuxRun",
    "EpochData",
    "Method",
    "MethodHparams",
    "MethodTags",
    "ParamGroup",
    "Prediction",
    "TrainStep",
    "create",
    "describe_hparams",
    "list_methods",
    "register_method",
    "validate_hparams",
]
