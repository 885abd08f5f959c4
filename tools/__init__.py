"""Commands a person runs on checkpoints, each ``python -m tools.<name> --help``.

- ``finish_checkpoint``: everything a trained checkpoint folder needs beside its weights, in one step.
- ``choose_cam``: the CAM setting that explains a checkpoint most faithfully, into its config.json.
- ``calibrate_ood``: each checkpoint's out-of-distribution threshold, into its config.json.
- ``se_profiles``: an SE model's class profiles, ``se_profiles.safetensors`` beside its weights.
- ``compact_checkpoint``: store a float32 checkpoint's parameters in float16, re-scored.
- ``zoo_table``: the README's table of shipped checkpoints, from their configs.
- ``push_to_hub``: upload a checkpoint folder with a model card.

The library code they call lives in ``architectures``, ``explain``, ``serve`` and ``train``; nothing there
imports from here.
"""
