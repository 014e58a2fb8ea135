"""Fine-tuning (studio/finetune/): the kohya file against the readers' key rules, the round trip
through the studio's LoRA loader, learning, resume equivalence, the NaN guard, confinement, and
jobs that outlive a browser session (gradio_client against `python app.py`)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.errors import InvalidRequest
from studio.finetune import dataset as ds
from studio.finetune.export import KEY_RULE, kohya_tensors, write_lora
from studio.models.hashes import sha256_of
from studio.finetune.folder import JobFolder
from studio.finetune.jobs import LOCAL, TrainingJobs, create_job
from embedded.finetune_measure import concept_dataset
from studio.finetune.settings import make_settings, total_steps
from studio.config import EMBEDDED_MODEL

# Facts about the readers (not their code): AUTOMATIC1111's Lora extension maps SD1 keys by these
# patterns (extensions-builtin/Lora/networks.py, convert_diffusers_name_to_compvis); ComfyUI maps
# `lora_unet_` + the diffusers module path with dots as underscores, and the text encoder's layers.
A1111_PATTERNS = [r"lora_unet_down_blocks_(\d+)_attentions_(\d+)_(.+)", r"lora_unet_mid_block_attentions_(\d+)_(.+)",
                  r"lora_unet_up_blocks_(\d+)_attentions_(\d+)_(.+)", r"lora_te_text_model_encoder_layers_(\d+)_(.+)"]


# -- settings and datasets --------------------------------------------------------------------------------

def test_settings_come_from_a_preset_and_every_field_is_checked():
    s = make_settings({"name": "my-lora", "dataset": "cats", "preset": "quick", "steps": None})
    assert (s.rank, s.batch, s.lr, s.embedding_lr) == (8, 8, 1e-4, 1e-2)     # presets/train/quick.toml
    assert total_steps(s, 20 * 20) == 8 * 50                        # epochs x ceil(400 / 8)
    assert total_steps(make_settings({"name": "a", "dataset": "b", "steps": 7}), 400) == 7
    for bad, words in [({"name": "../x"}, "LoRA name"), ({"rank": 0}, "rank"), ({"lr": float("nan")}, "lr"),
                       ({"batch": 2.5}, "whole"), ({"preset": "nope"}, "Unknown training preset"),
                       ({"schedule": "exp"}, "schedule"), ({"colour": 1}, "Unknown training setting")]:
        with pytest.raises(InvalidRequest, match=words):
            make_settings({"name": "a", "dataset": "b", **bad})


def test_dataset_reads_kohya_folders_captions_and_the_trigger(tmp_path):
    from PIL import Image
    root = tmp_path / "datasets" / "cats"
    (root / "10_tabby cat").mkdir(parents=True)
    (root / "misc").mkdir()
    for path in (root / "a_b.png", root / "10_tabby cat" / "x.png", root / "10_tabby cat" / "y.jpg"):
        Image.new("RGB", (96, 96), (len(path.name) * 20, 10, 10)).save(path)
    (root / "10_tabby cat" / "y.txt").write_text("a cat on a sofa\nsecond line ignored\n")
    data = ds.read_dataset(root, trigger="mycat")
    captions = {i.path.name: (i.caption, i.repeats) for i in data.items}
    assert captions == {"a_b.png": ("mycat, a b", 1), "x.png": ("mycat, tabby cat", 10),
                        "y.jpg": ("mycat, a cat on a sofa", 10)}
    assert data.with_repeats == 21 and any("misc" in n for n in data.notes)
    assert data.dataset_dirs() == {"cats": {"n_repeats": 1, "img_count": 1},
                                   "10_tabby cat": {"n_repeats": 10, "img_count": 2}}
    (root / "a_b.txt").write_text("")
    problems = ds.preflight(ds.read_dataset(root))
    assert ds.blocking(problems) == ["a_b.png: empty caption."]


def test_datasets_and_jobs_stay_in_their_folders(tmp_path):
    root = tmp_path / "datasets"
    root.mkdir()
    (tmp_path / "secret").mkdir()
    (root / "link").symlink_to(tmp_path / "secret")
    for name in ("../secret", "/etc", "a/b", "..", "link"):
        with pytest.raises(InvalidRequest):
            ds.dataset_folder(root, name)
    evil = tmp_path / "evil.py"
    evil.write_text("print(1)")
    with pytest.raises(InvalidRequest, match="only pictures"):
        ds.add_files(root, "new", [evil])
    jobs = TrainingJobs(tmp_path / "training", tmp_path / "models", root)
    for job_id in ("../datasets", "", ".hidden", "nope"):
        with pytest.raises(InvalidRequest):
            jobs.folder(job_id)


# -- the file ----------------------------------------------------------------------------------------------

def _peft_unet(rank=4, alpha=2.0, seed=0):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from studio.finetune.export import UNET_TARGETS
    unet = UNet2DConditionModel.from_pretrained(EMBEDDED_MODEL, subfolder="unet", torch_dtype=torch.float32)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                target_modules=list(UNET_TARGETS)))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)           # a LoRA that does something
    return unet


def test_export_follows_the_kohya_layout_the_readers_match(tmp_path):
    from peft import LoraConfig, inject_adapter_in_model
    from safetensors import safe_open
    from studio.finetune.export import TEXT_TARGETS, UNET_TARGETS, lora_state
    from transformers import CLIPTextModel

    unet = _peft_unet(rank=4, alpha=2.0)
    te = CLIPTextModel.from_pretrained(EMBEDDED_MODEL, subfolder="text_encoder")
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=2.0, target_modules=list(TEXT_TARGETS)), te)
    tensors = kohya_tensors(lora_state(unet), "unet", 2.0) | kohya_tensors(lora_state(te), "te", 2.0)
    path = write_lora(tmp_path / "x.safetensors", tensors, {"ss_network_dim": 4, "ss_output_name": "x"})
    with safe_open(str(path), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
        alphas = {float(f.get_tensor(k)) for k in keys if k.endswith(".alpha")}
        dtypes = {f.get_tensor(k).dtype for k in keys}
    assert all(KEY_RULE.match(k) for k in keys)
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in keys}
    unet_modules = {"lora_unet_" + n.replace(".", "_") for n, _ in unet.named_modules()
                    if n.endswith(UNET_TARGETS) and "lora" not in n}
    layers = te.config.num_hidden_layers
    te_modules = {f"lora_te_text_model_encoder_layers_{b}_{part}" for b in range(layers)
                  for part in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj",
                               "mlp_fc1", "mlp_fc2")}
    assert modules == unet_modules | te_modules                     # ComfyUI's rule, every targeted layer
    assert all(any(re.fullmatch(p, m) for p in A1111_PATTERNS) for m in modules)
    assert len(keys) == 3 * len(modules) and alphas == {2.0} and dtypes == {torch.float16}
    assert all(isinstance(v, str) for v in meta.values()) and meta["ss_network_dim"] == "4"
    assert meta["sshs_model_hash"] == sha256_of(path, after_header=True)
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)


def test_the_file_through_the_studios_loader_gives_the_trained_models_pictures(tmp_path):
    """The round trip: the PEFT model the trainer holds (UNet and text encoder) against the exported
    fp16 file applied by the studio's LoRA loader (models/addons.py) to a plain pipeline: 20-step
    pictures within 2/255."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
    from studio.finetune.export import lora_state
    from studio.models.addons import AddonState, apply_loras

    from peft import LoraConfig, inject_adapter_in_model
    from studio.finetune.export import TEXT_TARGETS
    from transformers import CLIPTextModel

    unet = _peft_unet(rank=8, alpha=4.0)
    te = CLIPTextModel.from_pretrained(EMBEDDED_MODEL, subfolder="text_encoder", dtype=torch.float32)
    inject_adapter_in_model(LoraConfig(r=8, lora_alpha=4.0, target_modules=list(TEXT_TARGETS)), te)
    with torch.no_grad():
        for name, p in te.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    path = write_lora(tmp_path / "loras" / "rt.safetensors",
                      kohya_tensors(lora_state(unet), "unet", 4.0) | kohya_tensors(lora_state(te), "te", 4.0), {})
    base = StableDiffusionPipeline.from_pretrained(EMBEDDED_MODEL, torch_dtype=torch.float32, safety_checker=None)
    base.scheduler = DPMSolverMultistepScheduler.from_config(base.scheduler.config)
    trained = StableDiffusionPipeline(**{**base.components, "unet": unet, "text_encoder": te})

    def picture(pipe):
        out = pipe("a red circle on a blue background", num_inference_steps=20, guidance_scale=5.0,
                   generator=torch.Generator().manual_seed(3), output_type="np").images[0]
        return np.round(out * 255)

    want = picture(trained)
    plain = picture(base)
    apply_loras(base, AddonState(), [("rt", path, 1.0)], "SD 1.x")
    got = picture(base)
    assert np.abs(got - want).max() <= 2, np.abs(got - want).max()
    assert np.abs(plain - want).max() > 20          # the LoRA does change the picture


