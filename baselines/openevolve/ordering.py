"""Make OpenEvolve's choices of parents and inspirations depend on its seed alone.

OpenEvolve seeds `random` from its `random_seed`, but it keeps each island's members and its elite
archive in plain `set`s of program ids, and samples with `random.choice(list(island))`. Program
ids are `uuid4()`s and string hashing is salted per process, so the order of that list -- and so
which program a given draw picks -- changes from one run to the next: two runs with the same seed
and the same model answers choose different parents. (The scripted OpenEvolve twins gave 4
evaluations in one run and 5 in another for this reason.)

`make_population_order_reproducible` swaps those sets for `InsertionOrderedIds`, sets that iterate
in the order their ids were added. Membership and size are those of a plain set, and every draw
is still uniform over the same programs, so OpenEvolve's search is the one the paper ran; only
the order of a list that a seeded draw indexes is fixed. The order of insertion is itself
reproducible when iterations finish in a reproducible order, i.e. with one worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from engram.errors import EngramError

if TYPE_CHECKING:
    from openevolve.database import ProgramDatabase


class InsertionOrderedIds(set[str]):
    """A set of program ids that iterates (and pickles) in insertion order.

    The set's own table answers membership, size and the operators that build new sets; a dict
    beside it keeps the order. Every method that changes the set in place is overridden so that
    the two never disagree."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        super().__init__()
        self._order: dict[str, None] = {}
        self.update(ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (list(self._order),)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._order)!r})"

    def copy(self) -> InsertionOrderedIds:
        return InsertionOrderedIds(self._order)

    def add(self, item: str) -> None:
        super().add(item)
        self._order[item] = None

    def discard(self, item: str) -> None:
        super().discard(item)
        self._order.pop(item, None)

    def remove(self, item: str) -> None:
        super().remove(item)
        del self._order[item]

    def pop(self) -> str:
        if not self._order:
            raise KeyError("pop from an empty set")
        item = next(iter(self._order))
        self.remove(item)
        return item

    def clear(self) -> None:
        super().clear()
        self._order.clear()

    def update(self, *others: Iterable[str]) -> None:
        for other in others:
            for item in list(other):
                self.add(item)

    def intersection_update(self, *others: Iterable[Any]) -> None:
        self._keep_only(set.intersection(set(self._order), *others))

    def difference_update(self, *others: Iterable[Any]) -> None:
        self._keep_only(set.difference(set(self._order), *others))

    def symmetric_difference_update(self, other: Iterable[str]) -> None:
        incoming = list(dict.fromkeys(other))
        for item in incoming:
            if item in self:
                self.discard(item)
            else:
                self.add(item)

    def __ior__(self, other: Any) -> InsertionOrderedIds:  # type: ignore[override]
        self.update(other)
        return self

    def __iand__(self, other: Any) -> InsertionOrderedIds:  # type: ignore[override]
        self.intersection_update(other)
        return self

    def __isub__(self, other: Any) -> InsertionOrderedIds:  # type: ignore[override]
        self.difference_update(other)
        return self

    def __ixor__(self, other: Any) -> InsertionOrderedIds:  # type: ignore[override]
        self.symmetric_difference_update(other)
        return self

    def _keep_only(self, kept: set[Any]) -> None:
        for item in [item for item in self._order if item not in kept]:
            self.discard(item)


def make_population_order_reproducible(database: ProgramDatabase) -> None:
    """Swap the database's island and archive sets (still empty: nothing is filed before `run`) for
    `InsertionOrderedIds`. A version of OpenEvolve that keeps them in something else is refused
    rather than silently left unreproducible."""
    islands, archive = getattr(database, "islands", None), getattr(database, "archive", None)
    if not isinstance(islands, list) or not all(type(island) is set for island in islands) or type(archive) is not set:
        raise EngramError("this version of openevolve does not keep its islands and archive as sets of ids; "
                          "Engram cannot make its parent sampling reproducible (supported: 0.4.x)")
    database.islands = [InsertionOrderedIds(island) for island in islands]
    database.archive = InsertionOrderedIds(archive)
