"""The GAN run's loss curves and its README (what the generators are, how they were trained, caveats)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from zoo.run_layout import CARD_NAME

from ..checkpoint import atomic_write

__all__ = ["plot_losses", "write_gan_card"]


def plot_losses(histories: dict[str, Sequence[dict[str, Any]]], path: str | Path) -> Path:
    """Per class: discriminator and generator loss, and D's mean output on real and fake images."""
    from ..plots import plt, save_figure
    classes = list(histories)
    fig, axes = plt.subplots(2, max(1, len(classes)), figsize=(4.5 * max(1, len(classes)), 6), squeeze=False)
    for col, name in enumerate(classes):
        history = histories[name]
        epochs = [h["epoch"] for h in history]
        top, bottom = axes[0][col], axes[1][col]
        top.plot(epochs, [h["d_loss"] for h in history], label="discriminator")
        top.plot(epochs, [h["g_loss"] for h in history], label="generator")
        top.set(title=f"class {name}: losses", xlabel="epoch")
        bottom.plot(epochs, [h["d_real"] for h in history], label="D(real)")
        bottom.plot(epochs, [h["d_fake"] for h in history], label="D(G(z))")
        bottom.set(title=f"class {name}: discriminator output", xlabel="epoch", ylim=(0, 1))
        for ax in (top, bottom):
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle("DCGAN training (per-epoch means)")
    return save_figure(fig, path)


def write_gan_card(cfg, run_dir: Path, result, source) -> Path:
    """README.md of a GAN run folder."""
    rows = []
    grids = []
    for name, info in result.classes.items():
        rows.append(f"| {name} | {info['num_real_images']} | {info['epochs']} | {info['steps']} | "
                    f"`{info['generator']}/model.safetensors` |")
        last = info["history"][-1]["epoch"] if info["history"] else 0
        grids.append(f"![class {name}, epoch {last}](samples/{info['folder']}/epoch_{last:04d}.png)")
    text = "\n".join([
        "# DCGAN generators (synthetic images, not real data)",
        "",
        "One DCGAN per class, trained on the **training split only** of "
        f"`{source.spec}` ({source.description}), as seed `003_1cb7b4f6374b6293.txt` does: a transposed-"
        "convolution generator with batch norm and ReLU, a convolutional discriminator with LeakyReLU(0.2), "
        f"Adam (lr {cfg.lr:g}, β1 {cfg.beta1}), batch {cfg.batch_size}, latent size {cfg.latent_dim}, "
        f"width {cfg.width}, {cfg.image_size}x{cfg.image_size} px, {cfg.channels} channel(s), seed {cfg.seed}, "
        f"split seed {cfg.effective_split_seed} (val {cfg.val_frac:.0%}, test {cfg.test_frac:.0%}).",
        "",
        "| class | real training images | epochs | steps | generator |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "The real images each generator saw are listed in `train_split.json`; sample grids are in "
        f"`samples/<class>/` (every {cfg.grid_every} epochs), loss curves in `losses.png`, per-epoch values in "
        "`gan_metrics.json`.",
        "",
        *grids,
        "",
        "![losses](losses.png)",
        "",
        "## Use",
        "",
        "```bash",
        f"python -m train.gan generate {run_dir} --per-class 100 --out data/synthetic",
        "python -m train.gan quality data/synthetic --classifier weights/A_REAL_DATA_RUN",
        "python -m train --arch lenet5 --data " + source.spec + " --synthetic data/synthetic --target-balance 1.0",
        "```",
        "",
        "## Limitations",
        "",
        "- Generated images are synthetic: never use them for validation or testing, and never present them "
        "as patient data. `generate` writes a manifest marking every file as synthetic.",
        "- A GAN trained on few images can copy them; check the quality report's nearest-real-image distances.",
        "- A teaching and research tool, not a medical device.",
        "",
    ])
    with atomic_write(run_dir / CARD_NAME, "w") as f:
        f.write(text)
    return run_dir / CARD_NAME
