"""Regret of the Bandit service's policies against MABWiser and Vowpal Wabbit, seeds averaged.

    python bench/bandit_learning.py            # full run (about 7 minutes on 2 cores)
    python bench/bandit_learning.py --quick    # fewer seeds and rounds (under a minute)
    python bench/bandit_learning.py --only sweep --spread-seeds 5

Environments are in bandit_environments, policies in bandit_agents. Regret is the expected
(pseudo) regret against the oracle that knows every round's means. Each environment prints
one table: mean regret over seeds (± standard error), the ratio to the best library's, and
for our service-default policies whether they meet the target of at most 1.1x the best
library. The exploration sweep then runs our linear policies over a grid of exploration
values on the contextual spread, which is how policy.py's defaults were chosen.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from functools import lru_cache
from multiprocessing import Pool

import numpy as np

from ml_serving_server.services.bandit.domain.policy import (
    DEFAULT_LINEAR_THOMPSON_EXPLORATION,
    DEFAULT_LINUCB_EXPLORATION,
)
from ml_serving_tools import bandit_simulation
from ml_serving_tools.bandit_agents import AgentSpec, library_status
from ml_serving_tools.bandit_environments import Scenario

TARGET_RATIO = 1.1
# Discount of our non-stationary policies (domain/forgetting.py): each reward keeps 99.5% of
# its arm's past evidence, so an arm weighs roughly its last 200 rewards (1 / discount), and
# 99.98% of every arm's. The drift tables show its neighbours: a larger discount forgets a
# change sooner but keeps re-exploring arms it already knows to be poor, a smaller one is
# slow to notice it.
DRIFT_DISCOUNT = 0.005
DISCOUNT_NEIGHBOURS = (0.002, 0.01, 0.02, 0.05)
SWEEP_THOMPSON = (0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
SWEEP_LINUCB = (0.25, 0.5, 1.0)

CLICK_RATES = Scenario("click-rates", n_arms=100, dim=0, rounds=100_000, batch=50)
LINEAR = Scenario("linear", n_arms=20, dim=10, rounds=20_000)
DRIFT = Scenario("drift", n_arms=10, dim=0, rounds=20_000, drift="falls")
DRIFT_RISE = Scenario("drift-rise", n_arms=10, dim=0, rounds=20_000, drift="rises")
CONTEXTUAL_DRIFT = Scenario("contextual-drift", n_arms=5, dim=5, rounds=10_000, drift="mirrors")
SPREAD_NOISES = (None, 0.05, 0.2)
SPREAD = tuple(
    Scenario(f"spread d={d} arms={k} {'bern' if sd is None else f'sd={sd:g}'}", k, d, 10_000, sd)
    for d in (5, 10, 20)
    for k in (5, 20)
    for sd in SPREAD_NOISES
)


# ----- the line-ups -----


def library_specs(contextual: bool, drift: bool) -> list[AgentSpec]:
    vw = [
        AgentSpec("vw cb_explore (epsilon 0.05)", "vowpalwabbit", ""),
        AgentSpec("vw cb_explore --squarecb", "vowpalwabbit", "--squarecb"),
    ]
    if contextual:
        mab = [AgentSpec("mabwiser LinTS", "mabwiser", "LinTS"), AgentSpec("mabwiser LinUCB", "mabwiser", "LinUCB")]
    else:
        mab = [AgentSpec("mabwiser ThompsonSampling", "mabwiser", "ThompsonSampling")]
        if drift:  # MABWiser has no forgetting; epsilon-greedy at least never stops exploring
            mab.append(AgentSpec("mabwiser EpsilonGreedy", "mabwiser", "EpsilonGreedy"))
    available = library_status()
    return [s for s in mab + vw if available[s.family]]


def linear_specs(discount: float = 0.0) -> list[AgentSpec]:
    suffix = f", discount {discount:g}" if discount else ""
    ts, ucb = DEFAULT_LINEAR_THOMPSON_EXPLORATION, DEFAULT_LINUCB_EXPLORATION
    return [
        AgentSpec(f"ours linear TS {ts:g}{suffix}", "ours", "ts", ts, discount=discount, target=True),
        AgentSpec(f"ours LinUCB {ucb:g}{suffix}", "ours", "ucb", ucb, discount=discount, target=True),
        AgentSpec(f"adaptive linear TS (bench only){suffix}", "ours", "nig", 1.0, discount=discount),
        AgentSpec(f"ours linear TS 1.0 (old default){suffix}", "ours", "ts", 1.0, discount=discount),
    ]


def lineup(scenario: Scenario) -> list[AgentSpec]:
    libraries = library_specs(scenario.contextual, bool(scenario.drift))
    if scenario.contextual:
        ours = linear_specs(DRIFT_DISCOUNT) if scenario.drift else linear_specs()
        if scenario.drift:
            ours.append(AgentSpec("ours linear TS, no discount", "ours", "ts", DEFAULT_LINEAR_THOMPSON_EXPLORATION))
        return ours + libraries
    if scenario.drift:
        chosen = AgentSpec(f"ours thompson, discount {DRIFT_DISCOUNT:g}", "ours", "thompson", discount=DRIFT_DISCOUNT, target=True)
        others = [AgentSpec(f"ours thompson, discount {d:g}", "ours", "thompson", discount=d) for d in DISCOUNT_NEIGHBOURS]
        return [chosen, *others, AgentSpec("ours thompson, no discount", "ours", "thompson")] + libraries
    return [AgentSpec("ours thompson", "ours", "thompson", target=True)] + libraries


def sweep_specs() -> list[AgentSpec]:
    specs = [AgentSpec(f"ts {e:g}", "ours", "ts", e) for e in SWEEP_THOMPSON]
    specs += [AgentSpec(f"ucb {e:g}", "ours", "ucb", e) for e in SWEEP_LINUCB]
    return specs + [AgentSpec("adapt. ts", "ours", "nig")]


# ----- one run -----


@lru_cache(maxsize=4)
def _instance(scenario: Scenario, seed: int):
    return scenario.build(seed)


def run_episode(scenario: Scenario, seed: int, spec: AgentSpec) -> float:
    """Expected regret of one policy over one seeded instance, learning batch by batch."""
    instance = _instance(scenario, seed)
    agent = spec.build(scenario.n_arms, scenario.dim, seed)
    regret = 0.0
    try:
        for start in range(0, scenario.rounds, scenario.batch):
            stop = min(start + scenario.batch, scenario.rounds)
            contexts = instance.context_batch(start, stop)
            arms = agent.choose(contexts, stop - start)
            means = instance.means(start, stop)
            expected = instance.expected_rewards(means)
            regret += float((expected.max(axis=1) - expected[np.arange(arms.size), arms]).sum())
            agent.learn(arms, instance.rewards(start, means, arms), contexts)
    finally:
        agent.close()
    return regret


def uniform_regret(scenario: Scenario, seed: int) -> float:
    """Expected regret of picking arms uniformly at random: the scale that learning is judged on."""
    instance = _instance(scenario, seed)
    expected = instance.expected_rewards(instance.means(0, scenario.rounds))
    return float((expected.max(axis=1) - expected.mean(axis=1)).sum())


@dataclass(frozen=True)
class Job:
    scenario: Scenario
    seed: int
    spec: AgentSpec

    @property
    def cost(self) -> float:
        """Rough relative run time, to start the longest jobs first."""
        per_round = {"ours": 0.1, "vowpalwabbit": 1.0, "mabwiser": 2.0}[self.spec.family]
        return self.scenario.rounds * per_round * (1.0 + self.scenario.dim / 10.0)


def _run_job(job: Job) -> tuple[Job, float]:
    return job, run_episode(job.scenario, job.seed, job.spec)


def run_jobs(jobs: list[Job], processes: int) -> dict[tuple[str, str], list[float]]:
    """Regrets by (scenario name, policy label), in seed order."""
    jobs = sorted(jobs, key=lambda j: -j.cost)
    by_key: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    done = 0
    with Pool(processes) as pool:
        for job, regret in pool.imap_unordered(_run_job, jobs):
            by_key[(job.scenario.name, job.spec.label)][job.seed] = regret
            done += 1
            if done % 50 == 0 or done == len(jobs):
                print(f"  {done}/{len(jobs)} runs", file=sys.stderr, flush=True)
    return {key: [runs[s] for s in sorted(runs)] for key, runs in by_key.items()}


# ----- tables -----


@dataclass(frozen=True)
class Row:
    spec: AgentSpec
    regrets: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.regrets))

    @property
    def stderr(self) -> float:
        return float(np.std(self.regrets, ddof=1) / np.sqrt(len(self.regrets))) if len(self.regrets) > 1 else 0.0


def best_library(rows: list[Row]) -> Row | None:
    libraries = [r for r in rows if r.spec.is_library]
    return min(libraries, key=lambda r: r.mean) if libraries else None


def verdict(row: Row, best: Row | None) -> str:
    if best is None or not row.spec.target:
        return ""
    return "PASS" if row.mean <= TARGET_RATIO * best.mean else "FAIL"


def format_comparison(scenario: Scenario, rows: list[Row], seeds: int) -> str:
    best = best_library(rows)
    lines = [
        f"{scenario.describe()}; {seeds} seeds",
        f"  {'policy':<50}{'regret':>10}{'± se':>8}{'x best lib':>12}  target <= {TARGET_RATIO}x",
    ]
    for row in rows:
        ratio = f"{row.mean / best.mean:>12.2f}" if best else f"{'-':>12}"
        lines.append(f"  {row.spec.label:<50}{row.mean:>10.1f}{row.stderr:>8.1f}{ratio}  {verdict(row, best)}")
    return "\n".join(lines)


def summary_line(scenario: Scenario, rows: list[Row]) -> str:
    best = best_library(rows)
    if best is None:
        return f"{scenario.name}: no library installed, no target to check"
    parts = [
        f"{r.spec.label} {r.mean / best.mean:.2f}x {verdict(r, best)}" for r in rows if r.spec.target
    ]
    return f"{scenario.name}: best library {best.spec.label} ({best.mean:.1f}); " + "; ".join(parts)


# ----- the exploration sweep -----


def _mean(results: dict, scenario: Scenario, label: str) -> float | None:
    runs = results.get((scenario.name, label))
    return float(np.mean(runs)) if runs else None


def _best_library_regret(results: dict, scenario: Scenario) -> tuple[str, float] | None:
    regrets = {s.label: _mean(results, scenario, s.label) for s in library_specs(True, False)}
    regrets = {label: r for label, r in regrets.items() if r is not None}
    return min(regrets.items(), key=lambda item: item[1]) if regrets else None


def _worst_and_geometric(ratios: list[float]) -> tuple[float, float]:
    return max(ratios), float(np.exp(np.mean(np.log(ratios))))


def sweep_report(results: dict, spread: tuple[Scenario, ...], seeds: int) -> str:
    """Per spread environment, each sweep policy's regret over the best library's."""
    labels = [s.label for s in sweep_specs()]
    lines = [
        f"Exploration sweep: regret / best library's ({len(spread)} environments, "
        f"{spread[0].rounds:,} rounds, {seeds} seeds)",
        f"  {'environment':<20}{'best library':>17}{'regret':>8} " + "".join(f"{l:>10}" for l in labels),
    ]
    ratios: dict[str, list[float]] = {label: [] for label in labels}
    versus_lints: dict[str, list[float]] = {label: [] for label in labels}
    for scenario in spread:
        best = _best_library_regret(results, scenario)
        if best is None:
            return "Exploration sweep: no library installed, nothing to compare with"
        lints = _mean(results, scenario, "mabwiser LinTS")
        cells = ""
        for label in labels:
            regret = _mean(results, scenario, label)
            ratios[label].append(regret / best[1])
            if lints:
                versus_lints[label].append(regret / lints)
            cells += f"{regret / best[1]:>10.2f}"
        name = scenario.name.removeprefix("spread ")
        lines.append(f"  {name:<20}{best[0].removeprefix('mabwiser ')[:17]:>17}{best[1]:>8.0f} {cells}")
    for title, table in (("best library", ratios), ("mabwiser LinTS", versus_lints)):
        if all(table.values()):
            stats = {label: _worst_and_geometric(r) for label, r in table.items()}
            lines.append(f"  {'worst vs ' + title:<46}" + "".join(f"{stats[l][0]:>10.2f}" for l in labels))
            lines.append(f"  {'geo. mean vs ' + title:<46}" + "".join(f"{stats[l][1]:>10.2f}" for l in labels))
    lines.append("")
    lines.extend(_choices(ratios))
    lines.append("")
    lines.extend(_markdown(ratios, versus_lints))
    return "\n".join(lines)


def _choices(ratios: dict[str, list[float]]) -> list[str]:
    lines = []
    for prefix, name, default in (("ts ", "linear TS", DEFAULT_LINEAR_THOMPSON_EXPLORATION), ("ucb ", "LinUCB", DEFAULT_LINUCB_EXPLORATION)):
        stats = {l: _worst_and_geometric(r) for l, r in ratios.items() if l.startswith(prefix)}
        # The value whose worst environment is best; the geometric mean breaks near-ties.
        best = min(stats, key=lambda l: (round(stats[l][0], 2), stats[l][1]))
        verdict = "meets" if stats[best][0] <= 1.0 else "misses"
        lines.append(
            f"{name}: exploration {best.removeprefix(prefix)} has the smallest worst case, {stats[best][0]:.2f}x the best "
            f"library (geometric mean {stats[best][1]:.2f}x): {verdict} 'at least as good on every environment'; "
            f"policy.py's default is {default:g}"
        )
    return lines


def _markdown(ratios: dict[str, list[float]], versus_lints: dict[str, list[float]]) -> list[str]:
    lines = [
        "| policy, exploration | worst / best library | geo. mean / best library | worst / MABWiser LinTS | geo. mean / MABWiser LinTS |",
        "|---|---|---|---|---|",
    ]
    for label in ratios:
        cells = [*_worst_and_geometric(ratios[label])]
        cells += _worst_and_geometric(versus_lints[label]) if versus_lints[label] else [float("nan")] * 2
        lines.append(f"| {label} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return lines


# ----- the command line -----


@dataclass(frozen=True)
class Plan:
    comparisons: tuple[Scenario, ...]
    spread: tuple[Scenario, ...]
    seeds: int
    spread_seeds: int


def full_plan(seeds: int = 5, spread_seeds: int = 3) -> Plan:
    return Plan((CLICK_RATES, LINEAR, DRIFT, DRIFT_RISE, CONTEXTUAL_DRIFT), SPREAD, seeds, spread_seeds)


def quick_plan(seeds: int = 2) -> Plan:
    """Same environments, shorter, and a corner of the spread: a smoke run, not evidence."""
    comparisons = (CLICK_RATES.scaled(20_000), LINEAR.scaled(4_000), DRIFT.scaled(10_000), DRIFT_RISE.scaled(10_000),
                   CONTEXTUAL_DRIFT.scaled(4_000))
    spread = tuple(s.scaled(3_000) for s in SPREAD if s.dim == 10)
    return Plan(comparisons, spread, seeds, seeds)


def jobs_for(plan: Plan) -> list[Job]:
    jobs = [Job(s, seed, spec) for s in plan.comparisons for spec in lineup(s) for seed in range(plan.seeds)]
    spread_specs = sweep_specs() + library_specs(True, False)
    jobs += [Job(s, seed, spec) for s in plan.spread for spec in spread_specs for seed in range(plan.spread_seeds)]
    return jobs


def report(plan: Plan, results: dict[tuple[str, str], list[float]]) -> str:
    blocks, summaries = [], []
    for scenario in plan.comparisons:
        rows = [Row(spec, results[(scenario.name, spec.label)]) for spec in lineup(scenario)]
        blocks.append(format_comparison(scenario, rows, plan.seeds))
        summaries.append(summary_line(scenario, rows))
    if plan.spread:
        blocks.append(sweep_report(results, plan.spread, plan.spread_seeds))
    if summaries:
        blocks.append("Summary (ratio to the best library's regret, target <= 1.1x)\n" + "\n".join(summaries))
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, fewer rounds, a corner of the spread")
    parser.add_argument("--seeds", type=int, help="seeds per main environment (default 5, quick 2)")
    parser.add_argument("--spread-seeds", type=int, help="seeds per spread environment (default 3, quick 2)")
    parser.add_argument("--only", choices=("comparisons", "sweep"), help="run one part only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    args = parser.parse_args(argv)
    plan = quick_plan() if args.quick else full_plan()
    plan = replace(plan, seeds=args.seeds or plan.seeds, spread_seeds=args.spread_seeds or plan.spread_seeds)
    if args.only:
        plan = replace(plan, **{"spread" if args.only == "comparisons" else "comparisons": ()})
    status = library_status()
    for name, present in status.items():
        if not present:
            print(f"{name} is not importable: its policies are skipped (pip install -e '.[dev]')")
    started = time.perf_counter()
    results = run_jobs(jobs_for(plan), args.jobs)
    print(report(plan, results))
    print(f"\n{len(jobs_for(plan))} runs in {time.perf_counter() - started:.0f} s with {args.jobs} processes")
    if not (args.quick or args.only):
        print("\nThe small per-round tables of bandit_simulation, and Select timings:\n")
        bandit_simulation.main([])
