"""User mistakes become one clear line on stderr and exit code 2, not a traceback.

Set ``UNIPAIR_DEBUG=1`` to see the traceback anyway.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from unipair.engine.config import ConfigError

USER_ERRORS = (
    ConfigError,
    ValidationError,
    FileNotFoundError,
    FileExistsError,
    KeyError,
    ValueError,
    TypeError,
)
err_console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as e:
        if os.environ.get("UNIPAIR_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False)
        sys.exit(2)


def friendly(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with user_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
