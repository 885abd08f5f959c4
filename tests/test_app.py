"""What the app lists and picks first, in process (the HTTP behaviour is in test_app_http.py)."""
from __future__ import annotations

import serve
from architectures import list_models


def test_the_dropdown_and_the_default_rank_by_the_accuracy_the_app_serves():
    # ResNet is ahead for the image alone, SE-Net once the TTA views are averaged in, as the app predicts.
    configs = {
        "resnet": {"val_accuracy": 0.910, "val_accuracy_tta": 0.915},
        "senet": {"val_accuracy": 0.905, "val_accuracy_tta": 0.920},
        "vgg": {"val_accuracy": 0.890},  # trained before the TTA figure was recorded
    }
    assert serve.best_architecture(configs) == "senet"
    labels = {name: label for label, name in serve.architecture_choices(configs)}
    assert labels["senet"].endswith("(92.0%)")
    assert labels["resnet"].endswith("(91.5%)")
    assert labels["vgg"].endswith("(89.0%)")
    assert labels["nin"].endswith("(no checkpoint yet)")
    assert serve.best_architecture({}) == list_models()[0]
