"""A studio shared with a group: per-user limits, the queue bound, confined paths."""

from __future__ import annotations


import pytest
from gradio_client import Client

from studio.config import settings_from_args
from studio.errors import InvalidRequest
from studio.serving.rate_limit import RateLimiter
from studio.requests import Limits, make_request
from tests.conftest import start_server, stop_server


def test_jobs_per_minute_per_user():
    jobs = RateLimiter(jobs_per_minute=2)
    jobs.admit("ann", now=0)
    jobs.admit("ann", now=10)
    with pytest.raises(InvalidRequest, match="2 jobs a minute per user; try again in 50 s"):
        jobs.admit("ann", now=10)
    jobs.admit("bob", now=10)          # another user is not affected
    jobs.admit("ann", now=60.5)        # the first one has left the window
    RateLimiter().admit("anyone")       # 0 = no limit


def test_limits_from_the_command_line():
    s = settings_from_args(["--max-steps", "10", "--max-side", "512", "--max-batch", "2",
                            "--jobs-per-minute", "3", "--queue-size", "4"])
    assert s.limits == Limits(max_side=512, max_pixels=512 * 512, max_batch_size=2, max_batch_count=16,
                              max_steps=10, jobs_per_minute=3)
    assert s.queue_size == 4
    with pytest.raises(InvalidRequest, match="Steps must be between 1 and 10"):
        make_request(prompt="x", steps=11, limits=s.limits)
    with pytest.raises(InvalidRequest, match="Width must be between 64 and 512"):
        make_request(prompt="x", width=520, steps=5, limits=s.limits)
    with pytest.raises(SystemExit):
        settings_from_args(["--max-side", "100"])


@pytest.fixture(scope="module")
def limited(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("limited")
    srv = start_server(tiny_model, base / "outputs", base / "server.log", "--jobs-per-minute", "3",
                       "--max-steps", "30", "--queue-size", "1")
    yield srv
    stop_server(srv)


def test_limits_over_the_api(limited):
    client = Client(limited.url, verbose=False)
    with pytest.raises(Exception, match="(maximum value|between 1 and) 30"):   # Gradio checks the slider too
        client.predict(prompt="x", steps=40, api_name="/txt2img")
    # the refused request above does not count; three jobs pass, the fourth is over the limit
    for i in range(3):
        client.predict(prompt="x", steps=1, seed=i, api_name="/txt2img")
    with pytest.raises(Exception, match="3 jobs a minute per user"):
        client.predict(prompt="x", steps=1, api_name="/txt2img")
    # another user (a new session) still may
    Client(limited.url, verbose=False).predict(prompt="x", steps=1, api_name="/txt2img")


def test_a_full_queue_says_so_instead_of_waiting(limited):
    clients = [Client(limited.url, verbose=False) for _ in range(4)]
    jobs = [c.submit(prompt="slow", steps=30, batch_size=4, batch_count=2, api_name="/txt2img")
            for c in clients]
    errors = []
    for job in jobs:
        try:
            job.result(timeout=120)
        except Exception as exc:  # noqa: BLE001
            errors.append(str(exc))
    assert any("Queue is full" in e for e in errors), errors
    assert len(errors) < len(jobs)     # the running one finished


# ---------------------------------------------------------------------------------------------
# content safety

def test_blocklist_matches_whole_words_and_phrases(tmp_path):
    from studio.generation.safety import ContentFilter
    (tmp_path / "b.txt").write_text("# comment\nnude\nexplicit sex\n")
    f = ContentFilter(True, tmp_path / "b.txt")
    for text in ["a NUDE figure", "explicit   sex scene", "(nude:1.2)"]:
        with pytest.raises(InvalidRequest, match="content filter blocks"):
            f.check_prompt(text)
    for text in ["a nudes-free denuded landscape", "explicit instructions", "a red circle"]:
        f.check_prompt(text)
    ContentFilter(False, tmp_path / "b.txt").check_prompt("nude")      # off: nothing is checked


def test_filter_is_on_with_share_and_blocks_before_generating(tiny_model, tmp_path):
    from studio.config import Settings
    from studio.serving.studio import Studio
    assert not Studio.from_settings(Settings(model=str(tiny_model), outputs=tmp_path)).local.content_filter.enabled
    s = Studio.from_settings(Settings(model=str(tiny_model), outputs=tmp_path / "out", share=True))
    assert s.local.content_filter.enabled and "no image check" in s.local.content_filter.status()
    for prompt in ["a nude figure", "a {red|nude} figure"]:     # variants are checked too
        with pytest.raises(InvalidRequest, match="'nude'"):
            s.local.run(make_request(prompt=prompt, variants="all", steps=1))
    assert not list((tmp_path / "out").rglob("*.png"))
    s.local.run(make_request(prompt="a red circle", negative_prompt="nude", steps=1))   # negatives are fine


def _tiny_safety_checker(folder, flag_everything: bool):
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                                  "num_attention_heads": 2},
                     vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                     projection_dim=16)
    checker = StableDiffusionSafetyChecker(cfg)
    with torch.no_grad():     # thresholds: cosine similarity is always above -2, never above 2
        checker.concept_embeds_weights.fill_(-2.0 if flag_everything else 2.0)
        checker.special_care_embeds_weights.fill_(2.0)
    checker.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


@pytest.mark.parametrize("flag", [True, False])
def test_safety_checker_keeps_flagged_images_unsaved_and_unseen(tiny_model, tmp_path, flag):
    from studio.config import Settings
    from studio.serving.studio import Studio
    _tiny_safety_checker(tmp_path / "models" / "safety-checker", flag_everything=flag)
    s = Studio.from_settings(Settings(model=str(tiny_model), outputs=tmp_path / "out", models_dir=tmp_path / "models",
                                      content_filter="on"))
    assert "checked by the safety checker" in s.local.content_filter.status()
    result = s.local.run(make_request(prompt="a red circle", steps=2, batch_size=2))
    saved = list((tmp_path / "out").rglob("*.png"))
    if flag:
        assert result.images == [] and saved == []
        assert any("flagged by the safety checker" in n for n in result.notes)
    else:
        assert len(result.images) == 2 and len(saved) == 2
