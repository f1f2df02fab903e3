"""Component parameters without pydantic's silent scalar coercions.

In its default (lax) mode pydantic takes ``true`` for an ``int`` parameter as 1, ``1`` for a ``bool`` as
true and ``"3"`` as 3. Recipe sections are validated in strict mode; a component's parameters cannot be
(strict mode also refuses a YAML list for a ``tuple`` parameter), so their annotations get strict scalars
only: every ``int``, ``float`` and ``bool`` inside them, at any depth, becomes pydantic's strict version.
An ``int`` still passes where a ``float`` is asked for.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Union

from pydantic import Strict

_SCALARS = (bool, int, float)


def strict_scalars(annotation: Any) -> Any:
    """``annotation`` with each bool, int and float in it (in unions, lists, Annotated ...) made strict."""
    if annotation in _SCALARS:
        return Annotated[annotation, Strict()]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if not args or origin is typing.Literal:
        return annotation
    if origin is Annotated:
        return Annotated[(strict_scalars(args[0]), *annotation.__metadata__)]
    inner = tuple(a if a is Ellipsis else strict_scalars(a) for a in args)
    if origin in (Union, types.UnionType):
        return Union[inner]
    try:
        return origin[inner] if len(inner) > 1 else origin[inner[0]]
    except TypeError:  # a generic that cannot be rebuilt this way (Callable[[...], ...], say): left as it is
        return annotation
