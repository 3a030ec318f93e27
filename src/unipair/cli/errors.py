"""User mistakes (:class:`unipair.errors.UnipairError`, pydantic validation errors) become one
clear line on stderr and exit code 2; every other exception is a bug and keeps its traceback.
Set ``UNIPAIR_DEBUG=1`` to see the traceback anyway.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape

from unipair.errors import UnipairError

err_console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def is_user_error(e: BaseException) -> bool:
    """A user's mistake; any other exception is a bug and keeps its traceback.

    pydantic is looked up, not imported: the CLI starts without it, and an exception cannot be a
    pydantic ``ValidationError`` unless pydantic was already loaded.
    """
    pydantic = sys.modules.get("pydantic")
    return isinstance(e, UnipairError) or (
        pydantic is not None and isinstance(e, pydantic.ValidationError)
    )


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except Exception as e:
        if not is_user_error(e) or os.environ.get("UNIPAIR_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)


def friendly(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with user_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
