"""Animation (issue 23): schedule strings read by the studio's own allow-list, warps with known
motion, frames as ordinary requests through the dispatcher on the embedded model, video files
that decode to what was asked, resume equal to a straight run, and every SD family."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.animation.expressions import ScheduleError
from studio.animation.measures import blueness, centroid, colour_drift, consecutive_change, red_mask, spearman
from studio.animation.motion import warp
from studio.animation.plan import plan_frames
from studio.animation.schedule import prompt_blends, values
from studio.animation.settings import from_deforum, make_settings
from studio.errors import InvalidRequest

ROOT = Path(__file__).resolve().parent.parent
RED_TO_BLUE = "0: a red circle on a gray background\n11: a blue circle on a gray background"


# ------------------------------------------------------------------------------ schedules

def test_schedule_values_between_keyframes_expressions_and_keys_of_max_f():
    v = values("0:(1.0), 30:(1.02)", 40)
    assert v[0] == 1.0 and v[15] == pytest.approx(1.01) and v[30] == v[39] == 1.02
    wave = values("0:(1.0025+0.002*sin(1.25*3.14*t/30))", 31)       # Deforum's default zoom
    assert [round(wave[t], 9) for t in (0, 7, 30)] == [round(1.0025 + 0.002 * math.sin(1.25 * 3.14 * t / 30), 9)
                                                       for t in (0, 7, 30)]
    assert values('0:(0), "max_f-1":(9)', 11) == pytest.approx([float(t) for t in range(10)] + [9.0])  # key at 9
    assert values("0:(max(t, 3)), 5:(1)", 7) == [3, 3, 3, 3, 4, 1, 1]      # commas inside a call
    assert values("2.5", 3) == [2.5, 2.5, 2.5]
    # Deforum's default seed schedule: s, then -1 (a fresh seed), s at the last frame
    assert values('0:(s), 1:(-1), "max_f-2":(-1), "max_f-1":(s)', 10, seed=7) == [7] + [-1] * 7 + [7, 7]


def test_smooth_in_betweens_pass_through_the_keys_without_overshoot():
    smooth = values("0:(1), 10:(2), 20:(0)", 21, interpolation="smooth")
    assert smooth[0] == 1 and smooth[10] == 2 and smooth[20] == 0
    assert all(0 <= x <= 2 for x in smooth)
    assert all(a <= b for a, b in zip(smooth[:11], smooth[1:11])) and all(a >= b for a, b in zip(smooth[10:], smooth[11:]))
    assert smooth[5] != pytest.approx(1.5) or smooth[2] != pytest.approx(1.2)     # not the straight line


@pytest.mark.parametrize("hostile", [
    "__import__('os').system('touch /tmp/x')", "t.__class__", "(1).real", "lambda: 1", "[t for t in (1, 2)]",
    "open('/etc/passwd')", "9**9**9", "2**100000", "1e308*1e308", "'a'*3", "exec", "sin", "globals()",
    "sin(t, key=1)", "x + 1", "1/0", "(" * 300 + "1" + ")" * 300, "t if t else 1", "{1: 2}",
])
def test_hostile_schedule_strings_are_refused_with_a_clear_message(hostile):
    with pytest.raises(ScheduleError) as refused:
        values(f"0:({hostile})", 5)
    assert isinstance(refused.value, InvalidRequest) and len(str(refused.value)) < 600
    with pytest.raises(InvalidRequest):
        plan_frames(make_settings(zoom=f"0:({hostile})", frames=5, seed=1))


def test_bad_values_are_refused_before_any_frame_with_the_frame_named():
    with pytest.raises(InvalidRequest, match="denoise schedule gives 1.5 at frame 3"):
        plan_frames(make_settings(denoise="0:(0), 3:(1.5)", frames=6, seed=1))
    for bad in (dict(mode="3d"), dict(frames=0), dict(fps=500), dict(width=65), dict(formats=["avi"]),
                dict(seed="x"), dict(blend_prompts="yes"), dict(unknown=1)):
        with pytest.raises(InvalidRequest):
            make_settings(**bad)
    with pytest.raises(InvalidRequest, match="not a frame number"):
        plan_frames(make_settings(prompts="a red circle: big", seed=1))


def test_prompt_keyframes_blend_cut_and_loop():
    blends = prompt_blends("0: red\n4: blue --neg green", 8)
    assert [round(b.weight, 2) for b in blends[:5]] == [0, 0.25, 0.5, 0.75, 0]
    assert blends[2].prompt == "red" and blends[2].toward == "blue" and blends[2].toward_negative == "green"
    assert all(b.weight == 0 for b in prompt_blends("0: red\n4: blue", 8, blend=False))
    looped = prompt_blends("0: red\n4: blue", 8, loop=True)
    assert looped[6].prompt == "blue" and looped[6].toward == "red" and looped[6].weight == 0.5
    assert prompt_blends('{"0": "red", "2": "blue"}', 3)[1].weight == 0.5


def test_travel_seeds_slerp_between_keyframes_and_loop_back_to_the_first():
    s = make_settings(seed=5, seed_mode="iter", frames=8, prompts="0: red\n4: blue", loop="loop")
    plan = plan_frames(s)
    assert [(p.seed, p.variation_seed, p.variation) for p in plan[:2]] == [(5, 6, 0.0), (5, 6, 0.25)]
    assert (plan[7].seed, plan[7].variation_seed, plan[7].variation) == (6, 5, 0.75)   # frame 8 would be frame 0


def test_deforum_settings_import_with_strength_turned_into_denoise():
    raw, notes = from_deforum(json.dumps({
        "max_frames": 10, "animation_mode": "2D", "strength_schedule": "0: (0.65), 5: (0.5+0.1*sin(t))",
        "zoom": "0: (1.02)", "seed_behavior": "ladder", "color_coherence": "Match Frame 0 LAB", "diffusion_cadence": "2",
        "prompts": {"0": "a red circle", "5": "a blue circle"}, "translation_z": "0:(1.75)", "fps": 15}))
    s = make_settings(**raw, seed=1)
    plan = plan_frames(s)
    assert (s.mode, s.frames, s.fps, s.cadence, s.coherence, s.zoom) == ("2d", 10, 15, 2, "LAB", "0: (1.02)")
    assert plan[0].denoise == pytest.approx(0.35) and plan[6].denoise == pytest.approx(1 - (0.5 + 0.1 * math.sin(6)))
    assert any("ladder" in n for n in notes) and any("translation_z" in n for n in notes)
    with pytest.raises(InvalidRequest):
        from_deforum("not json")


# ------------------------------------------------------------------------------ warps (no model)

def _disc(cx: float, cy: float, r: int = 5, size: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    img = np.full((size, size, 3), 128, np.uint8)
    img[(x - cx) ** 2 + (y - cy) ** 2 <= r * r] = (230, 30, 30)
    return img


def _red(img: np.ndarray) -> np.ndarray:
    return red_mask(img)


def _centroid(img: np.ndarray) -> tuple[float, float]:
    return centroid(red_mask(img))


def test_a_translation_schedule_moves_the_centroid_by_the_scheduled_pixels():
    img = _disc(14, 31.5)
    shifts = values("0:(2), 14:(2)", 15)
    for tx in shifts:
        img = warp(img, tx=tx)
    assert _centroid(img)[0] == pytest.approx(14 + sum(shifts), abs=0.5)
    assert _centroid(img)[1] == pytest.approx(31.5, abs=0.5)


def test_a_zoom_schedule_scales_the_offset_by_the_product_of_the_zooms():
    img = _disc(41.5, 31.5, r=3)
    zooms = values("0:(1.01), 19:(1.03)", 20)
    for z in zooms:
        img = warp(img, zoom=z)
    assert (_centroid(img)[0] - 31.5) / 10 == pytest.approx(math.prod(zooms), rel=0.02)


def test_slerped_noise_keeps_its_scale_where_a_straight_mix_shrinks_it():
    import torch
    from studio.generation.noise import slerp
    a, b = torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(1)), \
        torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(2))
    assert float(slerp(0.5, a, b).std()) == pytest.approx(1.0, abs=0.05)
    assert float((0.5 * a + 0.5 * b).std()) == pytest.approx(0.71, abs=0.05)


# ------------------------------------------------------------------------------ through the studio

@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    from studio.config import Settings
    from studio.serving.studio import Studio
    return Studio.from_settings(Settings(model="", outputs=tmp_path_factory.mktemp("outputs")))


class Stopping:
    """A Sequence stand-in that runs `limit` requests, then reports the run stopped."""

    def __init__(self, studio, limit: int | None = None):
        from studio.serving.sequence import Sequence
        self.inner, self.limit, self.ran = Sequence(studio, user="t", session="t", save=False), limit, 0

    def run(self, request):
        if self.limit is not None and self.ran >= self.limit:
            return None
        self.ran += 1
        return self.inner.run(request)


def _render(studio, start=None, video=None, **raw):
    from studio.animation.start import begin, run
    animation = begin(studio, {"seed": 11, "steps": "0:(10)", "cfg": "0:(5)", "formats": [], **raw}, start=start,
                      video=video)
    run(animation, Stopping(studio))
    return animation, [np.asarray(Image.open(animation.path(t)).convert("RGB")) for t in range(len(animation.plan))]


def test_2d_motion_through_diffusion_follows_the_path_and_keeps_the_colour(embedded):
    start = np.full((64, 64, 3), 128, np.uint8)
    start[_red(_disc(18, 31.5, r=7))] = (230, 30, 30)
    _, frames = _render(embedded, start=start, mode="2d", frames=12, translation_x="0:(1.5)", denoise="0:(0.35)",
                        noise="0:(0)", prompts="0: a red circle on a gray background", coherence="LAB")
    red = [f for f in frames if _red(f).sum() >= 20]
    assert len(red) >= 0.9 * len(frames)
    for t, f in enumerate(frames):
        if _red(f).sum() >= 20:
            assert _centroid(f)[0] == pytest.approx(18 + 1.5 * t, abs=4), t


def test_prompt_travel_moves_the_colour_from_red_to_blue_against_a_hard_cut(embedded):
    _, travel = _render(embedded, mode="travel", frames=12, prompts=RED_TO_BLUE, seed_mode="fixed")
    _, cut = _render(embedded, mode="travel", frames=12, prompts=RED_TO_BLUE, seed_mode="fixed", blend_prompts=False)
    along = [blueness(f) for f in travel]
    assert along[0] < 0 < along[-1] and spearman(along) >= 0.9
    assert spearman([blueness(f) for f in cut]) < 0.9
    jumps = np.abs(np.diff([blueness(f) for f in cut]))
    assert jumps.argmax() == 10 and jumps[10] > 0.8 * jumps.sum()          # the control: one step, at the key
    assert np.abs(np.diff(along)).max() < 0.5 * (along[-1] - along[0])     # travel: no single step carries it


def test_travel_with_fixed_noise_changes_less_between_frames_than_per_frame_seeds(embedded):
    animation, travel = _render(embedded, mode="travel", frames=8, prompts="0: a red circle on a gray background\n"
                                "7: a blue circle on a gray background", seed_mode="fixed")
    naive = []
    for p in animation.plan:        # the control: each frame its own seed, same blended prompts
        request = embedded.make_request("txt2img", prompt=p.prompt.prompt, blend_prompt=p.prompt.toward,
                                        blend=p.prompt.weight, seed=11 + p.index, steps=10, cfg_scale=5,
                                        width=64, height=64)
        naive.append(np.asarray(embedded.submit(request, user="t", save=False).result().images[0].image))
    assert consecutive_change(travel) < 0.5 * consecutive_change(naive)


def test_colour_coherence_drifts_less_over_48_frames_than_none(embedded):
    start = np.full((64, 64, 3), (120, 160, 200), np.uint8)
    common = dict(mode="2d", frames=48, denoise="0:(0.5)", noise="0:(0.04)", steps="0:(6)",
                  prompts="0: a yellow square on a light blue background", start=start)
    drift = {}
    for coherence in ("none", "LAB"):
        _, frames = _render(embedded, coherence=coherence, coherence_strength=1.0, **common)
        drift[coherence] = colour_drift(frames[0], frames[-1])
    assert drift["LAB"] < drift["none"]


def test_two_animations_begun_in_the_same_second_with_the_same_seed_never_share_a_folder(embedded):
    from studio.animation.start import begin
    folders = {begin(embedded, dict(mode="preview", frames=2, seed=5)).folder for _ in range(3)}
    assert len(folders) == 3


def test_each_frame_carries_its_metadata_and_settings(embedded):
    from studio.outputs.pnginfo import read_info
    animation, _ = _render(embedded, mode="2d", frames=3, cadence=2, prompts="0: a red circle")
    diffused = Image.open(animation.path(2))
    assert "Frame: 3/3" in diffused.info["parameters"] and "Animation: 2d" in diffused.info["parameters"]
    assert read_info(diffused).fields["seed"] == 11
    from studio.outputs.metadata import JSON_KEY
    assert json.loads(diffused.info[JSON_KEY])["animation"]["frame"] == 2
    between = Image.open(animation.path(1))
    record = json.loads(between.info[JSON_KEY])["animation"]
    assert record["frame"] == 1 and record["settings"]["cadence"] == 2 and "in-between" in between.info["parameters"]


def test_video_files_decode_to_the_requested_frames_size_and_fps(embedded, tmp_path):
    import imageio.v2 as imageio
    import imageio_ffmpeg
    from studio.animation.start import begin, run
    animation = begin(embedded, dict(mode="preview", frames=10, fps=8, width=96, height=64, zoom="0:(1.04)",
                                     formats=["mp4", "gif", "webp"], seed=3))
    made = run(animation, Stopping(embedded))
    reader = imageio.get_reader(made["mp4"], format="FFMPEG")
    meta, decoded = reader.get_meta_data(), [f for f in reader]
    reader.close()
    assert len(decoded) == 10 and decoded[0].shape == (64, 96, 3) and meta["fps"] == 8
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(made["mp4"])],
                           capture_output=True, text=True).stderr
    assert "h264" in probe and "yuv420p" in probe and '"studio animation"' in probe
    first = np.asarray(Image.open(animation.path(0)).convert("RGB")).astype(float)
    assert np.abs(decoded[0].astype(float) - first).mean() < 6            # H.264 at CRF 17
    gif = Image.open(made["gif"])
    assert gif.n_frames == 10 and gif.info["loop"] == 0 and b"studio animation" in gif.info["comment"]
    assert Image.open(made["webp"]).n_frames == 10
    pingpong = begin(embedded, dict(mode="preview", frames=6, loop="pingpong", zoom="0:(1.1)", formats=["gif"],
                                    seed=3))       # (moving: a GIF merges identical frames)
    assert Image.open(run(pingpong, Stopping(embedded))["gif"]).n_frames == 10


def test_video_input_mode_draws_over_the_uploaded_frames(embedded, tmp_path):
    from studio.animation.video import write_mp4
    sources = []
    for t in range(5):
        path = tmp_path / f"src{t}.png"
        Image.fromarray(_disc(14 + 8 * t, 31.5, r=8)).save(path)
        sources.append(path)
    clip = write_mp4(sources, tmp_path / "clip.mp4", 5, "")
    animation, frames = _render(embedded, mode="video", frames=5, video=str(clip), denoise="0:(0.3)",
                                prompts="0: a red circle on a gray background", coherence="none")
    xs = [_centroid(f)[0] for f in frames if _red(f).sum() > 20]
    assert len(xs) >= 4 and xs == sorted(xs)                                # the object follows the video
    from studio.animation.render import Animation
    again = Animation.open(embedded, animation.folder)                      # resume reads the copied clip
    assert len(again.inputs.video) == 5 and np.array_equal(again.inputs.video[2], animation.inputs.video[2])
    short, _ = _render(embedded, mode="video", frames=50, video=str(clip), steps="0:(2)")
    assert len(short.plan) == 5                                             # as many frames as the clip has
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(InvalidRequest, match="Cannot read the video"):
        _render(embedded, mode="video", frames=2, video=str(tmp_path / "broken.mp4"))


def test_resume_gives_the_frames_of_an_uninterrupted_run_byte_for_byte(embedded):
    from studio.animation.render import Animation
    from studio.animation.start import begin, run
    raw = dict(mode="2d", frames=7, cadence=2, seed=4, steps="0:(8)", zoom="0:(1.03)", angle="0:(2)",
               prompts="0: a red circle on a gray background\n6: a blue circle on a gray background", formats=[])
    straight = begin(embedded, raw)
    run(straight, Stopping(embedded))
    halted = begin(embedded, raw)
    run(halted, Stopping(embedded, limit=2))               # frames 0-2 made, then Stop
    assert halted.done() == 3
    reopened = Animation.open(embedded, halted.folder)
    run(reopened, Stopping(embedded))
    for t in range(7):
        assert Image.open(straight.path(t)).tobytes() == Image.open(halted.path(t)).tobytes(), t


def test_kill_9_mid_run_leaves_every_saved_frame_whole_and_resumable(tmp_path):
    script = f"""
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {str(ROOT)!r})
from studio.config import Settings
from studio.serving.studio import Studio
from studio.serving.sequence import Sequence
from studio.animation.start import begin, run
studio = Studio.from_settings(Settings(model="", outputs={str(tmp_path)!r}))
animation = begin(studio, dict(mode="travel", frames=20, seed=2, steps="0:(12)", formats=[]))
print(animation.folder, flush=True)
run(animation, Sequence(studio, user="k", session="k", save=False))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    folder = Path(proc.stdout.readline().strip())
    deadline = time.time() + 120
    while len(list(folder.glob("frame_*.png"))) < 3 and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = sorted(folder.glob("frame_*.png"))
    assert 3 <= len(saved) < 20
    before = {}
    for path in saved:
        with Image.open(path) as img:
            img.load()                                       # a torn file would fail here
            before[path.name] = img.tobytes()
    from studio.config import Settings
    from studio.serving.studio import Studio
    from studio.animation.render import Animation
    from studio.animation.start import run
    studio = Studio.from_settings(Settings(model="", outputs=tmp_path))
    animation = Animation.open(studio, folder)
    assert animation.done() == len(saved)
    run(animation, Stopping(studio))
    assert animation.done() == 20
    assert all(Image.open(folder / name).tobytes() == data for name, data in before.items())


