import numpy as np
import pytest

from graphrnn.errors import DataError, GraphRNNError
from graphrnn.train.datasets import (
    TASKS,
    adding_problem,
    adding_task,
    char_batches,
    char_corpus,
    check_arrays,
    check_finite,
    get_task,
    minibatches,
    sequential_digits,
)


def test_adding_problem_layout_and_targets():
    x, y = adding_problem(64, 20, seed=3)
    assert x.shape == (20, 64, 2) and y.shape == (64, 1)
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() <= 1
    np.testing.assert_array_equal(markers.sum(axis=0), 2)
    assert markers[:10].sum(axis=0).tolist() == [1] * 64
    assert markers[10:].sum(axis=0).tolist() == [1] * 64
    np.testing.assert_allclose(y[:, 0], (values * markers).sum(axis=0))


def test_adding_problem_is_seeded():
    a, b = adding_problem(8, 5, seed=1), adding_problem(8, 5, seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], adding_problem(8, 5, seed=2)[0])
    with pytest.raises(GraphRNNError, match="T >= 2"):
        adding_problem(8, 1, seed=0)


def test_adding_task_train_and_test_differ():
    split = adding_task(n_train=30, n_test=10, T=6, seed=0)
    assert split.x_train.shape == (6, 30, 2) and split.y_test.shape == (10, 1)
    assert not np.array_equal(split.x_train[:, :10], split.x_test)


def test_sequential_digits():
    split = sequential_digits(seed=0, test_fraction=0.25)
    n_train, n_test = split.x_train.shape[1], split.x_test.shape[1]
    assert split.x_train.shape == (8, n_train, 8) and split.x_test.shape == (8, n_test, 8)
    assert n_train + n_test == 1797 and abs(n_test - 0.25 * 1797) < 1
    assert split.y_train.shape == (n_train, 10)
    np.testing.assert_array_equal(split.y_train.sum(axis=1), 1)
    assert 0 <= split.x_train.min() and split.x_train.max() == 1
    again = sequential_digits(seed=0, test_fraction=0.25)
    np.testing.assert_array_equal(split.x_test, again.x_test)
    from sklearn.datasets import load_digits

    images = load_digits().images / 16
    first = split.x_train[:, 0, :]
    assert any(np.array_equal(first, im) for im in images)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello wörld, hello rnn!\n" * 3, encoding="utf-8")
    return path


def test_char_corpus(text_file):
    corpus = char_corpus(text_file)
    assert corpus.vocab == tuple(sorted(set(corpus.text)))
    assert "ö" in corpus.vocab
    assert corpus.decode(corpus.ids) == corpus.text
    np.testing.assert_array_equal(corpus.encode("hello"), corpus.ids[:5])
    train, val = corpus.split(0.25)
    assert len(train) + len(val) == len(corpus.ids) and len(val) == len(corpus.ids) // 4


def test_char_batches_continue_across_chunks(text_file):
    corpus = char_corpus(text_file)
    V, B, T = corpus.vocab_size, 3, 5
    batches = list(char_batches(corpus.ids, V, B, T))
    steps = (len(corpus.ids) - 1) // B
    assert sum(x.shape[0] for x, _ in batches) == steps
    assert batches[0][0].shape == (T, B, V) and batches[0][1].shape == (T, B, V)
    xs = np.concatenate([x.argmax(-1) for x, _ in batches])
    ys = np.concatenate([y.argmax(-1) for _, y in batches])
    for b in range(B):
        row = corpus.ids[b * steps : (b + 1) * steps + 1]
        np.testing.assert_array_equal(xs[:, b], row[:-1])
        np.testing.assert_array_equal(ys[:, b], row[1:])
    full = list(char_batches(corpus.ids, V, B, T, drop_last=True))
    assert all(x.shape[0] == T for x, _ in full) and len(full) == steps // T


def test_char_batches_too_short():
    with pytest.raises(DataError, match="too few for batch_size 8"):
        list(char_batches(np.arange(5), 5, 8, 2))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"\x00\x01\x02binary", "looks binary"),
        (b"caf\xe9 latin-1", r"not UTF-8 text \(bad byte at offset 3\)"),
    ],
)
def test_char_corpus_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        char_corpus(path)


def test_char_corpus_missing(tmp_path):
    with pytest.raises(DataError, match=r"missing\.txt does not exist"):
        char_corpus(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="is not a file"):
        char_corpus(tmp_path)


def test_minibatches_time_major_and_seeded():
    x = np.arange(4 * 10 * 2, dtype=float).reshape(4, 10, 2)
    y = np.arange(10, dtype=float)[:, None]
    batches = list(minibatches(x, y, 4))
    assert [b[0].shape for b in batches] == [(4, 4, 2), (4, 4, 2), (4, 2, 2)]
    np.testing.assert_array_equal(batches[1][1][:, 0], [4, 5, 6, 7])
    assert len(list(minibatches(x, y, 4, drop_last=True))) == 2
    e0 = [b[1][:, 0].tolist() for b in minibatches(x, y, 5, seed=1, epoch=0)]
    e0_again = [b[1][:, 0].tolist() for b in minibatches(x, y, 5, seed=1, epoch=0)]
    e1 = [b[1][:, 0].tolist() for b in minibatches(x, y, 5, seed=1, epoch=1)]
    assert e0 == e0_again and e0 != e1
    assert sorted(sum(e0, [])) == list(range(10))
    for xb, yb in minibatches(x, y, 5, seed=1):
        np.testing.assert_array_equal(xb[0, :, 0] / 2, yb[:, 0])


def test_minibatches_mismatch():
    with pytest.raises(DataError, match="x has 10 samples.*y has 9"):
        list(minibatches(np.zeros((3, 10, 1)), np.zeros((9, 1)), 2))


def test_check_finite_names_array_and_index():
    a = np.zeros((3, 4, 2))
    a[1, 2, 0] = np.nan
    a[2, 0, 1] = np.inf
    with pytest.raises(DataError, match=r"'x_train'.*2 non-finite.*nan at index \(1, 2, 0\)"):
        check_finite("x_train", a)
    with pytest.raises(DataError, match="'y'"):
        check_arrays(x=np.zeros(2), y=np.array([1.0, -np.inf]))
    check_finite("ids", np.arange(3))


def test_registry(text_file):
    assert set(TASKS) == {"adding", "digits", "chars"}
    assert all(t.description for t in TASKS.values())
    split = get_task("adding").load(n_train=4, n_test=2, T=4)
    assert split.x_train.shape == (4, 4, 2)
    assert get_task("chars").load(path=text_file).vocab_size > 5
    with pytest.raises(GraphRNNError, match="did you mean 'adding'.*known tasks: adding, digits"):
        get_task("addng")
    with pytest.raises(GraphRNNError, match="unknown task 'mnist'"):
        get_task("mnist")
