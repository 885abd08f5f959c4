"""Adversarial examples: the worst case within a budget, where CIFAR-10-C (``robustness.corruptions``) is the
average case.

Three attacks under an L-infinity budget epsilon on the pixels the model sees (its ``image_size`` view, in
[0, 1]): FGSM, one signed-gradient step (Goodfellow et al., 2015); PGD, signed-gradient ascent projected back
into the ball from a random start, with restarts (Madry et al., 2018); and APGD-CE, PGD whose step size halves
at checkpoints where the loss stopped rising, with momentum (Croce and Hein, 2020, AutoAttack's first attack).
An image leaves the batch as soon as it is fooled, so a batch costs what its robust images cost; every random
draw comes from one seeded generator, so the same images and settings give the same attack.

A ``PixelClassifier`` is a checkpoint as a function of pixels: the model alone on the plain view, or the app's
served probabilities (the weighted average over ``preprocess.tta_views``), so that a served attack flips the
label the app shows. ``attack_image`` turns one upload's attack into a real 8-bit file (rounding can undo a
float attack; it then goes on a few steps on the 8-bit grid), ``smallest_epsilon`` searches the budgets offered.

Written here rather than installed: torchattacks 3.5.1 pins requests~=2.25.1; torchattack's PGD has no
restarts, per-image stop or seed and it has no APGD; advertorch was last released in 2020; robustbench's
evaluation pulls timm, gdown and geotorch, and its APGD (pyautoattack) runs every image for every iteration.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from preprocess import TTA_VIEWS, tta_views

EPSILONS = (0.5, 1, 2, 4, 8)  # the budgets offered, in 1/255 of pixel value (L-infinity)
NONE = "none"
APP_ATTACKS = (NONE, "fgsm", "pgd")  # what a visitor can pick; APGD-CE is the evaluation's
# (steps, restarts) by attack: PGD-10 answers a visitor in about a second; the evaluation asks for more.
DEFAULT_SETTINGS = {"fgsm": (1, 1), "pgd": (10, 1), "apgd-ce": (100, 1)}
GRID_STEPS = 10  # steps of one level on the 8-bit grid when rounding undid an attack
APGD_RHO = 0.75       # a step size is halved unless the loss rose on at least this share of the steps since
APGD_MOMENTUM = 0.75  # the weight of the new step against the previous one (Croce and Hein's alpha)


def check_epsilon(epsilon) -> float:
    """The budget as a float in 1/255; ValueError naming the budgets offered otherwise."""
    try:
        value = float(epsilon)
    except (TypeError, ValueError):
        value = math.nan
    if value not in EPSILONS:
        raise ValueError(f"epsilon must be one of {', '.join(map(str, EPSILONS))} (in 1/255 of pixel value), "
                         f"got {epsilon!r}")
    return value


def check_attack(name, choices=(NONE, *DEFAULT_SETTINGS)) -> str:
    """The attack's name; ValueError naming ``choices`` otherwise."""
    if name not in choices:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(choices)}")
    return name


def check_target(target, class_names) -> int | None:
    """A target class as an index (None or "" for an untargeted attack): a class name or its index."""
    if target is None or target == "":
        return None
    if isinstance(target, str) and target in class_names:
        return list(class_names).index(target)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool) and 0 <= target < len(class_names):
        return int(target)
    raise ValueError(f"target {target!r} is not a class; choose one of {', '.join(class_names)} "
                     f"(or its index 0-{len(class_names) - 1})")


