from hypothesis import given
from hypothesis import strategies as st

from p2psync import vectors
from p2psync.vectors import Order

actors = st.sampled_from(["A/1", "B/1", "C/1", "C/2"])
vector_strategy = st.dictionaries(actors, st.integers(min_value=1, max_value=6), max_size=4)


@given(vector_strategy, vector_strategy)
def test_merge_is_commutative(a, b):
    assert vectors.merge(a, b) == vectors.merge(b, a)


@given(vector_strategy, vector_strategy, vector_strategy)
def test_merge_is_associative(a, b, c):
    assert vectors.merge(vectors.merge(a, b), c) == vectors.merge(a, vectors.merge(b, c))


@given(vector_strategy)
def test_merge_is_idempotent(a):
    assert vectors.merge(a, a) == a


@given(vector_strategy, vector_strategy)
def test_compare_agrees_with_merge(a, b):
    merged = vectors.merge(a, b)
    order = vectors.compare(a, b)
    assert (order in (Order.EQUAL, Order.AFTER)) == (merged == a)
    assert (order in (Order.EQUAL, Order.BEFORE)) == (merged == b)
    assert vectors.compare(b, a) == {Order.BEFORE: Order.AFTER, Order.AFTER: Order.BEFORE}.get(
        order, order
    )


@given(vector_strategy, vector_strategy)
def test_merge_dominates_both_sides(a, b):
    merged = vectors.merge(a, b)
    assert vectors.dominates(merged, a) and vectors.dominates(merged, b)


def test_actor_names_split_back_into_device_and_epoch():
    actor = vectors.make_actor("ABCDE-FGHIJ", "0badf00d")
    assert vectors.device_of(actor) == "ABCDE-FGHIJ"
    assert vectors.covers({actor: 3}, actor, 3) and not vectors.covers({actor: 3}, actor, 4)
