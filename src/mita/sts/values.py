"""Value classes that behave as :func:`dataclasses.dataclass` ones, for less start-up time.

Why not :mod:`dataclasses`: it writes each class's methods as source and compiles them, about a millisecond a
class, and importing it (with :mod:`inspect`) takes ~10 ms, as long as the whole token engine. ``mita token
credit`` defines every token type (the registry lists them all) and ``mita meter enter`` the meter's state and
profiles: together ~25 ms of commands meant to start in a few tens. Here the methods are written once, in
:class:`Value`, and read the class's field lists; defining a class only makes those lists, ``__slots__`` and
``__match_args__`` from its annotations (:class:`_ValueType`).

Behaviour, the same as the dataclass's (frozen by default; ``class C(Value, frozen=False)`` for a mutable one):

==================  ============================================================================================
fields              the annotated names that are not ``ClassVar``, in order, a parent's first
constructor         positional or keyword arguments; a default or :func:`field` (``default``,
                    ``default_factory``, ``init=False``) lets a field be left out; then ``__post_init__`` if any
``==``              an instance of the same class with equal fields (``field(compare=False)`` ones aside)
``hash``            of those fields (frozen classes; a mutable one is unhashable, as a dataclass with ``eq``)
``repr``            ``Name(field=value!r, ...)`` (``field(repr=False)`` ones left out: keys never show)
immutable           assigning or deleting an attribute of a frozen value raises :class:`FrozenInstanceError`
``match``           ``__match_args__`` is the constructor's field names
pickle, copy        by the constructor, with the fields in order
==================  ============================================================================================

:func:`fields` and :func:`replace` stand for their :mod:`dataclasses` namesakes. Type checkers see dataclasses
(``dataclass_transform``, PEP 681). Instances have ``__slots__``, no ``__dict__``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: a command's start-up time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar, Literal, TypeVar, dataclass_transform, overload

    _T = TypeVar("_T")
    _V = TypeVar("_V", bound="Value")
else:

    def dataclass_transform(**_kwargs: object) -> object:
        return lambda cls: cls


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen value (as :class:`dataclasses.FrozenInstanceError`)."""


class _Field:
    """What :func:`field` gives: a field's default and options, read when its class is defined."""

    __slots__ = ("compare", "default", "factory", "init", "repr")

    def __init__(self, default: object, factory: Callable[[], object] | None, init: bool, repr: bool, compare: bool):
        self.default, self.factory, self.init, self.repr, self.compare = default, factory, init, repr, compare


_MISSING = object()

if TYPE_CHECKING:

    @overload
    def field(*, default: _T, init: bool = ..., repr: bool = ..., compare: bool = ...) -> _T: ...
    @overload
    def field(*, default_factory: Callable[[], _T], init: bool = ..., repr: bool = ..., compare: bool = ...) -> _T: ...
    @overload
    def field(*, init: Literal[False], repr: bool = ..., compare: bool = ...) -> Any: ...
    @overload
    def field(*, repr: bool = ..., compare: bool = ...) -> Any: ...


def field(
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] | None = None,
    init: bool = True,
    repr: bool = True,
    compare: bool = True,
) -> Any:
    """A field's options, as :func:`dataclasses.field`: a default or a factory of defaults, whether the
    constructor takes it, whether ``repr`` shows it and ``==`` compares it."""
    return _Field(default, default_factory, init, repr, compare)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class _ValueType(type):
    """Makes a class's field lists, ``__slots__``, ``__match_args__`` and defaults from its annotations."""

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], frozen: bool = True, **kwargs: Any
    ) -> _ValueType:
        specs: dict[str, _Field] = {}
        for base in bases:
            specs |= getattr(base, "_specs", {})
        own = tuple(n for n, a in namespace.get("__annotations__", {}).items() if not _is_class_var(a))
        if set(own) & set(specs):
            raise TypeError(f"{name} redeclares a field of its parent")
        for name_ in own:
            given = namespace.pop(name_, _MISSING)  # a slot cannot share its name with a class attribute
            spec = given if isinstance(given, _Field) else _Field(given, None, True, True, True)
            specs[name_] = spec
        init = tuple(n for n, s in specs.items() if s.init)
        required = [n for n in init if specs[n].default is _MISSING and specs[n].factory is None]
        if init[: len(required)] != tuple(required):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        # The constructor's fast path (every argument by position, the rest plain defaults, no field outside the
        # constructor with a default to set): from how many positional arguments on it applies, and the defaults
        # it appends. A class it does not fit gets a minimum no call reaches.
        defaults = tuple(specs[n].default for n in init[len(required) :])
        plain = all(s.factory is None for s in specs.values()) and all(
            s.default is _MISSING for s in specs.values() if not s.init
        )
        namespace.update(
            __slots__=own,
            __match_args__=init,
            _fast_min=len(required) if plain else len(init) + 1,
            _fast_defaults=defaults,
            _specs=specs,
            _init=init,
            _repr=tuple(n for n, s in specs.items() if s.repr),
            _compare=tuple(n for n, s in specs.items() if s.compare),
        )
        if not frozen:  # a mutable value: plain attributes, and unhashable (its hash could change)
            namespace.update(__setattr__=object.__setattr__, __delattr__=object.__delattr__, __hash__=None)
        cls = super().__new__(mcs, name, bases, namespace, **kwargs)
        cls._post_init = getattr(cls, "__post_init__", None) is not None  # type: ignore[attr-defined]
        return cls


