"""Feature caching across denoising steps (DeepCache: Ma, Fang & Wang 2023, arXiv:2312.00858).

Adjacent denoising steps change the UNet's deep features very little. Every `interval`-th call
runs the whole UNet and keeps the output of the second-to-last up block; the calls in between
run only the shallow path — conv_in, the first down block, the last up block and conv_out —
and reuse the kept deep features. Off by default: it trades some fidelity for speed, and
`python bench/speed.py` prints both (the image's PSNR against the full path, and the time).

It works by giving the skipped blocks a stand-in `forward` for the cached calls, so the
diffusers UNet's own forward (time embedding, SDXL's added conditioning, residual plumbing)
runs unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager


class FeatureCache:
    def __init__(self, unet, interval: int):
        if interval < 2:
            raise ValueError("a feature cache interval is 2 or more (1 would recompute every step)")
        if len(unet.up_blocks) < 2:
            raise ValueError("this UNet has a single up block: nothing deep to cache")
        self.unet, self.interval = unet, interval
        self.calls = 0
        self.full_calls = 0
        self.deep = None          # output of up_blocks[-2] at the last full call
        self._hooks: list = []

    # stand-ins for the deep blocks on cached calls; they touch no weights
    @staticmethod
    def _down(n_res: int):
        def forward(hidden_states, *args, **kwargs):
            return hidden_states, (hidden_states,) * n_res
        return forward

    @staticmethod
    def _mid(sample, *args, **kwargs):
        return sample

    def _up_cached(self, *args, **kwargs):
        return self.deep

    @staticmethod
    def _up_skip(*args, hidden_states=None, **kwargs):
        return hidden_states if hidden_states is not None else args[0]

    def _deep_blocks(self):
        u = self.unet
        for block in u.down_blocks[1:]:
            n = len(block.resnets) + (1 if getattr(block, "downsamplers", None) else 0)
            yield block, self._down(n)
        if u.mid_block is not None:
            yield u.mid_block, self._mid
        for block in u.up_blocks[:-2]:
            yield block, self._up_skip
        yield u.up_blocks[-2], self._up_cached

    def _before(self, module, args, kwargs):
        cached = self.calls % self.interval != 0 and self.deep is not None
        for block, stand_in in self._deep_blocks():
            if cached:
                block.forward = stand_in
            elif "forward" in block.__dict__:
                del block.forward
        if not cached:
            self.full_calls += 1
        return None

    def _after(self, module, args, kwargs, output):
        self.calls += 1
        return None

    def _keep(self, module, args, output):
        if "forward" not in module.__dict__:       # a full call: remember the deep features
            self.deep = output

    def __enter__(self):
        u = self.unet
        self._hooks = [u.register_forward_pre_hook(self._before, with_kwargs=True),
                       u.register_forward_hook(self._after, with_kwargs=True),
                       u.up_blocks[-2].register_forward_hook(self._keep)]
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()
        for block, _ in self._deep_blocks():
            block.__dict__.pop("forward", None)
        self.deep = None
        return False


@contextmanager
def feature_cache(unet, interval: int):
    """`with feature_cache(pipe.unet, 3): pipe(...)`; interval 0 or 1 = no caching."""
    if interval <= 1:
        yield None
        return
    with FeatureCache(unet, interval) as cache:
        yield cache
