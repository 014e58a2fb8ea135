"""The few-step student's distillation (embedded/distill.py), as a smoke run on a few
trajectories: a finite loss that falls, a resume that continues exactly, and a student that loads
into the standard pipeline with diffusers' LCMScheduler and draws the same picture for the same
seed; and the teacher's trajectories it learns from (embedded/trajectories.py): the studio's
own guided pipeline on the same noise ends where they end, and their grid holds every timestep
the LCM sampler visits."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from studio.config import EMBEDDED_MODEL
from embedded.distill import SMOKE, STUDENT_FOLDER, distill, export, load_teacher
from embedded.trajectories import GRID, sampler_timesteps, solve

pytestmark = pytest.mark.skipif(not (EMBEDDED_MODEL / "model_index.json").is_file(),
                                reason="assets/embedded-model is not built yet")


@pytest.fixture(autouse=True)
def one_thread():
    """The process's thread count is left as it was (later tests compare pictures bit for bit, and
    a thread count changes float sums: a set_num_threads(1) here failed test_plots in CI)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def smoke(steps: int):
    cfg = copy.copy(SMOKE)
    cfg.steps, cfg.checkpoint_every = steps, 5
    return cfg


def test_the_loss_falls_and_the_student_draws_in_few_steps(tmp_path):
    done = distill(smoke(40), EMBEDDED_MODEL, tmp_path / "work")
    losses = torch.load(tmp_path / "work" / "student.pt", weights_only=False)["losses"]
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert sum(losses[-10:]) < sum(losses[:10]), losses
    model = tmp_path / "model"
    shutil.copytree(EMBEDDED_MODEL, model)
    export(done["student"], done["record"], model)

    from diffusers import LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    student = UNet2DConditionModel.from_pretrained(model / STUDENT_FOLDER, torch_dtype=torch.float32)
    assert student.config.time_cond_proj_dim == 64
    pipe = StableDiffusionPipeline.from_pretrained(model, unet=student, torch_dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def draw(steps, seed):
        return np.asarray(pipe("a red circle on a blue background", num_inference_steps=steps, guidance_scale=5,
                               generator=torch.Generator().manual_seed(seed)).images[0])

    pictures = {steps: draw(steps, 3) for steps in (1, 2, 4)}
    for steps, picture in pictures.items():
        assert np.array_equal(picture, draw(steps, 3)), steps
    assert not np.array_equal(pictures[1], pictures[4]) and not np.array_equal(pictures[4], draw(4, 4))

    # the evaluation prints the table beside the teacher and writes the student's card
    from embedded.evaluate import main
    fig = main(["--student", "--model", str(model), "--n", "4", "--draws", "1", "--quick"])
    for row in ("teacher, 20 steps", "teacher, 4 steps", "student, 1 step", "student, 2 steps", "student, 3 steps",
                "student, 4 steps", "student, 6 steps", "student, 8 steps"):
        assert 0 <= fig[row]["all"] <= 1, row
    assert fig["latency"]["student, 4 steps"]["median s"] < fig["latency"]["teacher, 20 steps"]["median s"]
    card = (model / STUDENT_FOLDER / "README.md").read_text()
    assert "| student, 4 steps |" in card and "| student, 8 steps |" in card and "40 steps" in card


def test_a_resumed_distillation_continues_exactly(tmp_path):
    straight = distill(smoke(12), EMBEDDED_MODEL, tmp_path / "straight")
    distill(smoke(6), EMBEDDED_MODEL, tmp_path / "resumed")
    resumed = distill(smoke(12), EMBEDDED_MODEL, tmp_path / "resumed")
    a = torch.load(tmp_path / "straight" / "student.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "student.pt", weights_only=False)
    assert a["losses"] == b["losses"] and a["step"] == b["step"] == 12
    for name, tensor in straight["student"].state_dict().items():
        assert torch.equal(tensor, resumed["student"].state_dict()[name]), name


def test_the_trajectories_are_the_guided_pipelines_own_and_hold_the_samplers_timesteps():
    teacher = load_teacher(EMBEDDED_MODEL)
    assert sampler_timesteps(teacher["scheduler_config"]) == [999, 759, 499, 259]
    assert set(sampler_timesteps(teacher["scheduler_config"], (1, 2, 4))) <= set(GRID)

    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(EMBEDDED_MODEL, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(teacher["scheduler_config"], use_karras_sigmas=False)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle on a blue background", "a small green square at the top left"]
    tok = teacher["tokenizer"]

    def embed(texts):
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
        with torch.no_grad():
            return teacher["text_encoder"](ids)[0]
    ws = torch.tensor([4.0, 2.5])
    states, ends = solve(teacher["unet"], teacher["scheduler_config"], embed(prompts), embed([""])[0], ws,
                         torch.Generator().manual_seed(7))
    assert states.shape == (2, len(GRID), 4, 16, 16) and torch.isfinite(ends).all()
    noise = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(7))
    for i, prompt in enumerate(prompts):
        assert torch.equal(states[i, 0], noise[i] * pipe.scheduler.init_noise_sigma)
        latent = pipe(prompt, negative_prompt="", timesteps=list(GRID), guidance_scale=float(ws[i]) + 1,
                      latents=noise[i:i + 1].clone(), output_type="latent").images[0]
        assert torch.allclose(latent, ends[i], atol=1e-4), (latent - ends[i]).abs().max()
        assert not torch.allclose(latent, ends[1 - i], atol=1e-2)
