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


# a device restarted three times: e2 retired e1 at 5, e3 retired e2 at 4; x is another writer
RETIREMENTS = {"d/e2": {"d/e1": 5}, "d/e3": {"d/e2": 4}}


def test_an_epoch_that_retired_others_implies_them_down_the_chain():
    assert vectors.implied({"d/e3": 1, "x": 2}, RETIREMENTS) == {
        "d/e3": 1, "d/e2": 4, "d/e1": 5, "x": 2
    }
    assert vectors.implied({"d/e2": 3}, RETIREMENTS) == {"d/e2": 3, "d/e1": 5}
    assert vectors.implied({"d/e1": 2}, RETIREMENTS) == {"d/e1": 2}, "nothing retires by e1"
    assert vectors.implied({"d/e3": 0}, RETIREMENTS) == {"d/e3": 0}, "none of e3 held"


def test_compressing_leaves_out_exactly_what_implying_puts_back():
    full = {"d/e3": 2, "d/e2": 4, "d/e1": 5, "x": 2}
    assert vectors.compressed(full, RETIREMENTS) == {"d/e3": 2, "x": 2}
    # an epoch held beyond its retirement (a copy went on writing it) stays
    beyond = {"d/e3": 2, "d/e2": 6, "d/e1": 5}
    assert vectors.compressed(beyond, RETIREMENTS) == {"d/e3": 2, "d/e2": 6}
    # a retirement that is not a chain (never from applied entries) keeps everything
    loop = {"a": {"b": 1}, "b": {"a": 1}}
    assert vectors.compressed({"a": 1, "b": 1}, loop) == {"a": 1, "b": 1}


@given(st.dictionaries(st.sampled_from(["d/e1", "d/e2", "d/e3", "x"]), st.integers(1, 6)))
def test_compressed_vectors_imply_the_whole_vector_back(vector):
    full = vectors.implied(vector, RETIREMENTS)
    assert vectors.implied(vectors.compressed(full, RETIREMENTS), RETIREMENTS) == full
