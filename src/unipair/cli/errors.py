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

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from unipair.errors import UnipairError

#: a user's mistake; any other exception is a bug and keeps its traceback
USER_ERRORS = (UnipairError, ValidationError)
err_console = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as e:
        if os.environ.get("UNIPAIR_DEBUG"):
            raise
        msg = str(e)
        err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False)
        sys.exit(2)


def friendly(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with user_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
