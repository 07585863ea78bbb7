"""Dict round trip shared by the network configs, so checkpoints and JSON read them one way."""
from __future__ import annotations

import dataclasses
import math
import numbers
import reprlib
import typing
from typing import Any, ClassVar, Mapping, Tuple, Union

#: Shortens the value quoted in a config error, so a hostile list cannot make the message huge.
_QUOTE = reprlib.Repr()
_QUOTE.maxstring, _QUOTE.maxother, _QUOTE.maxlist = 40, 40, 6


class ConfigDict:
    """Mixin for a dataclass config: :meth:`to_dict` for checkpoints, :meth:`from_dict` back.

    ``tuple_fields`` name the fields stored as lists in JSON and turned back into tuples;
    ``config_error`` is the exception raised for a key the dataclass does not have, or a
    value whose type does not fit the field's annotation.
    """

    tuple_fields: ClassVar[Tuple[str, ...]] = ()
    config_error: ClassVar[type] = ValueError

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists for tuple fields)."""
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        for key in self.tuple_fields:
            data[key] = list(data[key])
        return data

    @classmethod
    def check_dict(cls, data: Any) -> None:
        """Raise ``config_error`` naming the first key or value of ``data`` that :meth:`from_dict` cannot use.

        Checks that ``data`` is a mapping with string keys, that every key is a field, and that
        every value has the field's annotated type (integers for ``int``, finite numbers for
        ``float``, lists or tuples for ``Tuple[...]``, ...). Sizes and ranges are left to the
        config's own ``__post_init__``. Checkpoints are untrusted input: without this, a string
        where an integer belongs fails deep inside network construction with a Python message.
        """
        if not isinstance(data, Mapping):
            raise cls.config_error(f"{cls.__name__}: config must be a mapping of field names to values, "
                                   f"found {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        not_text = [key for key in data if not isinstance(key, str)]
        if not_text:
            raise cls.config_error(f"{cls.__name__}: config keys must be strings, found {_QUOTE.repr(not_text[0])}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise cls.config_error(
                f"{cls.__name__}.from_dict: unknown keys {unknown}; expected some of {sorted(names)}")
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # an annotation that cannot be evaluated here: leave the types to the class
            hints = {}
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            if field.name in data and not _fits(data[field.name], hints.get(field.name, Any)):
                value = data[field.name]
                written = field.type if isinstance(field.type, str) else _hint_name(hints[field.name])
                if isinstance(value, float) and not math.isfinite(value):
                    written += " (a finite number)"
                raise cls.config_error(f"{cls.__name__} field '{field.name}' must be {written}, "
                                       f"found {type(value).__name__} {_QUOTE.repr(value)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; an unknown key or a value of the wrong type is an error naming it."""
        cls.check_dict(data)
        values = dict(data)
        for key in cls.tuple_fields:
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (from JSON or a checkpoint) has the type that annotation ``hint`` asks for.

    Knows the annotations the network configs use (int, float, bool, str, None, Union/Optional,
    Tuple[X, ...] and fixed tuples); any other annotation is accepted and left to the class.
    """
    origin = typing.get_origin(hint)
    if origin is Union:
        return any(_fits(value, option) for option in typing.get_args(hint))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(item, args[0]) for item in value)
        return len(value) == len(args) and all(_fits(item, arg) for item, arg in zip(value, args))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # bool is an int to Python, never to a config
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    return True


def _hint_name(hint: Any) -> str:
    """Readable name of an annotation, e.g. ``int`` rather than ``<class 'int'>``."""
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
