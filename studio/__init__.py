"""Stable Diffusion studio: a Gradio app over one shared diffusers model manager."""

__version__ = "0.1.0"
