"""The embedded default model's own making, kept out of the product package (`studio/`), which
never imports it: the synthetic world of coloured shapes and its captions (`world`), the pixel
checker that scores a picture against its prompt (`checker`), the training stages (`train`:
autoencoder, UNet, inpainting UNet, detail refinement), the few-step student's distillation
(`distill`, on the teacher's ODE solutions in `trajectories`), the evaluations and the model card
(`evaluate`, `evaluate_student`, `fidelity`, `model_card`), and the fine-tuning measurement on
this world (`finetune_measure`). The product uses only what these write: assets/embedded-model.

    python -m embedded.train | embedded.evaluate | embedded.distill | embedded.finetune_measure
"""