def test_a_lora_at_weight_zero_gives_the_base_models_picture_bit_for_bit(tmp_path):
    """The dose-response's zero: the LoRA loaded at weight 0 leaves the picture exactly as without it."""
    from studio.config import Settings
    from studio.finetune.export import lora_state
    from studio.serving.studio import Studio

    write_lora(tmp_path / "models" / "loras" / "x.safetensors", kohya_tensors(lora_state(_peft_unet()), "unet", 2.0), {})
    studio = Studio.from_settings(Settings(models_dir=tmp_path / "models", outputs=tmp_path / "outputs"))

    def pixels(loras):
        request = studio.make_request("txt2img", prompt="a red circle", seed=5, steps=8, loras=loras)
        return np.asarray(studio.submit(request, user="t", save=False).result().images[0].image)

    base = pixels([])
    assert np.array_equal(pixels([["x.safetensors", 0.0]]), base)
    assert not np.array_equal(pixels([["x.safetensors", 1.0]]), base)


# -- training ---------------------------------------------------------------------------------------------

def _job(tmp_path, n_pictures=6, **raw):
    datasets = tmp_path / "datasets"
    concept_dataset(datasets / "azure", n_pictures)
    settings = make_settings({"name": "azure", "dataset": "azure", "preset": "quick", "trigger": "azure",
                              **raw})
    return create_job(tmp_path / "jobs", settings, owner=LOCAL, models_dir=tmp_path / "models",
                      datasets=datasets), datasets


