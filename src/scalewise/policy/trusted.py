"""Build frozen pydantic records from values the policy computed itself, without re-validating them.

``decide()`` makes about ten small records per tick (steps, recommendations, the decision, its
state and inputs). Validating what the policy itself just computed costs more than the decision
(and pydantic's ``model_construct`` is slower still), which kept the backtest far below its speed
target. :func:`trusted` fills in the declared defaults and sets the instance's storage the way
pydantic does after validation, so equality, ``model_dump`` and JSON round-trips are unchanged.

Only for values built by the policy from already validated inputs; anything from outside (a spec,
a reading, a persisted state) still goes through validation. :func:`maker` is the same for a hot
path: a constructor taking every field positionally, in declaration order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_Defaults = tuple[dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...], tuple[str, ...]]
_DEFAULTS: dict[type[BaseModel], _Defaults] = {}

_set = object.__setattr__


def _defaults(cls: type[BaseModel]) -> _Defaults:
    found = _DEFAULTS.get(cls)
    if found is None:
        if cls.__private_attributes__:
            raise TypeError(f"{cls.__name__} has private attributes: trusted() cannot build it")
        plain: dict[str, Any] = {}
        factories: list[tuple[str, Callable[[], Any]]] = []
        for name, info in cls.model_fields.items():
            if info.default_factory is not None:
                factories.append((name, info.default_factory))  # type: ignore[arg-type]
            elif not info.is_required():
                plain[name] = info.default
        found = _DEFAULTS[cls] = (plain, tuple(factories), tuple(cls.model_fields))
    return found


def trusted(cls: type[M], **values: Any) -> M:
    """An instance of ``cls`` holding ``values`` (plus the defaults of the fields not given), unvalidated.

    Give every field, in declaration order, for the fast path: the names and their order are then the
    caller's responsibility (a property test checks every record ``decide()`` makes against its schema).
    """
    plain, factories, names = _DEFAULTS.get(cls) or _defaults(cls)
    if len(values) != len(names):
        given = values
        values = dict(plain)
        for name, factory in factories:
            if name not in given:
                values[name] = factory()
        values.update(given)
        if len(values) != len(names) or not all(name in values for name in names):
            missing, unknown = sorted(set(names) - values.keys()), sorted(values.keys() - set(names))
            raise TypeError(f"{cls.__name__}: missing fields {missing}, unknown fields {unknown}")
        values = {name: values[name] for name in names}
    obj = cls.__new__(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", set(values))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def maker(cls: type[M]) -> Callable[..., M]:
    """A constructor ``make(*, field=value, ...)`` building ``cls`` like :func:`trusted` does, faster.

    The fields are keyword-only parameters (those with a default may be left out); an unknown or
    missing field is a ``TypeError`` as with :func:`trusted`, and the values are the caller's
    responsibility. Generated like :func:`collections.namedtuple`: a plain function whose dict display
    sets the instance's storage, which is what makes it cheaper than ``trusted(cls, **values)``. The
    storage is set through :class:`~pydantic.BaseModel`'s slot descriptors (no attribute lookup by
    name), and every instance of ``cls`` shares one set of field names as ``model_fields_set``: a
    frozen record's set is never changed in place (``model_copy`` copies it before an update).
    """
    _defaults(cls)  # refuses private attributes
    names = tuple(cls.model_fields)
    if not all(name.isidentifier() and not name.startswith("_") for name in names):
        raise TypeError(f"{cls.__name__}: field names must be plain identifiers")
    scope: dict[str, Any] = {"new": cls.__new__, "cls": cls, "fields": set(names), "unset": _UNSET, **_SLOT_SETTERS}
    if clash := sorted(set(names) & scope.keys()):
        raise TypeError(f"{cls.__name__}: field names {clash} are names the generated constructor uses")
    params, fill = [], []
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            scope[f"factory_{name}"] = info.default_factory
            params.append(f"{name}=unset")
            fill.append(f"    if {name} is unset:\n        {name} = factory_{name}()\n")
        elif not info.is_required():
            scope[f"default_{name}"] = info.default
            params.append(f"{name}=default_{name}")
        else:
            params.append(name)
    display = ", ".join(f"{name!r}: {name}" for name in names)
    source = (
        f"def make(*, {', '.join(params)}):\n"
        + "".join(fill)
        + "    obj = new(cls)\n"
        f"    set_dict(obj, {{{display}}})\n"
        "    set_fields(obj, fields)\n"
        "    set_extra(obj, None)\n"
        "    set_private(obj, None)\n"
        "    return obj\n"
    )
    exec(source, scope)  # field names checked above; the technique of collections.namedtuple
    make = scope["make"]
    make.__qualname__ = f"maker({cls.__name__})"
    return cast(Callable[..., M], make)


_UNSET = object()

# BaseModel's instance storage is four slots; their descriptors set them without a lookup by name.
_SLOT_SETTERS: dict[str, Any] = {
    f"set_{short}": BaseModel.__dict__[slot].__set__
    for short, slot in (
        ("dict", "__dict__"),
        ("fields", "__pydantic_fields_set__"),
        ("extra", "__pydantic_extra__"),
        ("private", "__pydantic_private__"),
    )
}