class PixelClassifier:
    """A checkpoint as a function of [0, 1] pixels (N x 3 x H x W) to log-probabilities (N x classes).

    ``served``: the app's probabilities, the weighted average over ``preprocess.tta_views`` at ``temperature``
    (``preprocess.served_probs``), its logarithm taken stably; otherwise the model alone on the plain view."""

    def __init__(self, model: torch.nn.Module, mean, std, served: bool = False, temperature: float = 1.0):
        device = next(model.parameters()).device
        self.model, self.served, self.temperature = model, served, float(temperature)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        weights = torch.tensor([weight / 2 for *_, weight in TTA_VIEWS], device=device)  # each view and its mirror
        self.log_weights = weights.log().view(-1, 1, 1, 1)
        self.device = device

    @classmethod
    def of(cls, model: torch.nn.Module, served: bool = False, temperature: float = 1.0) -> PixelClassifier:
        """For a model loaded with ``architectures.load_pretrained`` (its mean and std from its config)."""
        return cls(model, model.config["mean"], model.config["std"], served, temperature)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        # The same arithmetic as preprocess.normalize, so an 8-bit image scores here as it does when served.
        x = (pixels - self.mean) / self.std
        if not self.served:
            return torch.log_softmax(self.model(x).float(), -1)
        logits = self.model(tta_views(x)).float() / self.temperature
        per_view = torch.log_softmax(logits, -1).view(len(TTA_VIEWS), 2, len(x), -1)
        return torch.logsumexp(per_view + self.log_weights, dim=(0, 1))

    @torch.no_grad()
    def probs(self, pixels: torch.Tensor) -> torch.Tensor:
        return self(pixels.to(self.device)).exp()


def _project(x_adv: torch.Tensor, x: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Into the L-infinity ball of radius ``epsilon`` around ``x`` and into [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - epsilon), x + epsilon).clamp(0, 1)


