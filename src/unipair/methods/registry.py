"""Method registry: ``create(name, task, model, hparams)``, ``list_methods()``.

Registration checks the class (:func:`unipair.methods.base.check_method_class`), so a method
missing a hook fails when it is defined, not at its first training step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from unipair.data.dataset import TaskSpec
from unipair.errors import ConfigError
from unipair.methods.base import Method, MethodHparams, check_method_class
from unipair.models.multimodal import ModelConfig
from unipair.registry import Registry

__all__ = [
    "METHODS",
    "create",
    "describe_hparams",
    "list_methods",
    "register_method",
    "validate_hparams",
]

METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def decorator(cls: type[Method]) -> type[Method]:
        check_method_class(cls, name)
        cls.name = name
        return METHODS.register(name)(cls)

    return decorator


def list_methods() -> list[str]:
    return METHODS.names()


def format_validation_error(err: ValidationError, where: str, allowed: list[str]) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key {key!r}; allowed: {', '.join(allowed) or '(none)'}")
        else:
            lines.append(f"{where}: {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def validate_hparams(name: str, hparams: MethodHparams | Mapping[str, Any] | None) -> MethodHparams:
    """The method's typed hyperparameters; a mapping is validated (unknown keys named)."""
    cls = METHODS.get(name)
    if isinstance(hparams, cls.Hparams):
        return hparams
    if isinstance(hparams, MethodHparams):
        hparams = hparams.model_dump()
    try:
        return cls.Hparams.model_validate(dict(hparams or {}))
    except ValidationError as e:
        allowed = sorted(cls.Hparams.model_fields)
        raise ConfigError(format_validation_error(e, f"method {name!r}", allowed)) from None


def describe_hparams(name: str) -> dict[str, tuple[str, Any, str]]:
    """hyperparameter -> (type, default, description), for ``unipair methods``."""
    out = {}
    for key, f in METHODS.get(name).Hparams.model_fields.items():
        t = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        default = None if f.is_required() else f.get_default(call_default_factory=True)
        out[key] = (t, "(required)" if f.is_required() else default, f.description or "")
    return out


def create(
    name: str,
    task: TaskSpec,
    model: ModelConfig | Mapping[str, Any] | None = None,
    hparams: MethodHparams | Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Method:
    """Build a registered method for a task. ``hparams`` (typed, or a mapping) and keyword
    arguments are validated once, by name and type."""
    cls = METHODS.get(name)
    if kwargs:
        base = hparams.model_dump() if isinstance(hparams, MethodHparams) else dict(hparams or {})
        hparams = {**base, **kwargs}
    hp = validate_hparams(name, hparams)
    cfg = model if isinstance(model, ModelConfig) else ModelConfig.model_validate(model or {})
    return cls(task, cfg, hp)
