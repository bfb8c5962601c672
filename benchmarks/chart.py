"""The PNG chart (matplotlib, Agg backend): steps/s and violations per system, and with
--sweep, steps/s against the number of workers."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from .runner import BenchReport

#: the checker's kinds of violation, as the legend names them
SHORT = {
    "orphan_results": "orphans",
    "unanswered_calls": "unanswered",
    "misplaced_results": "misplaced",
    "duplicate_results": "dup results",
    "duplicate_calls": "dup calls",
    "duplicate_user_messages": "dup prompts",
    "lost_steps": "lost steps",
    "duplicated_steps": "dup steps",
    "position_gaps": "gaps",
}


def draw_chart(report: BenchReport, path: Path) -> None:
    main = report.main
    names = list(main)
    panels = 3 if report.config.sweep else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), constrained_layout=True)
    p = report.config.params
    fig.suptitle(
        f"W={p.workers} C={p.conversations} S={p.steps} K={p.tool_calls} "
        f"double-submit {p.double_submit} interrupt {p.interrupt}, {p.duration:g} s per system"
    )

    ax = axes[0]
    rates = [main[n].steps_per_s for n in names]
    bars = ax.bar(names, rates, color="tab:blue")
    for bar, n in zip(bars, names, strict=True):
        ratio = main[n].ratio_to_raw
        label = f"{ratio:.2f}× raw" if ratio else f"{main[n].steps_per_s:.0f}"
        ax.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_title("committed steps per second")
    ax.set_ylabel("steps/s")
    ax.tick_params(axis="x", labelrotation=20)

    ax = axes[1]
    kinds = [k for k in SHORT if any(main[n].violations.get(k, 0) for n in names)]
    bottom = [0.0] * len(names)
    for kind in kinds:
        values = [float(main[n].violations.get(kind, 0)) for n in names]
        ax.bar(names, values, bottom=bottom, label=SHORT[kind])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    if kinds:
        ax.legend(fontsize=8)
    for i, b in enumerate(bottom):
        ax.annotate(f"{b:.0f}", (i, b), ha="center", va="bottom", fontsize=8)
    ax.set_title("checker violations (count)")
    ax.tick_params(axis="x", labelrotation=20)

    if report.config.sweep:
        ax = axes[2]
        workers = sorted(report.results)
        for n in report.config.systems:
            pts = [(w, report.results[w][n].steps_per_s) for w in workers if n in report.results[w]]
            if pts:
                ax.plot([w for w, _ in pts], [r for _, r in pts], marker="o", label=n)
        ax.set_xscale("log", base=2)
        ax.set_xticks(workers, [str(w) for w in workers])
        ax.set_xlabel("workers (W)")
        ax.set_ylabel("steps/s")
        ax.set_title("throughput against concurrency")
        ax.legend(fontsize=8)

    fig.savefig(path, dpi=110)
    plt.close(fig)
