"""A replica's vectors: its chain heads, what it holds of each share, the vectors it exchanges
with peers, where a peer's catch-up starts (I/O via the replica's store).

A mixin of `Replica`. The heads table keeps one row per epoch this device holds entries of, less
retired epochs compaction folded to their retirement: the epoch that retired them implies them
(`vectors.implied`, with the retirements the epoch book learnt from first entries, which stay in
the log), so summary vectors, reports, B and exchanged vectors follow the epochs still writing,
not every restart there ever was. What needs every epoch (readiness, revocation and removal
cuts, a late entry of a dropped epoch) asks for `held_vector`/`_held_head`. It never decides what
to fold (history/compaction.py) and never talks to the network.
"""

from collections.abc import Mapping

from . import entry as entries
from .membership import EpochBook, Notice
from .store import Store
from .vectors import compressed, implied

WireItem = tuple[bytes, bytes | None]


class VectorRules:
    # set by Replica
    store: Store
    actor: str
    _heads: dict[str, dict[str, tuple[int, bytes]]]
    _books: dict[str, EpochBook]

    def _note(self, notices: list[Notice]) -> None:
        raise NotImplementedError

    def _heads_of(self, share: str) -> dict[str, tuple[int, bytes]]:
        heads = self._heads.get(share)
        if heads is None:
            heads = self._heads[share] = self.store.heads(share)
        return heads

    def _book(self, share: str) -> EpochBook:
        """The share's epochs, learnt from the first entries of the epochs with a head and of
        every epoch those retire, down each chain (retired epochs whose head went keep their
        first entry in the log for this)."""
        book = self._books.get(share)
        if book is None:
            book = self._books[share] = EpochBook()
            held = self._heads_of(share)
            todo, seen = sorted(held, reverse=True), set(held)
            while todo:
                first = self.store.entry(share, todo.pop(), 1)
                if first is None:
                    continue
                logged = entries.decode(first)
                self._note(book.learn(logged, held))
                retired = sorted({a for a, _, _ in logged.retires} - seen, reverse=True)
                seen.update(retired)
                todo += retired
        return book

    def chain_heads(self, share: str) -> dict[str, tuple[int, bytes]]:
        """actor -> (seq, hash of our entry at seq): what "in sync" compares."""
        return dict(self._heads_of(share))

    def summary_vector(self, share: str) -> dict[str, int]:
        """actor -> highest seq held, less retired epochs held to their retirement whose head
        compaction dropped (see `held_vector`)."""
        return {actor: seq for actor, (seq, _) in self._heads_of(share).items()}

    def held_vector(self, share: str) -> dict[str, int]:
        """Everything this device holds of `share`: the summary vector with the retired epochs
        it implies put back. What readiness and cuts go by."""
        return implied(self.summary_vector(share), self._book(share).continued())

    def folded_frontier(self, share: str) -> dict[str, int]:
        """The baseline's frontier B, with the retired epochs it implies put back."""
        return implied(self.store.baseline_frontier(share), self._book(share).continued())

    def drop_retired_heads(self, share: str, frontier: Mapping[str, int]) -> int:
        """Drop the heads of retired epochs held to their retirement and folded (within
        `frontier`, the baseline's, implied epochs put back): the epoch that retired them
        implies them from now on. Returns how many went."""
        book = self._book(share)
        kept = compressed(frontier, book.continued())
        heads = self._heads_of(share)
        gone = [
            actor
            for actor, (seq, _) in heads.items()
            if actor not in kept and seq == frontier.get(actor) and actor != self.actor
        ]
        for actor in gone:
            del heads[actor]
            self.store.remove_head(share, actor)
        return len(gone)

    def equal_heads(self, share: str, peer_vector: Mapping[str, int]) -> list[WireItem]:
        """Our signed head entries of the actors the peer holds to the same seq: sent once when
        hello digests differ, they let the peer see two histories with equal lengths (a fork
        shows nowhere else); a peer that holds the same entry drops each at once."""
        items: list[WireItem] = []
        for actor, (seq, _) in self._heads_of(share).items():
            if seq and peer_vector.get(actor) == seq:
                head = self.store.signed_entry(share, actor, seq)
                if head is not None:
                    items.append(head)
        return items

    def wire_vector(self, share: str) -> dict[str, int]:
        """The summary vector as exchanged with peers: closed epochs held to their end are
        implied by the epoch that retired them (see EpochBook.closed)."""
        closed = self._book(share).closed()
        return {
            actor: seq
            for actor, (seq, _) in self._heads_of(share).items()
            if closed.get(actor, (0, ""))[0] != seq
        }

    def expand_vector(self, share: str, vector: Mapping[str, int]) -> dict[str, int]:
        """A peer's exchanged vector with the closed epochs it implies put back: those retired by
        an epoch it lists or implies, and that it does not list itself."""
        retired_by: dict[str, list[tuple[str, int]]] = {}
        for actor, (seq, retirer) in self._book(share).closed().items():
            retired_by.setdefault(retirer, []).append((actor, seq))
        expanded = dict(vector)
        pending = [actor for actor in vector if actor in retired_by]
        while pending:
            for actor, seq in retired_by.get(pending.pop(), ()):
                if actor not in expanded:
                    expanded[actor] = seq
                    pending.append(actor)
        # only epochs this device keeps a head of matter to what it sends (a dropped one's first
        # entry is all its log holds, and entries_after sends none of those)
        heads = self._heads_of(share)
        return {a: s for a, s in expanded.items() if a in vector or a in heads}

    def cursor_for(self, share: str, peer_vector: Mapping[str, int]) -> int:
        """The local position after which every entry the peer lacks can be found."""
        starts = [
            self.store.lseq_of(share, actor, peer_vector.get(actor, 0) + 1)
            for actor, seq in self.summary_vector(share).items()
            if seq > peer_vector.get(actor, 0)
        ]
        known = [lseq for lseq in starts if lseq is not None]
        return min(known) - 1 if known else self.store.last_lseq()

    def _held_head(self, share: str, actor: str) -> tuple[int, bytes]:
        """How far this device holds `actor`: its head, or where an applied epoch retired it
        (a late entry of a dropped epoch is then held already, or a fork at the retired head)."""
        head = self._heads_of(share).get(actor)
        if head is not None:
            return head
        return self._book(share).retired_head(actor) or (0, b"")