def _train(job, tmp_path, datasets):
    from studio.finetune.trainer import train
    return train(job, tmp_path / "models", datasets, "cpu")


def test_a_short_run_learns_saves_a_lora_and_samples(tmp_path):
    job, datasets = _job(tmp_path, steps=24, batch=4, sample_every=12)
    assert _train(job, tmp_path, datasets) == "done"
    losses = [v for _, v in job.losses()]
    assert len(losses) == 24 and all(np.isfinite(losses))
    assert np.mean(losses[-8:]) < np.mean(losses[:8])
    out = tmp_path / "models" / "loras" / "azure.safetensors"
    from safetensors import safe_open
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_steps"] == "24" and meta["ss_output_name"] == "azure" and meta["ss_network_alpha"] == "8.0"
    assert json.loads(meta["ss_tag_frequency"])["azure"]
    assert json.loads(out.with_suffix(".json").read_text())["activation text"] == "azure"
    assert out.with_suffix(".preview.png").is_file()
    steps = sorted({r["step"] for r in job.samples()})
    prompts = {r["prompt"] for r in job.samples()}
    assert steps == [0, 12, 24] and len(prompts) == 3 and any("azure" not in p for p in prompts)
    status = job.status()
    assert status["state"] == "done" and status["step"] == 24 and status["s_per_step"] > 0
    assert status["peak_mb"] > 100 and status["memory"] == "RAM"        # the process's peak, for the next estimate
    figures = json.loads(job.file("evaluation.json").read_text())          # the truth after training
    assert figures["prompts"] == 6 and figures["new_words"] == ["azure"]
    assert figures["captions_moved"] > 0 and figures["without_new_words_moved"] is not None
    checker = figures["checker"]                       # the embedded model's own reading (its entry point)
    assert np.abs(np.array(checker["new_colour_rgb"]) - (128, 192, 224)).max() <= 8     # azure, from the pictures
    assert checker["concept_prompts"] >= 4 and checker["hit_without"] == 0 and 0 <= checker["hit_with"] <= 100
    assert set(checker["plain_with"]) == {"colour", "background", "position", "shape", "all"}
    assert "pixel checker" in figures["summary"]
    assert figures["summary"] in status["message"]
    assert figures["summary"] in json.loads(out.with_suffix(".json").read_text())["description"]