def _random_start(x: torch.Tensor, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    noise = torch.rand(x.shape, generator=generator).to(x.device) * 2 - 1
    return _project(x + epsilon * noise, x, epsilon)


def _objective(classifier, x: torch.Tensor, labels: torch.Tensor, targeted: bool, need_grad: bool = True):
    """(loss to ascend, fooled, its gradient) per image: the cross-entropy of ``labels`` (untargeted) or its
    negative (towards the target ``labels``)."""
    x = x.detach().requires_grad_(need_grad)
    with torch.set_grad_enabled(need_grad):
        log_probs = classifier(x)
        picked = log_probs.gather(1, labels[:, None]).squeeze(1)
        loss = picked if targeted else -picked
        grad = torch.autograd.grad(loss.sum(), x)[0] if need_grad else None
    predicted = log_probs.argmax(1)
    fooled = predicted == labels if targeted else predicted != labels
    return loss.detach(), fooled, grad


def fgsm(classifier, x, labels, epsilon, targeted=False, generator=None, steps=1, restarts=1, check=True):
    """One step of ``epsilon`` along the sign of the loss's gradient (``steps`` and ``restarts`` are ignored).
    ``check``: say which images it fools (a forward pass more); otherwise ``fooled`` is None."""
    _, _, grad = _objective(classifier, x, labels, targeted)
    x_adv = _project(x + epsilon * grad.sign(), x, epsilon)
    return x_adv, _objective(classifier, x_adv, labels, targeted, need_grad=False)[1] if check else None


def pgd(classifier, x, labels, epsilon, targeted=False, generator=None, steps=10, restarts=1, early_stop=True):
    """``steps`` signed-gradient steps of 2.5 epsilon / steps (Madry et al.'s), each projected back into the
    ball, from a random start; ``restarts`` random starts for the images still standing. ``early_stop``: an
    image stops at its first fooling point; otherwise every image takes every step and its highest-loss point
    is kept (an example made to transfer to other models should not stop at the boundary)."""
    step_size = 2.5 * epsilon / steps
    best, best_loss = x.clone(), torch.full((len(x),), -math.inf, device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        index = (~fooled).nonzero().squeeze(1)
        if not len(index):
            break
        origin, goal = x[index], labels[index]
        x_adv = _random_start(origin, epsilon, generator)
        for step in range(steps + 1):
            loss, hit, grad = _objective(classifier, x_adv, goal, targeted, need_grad=step < steps)
            hit = hit if early_stop else torch.zeros_like(hit)
            better = hit | (loss > best_loss[index])
            best[index[better]], best_loss[index[better]] = x_adv[better], loss[better]
            fooled[index[hit]] = True
            keep = ~hit
            if step == steps or not keep.any():
                break
            index, origin, goal, x_adv, grad = index[keep], origin[keep], goal[keep], x_adv[keep], grad[keep]
            x_adv = _project(x_adv + step_size * grad.sign(), origin, epsilon)
        if not early_stop:
            fooled[index] = _objective(classifier, best[index], goal, targeted, need_grad=False)[1]
    return best, fooled


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step: p0 = 0, p1 = 0.22, p(j+1) = p(j) + max(p(j) - p(j-1)
    - 0.03, 0.06), each times ``steps``, rounded up."""
    fractions = [0.0, 0.22]
    while fractions[-1] < 1:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    # Rounded before the ceiling: 0.22 + 0.19 is 0.41000000000000003 in floating point, not past 41 steps.
    return sorted({math.ceil(round(p * steps, 6)) for p in fractions if 0 < p <= 1})


def apgd_ce(classifier, x, labels, epsilon, targeted=False, generator=None, steps=100, restarts=1):
    """APGD on the cross-entropy (Croce and Hein 2020, Algorithm 1): a first step of 2 epsilon, then steps with
    momentum; at each checkpoint an image whose loss rose on fewer than ``APGD_RHO`` of the steps since, or
    whose best loss did not improve while its step was not just halved, halves its step and goes back to its
    best point. Every image keeps its own step size; ``restarts`` random starts for the images still standing."""
    checkpoints = apgd_checkpoints(steps)
    best, best_loss = x.clone(), torch.full((len(x),), -math.inf, device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    shape = (-1, 1, 1, 1)
    for _ in range(restarts):
        index = (~fooled).nonzero().squeeze(1)
        if not len(index):
            break
        s = {"origin": x[index], "goal": labels[index], "index": index}
        s["x"] = _random_start(s["origin"], epsilon, generator)
        loss, hit, s["grad"] = _objective(classifier, s["x"], s["goal"], targeted)
        s.update(prev=s["x"], last_loss=loss, top=loss, x_top=s["x"], grad_top=s["grad"],
                 eta=torch.full((len(index),), 2 * epsilon, device=x.device),
                 rises=torch.zeros(len(index), device=x.device), top_at_check=loss,
                 halved_at_check=torch.zeros(len(index), dtype=torch.bool, device=x.device))
        previous_check = 0
        for k in range(steps + 1):
            better = hit | (loss > best_loss[s["index"]])
            best[s["index"][better]], best_loss[s["index"][better]] = s["x"][better], loss[better]
            fooled[s["index"][hit]] = True
            if k == steps or hit.all():
                break
            s = {key: value[~hit] for key, value in s.items()}
            loss = loss[~hit]
            weight = 1.0 if k == 0 else APGD_MOMENTUM
            z = _project(s["x"] + s["eta"].view(shape) * s["grad"].sign(), s["origin"], epsilon)
            step = _project(s["x"] + weight * (z - s["x"]) + (1 - weight) * (s["x"] - s["prev"]), s["origin"], epsilon)
            s["prev"], s["x"] = s["x"], step
            loss, hit, s["grad"] = _objective(classifier, s["x"], s["goal"], targeted)
            s["rises"] = s["rises"] + (loss > s["last_loss"]).float()
            s["last_loss"] = loss
            top = loss > s["top"]
            s["top"], s["x_top"] = torch.where(top, loss, s["top"]), torch.where(top.view(shape), s["x"], s["x_top"])
            s["grad_top"] = torch.where(top.view(shape), s["grad"], s["grad_top"])
            if k + 1 in checkpoints:
                stalled = s["rises"] < APGD_RHO * (k + 1 - previous_check)
                flat = ~s["halved_at_check"] & (s["top"] <= s["top_at_check"])
                halve = (stalled | flat) & ~hit
                s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
                s["x"] = torch.where(halve.view(shape), s["x_top"], s["x"])
                s["grad"] = torch.where(halve.view(shape), s["grad_top"], s["grad"])
                s.update(halved_at_check=halve, top_at_check=s["top"], rises=torch.zeros_like(s["rises"]))
                previous_check = k + 1
    return best, fooled


ATTACKS = {"fgsm": fgsm, "pgd": pgd, "apgd-ce": apgd_ce}  # name -> attack; each returns (x_adv, fooled)


def run_attack(classifier, x: torch.Tensor, labels: torch.Tensor, attack: str, epsilon: float,
               targeted: bool = False, seed: int = 0, steps: int | None = None, restarts: int | None = None,
               **options):
    """``attack`` on [0, 1] images ``x`` at ``epsilon`` (in 1/255): (x_adv, fooled), x_adv within the ball and
    in [0, 1]; untargeted away from ``labels``, or towards them when ``targeted``. Seeded by ``seed``;
    ``options`` go to the attack (``early_stop`` for PGD)."""
    check_attack(attack, tuple(ATTACKS))
    if epsilon <= 0 or not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    default_steps, default_restarts = DEFAULT_SETTINGS[attack]
    steps, restarts = steps or default_steps, restarts or default_restarts
    generator = torch.Generator().manual_seed(seed)
    x, labels = x.to(classifier.device).float(), labels.to(classifier.device)
    return ATTACKS[attack](classifier, x, labels, epsilon / 255, targeted, generator, steps, restarts, **options)


@dataclass
class ImageAttack:
    """One image's attack as a visitor sees it: the 8-bit file and what the classifier says of it."""
    attack: str
    epsilon: float                 # in 1/255
    target: int | None             # the class aimed at; None: away from ``label``
    seed: int
    label: int                     # the class predicted before the attack
    original: np.ndarray           # H x W x 3 uint8: the view the model sees
    attacked: np.ndarray           # H x W x 3 uint8: the file; each pixel within floor(epsilon) levels of ``original``
    probs_before: np.ndarray       # the classifier's probabilities (served ones, for a served classifier)
    probs_after: np.ndarray        # ... of the attacked file
    fooled: bool                   # the file's label changed (untargeted) or is the target
    fooled_before_rounding: bool   # the attack in floating point, before the file's 8-bit rounding
    grid_steps: int                # steps taken on the 8-bit grid because rounding had undone the attack

    @property
    def new_label(self) -> int:
        return int(self.probs_after.argmax())

    @property
    def perturbation(self) -> np.ndarray:
        """attacked - original, in levels of 1/255 (int16)."""
        return self.attacked.astype(np.int16) - self.original.astype(np.int16)

    def png_bytes(self) -> bytes:
        return png_bytes(self.attacked)


def png_bytes(pixels: np.ndarray) -> bytes:
    """An H x W x 3 uint8 image as PNG bytes (lossless: reloaded, the same pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def amplified(perturbation: np.ndarray, epsilon: float) -> tuple[np.ndarray, float]:
    """A perturbation in levels made visible: 128 + scale x perturbation as uint8, the scale that maps the
    largest change the budget allows (floor(epsilon) levels in an 8-bit file, at least one) to 127."""
    scale = 127 / max(1, math.floor(epsilon))
    return np.clip(np.rint(128 + scale * perturbation), 0, 255).astype(np.uint8), scale


def _to_pixels(view: np.ndarray, device) -> torch.Tensor:
    if view.dtype != np.uint8 or view.ndim != 3 or view.shape[2] != 3:
        raise ValueError(f"the view must be H x W x 3 uint8, got {view.dtype} of shape {view.shape}")
    return torch.from_numpy(np.array(view, copy=True)).permute(2, 0, 1)[None].to(device)


def _on_grid(classifier, levels, original, radius, goal, targeted, steps):
    """Signed-gradient steps of one level on the 8-bit grid, within ``radius`` levels of ``original`` (uint8
    tensors, 1 x 3 x H x W), until the image is fooled: (levels, fooled, steps taken)."""
    low, high = (original.int() - radius).clamp(0, 255), (original.int() + radius).clamp(0, 255)
    current = levels.int()
    for step in range(1, steps + 1):
        _, _, grad = _objective(classifier, current.float() / 255, goal, targeted)
        current = torch.minimum(torch.maximum(current + grad.sign().int(), low), high)
        if _objective(classifier, current.float() / 255, goal, targeted, need_grad=False)[1].item():
            return current.to(torch.uint8), True, step
    return current.to(torch.uint8), False, steps


def _file_verdict(classifier, levels: torch.Tensor, goal: torch.Tensor, targeted: bool) -> tuple[np.ndarray, bool]:
    """The probabilities of an 8-bit image (1 x 3 x H x W uint8) and whether it is fooled, in one forward pass."""
    probs = classifier.probs(levels.float() / 255)[0]
    predicted = int(probs.argmax())
    return probs.cpu().numpy().astype(np.float64), predicted == int(goal) if targeted else predicted != int(goal)


def attack_image(classifier: PixelClassifier, view: np.ndarray, attack: str, epsilon, target=None,
                 class_names=None, seed: int = 0, steps: int | None = None, restarts: int | None = None,
                 grid_steps: int = GRID_STEPS, probs_before: np.ndarray | None = None) -> ImageAttack:
    """Attack one model view (H x W x 3 uint8, ``preprocess.model_view``) and make the result a file.

    The float attack is rounded to 8-bit pixels; an 8-bit pixel moves in whole levels, so the file lies within
    floor(epsilon) levels of the view (at 0.5/255 no other 8-bit image is in the ball: the file is the view).
    If rounding undid a successful attack, up to ``grid_steps`` signed-gradient steps of one level on the 8-bit
    grid continue from the rounded image. ``fooled`` is judged on the file, as its upload would be.
    ``probs_before``: the classifier's probabilities of the view where the caller has them (the app's
    prediction), which saves a forward pass."""
    attack, epsilon = check_attack(attack, (NONE, *ATTACKS)), check_epsilon(epsilon)
    original = _to_pixels(view, classifier.device)
    if probs_before is None:
        probs_before = classifier.probs(original.float() / 255)[0].cpu().numpy()
    before = np.asarray(probs_before, dtype=np.float64)
    target = check_target(target, class_names if class_names is not None else [str(i) for i in range(len(before))])
    label = int(before.argmax())
    if attack == NONE:
        return ImageAttack(attack, epsilon, target, seed, label, view, view.copy(), before, before, False, False, 0)
    targeted = target is not None
    goal = torch.tensor([target if targeted else label], device=classifier.device)
    # FGSM's own verdict would cost a forward pass; at a whole budget its step lands on the 8-bit grid, so the
    # file's verdict is the float attack's.
    options = {"check": False} if attack == "fgsm" else {}
    x_adv, float_fooled = run_attack(classifier, original.float() / 255, goal, attack, epsilon, targeted, seed,
                                     steps, restarts, **options)
    radius = math.floor(epsilon)
    # x_adv is within epsilon of the view, so rounding moves a pixel at most ceil(epsilon) levels: clamp to floor.
    levels = torch.minimum(torch.maximum((x_adv * 255).round(), original.float() - radius), original.float() + radius)
    levels = levels.clamp(0, 255).to(torch.uint8)
    after, fooled = _file_verdict(classifier, levels, goal, targeted)
    if float_fooled is None:
        on_grid = (x_adv * 255 - levels.float()).abs().max().item() < 1e-3
        float_fooled = torch.tensor([fooled]) if on_grid else _objective(classifier, x_adv, goal, targeted, False)[1]
    taken = 0
    if float_fooled.item() and not fooled and radius > 0:
        levels, fooled, taken = _on_grid(classifier, levels, original, radius, goal, targeted, grid_steps)
        after = _file_verdict(classifier, levels, goal, targeted)[0]
    attacked = levels[0].permute(1, 2, 0).cpu().numpy()
    return ImageAttack(attack, epsilon, target, seed, label, view, attacked, before, after, fooled,
                       bool(float_fooled.item()), taken)


def smallest_epsilon(classifier: PixelClassifier, view: np.ndarray, attack: str = "pgd", target=None,
                     class_names=None, seed: int = 0, as_file: bool = True) -> tuple[float | None, ImageAttack | None]:
    """The smallest budget of ``EPSILONS`` whose attack flips this view, and that attack; (None, the largest
    budget's attack) when none does. The budgets are tried from the smallest up, so an image that falls early
    (most do) costs one or two attacks. ``as_file``: the 8-bit file must be fooled, so budgets under one level
    (no 8-bit image lies within them) are skipped; otherwise the float attack counts."""
    result = None
    for epsilon in EPSILONS:
        if as_file and math.floor(epsilon) == 0:
            continue
        result = attack_image(classifier, view, attack, epsilon, target, class_names, seed)
        if result.fooled if as_file else result.fooled_before_rounding:
            return epsilon, result
    return None, result
