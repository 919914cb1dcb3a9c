"""`AcloseOnExit`: the `async with` shape shared by everything closed with `aclose()`."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AcloseOnExit"]


class AcloseOnExit:
    """Mixin: `async with obj:` yields `obj` and awaits `obj.aclose()` on the way out, however
    the block ended (exceptions are not swallowed). Subclasses implement `aclose`."""

    __slots__ = ()

    async def aclose(self) -> None:
        """Release everything the object owns and wait until it is released (idempotent)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