def test_stop_then_resume_equals_a_straight_run(tmp_path, monkeypatch):
    from safetensors.torch import load_file
    straight, datasets = _job(tmp_path / "a", steps=8, batch=2, sample_every=100)
    assert _train(straight, tmp_path / "a", datasets) == "done"
    parts, datasets = _job(tmp_path / "b", steps=8, batch=2, sample_every=100)
    monkeypatch.setenv("STUDIO_TRAIN_STOP_AT", "4")
    assert _train(parts, tmp_path / "b", datasets) == "stopped"
    assert parts.status()["step"] == 4 and not (tmp_path / "b" / "models" / "loras" / "azure.safetensors").exists()
    monkeypatch.delenv("STUDIO_TRAIN_STOP_AT")
    assert _train(parts, tmp_path / "b", datasets) == "done"
    a = load_file(str(tmp_path / "a" / "models" / "loras" / "azure.safetensors"))
    b = load_file(str(tmp_path / "b" / "models" / "loras" / "azure.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-6
    assert [s for s, _ in parts.losses()] == list(range(1, 9))       # the loss curve has no gap nor repeat


def test_the_8_bit_optimiser_is_refused_by_name_where_it_cannot_run(tmp_path):
    """bitsandbytes' AdamW8bit needs a CUDA GPU: on this machine the run fails before any step, saying so."""
    with pytest.raises(InvalidRequest, match="Optimizer"):
        make_settings({"name": "a", "dataset": "b", "optimizer": "lion"})
    job, datasets = _job(tmp_path, n_pictures=2, steps=2, optimizer="adamw8bit")
    assert _train(job, tmp_path, datasets) == "failed"
    assert "CUDA GPU" in job.status()["message"] and not job.losses()


def test_a_loss_that_is_not_finite_stops_with_a_message_and_no_file(tmp_path):
    job, datasets = _job(tmp_path, n_pictures=4, steps=30, batch=2, lr=1.0, rank=1, alpha=256,
                         min_snr_gamma=0, sample_every=100)
    assert _train(job, tmp_path, datasets) == "failed"
    status = job.status()
    assert "loss became" in status["message"] and "learning rate" in status["message"]
    assert not (tmp_path / "models" / "loras" / "azure.safetensors").exists()


def test_only_the_owner_stops_a_job(tmp_path):
    job, datasets = _job(tmp_path, n_pictures=2)
    jobs = TrainingJobs(tmp_path / "jobs", tmp_path / "models", datasets)
    job.set_status(state="running", pid=None)
    with pytest.raises(InvalidRequest, match="No training job"):       # another's: as one not there
        jobs.stop(job.id, "mallory")
    answers = []
    for job_id in (job.id, "azure-20990101-000000"):     # hers, and one that is not there
        with pytest.raises(InvalidRequest) as refused:
            jobs.status(job_id, "mallory")
        answers.append(str(refused.value).replace(job_id, "X"))
    assert answers[0] == answers[1]
    assert jobs.status(job.id)["state"] == "interrupted"      # no process: it says so, Resume continues
    assert jobs.jobs(LOCAL) == [job.id] and jobs.jobs("mallory") == []


# -- through the server --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_server(tmp_path_factory):
    from tests.conftest import start_server, stop_server
    base = tmp_path_factory.mktemp("train-server")
    concept_dataset(base / "datasets" / "azure", 6)
    srv = start_server(None, base / "outputs", base / "server.log", "--datasets", str(base / "datasets"),
                       "--models-dir", str(base / "models"))
    srv.base = base
    yield srv
    stop_server(srv)


def test_a_job_outlives_the_session_that_started_it(train_server):
    """Start through /train, then a new client (a reloaded page) lists it and sees its step rise;
    Stop keeps the checkpoint, Resume finishes, the LoRA is in models/loras and generates."""
    from gradio_client import Client
    first = Client(train_server.url, verbose=False)
    _, job_id = first.predict(name="azure", dataset="azure", trigger="azure", preset="quick", steps=300,
                              batch=2, sample_every=100, api_name="/train")
    second = Client(train_server.url, verbose=False)
    assert job_id in second.predict(api_name="/train_jobs")
    seen = []
    deadline = time.time() + 240
    while time.time() < deadline and (not seen or seen[-1] < 10):
        status = second.predict(job_id, api_name="/train_status")
        assert status["state"] not in ("failed", "interrupted"), status
        seen.append(status.get("step", 0))
        time.sleep(1)
    assert seen[-1] >= 10 and seen[-1] > seen[0]
    gallery, *_ = first.predict(prompt="a red circle", steps=2, seed=1, api_name="/txt2img")   # still serving
    assert len(gallery) == 1 and second.predict(job_id, api_name="/train_status")["state"] in ("running", "sampling",
                                                                                            "saving")
    second.predict(job_id, api_name="/train_stop")
    while second.predict(job_id, api_name="/train_status")["state"] != "stopped":
        assert time.time() < deadline
        time.sleep(0.5)
    with pytest.raises(Exception, match="no training job|No training job"):
        second.predict("../outputs", api_name="/train_status")
    second.predict(job_id, api_name="/train_resume")
    deadline = time.time() + 480
    while (status := second.predict(job_id, api_name="/train_status"))["state"] != "done":
        assert status["state"] not in ("failed", "interrupted") and time.time() < deadline, status
        time.sleep(1)
    assert Path(status["result"]).name == "azure.safetensors"
    log = JobFolder(train_server.base / "outputs" / "training" / job_id)
    assert [s for s, _ in log.losses()] == list(range(1, 301))
    gallery, info, params, seed = second.predict(prompt="<lora:azure:1> a azure circle", seed=1, steps=4,
                                                 api_name="/txt2img")
    assert len(gallery) == 1 and "Lora hashes: \"azure" in info


# -- prior preservation ---------------------------------------------------------------------------------

def test_the_new_words_are_the_trigger_and_what_the_model_never_saw():
    from studio.finetune.prior import class_captions, new_words, without_words
    from studio.prompts.vocabulary import read_vocabulary
    vocabulary, _ = read_vocabulary(EMBEDDED_MODEL)
    captions = ["a teal circle on a white background", "a large teal square in the top left corner"]
    assert new_words(captions, "", vocabulary) == ["teal"]
    assert new_words(captions, "sks thing", frozenset()) == ["sks", "thing"]     # a big model: the trigger only
    assert without_words("sks, a Teal circle, on white", ["sks", "teal"]) == "a circle, on white"
    assert class_captions(captions, ["teal"], 3) == ["a circle on a white background",
                                                     "a large square in the top left corner",
                                                     "a circle on a white background"]
    assert class_captions(captions, ["teal"], 3, ["red", "blue"]) == ["a red circle on a white background",
                                                                      "a large blue square in the top left corner",
                                                                      "a red circle on a white background"]


def test_class_pictures_are_made_once_and_made_again_only_when_asked_differently(tmp_path):
    from PIL import Image

    from studio.finetune.prior import class_pictures
    drawn = []

    def draw(prompt, seed):
        drawn.append((prompt, seed))
        return Image.new("RGB", (8, 8), (seed % 256, 0, 0))
    first = class_pictures(tmp_path, ["a circle", "a square"], 0, 64, "", draw)
    assert [c.caption for c in first] == ["a circle", "a square"] and len(drawn) == 2
    assert all(c.path.is_file() for c in first) and first[0].seed != first[1].seed
    again = class_pictures(tmp_path, ["a circle", "a square"], 0, 64, "", draw)
    assert again == first and len(drawn) == 2                                   # cached
    class_pictures(tmp_path, ["a circle", "a ring"], 0, 64, "", draw)
    assert drawn[2:] == [("a ring", first[1].seed)]                             # only what changed


def test_prior_preservation_trains_on_the_models_own_pictures_and_resumes_exactly(tmp_path, monkeypatch):
    """With prior_weight the job folder holds the base model's pictures of the captions without
    the new word; they are trained beside the user's (with caption dropout) and the run still
    resumes to the straight run's file; the class pictures are not made again on resume."""
    from safetensors.torch import load_file
    raw = dict(steps=6, batch=2, sample_every=100, prior_weight=1.0, caption_dropout=0.3, class_pictures=4)
    straight, datasets = _job(tmp_path / "a", **raw)
    assert _train(straight, tmp_path / "a", datasets) == "done"
    manifest = json.loads((straight.path / "class" / "class.json").read_text())
    assert len(manifest) == 4 and all("azure" not in e["caption"] for e in manifest)
    assert all((straight.path / "class" / e["file"]).is_file() for e in manifest)
    parts, datasets = _job(tmp_path / "b", **raw)
    monkeypatch.setenv("STUDIO_TRAIN_STOP_AT", "3")
    assert _train(parts, tmp_path / "b", datasets) == "stopped"
    made = {p.name: p.stat().st_mtime_ns for p in (parts.path / "class").glob("*.png")}
    monkeypatch.delenv("STUDIO_TRAIN_STOP_AT")
    assert _train(parts, tmp_path / "b", datasets) == "done"
    assert {p.name: p.stat().st_mtime_ns for p in (parts.path / "class").glob("*.png")} == made
    a = load_file(str(tmp_path / "a" / "models" / "loras" / "azure.safetensors"))
    b = load_file(str(tmp_path / "b" / "models" / "loras" / "azure.safetensors"))
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) <= 1e-6
    plain, datasets = _job(tmp_path / "c", **{**raw, "prior_weight": 0.0})
    assert _train(plain, tmp_path / "c", datasets) == "done" and not (plain.path / "class").exists()
    c = load_file(str(tmp_path / "c" / "models" / "loras" / "azure.safetensors"))
    assert max(float((a[k].float() - c[k].float()).abs().max()) for k in a) > 1e-4    # the prior changed it


def test_the_evaluation_compares_each_caption_with_and_without_the_lora_and_the_words():
    """A stand-in draw whose LoRA paints everything: both figures are its full effect, and the
    card says it leaks; one whose LoRA acts only where the new word is: no leak."""
    from studio.finetune.evaluate import evaluate

    def everywhere(prompt, seed, weight):
        return np.full((8, 8, 3), 100 + 50 * weight, np.uint8)

    def only_azure(prompt, seed, weight):
        return np.full((8, 8, 3), 100 + (20 * weight if "azure" in prompt else 0), np.uint8)
    captions = ["azure, a circle", "azure, a square", "azure, a circle"]
    leaky = evaluate(captions, ["azure"], 0, everywhere)
    assert leaky["prompts"] == 2 and leaky["captions_moved"] == 50 and leaky["without_new_words_moved"] == 50
    assert "leaks" in leaky["summary"]
    clean = evaluate(captions, ["azure"], 0, only_azure)
    assert clean["captions_moved"] == 20 and clean["without_new_words_moved"] == 0 and "leaks" not in clean["summary"]
    assert evaluate(["a circle"], [], 0, only_azure)["without_new_words_moved"] is None


def test_the_first_preset_is_the_one_made_for_the_model_and_says_why():
    from types import SimpleNamespace

    from studio.finetune.settings import default_preset
    from studio.models.sources import describe
    preset, why = default_preset(describe(""))                    # the embedded model
    assert preset == "quick" and "embedded-shapes" in why
    assert default_preset(SimpleNamespace(name="dreamshaper_8", family="SD 1.x"))[0] == "subject"
    assert default_preset(SimpleNamespace(name="sd2", family="SD 2.x"))[0] == "subject"
    xl, why = default_preset(SimpleNamespace(name="x", family="SDXL"))
    assert xl == "sdxl" and "gradient checkpointing" in why
    assert default_preset(SimpleNamespace(name="x", family="Flux.1 dev"))[0] == "flux"
    fallback, why = default_preset(SimpleNamespace(name="x", family="SD 3.5 large"))
    assert fallback == "subject" and "SD 3.5 large" in why


def test_the_total_says_the_time_and_memory_from_the_last_run_like_it(tmp_path):
    """Before Train: the one total of steps, and the minutes a run like it took a step on this
    machine and its peak memory (the same model, batch, resolution, text encoder, prior and
    gradient checkpointing); before any, it says so."""
    from studio.ui.finetune import total_text
    datasets = tmp_path / "datasets"
    concept_dataset(datasets / "azure", 6)
    jobs = TrainingJobs(tmp_path / "jobs", tmp_path / "models", datasets)
    raw = {"name": "azure", "dataset": "azure", "preset": "quick", "repeats": 10, "batch": 6, "epochs": 2}
    assert "**20 steps**" in total_text(jobs, raw) and "no run like it" in total_text(jobs, raw)
    done = create_job(jobs.root, make_settings(raw), owner=LOCAL, models_dir=jobs.models_dir, datasets=datasets)
    done.set_status(state="done", s_per_step=1.5, peak_mb=3 * 1024, memory="GPU memory")
    assert "about 1 min of steps on this machine (1.50 s a step" in total_text(jobs, raw)
    assert "peaked at 3.0 GB of GPU memory" in total_text(jobs, raw)
    assert "no run like it" in total_text(jobs, {**raw, "gradient_checkpointing": True})
    assert "no run like it" in total_text(jobs, {**raw, "batch": 2})          # another batch: not like it