def _is_class_var(annotation: object) -> bool:
    """``ClassVar[...]``, as a string (``from __future__ import annotations``) or an object."""
    return str(annotation).startswith(("ClassVar", "typing.ClassVar"))


class Value(metaclass=_ValueType):
    """Base of the value classes: the methods a dataclass has, reading the field lists."""

    _specs: ClassVar[dict[str, _Field]]
    _init: ClassVar[tuple[str, ...]]
    _repr: ClassVar[tuple[str, ...]]
    _compare: ClassVar[tuple[str, ...]]
    _post_init: ClassVar[bool]
    _fast_min: ClassVar[int]
    _fast_defaults: ClassVar[tuple[Any, ...]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        names = cls._init
        count = len(args)
        if not kwargs and cls._fast_min <= count <= len(names):  # the common call, without ``_rest``'s walk
            if count < len(names):
                args += cls._fast_defaults[count - cls._fast_min :]
            setter = object.__setattr__
            for name, value in zip(names, args, strict=True):
                setter(self, name, value)
            if cls._post_init:
                self.__post_init__()  # type: ignore[attr-defined]
            return
        if len(args) > len(names):
            raise TypeError(f"{cls.__qualname__}() takes {len(names)} arguments but {len(args)} were given")
        setter = object.__setattr__
        for name, value in zip(names, args, strict=False):  # fewer args than fields: the rest below
            setter(self, name, value)
        if len(args) < len(names) or kwargs or len(names) < len(cls._specs):
            self._rest(args, kwargs)
        if cls._post_init:
            self.__post_init__()  # type: ignore[attr-defined]

    def _rest(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The fields not given by position: by keyword, else their default."""
        cls = type(self)
        setter = object.__setattr__
        for name, spec in list(cls._specs.items()):
            if spec.init and name in cls._init[: len(args)]:
                continue
            if spec.init and name in kwargs:
                setter(self, name, kwargs.pop(name))
            elif spec.factory is not None:
                setter(self, name, spec.factory())
            elif spec.default is not _MISSING:
                setter(self, name, spec.default)
            elif spec.init:
                raise TypeError(f"{cls.__qualname__}() missing required argument: {name!r}")
        for name in kwargs:
            why = "multiple values for" if name in cls._init else "an unexpected keyword"
            raise TypeError(f"{cls.__qualname__}() got {why} argument {name!r}")

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._repr)
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._compare)

    def __hash__(self) -> int:
        return hash(tuple([getattr(self, name) for name in self._compare]))

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[type[Value], tuple[Any, ...]]:
        return type(self), tuple([getattr(self, name) for name in self._init])


def fields(value: Value | type[Value]) -> tuple[str, ...]:
    """The names of the fields, in order (:func:`dataclasses.fields` gives ``Field`` objects with ``.name``)."""
    return tuple(value._specs)


def replace(value: _V, **changes: Any) -> _V:
    """A copy of ``value`` with ``changes`` (:func:`dataclasses.replace`)."""
    return type(value)(**{name: getattr(value, name) for name in value._init} | changes)
