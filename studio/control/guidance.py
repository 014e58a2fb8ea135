"""Control units acting on the UNet for one pipeline call (a context manager, like the tiling and
reference guidance beside it): a forward pre-hook runs each active unit's ControlNet on the
UNet's own inputs (latents, timestep, text embeddings, SDXL's size conditioning) and hands the
UNet the residuals (`down_block_additional_residuals`, `mid_block_additional_residual`); a
T2I-Adapter's features go in as `down_intrablock_additional_residuals`. Several units add up
(MultiControlNet). One mechanism for every tab and pipeline: txt2img, img2img and inpainting
(a 9-channel inpainting UNet's ControlNet sees the first 4 channels, the latents).

Per unit: the weight; start and end as fractions of the loop's steps (a unit acts at step i of n
when start <= i/n and (i+1)/n <= end, as diffusers' ControlNet pipelines count); the control mode,
with sd-webui-controlnet's meaning: "balanced" scales every residual by the weight; "prompt"
(My prompt is more important) fades the shallow residuals, 0.825 ** (depth from the deepest);
"control" (ControlNet is more important) fades them the same way and leaves the unconditional
half of classifier-free guidance uncontrolled, so guidance pushes toward the control.
A unit that acts at no step, or weighs 0, adds nothing: the picture is the plain one, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SOFT = 0.825      # sd-webui-controlnet's soft-injection base


@dataclass
class ActiveUnit:
    model: object             # ControlNetModel | ControlNetUnionModel | T2IAdapter
    kind: str                 # controlnet | union | adapter
    cond: torch.Tensor        # (1, 3, H, W) on the model's device and dtype
    weight: float
    start: float
    end: float
    mode: str                 # balanced | prompt | control
    control_type: int = 0     # a Union model's control type index

    def acts_at(self, i: int, n: int) -> bool:
        return self.weight != 0 and not (i / n < self.start or (i + 1) / n > self.end)


def scales(n: int, weight: float, mode: str) -> list[float]:
    """The factor of each of `n` residuals, shallowest first, the mid block's last."""
    if mode == "balanced":
        return [weight] * n
    return [weight * SOFT ** (n - 1 - k) for k in range(n)]


class ControlGuidance:
    def __init__(self, pipe, units: list[ActiveUnit]):
        self.pipe, self.units = pipe, [u for u in units if u.weight != 0]
        self.calls = 0
        self.last_t: float | None = None
        self._hook = None
        self._adapter_features: dict[int, list[torch.Tensor]] = {}

    def __enter__(self):
        if self.units:
            self._hook = self.pipe.unet.register_forward_pre_hook(self._before_unet, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        return False

    # -- the hook --------------------------------------------------------------------------------
    @torch.compiler.disable
    def _before_unet(self, unet, args, kwargs):
        """Runs eagerly even on a compiled UNet (the fast path's): its step counting is Python
        state, and the ControlNet then gives what it gives uncompiled; the compiled UNet takes
        the residuals as inputs (one graph more, not one a step: tests/test_control.py)."""
        if kwargs.get("down_block_additional_residuals") is not None or \
                kwargs.get("down_intrablock_additional_residuals") is not None:
            return None        # a call made inside another (reference-only's pass): already controlled
        sample = args[0] if args else kwargs["sample"]
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        steps = max(1, int(getattr(self.pipe, "_num_timesteps", 0) or 1))
        now = float(torch.as_tensor(t).flatten()[0])
        if self.last_t is not None and now > self.last_t:
            self.calls = 0          # timesteps only fall during a run: this is a new one (a retry)
        self.last_t = now
        i, self.calls = self.calls, self.calls + 1
        acting = [u for u in self.units if u.acts_at(min(i, steps - 1), steps)]
        if not acting:
            return None
        cfg = bool(getattr(self.pipe, "do_classifier_free_guidance", False)) and sample.shape[0] % 2 == 0
        downs = mid = intra = None
        for u in acting:
            if u.kind == "adapter":
                intra = _add(intra, self._adapter(u, sample, cfg))
            else:
                d, m = self._controlnet(u, sample, t, kwargs, cfg)
                downs, mid = _add(downs, d), (m if mid is None else mid + m)
        kwargs = dict(kwargs)
        if downs is not None:
            kwargs.update(down_block_additional_residuals=downs, mid_block_additional_residual=mid)
        if intra is not None:
            kwargs["down_intrablock_additional_residuals"] = intra
        return args, kwargs

    def _controlnet(self, u: ActiveUnit, sample, t, kwargs, cfg: bool):
        """One ControlNet's residuals for the whole batch (the unconditional half zero in
        "control" mode)."""
        only_cond = cfg and u.mode == "control"
        half = sample.shape[0] // 2 if only_cond else 0
        x = sample[half:, :u.model.config.in_channels]
        text = kwargs["encoder_hidden_states"][half:]
        added = kwargs.get("added_cond_kwargs")
        if added:
            added = {k: v[half:] for k, v in added.items()}
        cond = u.cond.to(x.dtype).expand(x.shape[0], -1, -1, -1)
        extra = {}
        if u.kind == "union":
            types = torch.zeros(x.shape[0], u.model.config.num_control_type, device=x.device, dtype=x.dtype)
            types[:, u.control_type] = 1
            extra = dict(control_type=types, control_type_idx=[u.control_type])
            cond = [cond]
        ts = t if torch.is_tensor(t) and t.ndim else torch.as_tensor(t, device=x.device)
        down, mid = u.model(x, ts, encoder_hidden_states=text, controlnet_cond=cond, conditioning_scale=1.0,
                            added_cond_kwargs=added, timestep_cond=_timestep_cond(u.model, kwargs),
                            return_dict=False, **extra)
        factors = scales(len(down) + 1, u.weight, u.mode)
        down = [r * f for r, f in zip(down, factors)]
        mid = mid * factors[-1]
        if half:
            down = [torch.cat([torch.zeros_like(r), r]) for r in down]
            mid = torch.cat([torch.zeros_like(mid), mid])
        return down, mid

    def _adapter(self, u: ActiveUnit, sample, cfg: bool) -> list[torch.Tensor]:
        """A T2I-Adapter's features (computed once a call of the pipeline), for the batch."""
        key = id(u)
        if key not in self._adapter_features:
            self._adapter_features[key] = [f * u.weight for f in u.model(u.cond.to(sample.dtype))]
        feats = self._adapter_features[key]
        only_cond = cfg and u.mode == "control"
        half = sample.shape[0] // 2 if only_cond else 0
        out = [f.expand(sample.shape[0] - half, -1, -1, -1) for f in feats]
        return [torch.cat([torch.zeros_like(f), f]) for f in out] if half else list(out)


def _timestep_cond(model, kwargs: dict):
    """The UNet's guidance embedding (a few-step student's), for a ControlNet that takes one: a
    ControlNet made from the teacher has no projection for it and runs as it was trained."""
    return kwargs.get("timestep_cond") if getattr(model.time_embedding, "cond_proj", None) is not None else None


def _add(total: list | None, more: list) -> list:
    return list(more) if total is None else [a + b for a, b in zip(total, more)]
