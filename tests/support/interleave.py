"""One real interleaving of two writers, without threads: a table client through which the first row
read, once answered, lets another writer's change land whole before the reader goes on."""

from __future__ import annotations


class LandingAfterFirstRead:
    """The TableClient `table`, except that right after its first `get_entity` is answered, `land()`
    runs (another request or step, run to its end); every call is the real one."""

    def __init__(self, table, land):
        self._table, self._land = table, land

    def __getattr__(self, name):
        return getattr(self._table, name)

    def get_entity(self, *args, **kwargs):
        row = self._table.get_entity(*args, **kwargs)
        if self._land is not None:
            land, self._land = self._land, None
            land()
        return row
