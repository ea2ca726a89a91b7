"""Section 8: where the time goes — pyinstrument on a short replay and a short aggregator run.

Each stage runs under `python -m pyinstrument -r json -m streaming ...`; the JSON frame tree is
folded into self time per function (time in the function itself, not in what it calls), which
is what to optimise first. Native time (librdkafka, polars, msgspec) shows as its Python caller.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from streaming.kernel.settings import PROJECT_ROOT
from tick_tools.bench.aggregate_bench import output_topics
from tick_tools.bench.harness import PYTHON, Bench, Figure, run_measured
from tick_tools.bench.replay_bench import BenchError, make_topics, replay_cmd, synth_files

TOP = 12


def _frame_name(frame: dict[str, Any]) -> str:
    path = str(frame.get("file_path_short") or frame.get("file_path") or "")
    path = path.replace(str(PROJECT_ROOT) + "/", "")
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{frame.get('function', '?')} ({path}:{frame.get('line_no', '?')})"


def _ours(frame: dict[str, Any]) -> bool:
    path = str(frame.get("file_path") or frame.get("file_path_short") or "")
    return "/streaming/" in path or path.startswith("streaming/")


def self_times(tree: dict[str, Any], by_our_caller: bool = False) -> tuple[float, list[tuple[str, float]]]:
    """Total seconds and (frame, self seconds) sorted by self time, from pyinstrument's JSON.

    With `by_our_caller`, time spent in libraries and native code is charged to the nearest
    calling function of this project: "which of our functions does the time go through".
    """
    root = tree.get("root_frame") or tree
    totals: dict[str, float] = defaultdict(float)
    stack: list[tuple[dict[str, Any], str | None]] = [(root, None)]
    while stack:
        frame, owner = stack.pop()
        if by_our_caller and _ours(frame):
            owner = _frame_name(frame)
        children = frame.get("children") or []
        own = float(frame.get("time", 0.0)) - sum(float(c.get("time", 0.0)) for c in children)
        if own > 0:
            key = (owner or "(outside the project: start-up, imports)") if by_our_caller else _frame_name(frame)
            totals[key] += own
        stack.extend((c, owner) for c in children)
    total = float(root.get("time", 0.0))
    return total, sorted(totals.items(), key=lambda kv: -kv[1])


def profile(bench: Bench, label: str, stage_args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one stage under pyinstrument; return its top frames by self time."""
    out = bench.run_dir / f"profile-{label}.json"
    cmd = [PYTHON, "-m", "pyinstrument", "--show-all", "-r", "json", "-o", str(out), "-m", "streaming", *stage_args]
    head = cmd[: len(cmd) - len(stage_args)]
    bench.command("profile", [*head, stage_args[0], "<files>", *stage_args[-5:]] if len(stage_args) > 8 else cmd)
    res = run_measured(cmd, env=bench.env(**env), timeout_s=900)
    if res.rc != 0 or not out.is_file():
        raise BenchError(f"profiling {label} failed (exit {res.rc}):\n{res.tail()}")
    tree = json.loads(out.read_text())
    total, frames = self_times(tree)
    _, ours = self_times(tree, by_our_caller=True)
    return {"total_s": total,
            "top": [{"frame": f, "self_s": s, "share": s / total if total else 0.0} for f, s in frames[:TOP]],
            "by_our_function": [{"frame": f, "self_s": s, "share": s / total if total else 0.0}
                                for f, s in ours[:TOP]]}


def run_profile_section(bench: Bench) -> None:
    """Profile the replay (speed 0) and the aggregator (--until-idle) on the same short stream."""
    ticks = bench.sizes.profile_ticks
    files = synth_files(bench, 100, max(1, ticks // 100))
    topics = make_topics(bench, "profile")
    replay_args = replay_cmd(files, bench.brokers)[3:]
    bench.log(f"[profile] replay of {ticks:,} ticks under pyinstrument")
    rep = profile(bench, "replay", replay_args, topics.env())
    out = output_topics(bench, topics.raw, "profile-agg")
    agg_args = ["aggregate", "--brokers", bench.brokers, "--group-id", "bench-profile", "--until-idle"]
    bench.log("[profile] aggregator under pyinstrument")
    agg = profile(bench, "aggregate", agg_args, out.env())
    bench.sections["profile"] = {"replay": rep, "aggregate": agg}
    for stage, prof in (("replay", rep), ("aggregator", agg)):
        top = prof["by_our_function"][:3]
        bench.add(Figure("profile", f"{stage}: top self-time frames", prof["total_s"], "s profiled",
                         note="; ".join(f"{t['share']:.0%} {t['frame']}" for t in top)))


def top_frames_markdown(prof: dict[str, Any], key: str = "top") -> list[str]:
    """Table rows of one profile for docs/benchmarks.md."""
    return [f"| {i + 1} | `{t['frame']}` | {t['self_s']:.2f} | {t['share']:.0%} |"
            for i, t in enumerate(prof.get(key, []))]
