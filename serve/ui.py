"""The app's longer words and its style sheet, kept out of ``app.py`` so that the file stays layout and wiring."""
from pathlib import Path

INTRO = ("# CIFAR-10 model zoo\n"
         "Eleven classic image classifiers, from a plain ConvNet to ResNet, DenseNet, SENet, EfficientNet and "
         "MLP-Mixer, each trained on CIFAR-10's 32 x 32 images (airplane, automobile, bird, cat, deer, dog, "
         "frog, horse, ship, truck). Upload a picture, pick an architecture and see what it predicts and "
         "where it looked.")
METHOD_INFO = ("most faithful: the one whose maps the verdict calls faithful on the most validation images for "
               "this architecture (see README)")
LAYER_INFO = ("for a layer method: 1 = shallowest CAM layer, the deepest is the usual choice; the input methods "
              "(occlusion, gradients, RISE, chosen) take none")
COMPARE_INTRO = ("Every architecture with a checkpoint on the same image: do they agree, how sure are they, how fast, "
                 "and where did each look?")
INSIDE_INTRO = ("What every stage of the network makes of **the image and architecture chosen in Classify**, stage by "
                "stage in forward order, under the names of its diagram: the output's shape, its most informative "
                "channels as heatmaps, what happens there in words, and what a linear probe on that stage alone "
                "would guess. The chart: how well each stage's features tell the ten classes apart (validation split).")

# A small upload (a 32 x 32 CIFAR image) fills the input box instead of showing as a stamp; gallery captions
# wrap instead of being cut after a few characters; the Compare table's columns wrap instead of running off.
CSS = """
#classify-image img, #compare-image img { width: 100%; height: 100%; object-fit: contain; }
#compare-gallery .caption-label, #inside-gallery .caption-label { white-space: normal; max-width: calc(100% - 16px); }
#compare-table table { table-layout: auto; width: 100%; }
#compare-table th, #compare-table td { white-space: normal; }
"""

EXAMPLE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def example_paths(folder) -> list[str]:
    """The example images in ``folder`` (sorted; none when it is missing), for ``gr.Examples``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)


def example_labels(paths: list[str]) -> list[str]:
    """Each example's file name in words ("cat_chelsea.jpg" -> "cat chelsea")."""
    return [Path(p).stem.replace("_", " ") for p in paths]
