"""The model zoo's web app: classify an image with any of eleven CIFAR-10 classifiers, see where it looked.

``python app.py`` serves on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (default 127.0.0.1:7860); the same
file is a Hugging Face Space's entry point. Tabs: Classify (top-5, a class activation map and its
faithfulness, SE attention, the architecture's card), Compare (every architecture on one image), Look inside
(every stage of one network on the image) and Model zoo (the checkpoints' metrics, curves, probes).

API (every event has an ``api_name``; docs/api.md gives the parameters): /predict(image, architecture),
/explain(image, architecture, method, layer, target, opacity), /compare(image), /inside(image, architecture),
/attack(image, architecture); /predict, /explain, /compare and /attack also take optional trailing
corruption="none", severity=3, attack="none", epsilon=2, attack_target="untargeted".

This file only lays out and wires, with what ``serve`` exports: the work is done by ``serve.ZooService``, the
words and colours come from ``serve.wording``. Nothing reaches the network at import time; checkpoints load on
first use (from $CHECKPOINT_DIR, or from $CHECKPOINT_REPO on the Hub when local files are absent).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a demo server

from malloc_tuning import leave_out_triton, then_release, tune_malloc  # noqa: E402  before torch and any server thread

tune_malloc()
leave_out_triton()

# isort: off
from serve import zerogpu  # noqa: E402  first: on ZeroGPU it imports `spaces` before anything touches CUDA
import gradio as gr  # noqa: E402
import torch  # noqa: E402

import serve  # noqa: E402
# isort: on

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
PREDICTED, RECOMMENDED = serve.PREDICTED, serve.RECOMMENDED
MAX_DEPTH = serve.max_cam_depth()

STORE = serve.ModelStore(os.environ.get("CHECKPOINT_DIR", ROOT / "checkpoints"))
SERVICE = serve.ZooService(STORE)
INSIDE = serve.InsideService(SERVICE)
ON_GPU = STORE.device.type == "cuda"
# Requests served at once. On a CPU every request uses one thread, so a 2-core Space runs two; on a GPU
# the tiny models leave room for more. GRADIO_CONCURRENCY overrides.
CONCURRENCY = int(os.environ.get("GRADIO_CONCURRENCY", 8 if ON_GPU else max(1, min(4, os.cpu_count() or 1))))
if not ON_GPU:
    torch.set_num_threads(1)  # one 32 x 32 image gains nothing from more threads; requests run side by side


# ---------------------------------------------------------------------------------------------------------
# Handlers: the service's methods where they return what the components show (Gradio reads their signatures
# for the API), else a function that shapes it. Those that run a model carry zerogpu.gpu(seconds): on ZeroGPU
# each call borrows a GPU for at most that long; elsewhere it changes nothing. The slow ones then hand the
# memory they freed back to the system (then_release): a busy server would otherwise keep their peak.
predict = zerogpu.gpu(duration=10)(serve.shown_as_dialog(SERVICE.predict))  # the top-5: {class: probability}
describe = zerogpu.gpu(duration=10)(serve.shown_as_dialog(SERVICE.describe))  # the OOD note, the model's view
# The overlay, SE plot, faithfulness bars, note and SE-weighted map: the map first, then with its verdict. Two
# CAMs (the model's and its random twin's) and the held-out curves.
explain_image = zerogpu.gpu(duration=15)(then_release(serve.shown_as_dialog(SERVICE.explain_outputs)))


@zerogpu.gpu(duration=15)  # the attack, then up to four PGD searches for the smallest budget that flips it
@serve.shown_as_dialog
def attack_panel(image, architecture, corruption=serve.NO_CORRUPTION, severity=3, attack=serve.NO_ATTACK,
                 epsilon=serve.DEFAULT_EPSILON, attack_target=serve.UNTARGETED):
    """The perturbation (its scale written under it), what the attack did, and the attacked 8-bit PNG."""
    shown = SERVICE.attack(image, architecture, corruption, severity, attack, epsilon, attack_target)
    return (None, "", None) if shown is None else shown.as_tuple()


@serve.shown_as_dialog
def architecture_panel(architecture):
    """The card, the layer slider's range (set to the deepest layer) and the SE plots' visibility. The slider is
    an output only: as an input, Gradio checked it against the maximum set for the previous architecture."""
    panel = SERVICE.panel(architecture)
    spec = gr.update(value=panel.class_specificity, visible=panel.class_specificity is not None)
    has_se = gr.update(visible=panel.has_se)
    return panel.card, gr.update(maximum=panel.depth, value=panel.depth), spec, has_se, has_se, panel.diagram


@zerogpu.gpu(duration=30)  # eleven models, each with two CAMs and the deletion check
@then_release
@serve.shown_as_dialog
def compare(image, corruption=serve.NO_CORRUPTION, severity=3, attack=serve.NO_ATTACK, epsilon=serve.DEFAULT_EPSILON,
            attack_target=serve.UNTARGETED, progress=gr.Progress()):
    """Every architecture on one image: (table, gallery of CAM overlays, summary), filled in as each map and
    its verdict are ready (``ZooService.compare_steps``); an API client gets the last."""
    answered = False
    for answered in SERVICE.compare_steps(image, lambda i, n, name: progress(i / n, desc=name), corruption, severity,
                                          attack, epsilon, attack_target):
        yield answered
    progress(1.0)
    if not answered:
        yield None, None, ""


@zerogpu.gpu(duration=10)
@then_release
@serve.shown_as_dialog
def inside(image, architecture):
    """One picture per stage of ``architecture`` on ``image`` in forward order, and a note (serve.InsideService)."""
    return INSIDE.inside(image, architecture) or ([], serve.wording.INSIDE_EMPTY)


def zoo_table(current=None, zoo_current=None):
    """(table, five plots, the probes' chart, two notes, dropdowns) from the checkpoints' configs; a dropdown keeps
    its choice when it has a checkpoint, else moves to the most accurate."""
    configs = STORE.configs(fetch=bool(STORE.repo))
    frame = SERVICE.zoo.frame(configs)
    best, choices = serve.best_architecture(configs), serve.architecture_choices(configs)
    zoo_choices = [(label, value) for label, value in choices if value in configs] or choices
    return (frame, *SERVICE.zoo.plots(frame), INSIDE.zoo_chart(), SERVICE.zoo.note(configs),
            SERVICE.zoo.adversarial_note(),
            gr.update(choices=choices, value=current if current in configs else best),
            gr.update(choices=zoo_choices, value=zoo_current if zoo_current in configs else best))


@zerogpu.gpu(duration=30)  # 25 passes of each of eleven models
def measure_latency(progress=gr.Progress()):
    """Time every available model on this machine again; the zoo table with its latency column."""
    SERVICE.zoo.measure_latency(progress=lambda fraction, name: progress(fraction, desc=name))
    return zoo_table()[0]


zoo_details = serve.shown_as_dialog(SERVICE.zoo_details)
probe_curve = serve.shown_as_dialog(INSIDE.depth_plot)


def after_start_up():
    """Once the server answers: import the CAM library, then time every model for the zoo table's latency column."""
    serve.warm_up_explanations()
    SERVICE.zoo.measure_latency()


# ---------------------------------------------------------------------------------------------------------
# Layout.
def build_demo() -> gr.Blocks:
    configs = STORE.configs()  # local files only: no network at import time
    default = serve.best_architecture(configs)
    class_names = next(iter(configs.values()))["class_names"] if configs else list(serve.CIFAR10_CLASSES)
    examples = serve.wording.example_paths(EXAMPLES_DIR)
    has_se = serve.default_has_se(default)

    with gr.Blocks(title="CIFAR-10 model zoo", analytics_enabled=False) as demo:
        gr.Markdown(serve.wording.INTRO)
        with gr.Tabs():
            with gr.Tab("Classify", id="classify"):
                with gr.Row():
                    with gr.Column(scale=5):
                        image = gr.Image(type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"],
                                         label="Image (upload, webcam or paste)", height=300, elem_id="classify-image")
                        architecture = gr.Dropdown(serve.architecture_choices(configs), value=default,
                                                   label="Architecture",
                                                   info="in order of history; % = validation accuracy",
                                                   elem_id="architecture")
                        corruption, severity = serve.corruption_controls("classify")
                        attack, epsilon, attack_target = serve.attack_controls("classify", class_names)
                        run = gr.Button("Classify", variant="primary", elem_id="classify-run")
                        with gr.Accordion("Explanation settings", open=True):
                            method = gr.Radio([("most faithful for this architecture", RECOMMENDED)]
                                              + [(m, m) for m in serve.explanation_methods()], value=RECOMMENDED,
                                              label="Explanation method", info=serve.wording.METHOD_INFO)
                            layer = gr.Slider(1, MAX_DEPTH, value=MAX_DEPTH, step=1, label="Layer depth",
                                              info=serve.wording.LAYER_INFO)
                            target = gr.Dropdown([("predicted class", PREDICTED)] + [(n, n) for n in class_names],
                                                 value=PREDICTED, label="Explain class")
                            opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity")
                        if examples:
                            gr.Examples([[p] for p in examples], [image], examples_per_page=16,
                                        example_labels=serve.wording.example_labels(examples),
                                        label="Examples (see examples/ATTRIBUTION.md)")
                    with gr.Column(scale=6):
                        label = gr.Label(num_top_classes=5, label="Top-5 predictions", elem_id="top5")
                        ood_note = gr.Markdown(label="out-of-distribution note", elem_id="ood-note")
                        with gr.Row():
                            preview = gr.Image(label="What the model sees", format="png", height=220,
                                               interactive=False)
                            # Encoding is part of every answer: JPEG takes ~1 ms here, WebP (the default) ~20 ms.
                            overlay = gr.Image(label="Class activation map", height=220, interactive=False,
                                               format="jpeg", elem_id="cam-overlay")
                        attack_row, perturbation, attack_note, attacked_file = serve.attack_results()
                        # Its title inside the chart: a label above it would push the axis titles out of its box.
                        faithfulness = gr.BarPlot(x=serve.wording.FAITHFULNESS_X, y=serve.wording.FAITHFULNESS_Y,
                                                  x_title=serve.wording.FAITHFULNESS_AXIS, height=300, color="bar",
                                                  color_map=serve.wording.BAR_COLOURS, color_title="", y_lim=[0, 1],
                                                  title=serve.wording.FAITHFULNESS_TITLE, show_label=False,
                                                  label=serve.wording.FAITHFULNESS_TITLE, elem_id="faithfulness")
                        explain_note = gr.Markdown(label="explanation note", elem_id="explain-note")
                        se_plot = gr.Image(label="SE excitations of this image", visible=has_se,
                                           format="png", interactive=False, elem_id="se-plot")
                        with gr.Row():
                            # The last SE block's channels, each weighted by its excitation (explain.se_attention).
                            se_map = gr.Image(label="SE-weighted map (last SE block)", visible=has_se,
                                              height=220, format="jpeg", interactive=False, elem_id="se-map")
                            se_spec = gr.Image(label="SE class-specificity by depth (validation split)",
                                               visible=False, interactive=False)
                        card = gr.Markdown(serve.architecture_card(STORE, default), label="architecture card")
                        diagram = serve.titled_picture("How it is built (traced from the model)",
                                                       "architecture-diagram")

            with gr.Tab("Compare", id="compare"):
                gr.Markdown(serve.wording.COMPARE_INTRO)
                with gr.Row():
                    with gr.Column(scale=4):
                        compare_image = gr.Image(type="filepath", image_mode=None,
                                                 sources=["upload", "webcam", "clipboard"], label="Image", height=260,
                                                 elem_id="compare-image")
                        compare_corruption, compare_severity = serve.corruption_controls("compare")
                        compare_attack, compare_epsilon, compare_target = serve.attack_controls("compare", class_names)
                        compare_run = gr.Button("Compare all", variant="primary", elem_id="compare-run")
                        if examples:
                            gr.Examples([[p] for p in examples], [compare_image], examples_per_page=16,
                                        example_labels=serve.wording.example_labels(examples))
                    with gr.Column(scale=7):
                        compare_summary = gr.Markdown(label="summary", elem_id="compare-summary")
                        compare_table = gr.Dataframe(headers=serve.wording.COMPARE_HEADERS, label="Predictions",
                                                     interactive=False, wrap=True, elem_id="compare-table",
                                                     column_widths=serve.wording.COMPARE_WIDTHS)
                        compare_gallery = gr.Gallery(label="Class activation map of each (its most faithful method)",
                                                     columns=4, height="auto", format="jpeg", object_fit="contain",
                                                     elem_id="compare-gallery")

            with gr.Tab("Look inside", id="inside") as inside_tab:
                gr.Markdown(serve.wording.INSIDE_INTRO)
                inside_run = gr.Button("Look inside", variant="primary", elem_id="inside-run")
                with gr.Row():
                    inside_gallery = gr.Gallery(label="Every stage, in forward order", columns=1, height="auto",
                                                scale=6, format="jpeg", object_fit="contain", show_label=False,
                                                allow_preview=False, elem_id="inside-gallery")
                    with gr.Column(scale=5):
                        inside_probes = serve.titled_picture("Probe accuracy against depth", "inside-probes")
                        inside_note = gr.Markdown(label="stage by stage", elem_id="inside-note")

            with gr.Tab("Model zoo", id="zoo"):
                zoo_note = gr.Markdown(label="zoo note", elem_id="zoo-note")
                zoo_frame = gr.Dataframe(headers=serve.ZOO_HEADERS, label="Checkpoints", interactive=False, wrap=True,
                                         max_height=1600, column_widths=serve.wording.ZOO_WIDTHS, elem_id="zoo-table")
                with gr.Row():
                    latency_run = gr.Button("Measure latency on this machine")
                    refresh = gr.Button("Reload checkpoints")
                with gr.Row():
                    zoo_plot = serve.titled_picture("Validation accuracy against parameters", "zoo-plot")
                    evolution = serve.titled_picture("How CNNs evolved: accuracy by the year of the paper",
                                                     "zoo-evolution")
                zoo_probes = serve.titled_picture("Linear probes of every checkpoint by depth", "zoo-probes")
                severity_plot = serve.titled_picture("Accuracy against corruption severity", "zoo-severity")
                with gr.Row():
                    attacked_plot = serve.titled_picture("Accuracy under attack against the budget",
                                                         "zoo-adversarial")
                    transfer_plot = serve.titled_picture("Does an attack on one architecture fool the others?",
                                                         "zoo-transfer")
                adversarial_note = gr.Markdown(label="adversarial note", elem_id="zoo-adversarial-note")
                zoo_arch = gr.Dropdown(serve.architecture_choices(configs), value=default, label="Training details of")
                with gr.Row():
                    curves = gr.Image(label="Training curves", interactive=False)
                    confusion = gr.Image(label="Confusion matrix (validation split)", interactive=False)
                with gr.Row():
                    zoo_card = gr.Markdown(label="architecture card")
                    zoo_diagram = serve.titled_picture("How it is built (traced from the model)", "zoo-diagram")
                zoo_robustness = serve.titled_picture("Accuracy under each corruption; reliability diagram",
                                                      "zoo-robustness")

        # Classify: the label first (the /predict API), then the details, then the explanation; the served
        # prediction is computed by the first and reused by the other two (serve.ZooService.served_prediction).
        altered = [corruption, severity, attack, epsilon, attack_target]
        shown = [image, architecture, *altered]  # the upload as the model sees it
        explain_inputs = [image, architecture, method, layer, target, opacity, *altered]
        explain_outputs = [overlay, se_plot, faithfulness, explain_note, se_map]
        panel_outputs = [card, layer, se_spec, se_plot, se_map, diagram]
        raw = dict(preprocess=False)  # the handlers decode uploads themselves (serve.uploads)

        def then_describe_and_explain(event, suffix: str = "", visibility: str = "public"):
            event.success(attack_panel, shown, [perturbation, attack_note, attacked_file], api_name="attack" + suffix,
                          api_visibility=visibility, **raw)
            event.success(describe, shown, [ood_note, preview], api_name="describe" + suffix,
                          api_visibility="undocumented", **raw).success(
                explain_image, explain_inputs, explain_outputs, api_name="explain" + suffix,
                api_visibility=visibility, **raw)

        changes = [corruption.change, severity.release, attack.change, epsilon.change, attack_target.change]
        then_describe_and_explain(gr.on([run.click, image.change, *changes], predict, shown, [label],
                                        api_name="predict", trigger_mode="always_last", **raw))
        attack.change(lambda chosen: gr.update(visible=chosen != serve.NO_ATTACK), attack, attack_row,
                      api_visibility="private", queue=False)
        # A new architecture first resets the panel (its layer slider among it), then classifies: run side by
        # side, the explanation could read the previous architecture's layer.
        then_describe_and_explain(
            architecture.change(architecture_panel, [architecture], panel_outputs,
                                api_name="architecture_panel", api_visibility="undocumented").then(
                predict, shown, [label], api_name="predict_after_panel",
                api_visibility="undocumented", trigger_mode="always_last", **raw),
            suffix="_after_panel", visibility="undocumented")
        gr.on([method.change, layer.release, target.change, opacity.release], explain_image, explain_inputs,
              explain_outputs, api_name="explain_settings", api_visibility="undocumented", trigger_mode="always_last",
              **raw)

        compare_outputs = [compare_table, compare_gallery, compare_summary]
        compare_inputs = [compare_image, compare_corruption, compare_severity, compare_attack, compare_epsilon,
                          compare_target]
        compare_run.click(compare, compare_inputs, compare_outputs, api_name="compare", **raw)
        gr.on([compare_image.change, compare_corruption.change, compare_severity.release, compare_attack.change,
               compare_epsilon.change, compare_target.change], compare, compare_inputs, compare_outputs,
              api_name="compare_on_change", api_visibility="undocumented", trigger_mode="always_last", **raw)

        gr.on([inside_run.click, inside_tab.select], inside, [image, architecture], [inside_gallery, inside_note],
              api_name="inside", trigger_mode="always_last", **raw).then(
            probe_curve, [architecture], [inside_probes], api_name="inside_probes", api_visibility="undocumented")

        zoo_outputs = [zoo_frame, zoo_plot, evolution, severity_plot, attacked_plot, transfer_plot, zoo_probes,
                       zoo_note, adversarial_note, architecture, zoo_arch]
        details_outputs = [curves, confusion, zoo_card, zoo_diagram, zoo_robustness]
        refresh.click(zoo_table, [architecture, zoo_arch], zoo_outputs, api_name="zoo")
        latency_run.click(measure_latency, None, [zoo_frame], api_name="measure_latency")
        zoo_arch.change(zoo_details, [zoo_arch], details_outputs, api_name="zoo_details")
        # On page load: pick up checkpoints trained since the server started, then fill the panels.
        demo.load(zoo_table, [architecture, zoo_arch], zoo_outputs, api_name="zoo_on_load",
                  api_visibility="undocumented").then(
            zoo_details, [zoo_arch], details_outputs, api_name="zoo_details_on_load",
            api_visibility="undocumented").then(
            architecture_panel, [architecture], panel_outputs, api_name="architecture_panel_on_load",
            api_visibility="undocumented")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=int(os.environ.get("GRADIO_QUEUE_SIZE", 64)))
    return demo


demo = build_demo()

if __name__ == "__main__":
    if zerogpu.on_zerogpu():
        zerogpu.preload(STORE)  # every model on (emulated) CUDA before the launch, where ZeroGPU packs them
    demo.launch(
        prevent_thread_lock=True,  # answer first; then import the CAM library while the server waits for clients
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
        max_file_size=serve.MAX_UPLOAD_BYTES,
        # Gradio keeps every component's settings per session, and every plain-HTTP call opens one: its bound
        # (10,000) would let a busy Space grow by gigabytes. An evicted session falls back to the defaults.
        state_session_capacity=int(os.environ.get("STATE_SESSION_CAPACITY", 64)),
        ssr_mode=False,
        css=serve.wording.CSS,
        theme=gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"]),
    )
    if not zerogpu.on_zerogpu():  # there the preload warmed up, and the GPU exists only inside a handler
        threading.Thread(target=after_start_up, name="warm-up", daemon=True).start()
    demo.block_thread()
