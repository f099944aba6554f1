"""PNG plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from vgg_deploy.fileio import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(history: list[dict], path: Path) -> None:
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    trained = [h for h in history if "train_loss" in h]  # epoch 0 (auto's probe) has val figures only
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([h["epoch"] for h in trained], [h["train_loss"] for h in trained], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot([h["epoch"] for h in trained], [h["train_top1"] for h in trained], "o-", label="train top-1")
    ax_acc.plot(epochs, [h["val_top1"] for h in history], "o-", label="val top-1")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    _save(plt, fig, path)


def plot_benchmark(report: dict, folder: Path) -> None:
    """accuracy_vs_latency.png and latency.png (p50/p90/p99 per artifact and batch size)."""
    plt = _pyplot()
    ok = [r for r in report["results"] if r["status"] == "ok"]
    if not ok:
        return
    first_batch = str(report["settings"]["batch_sizes"][0])
    fig, ax = plt.subplots(figsize=(7, 4))
    markers = "osD^v<>ph*"
    for index, r in enumerate(ok):
        ax.scatter([r["latency_ms"][first_batch]["p50"]], [r["accuracy"]["top1"]], marker=markers[index % len(markers)],
                   s=50, label=f"{r['artifact']} ({r['backend']})")
    tops = [r["accuracy"]["top1"] for r in ok]
    # At least 5 points of top-1 on the axis, so a sub-point difference looks like one; the bar is one image.
    middle, half = (max(tops) + min(tops)) / 2, max(0.025, (max(tops) - min(tops)) / 2 + 0.01)
    ax.set_ylim(max(0.0, middle - half), min(1.0, middle + half) + 0.002)
    one_image = 1 / max(1, report["settings"].get("images", 1))
    ax.errorbar([min(r["latency_ms"][first_batch]["p50"] for r in ok)], [min(tops)], yerr=one_image, fmt="none",
                ecolor="gray", capsize=3, label="± one test image")
    ax.set(xlabel=f"p50 latency, batch {first_batch} (ms)", ylabel="top-1 (test)", title="accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(plt, fig, folder / "accuracy_vs_latency.png")

    batches = [str(b) for b in report["settings"]["batch_sizes"]]
    fig, axes = plt.subplots(1, len(batches), figsize=(4 * len(batches), 4), squeeze=False)
    labels = [f"{r['artifact']}\n{r['backend']}" for r in ok]
    for ax, batch in zip(axes[0], batches, strict=True):
        ax.boxplot([r["latency_samples_ms"][batch] for r in ok], whis=(1, 99), showfliers=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=7)
        ax.set(title=f"batch {batch}: latency per iteration", ylabel="ms")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    _save(plt, fig, folder / "latency.png")


def plot_pruning(records: list[dict], path: Path) -> None:
    """Val top-1 against batch-1 latency (against multiply-adds when latency was not measured), step by step."""
    plt = _pyplot()
    timed = all(r.get("latency") for r in records[1:]) and len(records) > 1
    fig, ax = plt.subplots(figsize=(6, 4))
    if timed:
        xs = [records[1]["latency"]["source_ms"]] + [r["latency"]["ms"] for r in records[1:]]
        ax.set_xlabel(f"batch-1 latency, ms ({records[1]['latency']['runtime']})")
    else:
        xs = [r["macs"] / 1e9 for r in records]
        ax.set_xlabel("G multiply-adds per image")
    ys = [r["val_top1"] if r["val_top1"] is not None else float("nan") for r in records]
    ax.plot(xs, ys, "o-")
    for x, y, r in zip(xs, ys, records):
        ax.annotate("source" if r["step"] == 0 else f"step {r['step']}", (x, y), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.set(ylabel="val top-1", title="pruning: accuracy against cost", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    _save(plt, fig, path)


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