# ------------------------------------------------------------------------------ every SD family

@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "flux", "sd3"])
def test_every_mode_runs_on_tiny_random_weight_checkpoints(family, tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from ldm_layout import tiny_pipeline
    from studio.families.tiny import write_tiny_flux, write_tiny_sd3
    from studio.models.manager import ModelManager
    from studio.outputs.folder import OutputFolder
    from studio.config import PRESETS_DIR
    from studio.prompts.presets import load_presets
    from studio.serving.studio import Studio
    folder = tmp_path / family
    {"flux": write_tiny_flux, "sd3": write_tiny_sd3}.get(family, lambda f: tiny_pipeline(family).save_pretrained(f))(folder)
    studio = Studio.over(manager=ModelManager(str(folder), device="cpu"), outputs=OutputFolder(tmp_path / "out"),
                    presets=load_presets(PRESETS_DIR))
    clip = None
    for mode in ("travel", "2d", "preview", "video"):
        animation, frames = _render(studio, mode=mode, frames=3, width=64, height=64, steps="0:(2)",
                                    prompts="0: a red circle\n2: a blue square", video=clip,
                                    formats=["mp4"] if mode == "preview" else [])
        assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
        if mode == "preview":
            clip = str(animation.folder / f"{animation.folder.name}.mp4")


def test_sdxl_travel_mixes_the_pooled_embeddings_too():
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from ldm_layout import tiny_pipeline
    from studio.prompts.conditioning import Conditioner
    pipe = tiny_pipeline("sdxl")
    a = Conditioner(pipe, "a red circle", "", 4).pipeline_kwargs()
    b = Conditioner(pipe, "a blue square", "", 4).pipeline_kwargs()
    half = Conditioner(pipe, "a red circle", "", 4, toward=("a blue square", "", 0.5)).pipeline_kwargs()
    for key in ("prompt_embeds", "pooled_prompt_embeds"):
        assert torch.allclose(half[key], (a[key] + b[key]) / 2, atol=1e-5), key
    assert not torch.allclose(a["pooled_prompt_embeds"], b["pooled_prompt_embeds"])


def test_a_video_too_big_is_refused_from_its_header_and_a_refused_animation_leaves_no_folder(embedded, tmp_path):
    """Issue 38, findings 5 and 8: an 8 KB MP4 of 240 frames at 4096x256 was decoded whole (RSS +700 MB)
    before its width was refused; a refused /animate left an empty folder behind."""
    import resource

    from studio.animation.start import animations_root, begin
    from studio.animation.video import write_mp4
    frame = tmp_path / "wide.png"
    Image.new("RGB", (4096, 256), (40, 90, 200)).save(frame)
    clip = write_mp4([frame] * 240, tmp_path / "wide.mp4", 24, "")
    assert clip.stat().st_size < 200_000
    folders = set(animations_root(embedded).glob("*")) if animations_root(embedded).exists() else set()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InvalidRequest, match="is 4096x256; this studio takes videos up to 2048 px a side"):
        begin(embedded, dict(mode="video", frames=240, formats=[]), video=str(clip))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000     # KB: nothing decoded
    with pytest.raises(InvalidRequest):                  # refused after its folder was chosen
        begin(embedded, dict(mode="2d", frames=3, steps="0:(500)", formats=[]))
    after = set(animations_root(embedded).glob("*"))
    assert after == folders, after - folders
