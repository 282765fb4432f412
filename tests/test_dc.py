"""DC (gradient matching): the distance, and the objective lowering it."""

import torch
import torch.nn.functional as F

from fredset.distill.objectives.dc import GradientMatching, gradient_distance, loops_for
from fredset.distill.synset import init_frequency_synset
from fredset.models import build_model, init_parameters

from test_distill import fashion_subset


def test_distance_on_hand_made_gradients():
    same = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    assert gradient_distance([same], [same * 5]).item() < 1e-6  # direction is all that counts
    opposite = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    flipped = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    assert abs(gradient_distance([opposite], [flipped]).item() - 2.0) < 1e-5  # rows: cos 1 and -1
    orthogonal = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert abs(gradient_distance([opposite], [orthogonal]).item() - 2.0) < 1e-5  # two rows of cos 0
    bias_real, bias_synthetic = torch.tensor([1.0, 2.0]), torch.tensor([-5.0, 3.0])
    assert gradient_distance([bias_real], [bias_synthetic]).item() == 0  # 1-D tensors contribute 0


def test_conv_weights_are_compared_per_output_channel():
    real = torch.randn(4, 3, 3, 3)
    synthetic = real.clone()
    synthetic[1] *= -1  # one output channel points the other way: 1 - (-1) = 2
    assert abs(gradient_distance([real], [synthetic]).item() - 2.0) < 1e-5
    rows = gradient_distance([real.reshape(4, -1)], [synthetic.reshape(4, -1)])
    assert torch.allclose(rows, gradient_distance([real], [synthetic]))


def test_reference_loops():
    assert loops_for(1) == (1, 1) and loops_for(10) == (10, 50) and loops_for(50) == (50, 10)
    assert loops_for(2) == (1, 1) and loops_for(15) == (10, 50) and loops_for(0.3) == (1, 1)


def test_dc_lowers_its_distance():
    """Under one fixed network, the summed matching distance falls after a few outer steps."""
    real = fashion_subset()
    synset = init_frequency_synset(real, 1, 64, generator=torch.Generator().manual_seed(0))
    objective = GradientMatching(real, outer=1, inner=1, batch_real=16, model="convnetd2")
    net = init_parameters(build_model("convnetd2", 1, real.num_classes, (28, 28)), torch.Generator().manual_seed(5))

    def distance() -> float:
        return float(objective.loss(synset, net, torch.Generator().manual_seed(9)).detach())

    before = distance()
    optimizer = torch.optim.SGD(synset.parameters(), lr=1e3, momentum=0.5)
    for step in range(8):
        loss = objective.loss(synset, net, torch.Generator().manual_seed(100 + step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert distance() < 0.9 * before


def recording_loss(monkeypatch, calls):
    """Make GradientMatching.loss record a copy of the network's parameters at each call."""
    original = GradientMatching.loss

    def loss(self, synset, net, generator):
        calls.append([p.detach().clone() for p in net.parameters()])
        return original(self, synset, net, generator)

    monkeypatch.setattr(GradientMatching, "loss", loss)


def test_dc_iteration_runs_outer_and_inner_loops(monkeypatch):
    """outer=3: three matching steps on the synthetic set, and the network trains between them (not after the
    last); the parameters a matching step sees are those the inner loop left."""
    real = fashion_subset()
    synset = init_frequency_synset(real, 1, 64, generator=torch.Generator().manual_seed(0))
    objective = GradientMatching(real, outer=3, inner=2, batch_real=8, model="convnetd1")
    calls, trained = [], []
    recording_loss(monkeypatch, calls)
    original_train = GradientMatching._train_network

    def train_network(self, net, optimizer, synset, generator):
        trained.append([p.detach().clone() for p in net.parameters()])
        original_train(self, net, optimizer, synset, generator)

    monkeypatch.setattr(GradientMatching, "_train_network", train_network)
    before = [p.detach().clone() for p in synset.parameters()]
    optimizer = torch.optim.SGD(synset.parameters(), lr=1e3, momentum=0.5)
    loss = objective.iteration(synset, optimizer, torch.Generator().manual_seed(1))
    assert loss > 0 and any(not torch.equal(a, b) for a, b in zip(before, synset.parameters()))
    assert len(calls) == 3 and len(trained) == 2  # no inner loop after the last outer step
    for earlier, later in zip(calls, calls[1:]):  # the inner loop moved the network between outer steps
        assert any(not torch.equal(a, b) for a, b in zip(earlier, later))
    for seen, handed in zip(calls, trained):  # matching does not move the network itself
        assert all(torch.equal(a, b) for a, b in zip(seen, handed))


def test_dc_iteration_with_one_outer_step_does_not_train_the_network(monkeypatch):
    real = fashion_subset()
    synset = init_frequency_synset(real, 1, 64, generator=torch.Generator().manual_seed(0))
    objective = GradientMatching(real, outer=1, inner=5, batch_real=8, model="convnetd1")
    calls = []
    recording_loss(monkeypatch, calls)

    def refuse(*args):
        raise AssertionError("the inner loop ran with outer=1")

    monkeypatch.setattr(GradientMatching, "_train_network", refuse)
    optimizer = torch.optim.SGD(synset.parameters(), lr=1e3, momentum=0.5)
    objective.iteration(synset, optimizer, torch.Generator().manual_seed(1))
    assert len(calls) == 1


def test_inner_loop_trains_the_network_on_the_synthetic_set(monkeypatch):
    """``inner`` epochs of SGD on the decoded synthetic set, with its labels: its cross-entropy falls."""
    from fredset.distill.objectives import dc

    asked = []
    original = dc.train_epochs

    def train_epochs(*args, **kwargs):
        asked.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(dc, "train_epochs", train_epochs)
    real = fashion_subset()
    synset = init_frequency_synset(real, 2, 64, generator=torch.Generator().manual_seed(0))
    objective = GradientMatching(real, outer=2, inner=10, batch_real=8, model="convnetd1", batch_train=8)
    net = init_parameters(build_model("convnetd1", 1, real.num_classes, (28, 28)), torch.Generator().manual_seed(3))
    images = synset.decode().detach()

    def synthetic_loss() -> float:
        with torch.no_grad():
            return float(F.cross_entropy(net(images), synset.labels))

    before = synthetic_loss()
    objective._train_network(net, torch.optim.SGD(net.parameters(), lr=0.01), synset, torch.Generator().manual_seed(2))
    assert synthetic_loss() < 0.5 * before
    assert [(a["epochs"], a["batch_size"], a["augment"]) for a in asked] == [(10, 8, None)]
    assert all(p.grad is None for p in synset.parameters())  # the synthetic set is not trained by it


def test_dc_from_the_command_line(tmp_path):
    from click.testing import CliRunner

    from fredset import load
    from fredset_cli.main import cli

    out = tmp_path / "dc.fredset"
    result = CliRunner().invoke(cli, ["distill", "--dataset", "fashion-mnist", "--objective", "dc", "--ipc", "1",
                                      "--k", "64", "--iterations", "1", "--batch-real", "4", "--model", "convnetd1",
                                      "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    provenance = load(out).provenance
    assert provenance["objective"] == "dc" and provenance["hyperparameters"]["lr"] == 1e3
    assert provenance["hyperparameters"]["dsa"] is None and provenance["hyperparameters"]["outer_loop"] == 1
