"""Explanations running in several threads at once, as the app runs them: one lock per model, so two models'
maps are made side by side, while other work (the zoo table's MAC counts) runs in other threads.

Torch's ``FlopCounterMode`` (which ``architectures.measure.count_macs`` once entered whole) starts module hooks
global to the process: while it counts, every module's input in every thread gets a multi-grad hook. Captum's
gradient methods differentiate with ``autograd.grad`` with respect to their input, a leaf, and torch refuses
such a hook on that leaf ("A leaf node was passed to _will_engine_execute_node ...", pytorch#131753). Two
defences, each tested: ``count_macs`` adds no such hooks, and explain's maps survive them when another library
adds them. The tests hold a count open in another thread while the maps are made, so they do not depend on
winning a race.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch

import explain
from architectures import create_model
from torch.utils.flop_counter import FlopCounterMode

from architectures.measure import count_macs
from explain.faithfulness import randomised

WAIT_S = 30  # the most a test waits for another thread; each normally takes well under a second
GRADIENT_METHODS = [name for name, method in explain.methods.TABLE.items() if method.needs_gradients]


def tiny_model(seed: int = 0):
    """A small basic ConvNet with random (non-constant) weights and the config a random-weights twin needs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = randomised(create_model("basic_convnet", widths=(8, 16, 32), convs_per_stage=1), seed)
    model.config = {"arch": "basic_convnet", "class_names": [str(i) for i in range(10)],
                    "arch_args": {"widths": [8, 16, 32], "convs_per_stage": 1}}
    return model


def an_image(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


class WaitsInForward(torch.nn.Module):
    """A module whose forward pass says it has begun, then waits to be released: holds a MAC count open."""

    def __init__(self):
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def forward(self, x):
        self.entered.set()
        self.release.wait(WAIT_S)
        return x.mean()


def whole_flop_counter(model, image_size: int) -> None:
    """A count with FlopCounterMode entered whole, module tracker and all: global module hooks meanwhile."""
    with FlopCounterMode(display=False), torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))


@contextmanager
def macs_counted_in_another_thread(count_with=whole_flop_counter):
    """While the body runs, another thread is inside ``count_with`` (a MAC count, its forward pass begun)."""
    counted = WaitsInForward()
    errors = []

    def count():
        try:
            count_with(counted, 32)
        except Exception as error:  # reported by the test, not lost with the thread
            errors.append(error)

    thread = threading.Thread(target=count, daemon=True)
    thread.start()
    try:
        assert counted.entered.wait(WAIT_S), "the MAC count never began its forward pass"
        yield
    finally:
        counted.release.set()
        thread.join(WAIT_S)
    assert not thread.is_alive() and not errors, errors


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gradient_maps_while_another_thread_counts_macs(method):
    """Another library's global module hooks (a whole FlopCounterMode in another thread) do not break, or
    change, a map."""
    model, x = tiny_model(), an_image()
    alone = explain.cam(model, x, 3, method)
    with macs_counted_in_another_thread():
        beside = explain.cam(model, x, 3, method)
    np.testing.assert_allclose(beside, alone, atol=1e-5)


def test_faithfulness_check_while_another_thread_counts_macs():
    """The check serve runs (the random-weights twin's "chosen" map, then the held-out curves) beside a whole
    FlopCounterMode's count."""
    model, x = tiny_model(), an_image()
    heatmap = explain.cam(model, x, 3, "chosen")
    with macs_counted_in_another_thread():
        twin_map = explain.cam(explain.randomised_twin(model), x, 3, "chosen")
        figures = explain.faithfulness(model, x, heatmap, 3, random_weights_heatmap=twin_map)
    assert np.isfinite(figures["map"]).all() and np.isfinite(figures["random_weights"]).all()


def test_two_models_explained_side_by_side_on_one_shared_input():
    """A model and its random-weights twin explained at once in two threads, from one shared input tensor (as
    serve shares a prediction's ``x`` between requests): each thread's maps are those it makes alone, and the
    shared input is left as it was (no gradient requirement, no gradient, same values)."""
    model = tiny_model()
    models = (model, explain.randomised_twin(model))
    x = an_image()
    original = x.clone()
    rounds, methods = 3, ("input-x-gradient", "gradcam", "integrated-gradients")
    alone = [{method: explain.cam(m, x, 3, method) for method in methods} for m in models]
    start, results, errors = threading.Barrier(len(models)), [[] for _ in models], []

    def explain_repeatedly(index):
        try:
            start.wait(WAIT_S)
            for _ in range(rounds):
                results[index].append({method: explain.cam(models[index], x, 3, method) for method in methods})
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=explain_repeatedly, args=(i,), daemon=True) for i in range(len(models))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads) and not errors, errors
    for index, maps in enumerate(results):
        assert len(maps) == rounds
        for made in maps:
            for method in methods:
                np.testing.assert_allclose(made[method], alone[index][method], atol=1e-5)
    assert not x.requires_grad and x.grad is None and x.grad_fn is None
    assert torch.equal(x, original)


def test_count_macs_adds_no_hooks_that_reach_other_threads():
    """The zoo table's own MAC count stays in its thread: meanwhile no module hook global to the process exists,
    and a Captum gradient map in another thread never meets one. The whole FlopCounterMode is the control: the
    same check sees its hooks."""
    from torch.nn.modules import module as torch_module

    def global_hooks() -> int:
        return sum(len(hooks) for hooks in (torch_module._global_forward_pre_hooks,
                                              torch_module._global_forward_hooks))

    assert global_hooks() == 0
    with macs_counted_in_another_thread(count_macs):
        during_ours = global_hooks()
        explain.cam(tiny_model(), an_image(), 3, "input-x-gradient")
    with macs_counted_in_another_thread(whole_flop_counter):
        during_whole = global_hooks()
    assert during_ours == 0 and during_whole > 0
    assert count_macs(tiny_model(), 32) > 0
