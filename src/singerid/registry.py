"""One registry per plug-in kind (models, losses, separators): register by name, build by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from singerid.errors import SingerIdError

T = TypeVar("T")


class RegistryError(SingerIdError, KeyError):
    """An unknown or duplicate name in a registry."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to classes of one kind; `build` raises with the known names for an unknown one."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._classes:
                raise RegistryError(f"{self.kind} '{name}' is registered twice")
            self._classes[name] = cls
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls

        return add

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            raise RegistryError(f"unknown {self.kind} '{name}'; known: {', '.join(self.names())}") from None

    def build(self, name: str, *args: Any, **options: Any) -> T:
        return self.get(name)(*args, **options)

    def names(self) -> list[str]:
        return sorted(self._classes)
