"""Attack this image: the served prediction's worst case within a small budget, for Classify and Compare.

A request names an attack (none, FGSM or PGD), a budget in 1/255 and, optionally, a class to aim at
(``attack_request`` checks them and names the choices). ``attack_upload`` attacks the checkpoint as the app
serves it (the six-view average at its temperature, ``robustness.adversarial.PixelClassifier``), so the label
that flips is the one the top-5 shows; the result is a real 8-bit file, which ``saved_png`` writes for
download. Seeded: the same upload and settings give the same file. The words about it are ``serve.wording``'s.
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from architectures.checkpoint import atomic_write_bytes
from preprocess import model_view
from robustness.adversarial import (APP_ATTACKS, EPSILONS, NONE, ImageAttack, PixelClassifier, amplified,
                                    attack_image, check_attack, check_epsilon, smallest_epsilon)

from .errors import RequestError
from .predict import served_temperature
from .store import LoadedModel

NO_ATTACK = NONE
UNTARGETED = "untargeted"   # the target a visitor leaves as it is: away from the predicted class
DEFAULT_EPSILON = 2         # in 1/255: flips most of the zoo's predictions, and two levels stay invisible
SEED = 0                    # every attack's random start: the same upload and settings give the same file
PERTURBATION_SIDE = 224     # the perturbation is drawn blown up, each pixel a block, like the model's view
CAPTION_HEIGHT = 24         # ... with its scale written under it


@dataclass(frozen=True)
class AttackRequest:
    """What was asked: ``attack`` in ``APP_ATTACKS``, ``epsilon`` in 1/255 (one of ``EPSILONS``), ``target`` a
    class name or None (untargeted)."""
    attack: str = NO_ATTACK
    epsilon: float = DEFAULT_EPSILON
    target: str | None = None

    @property
    def active(self) -> bool:
        return self.attack != NO_ATTACK

    @property
    def key(self) -> tuple | None:
        """What a prediction or map of the attacked image is kept under, beside the upload's key."""
        return (self.attack, self.epsilon, self.target) if self.active else None


NOTHING = AttackRequest()


def attack_request(attack=NO_ATTACK, epsilon=DEFAULT_EPSILON, target=UNTARGETED,
                   class_names=None) -> AttackRequest:
    """The checked request; ``RequestError`` naming the choices for an unknown attack, a budget not offered or
    a target that is not one of ``class_names``. The budget is checked even without an attack, so that a
    mistyped API call is told at once."""
    try:
        attack = check_attack(attack if attack not in (None, "") else NO_ATTACK, APP_ATTACKS)
        epsilon = check_epsilon(epsilon)
    except ValueError as error:
        raise RequestError(str(error), title="Unknown attack setting") from None
    if target in (None, "", UNTARGETED):
        return AttackRequest(attack, epsilon, None)
    if class_names is not None and target not in class_names:
        raise RequestError(f"attack target {target!r} is not a class; choose {UNTARGETED!r} or one of "
                           f"{', '.join(class_names)}", title="Unknown attack setting")
    return AttackRequest(attack, epsilon, str(target))


def served_classifier(loaded: LoadedModel) -> PixelClassifier:
    """``loaded`` as the app serves it, as a function of pixels."""
    return PixelClassifier.of(loaded.model, served=True,
                              temperature=served_temperature(loaded.config, loaded.weights_sha256))


def attack_upload(loaded: LoadedModel, pil: Image.Image, request: AttackRequest,
                  probs_before: np.ndarray | None = None) -> ImageAttack:
    """``request``'s attack on ``pil``'s view as ``loaded`` sees it, under the model's lock. ``probs_before``:
    the served probabilities the app already has, which saves a forward pass."""
    with loaded.lock:
        return attack_image(served_classifier(loaded), model_view(pil, loaded.config), request.attack,
                            request.epsilon, request.target, loaded.config["class_names"], SEED,
                            probs_before=probs_before)


def smallest_flipping_epsilon(loaded: LoadedModel, pil: Image.Image, request: AttackRequest) -> float | None:
    """The smallest budget offered whose attack (``request``'s, PGD for FGSM too: the search is for the
    image's fragility, not the weaker attack's) turns the file's label; None when even the largest does not."""
    with loaded.lock:
        epsilon, _ = smallest_epsilon(served_classifier(loaded), model_view(pil, loaded.config), "pgd",
                                      request.target, loaded.config["class_names"], SEED)
    return epsilon


def perturbation_picture(result: ImageAttack) -> tuple[Image.Image, float]:
    """The perturbation made visible (grey: unchanged; brighter or darker by ``scale`` x the change in levels),
    blown up with nearest-neighbour, its scale written under it (a saved or shared copy keeps it); and the scale."""
    pixels, scale = amplified(result.perturbation, result.epsilon)
    side = PERTURBATION_SIDE - PERTURBATION_SIDE % pixels.shape[0]
    picture = Image.new("RGB", (side, side + CAPTION_HEIGHT), "white")
    picture.paste(Image.fromarray(pixels).resize((side, side), Image.Resampling.NEAREST))
    ImageDraw.Draw(picture).text((side // 2, side + CAPTION_HEIGHT // 2), f"amplified {scale:.0f}x; grey: unchanged",
                                 fill="black", anchor="mm", font=ImageFont.load_default(size=14))
    return picture, scale


_DOWNLOADS = Path(tempfile.gettempdir()) / "zoo-attacks"


def saved_png(result: ImageAttack, architecture: str) -> str:
    """The attacked view as an 8-bit PNG file to download (named by its content, written atomically); its path."""
    data = result.png_bytes()
    digest = hashlib.sha256(data).hexdigest()[:12]
    path = _DOWNLOADS / f"{architecture}-{result.attack}-{result.epsilon:g}-{digest}.png"
    if not path.is_file():
        _DOWNLOADS.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    return str(path)


__all__ = ["AttackRequest", "NOTHING", "NO_ATTACK", "UNTARGETED", "DEFAULT_EPSILON", "EPSILONS", "APP_ATTACKS",
           "attack_request", "attack_upload", "smallest_flipping_epsilon", "perturbation_picture", "saved_png"]
