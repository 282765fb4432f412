"""The evaluation protocol (fredset.evaluate) on a tiny problem whose classes are obvious: a bright
quadrant per class under strong noise, 8x8 grey images, a one-block ConvNet, no DSA."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fredset import FredsetError
from fredset.data import RealData
from fredset.evaluate import train_network, evaluate
from fredset.training import fresh_network
from fredset.training import test_accuracy as accuracy_of

MODEL = "convnetd1"
CLASSES = 3
LR = 0.01
TINY = dict(models=(MODEL,), lr=LR, batch_size=256, dsa="none")


def quadrants(per_class: int, seed: int, noise: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c: the c-th quadrant of an 8x8 image is 1 brighter, everywhere N(0, noise^2) noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(CLASSES).repeat(per_class)
    images = noise * torch.randn(len(labels), 1, 8, 8, generator=generator)
    for index, label in enumerate(labels.tolist()):
        row, column = divmod(label, 2)
        images[index, 0, 4 * row:4 * row + 4, 4 * column:4 * column + 4] += 1.0
    return images, labels


@functools.lru_cache(maxsize=1)
def train_set() -> tuple[torch.Tensor, torch.Tensor]:
    return quadrants(20, seed=0)


@functools.lru_cache(maxsize=1)
def held_out() -> RealData:
    images, labels = quadrants(50, seed=1)
    return RealData(name="quadrants", images=images, labels=labels, classes=["tl", "tr", "bl"], mean=(0.0,),
                    std=(1.0,), source={"dataset": "quadrants", "split": "test"})


def test_training_lifts_accuracy_from_chance_to_near_perfect():
    images, labels = train_set()
    test = held_out()
    untrained = [accuracy_of(fresh_network(MODEL, 1, CLASSES, (8, 8), torch.Generator().manual_seed(s)).eval(),
                               test.images, test.labels) for s in range(3)]
    assert max(untrained) < 0.5  # the figure below is learnt, not given by the architecture
    report = evaluate(images, labels, test, runs=2, epochs=6, seed=0, **TINY)
    result = report["results"][MODEL]
    assert len(result["accuracies"]) == 2 and min(result["accuracies"]) >= 90.0 and result["mean"] >= 90.0
    # trained on the wrong labels (class c called c+1) it must be wrong on the test set: the labels are used
    shifted = evaluate(images, (labels + 1) % CLASSES, test, runs=1, epochs=6, seed=0, **TINY)
    assert shifted["results"][MODEL]["mean"] <= 10.0
    protocol = report["protocol"]
    assert (protocol["runs"], protocol["epochs"], protocol["seed"], protocol["lr"], protocol["dsa"]) == (
        2, 6, 0, LR, "none")
    assert protocol["test_set"] == "quadrants" and protocol["test_images"] == 150
    assert protocol["selection"] == "final epoch"


@pytest.mark.parametrize("epochs", [1, 2, 3, 4, 5])
def test_learning_rate_drops_tenfold_at_half_the_epochs(epochs):
    images, labels = train_set()
    seen = []
    train_network(images, labels, model=MODEL, num_classes=CLASSES, epochs=epochs, lr=LR,
                  generator=torch.Generator().manual_seed(0), on_epoch=seen.append)
    assert [stats.epoch for stats in seen] == list(range(1, epochs + 1))
    decay_at = epochs // 2 if epochs > 1 else epochs  # epochs == 1 never decays
    assert [stats.lr for stats in seen] == [LR if epoch < decay_at else LR * 0.1 for epoch in range(epochs)]


def test_train_network_is_the_documented_optimiser():
    """Replayed by hand: SGD momentum 0.9, weight decay 5e-4, plain cross-entropy, one reshuffle per epoch
    from the same generator, lr x0.1 at epochs // 2."""
    images, labels = train_set()
    epochs, batch = 3, 16
    net = train_network(images, labels, model=MODEL, num_classes=CLASSES, epochs=epochs, lr=LR,
                        generator=torch.Generator().manual_seed(4), batch_size=batch)
    generator = torch.Generator().manual_seed(4)
    replay = fresh_network(MODEL, 1, CLASSES, (8, 8), generator)
    optimizer = torch.optim.SGD(replay.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    for epoch in range(epochs):
        if epoch == epochs // 2:
            optimizer.param_groups[0]["lr"] = LR * 0.1
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch):
            index = order[start:start + batch]
            loss = F.cross_entropy(replay(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert not net.training
    for got, expected in zip(net.parameters(), replay.parameters()):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("seed,epochs", [(0, 1), (3, 4)])
def test_reported_accuracy_is_the_final_network_tested_once(seed, epochs):
    """Run r trains with torch.Generator().manual_seed(seed * 1000 + r); its figure is 100 x the test accuracy
    of the network after the last epoch, rounded to 2 decimals (on_run gets it unrounded)."""
    images, labels = train_set()
    test = held_out()
    heard = []
    report = evaluate(images, labels, test, runs=2, epochs=epochs, seed=seed, **TINY,
                      on_run=lambda model, run, accuracy: heard.append((model, run, accuracy)))
    expected = []
    for run in range(2):
        net = train_network(images, labels, model=MODEL, num_classes=CLASSES, epochs=epochs, lr=LR,
                            generator=torch.Generator().manual_seed(seed * 1000 + run))
        expected.append(100.0 * accuracy_of(net, test.images, test.labels))
    assert [(model, run) for model, run, _ in heard] == [(MODEL, 0), (MODEL, 1)]
    assert [accuracy for _, _, accuracy in heard] == expected
    assert report["results"][MODEL]["accuracies"] == [round(accuracy, 2) for accuracy in expected]
    again = evaluate(images, labels, test, runs=2, epochs=epochs, seed=seed, **TINY)
    assert again["results"] == report["results"]  # deterministic given the seed


def test_mean_and_std_are_over_the_runs():
    """One epoch leaves the runs different, so the statistics are not trivially those of equal numbers."""
    images, labels = train_set()
    report = evaluate(images, labels, held_out(), models=(MODEL, "convnetd2"), runs=3, epochs=1, seed=0,
                      lr=LR, batch_size=256, dsa="none")
    assert list(report["results"]) == [MODEL, "convnetd2"]
    for result in report["results"].values():
        accuracies = result["accuracies"]
        assert len(accuracies) == 3 and len(set(accuracies)) > 1
        assert result["mean"] == round(float(np.mean(accuracies)), 2)
        assert result["std"] == round(float(np.std(accuracies)), 2)  # population std (ddof 0)
    assert report["results"][MODEL]["accuracies"] != report["results"]["convnetd2"]["accuracies"]


def mismatched_test(**changes) -> RealData:
    test = held_out()
    fields = dict(name="other", images=test.images, labels=test.labels, classes=list(test.classes), mean=(0.0,),
                  std=(1.0,), source={"split": "test"})
    fields.update(changes)
    return RealData(**fields)


@pytest.mark.parametrize("test,images_of,labels_of", [
    (lambda: mismatched_test(classes=["tl", "tr"]), None, None),  # labels 2 beyond the test set's 2 classes
    (lambda: mismatched_test(images=torch.zeros(6, 1, 12, 12), labels=torch.zeros(6, dtype=torch.int64)),
     None, None),  # 12x12 test images for 8x8 data
    (lambda: mismatched_test(images=torch.zeros(6, 3, 8, 8), labels=torch.zeros(6, dtype=torch.int64)),
     None, None),  # 3 channels for 1
    (held_out, lambda images: images[:, :, :6, :6], None),  # 6x6 data for an 8x8 test set
    (held_out, None, lambda labels: labels + 1),  # label 3 in a 3-class problem
])
def test_mismatched_test_data_is_refused(test, images_of, labels_of):
    images, labels = train_set()
    images = images_of(images) if images_of else images
    labels = labels_of(labels) if labels_of else labels
    with pytest.raises(FredsetError, match="does not match the test set") as info:
        evaluate(images, labels, test(), runs=1, epochs=1, **TINY)
    assert type(info.value) is FredsetError


@pytest.mark.parametrize("runs,epochs", [(0, 1), (1, 0), (-1, 5)])
def test_runs_and_epochs_must_be_positive(runs, epochs):
    images, labels = train_set()
    with pytest.raises(FredsetError, match="at least 1") as info:
        evaluate(images, labels, held_out(), runs=runs, epochs=epochs, **TINY)
    assert type(info.value) is FredsetError
