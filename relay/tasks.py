"""Small asyncio helpers with one owner for every task they start."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
U = TypeVar("U")


async def all_or_nothing(
    first: Coroutine[Any, Any, T], second: Coroutine[Any, Any, U]
) -> tuple[T, U]:
    """Run both; if either fails, cancel the other, wait for it, and raise."""
    tasks = (asyncio.ensure_future(first), asyncio.ensure_future(second))
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return results[0], results[1]
