"""Dict round trip shared by the network configs, so checkpoints and JSON read them one way."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping


class ConfigDict:
    """Mixin for a dataclass config: :meth:`to_dict` for checkpoints, :meth:`from_dict` back.

    ``tuple_fields`` name the fields stored as lists in JSON and turned back into tuples;
    ``config_error`` is the exception raised for a key the dataclass does not have.
    """

    tuple_fields: ClassVar[tuple[str, ...]] = ()
    config_error: ClassVar[type] = ValueError

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists for tuple fields)."""
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        for key in self.tuple_fields:
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; an unknown key is an error naming it and the known ones."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise cls.config_error(
                f"{cls.__name__}.from_dict: unknown keys {unknown}; expected some of {sorted(names)}")
        values = dict(data)
        for key in cls.tuple_fields:
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)
