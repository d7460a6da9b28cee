"""Named components in namespaces (layers, losses, ...), each remembering which plugin gave it."""
from __future__ import annotations

from .errors import RegistrationError, UnknownNameError, close_matches

KINDS = ("layers", "activations", "losses", "metrics", "optimizers", "schedules", "regularizers", "initializers",
         "datasets", "recipes", "augmentations", "models")


def singular(kind: str) -> str:
    """The name of one component of `kind`, for messages: losses -> loss, layers -> layer."""
    return kind[:-2] if kind.endswith("sses") else kind[:-1]


class Registry:
    def __init__(self):
        self._items: dict[str, dict[str, object]] = {kind: {} for kind in KINDS}
        self._owners: dict[tuple[str, str], str] = {}

    def check_kind(self, kind: str) -> None:
        if kind not in self._items:
            raise RegistrationError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")

    def conflict(self, kind: str, name: str, plugin: str, override: bool) -> str | None:
        """The error message if registering `name` would silently replace another plugin's."""
        if name in self._items[kind] and not override:
            return (f"{singular(kind)} {name!r} is registered twice: by plugin {self._owners[kind, name]!r} and by "
                    f"plugin {plugin!r} (the second may pass override=True to replace the first)")
        return None

    def add(self, kind: str, name: str, obj, plugin: str) -> None:
        self._items[kind][name] = obj
        self._owners[kind, name] = plugin

    def get(self, kind: str, name: str):
        self.check_kind(kind)
        items = self._items[kind]
        key = name if name in items else name.replace("-", "_")
        if key not in items:
            known = ", ".join(sorted(items)) or "none"
            raise UnknownNameError(f"unknown {singular(kind)} {name!r}.{close_matches(name, items)} "
                                   f"Known {kind}: {known}")
        return items[key]

    def names(self, kind: str) -> list[str]:
        self.check_kind(kind)
        return sorted(self._items[kind])

    def owner(self, kind: str, name: str) -> str:
        return self._owners[kind, name]


def get(kind: str, name: str):
    """Look up a registered component, e.g. `lamina.registry.get("losses", "mse")`."""
    from .plugins import get_manager

    return get_manager().registry.get(kind, name)


def names(kind: str) -> list[str]:
    from .plugins import get_manager

    return get_manager().registry.names(kind)


def resolve(kind: str, value):
    """`value` itself if it is already a component, else the component registered under that name."""
    return get(kind, value) if isinstance(value, str) else value
