"""bench/gpu_check.py, the one command a lent GPU runs (issue 26): its dry run takes every stage
through the same code on the CPU with the embedded model and tiny sizes, so that no device minute
is spent on a typo, and its report holds sound figures."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from gpu_check import STAGES, category, time_split  # noqa: E402

from studio.models.memory import MODES  # noqa: E402


def test_dry_run_takes_every_stage_through_and_reports_sound_pictures(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--budget", "900",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    stages = json.loads((tmp_path / "gpu_check.json").read_text())["stages"]
    assert list(stages) == list(STAGES)
    assert not {k: v for k, v in stages.items() if "error" in v}, done.stdout[-6000:]
    assert stages["environment"]["device"] == "cpu" and stages["environment"]["matmul_peak_tflops"] > 0

    rows = {r["tab"]: r for r in stages["correctness"]["rows"]}
    assert set(rows) == {"txt2img", "img2img", "inpaint"}
    assert all(r["same_seed_same_picture"] and r["not_blank"] for r in rows.values())
    assert rows["txt2img"]["latents_finite"] is True
    # on the CPU the studio's default path gives plain diffusers' picture bit for bit (None = identical)
    assert rows["txt2img"]["psnr_vs_plain_diffusers"] is None
    assert rows["img2img"]["psnr_vs_plain_diffusers"] is None or rows["img2img"]["psnr_vs_plain_diffusers"] > 40
    fast = rows["txt2img"]["psnr_compiled_vs_eager"]      # the dry run: channels-last, compile off
    assert (fast is None or fast > 35) and rows["txt2img"]["fast_path"] == "channels-last"

    memory = stages["memory"]
    assert [r["mode"] for r in memory["rows"]] == list(MODES)
    # no offloading from a CPU
    assert [r["in_use"] for r in memory["rows"]] == ["none", "low", "fp8", "cpu-text", "fp8-cpu-text", "low", "low",
                                                     "low"]
    oom = memory["oom_retry"]
    assert oom["pictures"] == 1 and oom["memory_after"] == "low"
    assert any("out of memory" in n.lower() for n in oom["notes"])

    speed = {r["label"]: r for r in stages["speed"]["rows"]}
    assert set(speed) == {"plain", "studio"} and all(r["it_per_s"] > 0 for r in speed.values())
    assert speed["studio"]["weights_reloaded"] == 0
    assert stages["live"]["student, 1 step (live)"]["pictures_per_s"] > 0
    assert stages["animation"]["travel"]["frames"] == 4 and stages["animation"]["2d"]["frames_per_s"] > 0

    workers = stages["workers"]["ray x1"]     # CI has Ray: one CPU replica through the dispatcher
    assert workers["clients"]["1"]["throughput"] > 0 and workers["start"]["ray_daemons_mb"] > 0

    profile = stages["profile"]
    assert 0.3 < sum(profile["shares"].values()) <= 1.05 and profile["shares"]["convolution"] > 0
    finetune = stages["finetune"]["embedded"]
    assert finetune["state"] == "done" and finetune["steps"] == 4 and finetune["steps_per_s"] > 0
    assert "pixel checker" not in finetune["message"]          # steps measured without the evaluation
    families = stages["families"]["rows"]         # Flux in fp8 with T5 on the CPU, and SD 3.5, tiny widths
    assert [(r["family"], r["mode"]) for r in families] == [("flux", "fp8-cpu-text"), ("sd3", "none")]
    assert all(r["s_per_image"] > 0 and "error" not in r for r in families)


class _Event:
    def __init__(self, key, cpu_us):
        self.key, self.self_cpu_time_total, self.device_type = key, cpu_us, None


class _Profile:
    def __init__(self, events):
        self.events = events

    def key_averages(self):
        return self.events


def test_time_split_names_where_a_step_goes_and_the_next_change():
    assert category("sm90_xmma_fprop_implicit_gemm_f16f16") == "convolution"
    assert category("flash_fwd_kernel") == "attention"
    assert category("aten::addmm") == "matmul"
    assert category("aten::group_norm") == "other (norms, elementwise, copies)"
    prof = _Profile([_Event("aten::mkldnn_convolution", 600), _Event("aten::bmm", 100),
                     _Event("aten::group_norm", 100), _Event("cudaLaunchKernel", 999)])
    split = time_split(prof, 1000, cuda=False, name="embedded", size=64)
    assert split["shares"] == {"convolution": 0.6, "matmul": 0.1, "other (norms, elementwise, copies)": 0.1}
    assert split["ms_per_unet_call"] == 0.2
    assert split["next_changes"] == ["channels-last VAE as well; fp8 convolutions where quality holds"]
