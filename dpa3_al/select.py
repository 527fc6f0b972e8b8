"""Selection of frames to label from explored MD tasks (the ``select:`` section).

Pure functions over arrays do the work: trust-level classification (accurate < f_lo <=
candidate < f_hi <= failed; NaN is failed and counted), the adaptive lower level, the
filters applied before the cap (minimum distance, box skewness/length, duplicates), the
cap strategies (deviation-weighted draw, random, highest deviation, deviation-weighted
farthest-point sampling in descriptor space) and
the balancing across task groups. :func:`select` reads task folders, applies them and writes
``selection.json`` and ``candidates.extxyz``.

Units: force deviations eV/Å, virial deviations eV/atom, distances Å, angles degrees.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import asdict, dataclass, field as dc_field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
from ase import Atoms

from dpa3_al.explore.frames import FrameRef, FrameTable, load_frames, read_frames_table
from dpa3_al.explore.tasks import atomic_write_json, atomic_write_text
from dpa3_al.common.errors import UserError
from dpa3_al.common.fileio import read_json_object
from dpa3_al.common.typed_config import ConfigError, field

log = logging.getLogger(__name__)

ACCURATE, CANDIDATE, FAILED = 0, 1, 2
CLASS_NAMES = ("accurate", "candidate", "failed")
SELECTION_JSON = "selection.json"
CANDIDATES_FILE = "candidates.extxyz"


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class AdaptiveLowerConfig:
    """Adaptive lower trust level: chosen each iteration so that a target share of the
    frames below the upper level are candidates (as dpgen2's adaptive-lower style)."""

    candidate_fraction: float | None = field(0.1, doc="target fraction of non-failed frames that are candidates",
                                             gt=0, le=1)
    candidate_count: int | None = field(None, doc="target number of candidates instead of a fraction", ge=1)
    f_lo_min: float = field(0.0, doc="the lower force level never goes below this", unit="eV/Å", ge=0)
    v_lo_min: float = field(0.0, doc="the lower virial level never goes below this", unit="eV/atom", ge=0)

    def __post_init__(self) -> None:
        if (self.candidate_fraction is None) == (self.candidate_count is None):
            raise ConfigError("candidate_fraction", "give exactly one of candidate_fraction or candidate_count "
                              "(set the other to null)")


@dataclass(frozen=True)
class FilterConfig:
    """Filters applied to candidates before the cap (null disables one)."""

    min_dist_ratio: float | None = field(0.6, doc="drop frames with two atoms closer than this fraction of the "
                                         "sum of their covalent radii", gt=0, lt=2)
    box_min_angle: float | None = field(30.0, doc="drop periodic frames whose cell has an angle below this or "
                                        "above 180 minus this", unit="deg", gt=0, lt=90)
    box_max_length_ratio: float | None = field(5.0, doc="drop periodic frames whose widest/thinnest cell "
                                               "width ratio exceeds this", gt=1)
    box_min_width: float | None = field(None, doc="drop periodic frames thinner than this (e.g. twice the "
                                        "model cutoff)", unit="Å", gt=0)
    dedup_tol: float | None = field(1e-3, doc="frames with the same species and positions/cell equal after "
                                    "rounding to this are duplicates; the first is kept", unit="Å", gt=0)


@dataclass(frozen=True)
class SelectConfig:
    """Trust levels, filters and the per-iteration cap."""

    f_lo: float = field(0.05, doc="lower trust level on max_devi_f (with `adaptive`, the level is chosen "
                        "each iteration instead)",
                        unit="eV/Å", ge=0)
    f_hi: float = field(0.15, doc="upper trust level on max_devi_f: at or above it a frame is failed",
                        unit="eV/Å", gt=0)
    v_lo: float | None = field(None, doc="optional lower trust level on max_devi_v", unit="eV/atom", ge=0)
    v_hi: float | None = field(None, doc="optional upper trust level on max_devi_v", unit="eV/atom", gt=0)
    adaptive: AdaptiveLowerConfig | None = field(None, doc="adaptive lower level; null = fixed f_lo/v_lo")
    filters: FilterConfig = field(default_factory=FilterConfig, doc="filters applied before the cap")
    max_select: int | None = field(
        100, doc="most frames selected per iteration; null = all candidates. Fewer per iteration let each pick "
        "follow a committee that has trained on the picks before it, at the cost of more iterations (trainings); "
        "docs/al-benchmark.md measures 5 per iteration", ge=1)
    strategy: Literal["random", "highest", "weighted", "diversity"] = field(
        "weighted", doc="how the cap picks: weighted (random draws with probability proportional to "
        "max_devi_f squared, the committee's estimate of each frame's squared error; on docs/al-benchmark.md "
        "lower test force error than random at equal labels in every seed measured), random, highest max_devi_f, or "
        "diversity (farthest-point sampling of structure-averaged descriptors, each distance weighted by the "
        "frame's max_devi_f: spread over the structures the committee is unsure of)")
    draw_by: Literal["max_devi_f", "avg_devi_f"] = field(
        "max_devi_f", doc="the deviation the strategies weighted, highest and diversity weigh or rank by: "
        "max_devi_f (the largest atom's, as the trust levels) or avg_devi_f (the atoms' mean; on "
        "docs/al-benchmark.md 1-10 % lower test force errors than max_devi_f, in every seed). The trust "
        "levels always judge max_devi_f")
    draw_power: float = field(
        2.0, doc="exponent of the deviation in the odds of strategy weighted: 2 draws by the committee's "
        "estimate of each frame's squared error (the default); 1 spreads the labels over more of the moderately "
        "uncertain frames, at the expense of the far tail; 0 is a uniform draw within the trust band "
        "(docs/al-benchmark.md measures 1 against 2)", ge=0, le=8)
    balance: bool = field(True, doc="share the cap evenly across task groups (unused share goes to others)")
    seed: int = field(0, doc="seed of the random draws of the strategies random and weighted; each iteration "
                      "draws afresh from (seed, iteration, group)", ge=0)

    def __post_init__(self) -> None:
        if self.f_lo >= self.f_hi:
            raise ConfigError("f_lo", f"f_lo {self.f_lo} must be below f_hi {self.f_hi} (eV/Å)")
        if (self.v_lo is None) != (self.v_hi is None):
            raise ConfigError("v_lo", "give both v_lo and v_hi (eV/atom) or neither")
        if self.v_lo is not None and self.v_lo >= self.v_hi:
            raise ConfigError("v_lo", f"v_lo {self.v_lo} must be below v_hi {self.v_hi} (eV/atom)")


# ----------------------------------------------------------------------------- pure functions
@dataclass(frozen=True)
class Levels:
    """Trust levels used in one selection (eV/Å; virial eV/atom or None)."""

    f_lo: float
    f_hi: float
    v_lo: float | None = None
    v_hi: float | None = None
    adaptive: bool = False


def classify(devi_f: np.ndarray, devi_v: np.ndarray | None, levels: Levels) -> np.ndarray:
    """Class of each frame: 0 accurate (< lo), 1 candidate (lo <= d < hi), 2 failed (>= hi or NaN).

    Args:
        devi_f: (n,) max_devi_f [eV/Å]. devi_v: (n,) max_devi_v [eV/atom] (used when the levels
        have virial levels; a frame is then failed if either is, accurate if both are).
    """
    devi_f = np.asarray(devi_f, dtype=np.float64)
    use_v = levels.v_hi is not None and devi_v is not None
    failed = np.isnan(devi_f) | (devi_f >= levels.f_hi)
    accurate = devi_f < levels.f_lo
    if use_v:
        devi_v = np.asarray(devi_v, dtype=np.float64)
        failed |= np.isnan(devi_v) | (devi_v >= levels.v_hi)
        accurate &= devi_v < levels.v_lo
    out = np.full(devi_f.shape, CANDIDATE, dtype=np.int8)
    out[accurate & ~failed] = ACCURATE
    out[failed] = FAILED
    return out


def adaptive_lower(values: np.ndarray, hi: float, *, fraction: float | None = None, count: int | None = None,
                   floor: float = 0.0) -> float:
    """Lower level such that the target number of frames below ``hi`` lie in [level, hi).

    The target is ``count`` or ``round(fraction * n)`` with n the non-NaN frames below ``hi``;
    the level is the target-th largest of those values, clamped to [floor, hi] (``hi`` when the
    target is 0, ``floor`` when every frame would be a candidate).
    """
    values = np.asarray(values, dtype=np.float64)
    below = np.sort(values[~np.isnan(values) & (values < hi)])[::-1]
    target = count if count is not None else int(round(float(fraction) * len(below)))
    if target <= 0:
        return float(hi)
    if target >= len(below):
        return float(floor)
    return float(min(max(below[target - 1], floor), hi))


def resolve_levels(devi_f: np.ndarray, devi_v: np.ndarray, cfg: SelectConfig) -> Levels:
    """The levels of this iteration: fixed, or adaptive lower levels from the deviations."""
    ad = cfg.adaptive
    if ad is None:
        return Levels(cfg.f_lo, cfg.f_hi, cfg.v_lo, cfg.v_hi, adaptive=False)
    probe = Levels(0.0, cfg.f_hi, None if cfg.v_hi is None else 0.0, cfg.v_hi)
    not_failed = classify(devi_f, devi_v, probe) != FAILED
    f_lo = adaptive_lower(np.asarray(devi_f)[not_failed], cfg.f_hi, fraction=ad.candidate_fraction,
                          count=ad.candidate_count, floor=max(ad.f_lo_min, 0.0))
    v_lo = None
    if cfg.v_hi is not None:
        v_lo = adaptive_lower(np.asarray(devi_v)[not_failed], cfg.v_hi, fraction=ad.candidate_fraction,
                              count=ad.candidate_count, floor=ad.v_lo_min)
    return Levels(f_lo, cfg.f_hi, v_lo, cfg.v_hi, adaptive=True)


def allot(sizes: Sequence[int], cap: int | None) -> list[int]:
    """Share ``cap`` across groups with ``sizes`` candidates: equal shares, unused shares go to
    the groups that still have candidates (earlier groups first for the remainder)."""
    if cap is None:
        return list(sizes)
    quotas = [0] * len(sizes)
    remaining = min(cap, sum(sizes))
    active = [g for g, n in enumerate(sizes) if n > 0]
    while remaining > 0 and active:
        share = max(remaining // len(active), 1)
        for g in list(active):
            take = min(share, sizes[g] - quotas[g], remaining)
            quotas[g] += take
            remaining -= take
            if quotas[g] == sizes[g]:
                active.remove(g)
            if remaining == 0:
                break
    return quotas


def farthest_point_sampling(features: np.ndarray, k: int, start: int = 0,
                            weights: np.ndarray | None = None) -> list[int]:
    """Greedy farthest-point sampling: ``start``, then each time the point with the largest
    ``weight * distance`` (Euclidean) to the nearest chosen one (ties: lowest index). Without
    ``weights`` (all 1) this is plain farthest-point sampling. Returns ``min(k, n)`` indices in
    pick order; once every weighted score is 0, the plain distance decides."""
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    if k <= 0 or n == 0:
        return []
    w = np.ones(n) if weights is None else np.nan_to_num(np.asarray(weights, dtype=np.float64), nan=0.0).clip(0)
    chosen = [int(start)]
    dist = np.linalg.norm(x - x[start], axis=1)
    dist[start] = -1.0
    while len(chosen) < min(k, n):
        score = w * dist
        if score.max() <= 0.0:          # every weighted point is already covered: spread by distance alone
            score = dist
        nxt = int(np.argmax(score))
        if score[nxt] < 0.0:
            break
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(x - x[nxt], axis=1))
        dist[chosen] = -1.0
    return chosen


def weighted_draw(devi_f: np.ndarray, k: int, rng: np.random.Generator, power: float = 2.0) -> list[int]:
    """``k`` distinct frames drawn at random with probability proportional to ``devi_f**power``.

    The squared deviation (``power`` 2) estimates the squared error a label removes; drawing (not
    ranking) keeps every part of the explored space reachable and avoids labeling k neighbours of
    one spike. NaN or zero deviations get the smallest positive weight present (or uniform weights).
    """
    d = np.nan_to_num(np.asarray(devi_f, dtype=np.float64), nan=0.0)
    w = d ** power                  # power 0: every weight 1 (0 ** 0 == 1)
    positive = w[w > 0]
    w = np.where(w > 0, w, positive.min() if positive.size else 1.0)
    return [int(i) for i in rng.choice(len(w), size=min(k, len(w)), replace=False, p=w / w.sum())]


def pick(strategy: str, devi_f: np.ndarray, k: int, rng: np.random.Generator,
         features: Callable[[], np.ndarray] | None = None, power: float = 2.0) -> list[int]:
    """Choose ``k`` of the frames (indices into ``devi_f``) by ``strategy``, in pick order
    (``power``: the exponent of the deviation in the odds of ``weighted``).

    ``features`` (called only for ``diversity`` and only when a choice is needed) returns the
    (n, d) structure-averaged descriptors; sampling starts at the highest-deviation frame, then
    takes the frame with the largest max_devi_f x distance to the nearest frame taken.
    """
    n = len(devi_f)
    if k >= n:
        return list(range(n))
    if strategy == "random":
        return [int(i) for i in rng.permutation(n)[:k]]
    order = np.argsort(-np.nan_to_num(np.asarray(devi_f, dtype=np.float64), nan=-np.inf), kind="stable")
    if strategy == "highest":
        return [int(i) for i in order[:k]]
    if strategy == "weighted":
        return weighted_draw(devi_f, k, rng, power)
    if strategy == "diversity":
        if features is None:
            raise UserError("select.strategy 'diversity' needs a descriptor function (give --models to "
                            "`dpa3-al select`, or use strategy weighted/random/highest)")
        return farthest_point_sampling(features(), k, start=int(order[0]), weights=devi_f)
    raise ValueError(f"unknown strategy {strategy!r}")


# ----------------------------------------------------------------------------- filters
def min_distance_reason(atoms: Atoms, ratio: float) -> str | None:
    """Why a frame fails the minimum-distance filter, or None."""
    from dpa3_al.explore.geometry import min_distance_ratio

    value, pair = min_distance_ratio(atoms, ratio)
    return None if pair is None else f"atoms {pair[0]}-{pair[1]} at {value:.3f} x covalent radii"


def box_reason(atoms: Atoms, cfg: FilterConfig) -> str | None:
    """Why a periodic frame fails the box skewness/length filters, or None (non-periodic: None)."""
    from dpa3_al.explore.geometry import cell_angles, cell_widths

    if not (np.all(atoms.pbc) and atoms.cell.rank == 3):
        return None
    cell = atoms.cell.array
    if cfg.box_min_angle is not None:
        angles = cell_angles(cell)
        if angles.min() < cfg.box_min_angle or angles.max() > 180.0 - cfg.box_min_angle:
            return f"skewed cell, angles {np.round(angles, 1).tolist()} deg"
    widths = cell_widths(cell)
    if cfg.box_max_length_ratio is not None and widths.max() > cfg.box_max_length_ratio * widths.min():
        return f"cell width ratio {widths.max() / widths.min():.2f} > {cfg.box_max_length_ratio:g}"
    if cfg.box_min_width is not None and widths.min() < cfg.box_min_width:
        return f"cell width {widths.min():.2f} Å < {cfg.box_min_width:g} Å"
    return None


def duplicate_mask(frames: Sequence[Atoms], tol: float) -> np.ndarray:
    """True for frames that repeat an earlier one (same species; positions and cell equal
    after rounding to ``tol`` Å)."""
    seen: set[tuple[bytes, bytes, bytes]] = set()
    dup = np.zeros(len(frames), dtype=bool)
    for i, a in enumerate(frames):
        key = (a.numbers.tobytes(), np.round(a.cell.array / tol).astype(np.int64).tobytes(),
               np.round(a.positions / tol).astype(np.int64).tobytes())
        dup[i] = key in seen
        seen.add(key)
    return dup


def frame_key(atoms: Atoms, tol: float) -> tuple[bytes, bytes]:
    """Identity of a frame independent of atom order: the cell and the sorted (element, position)
    rows, positions wrapped into a periodic cell, everything rounded to ``tol`` Å. The dataset
    stores atoms sorted by element, so an explored frame and its labeled copy share this key."""
    pos = atoms.get_positions(wrap=bool(np.all(atoms.pbc) and atoms.cell.rank == 3))
    rows = np.column_stack([atoms.numbers, np.round(pos / tol)]).astype(np.int64)
    rows = rows[np.lexsort(rows.T[::-1])]
    return np.round(atoms.cell.array / tol).astype(np.int64).tobytes(), rows.tobytes()


def labeled_frames(paths: Sequence[Path]) -> list[Atoms]:
    """The structures of every deepmd system under ``paths`` (a run's dataset, its init_data):
    what :func:`select` should not pick again."""
    from dpa3_al.model.train.data import find_npy_systems, read_deepmd_system

    return [a for root in paths if Path(root).is_dir() for p in find_npy_systems(Path(root))
            for sys_ in read_deepmd_system(p, labels=False) for a in sys_.to_atoms(labels=False)]


# ----------------------------------------------------------------------------- driver
@dataclass
class SelectionReport:
    """What :func:`select` found and chose: the content of ``selection.json``, whose one writer
    (:meth:`write`) and one reader (:meth:`read`) are here. ``counts`` holds the classes and
    ``failed_nan``; ``selected`` one record per chosen frame (frame, task, group, step,
    deviations, rank, reason)."""

    levels: Levels
    counts: dict[str, int]
    per_group: dict[str, dict[str, int]]
    tasks: dict[str, int]
    filters: dict[str, dict[str, Any]] = dc_field(default_factory=dict)
    quotas: dict[str, int] = dc_field(default_factory=dict)
    selected: list[dict[str, Any]] = dc_field(default_factory=list)
    strategy: str = "random"
    max_select: int | None = None
    n_eligible: int | None = None      # candidates left after the filters: the pool the strategy chose from
    draw_by: str = "max_devi_f"        # the deviation the strategy weighed (select.draw_by)
    draw_power: float = 2.0            # its exponent in the odds of strategy weighted (select.draw_power)

    @property
    def n_frames(self) -> int:
        return sum(self.counts[c] for c in CLASS_NAMES)

    def ratio(self, name: str) -> float:
        """Share of all frames in class ``name`` (NaN when there are no frames)."""
        return self.counts[name] / self.n_frames if self.n_frames else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"n_frames": self.n_frames, "counts": self.counts,
                "ratios": {c: self.ratio(c) for c in CLASS_NAMES}, "levels": asdict(self.levels),
                "per_group": self.per_group, "tasks": self.tasks, "filters": self.filters,
                "strategy": self.strategy, "draw_by": self.draw_by,
                "draw_power": self.draw_power, "max_select": self.max_select,
                "n_eligible": self.n_eligible,
                "quotas": self.quotas,
                "n_selected": len(self.selected), "selected": self.selected}

    @property
    def n_selected(self) -> int:
        return len(self.selected)

    def selection_odds(self, record: Mapping[str, Any]) -> float:
        """The relative odds the frame of ``record`` (one of :attr:`selected`, or a mapping with its
        ``draw_by`` deviation) had to be chosen (:func:`~dpa3_al.calibration.selection_weight` for
        this strategy, pool and ``draw_by``; a missing deviation counts as NaN: odds 1)."""
        from dpa3_al.calibration import selection_weight

        pool = self.n_eligible if self.n_eligible is not None else self.counts.get("candidate", 0)
        devi = record.get(self.draw_by)
        return selection_weight(self.strategy, math.nan if devi is None else float(devi), self.n_selected >= pool,
                                self.draw_power)

    def write(self, folder: Path) -> Path:
        """Write ``folder/selection.json`` atomically (NaN as null); returns its path."""
        path = Path(folder) / SELECTION_JSON
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, path: Path) -> "SelectionReport":
        """The selection in ``path`` (a select output folder or its ``selection.json``).

        Raises:
            FileNotFoundError: no selection yet. ValueError: not a selection written by :meth:`write`.
        """
        data = read_json_object(path, SELECTION_JSON)
        try:
            return cls(levels=Levels(**data["levels"]), counts={k: int(v) for k, v in data["counts"].items()},
                       per_group=data.get("per_group") or {}, tasks=data.get("tasks") or {},
                       filters=data.get("filters") or {}, quotas=data.get("quotas") or {},
                       selected=list(data.get("selected") or []), strategy=data.get("strategy", "random"),
                       max_select=data.get("max_select"), n_eligible=data.get("n_eligible"),
                       draw_by=data.get("draw_by", "max_devi_f"), draw_power=float(data.get("draw_power", 2.0)))
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"not a selection record ({type(err).__name__}: {err})") from None


def write_candidates(folder: Path, refs: Sequence[FrameRef]) -> Path:
    """Write the chosen frames to ``folder/candidates.extxyz`` atomically (what the label step reads)."""
    import ase.io

    buf = io.StringIO()
    for ref in refs:
        ase.io.write(buf, ref.atoms, format="extxyz")
    return atomic_write_text(Path(folder) / CANDIDATES_FILE, buf.getvalue())


def _apply_filters(cands: list[FrameRef], cfg: FilterConfig,
                   labeled: Sequence[Atoms] = ()) -> tuple[list[FrameRef], dict[str, dict[str, Any]]]:
    """Run the filters in order; returns the survivors and what each filter removed."""
    removed: dict[str, dict[str, Any]] = {}

    def record(name: str, refs: list[tuple[FrameRef, str]]) -> None:
        removed[name] = {"count": len(refs), "frames": [{"frame": r.key, "why": why} for r, why in refs]}

    missing = [(r, "frame absent from traj.extxyz") for r in cands if r.atoms is None]
    record("missing_frame", missing)
    cands = [r for r in cands if r.atoms is not None]
    if cfg.min_dist_ratio is not None:
        why = [(r, min_distance_reason(r.atoms, cfg.min_dist_ratio)) for r in cands]
        record("min_distance", [(r, w) for r, w in why if w])
        cands = [r for r, w in why if not w]
    why = [(r, box_reason(r.atoms, cfg)) for r in cands]
    record("box", [(r, w) for r, w in why if w])
    cands = [r for r, w in why if not w]
    if cfg.dedup_tol is not None:
        dup = duplicate_mask([r.atoms for r in cands], cfg.dedup_tol)
        record("duplicate", [(r, f"repeats an earlier frame within {cfg.dedup_tol:g} Å")
                             for r, d in zip(cands, dup) if d])
        cands = [r for r, d in zip(cands, dup) if not d]
    if cfg.dedup_tol is not None and len(labeled):
        known = {frame_key(a, cfg.dedup_tol) for a in labeled}
        again = [frame_key(r.atoms, cfg.dedup_tol) in known for r in cands]
        record("labeled", [(r, f"already labeled (in the dataset within {cfg.dedup_tol:g} Å)")
                           for r, d in zip(cands, again) if d])
        cands = [r for r, d in zip(cands, again) if not d]
    return cands, removed


def _cap(cands: list[FrameRef], groups: list[str], cfg: SelectConfig,
         descriptor_fn: Callable[[Atoms], np.ndarray] | None,
         iteration: int = 0) -> tuple[list[tuple[FrameRef, int]], dict[str, int]]:
    """Apply max_select with the strategy, per group when balancing. Returns (frame, rank) pairs and quotas.

    The draws are seeded by (seed, iteration, group): a seed fixed across iterations would draw the
    same positions (task, step) every iteration whenever the candidate count repeats, and so leave
    the same tasks unlabeled throughout the run."""
    buckets = {g: [r for r in cands if r.group == g] for g in groups} if cfg.balance else {"all": cands}
    if cfg.strategy == "diversity" and descriptor_fn is None and cfg.max_select is not None \
            and len(cands) > cfg.max_select:
        raise UserError("select.strategy is 'diversity' but no descriptor function was given: pass --models "
                        "(the committee's model 0 gives the descriptors) or use strategy weighted/random/highest")
    names = list(buckets)
    quotas = dict(zip(names, allot([len(buckets[g]) for g in names], cfg.max_select)))
    chosen: list[tuple[FrameRef, int]] = []
    for gi, name in enumerate(names):
        refs = buckets[name]
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, iteration, gi]))
        devi_f = np.array([r.devi[cfg.draw_by] for r in refs], dtype=np.float64)

        def features(refs: list[FrameRef] = refs) -> np.ndarray:
            return np.stack([np.asarray(descriptor_fn(r.atoms), dtype=np.float64).mean(axis=0) for r in refs])

        order = pick(cfg.strategy, devi_f, quotas[name], rng, features if descriptor_fn else None, cfg.draw_power)
        chosen.extend((refs[i], rank) for rank, i in enumerate(order))
    return chosen, quotas


def select(task_dirs: Sequence[Path], cfg: SelectConfig, out_dir: Path,
           descriptor_fn: Callable[[Atoms], np.ndarray] | None = None,
           labeled: Sequence[Atoms] = (), table: FrameTable | None = None) -> SelectionReport:
    """Classify every recorded frame of ``task_dirs``, filter and cap the candidates, and write
    ``out_dir/selection.json`` and ``out_dir/candidates.extxyz``.

    Args:
        task_dirs: MD task folders (``task.json``, ``model_devi.csv``, ``traj.extxyz``).
        cfg: trust levels, filters and cap.
        out_dir: where the outputs go (created).
        descriptor_fn: atoms -> (natoms, dim) descriptors; needed by strategy ``diversity``.
        labeled: frames already labeled (:func:`labeled_frames` of the dataset): candidates equal
            to one of them are dropped (filter ``labeled``), so no label is spent twice. The
            exploration restarts from the same structures, whose step-0 frames otherwise come back
            every iteration (bench/bench_al.py: 5 of 30 labels).
        table: the frames table of ``task_dirs`` when the caller has read it already.

    The random draws are seeded by ``cfg.seed`` and the loop iteration the tasks record in their
    ``task.json`` (so each iteration draws afresh, and a rerun of one draws the same).
    """
    table = read_frames_table(task_dirs) if table is None else table
    devi_f, devi_v = table.column("max_devi_f"), table.column("max_devi_v")
    levels = resolve_levels(devi_f, devi_v, cfg)
    classes = classify(devi_f, devi_v if levels.v_hi is not None else None, levels)
    report = SelectionReport(levels=levels, counts=_count(classes, devi_f), per_group=table.per_group(classes),
                             tasks=table.task_outcomes(), strategy=cfg.strategy, max_select=cfg.max_select,
                             draw_by=cfg.draw_by, draw_power=cfg.draw_power)
    cands = load_frames(table, np.flatnonzero(classes == CANDIDATE))
    cands, report.filters = _apply_filters(cands, cfg.filters, labeled)
    report.n_eligible = len(cands)
    chosen, report.quotas = _cap(cands, table.groups, cfg, descriptor_fn, table.iteration)
    chosen.sort(key=lambda pair: (pair[0].task, pair[0].step))
    report.selected = [_why(ref, rank, levels, cfg) for ref, rank in chosen]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_candidates(out_dir, [ref for ref, _ in chosen])     # the frames first: selection.json commits
    report.write(out_dir)
    log.info("selected %d of %d candidates (%d frames: %s)", len(chosen), report.counts["candidate"],
             report.n_frames, ", ".join(f"{c} {report.counts[c]}" for c in CLASS_NAMES))
    return report


def _count(classes: np.ndarray, devi_f: np.ndarray) -> dict[str, int]:
    counts = {name: int(np.sum(classes == k)) for k, name in enumerate(CLASS_NAMES)}
    counts["failed_nan"] = int(np.sum(np.isnan(devi_f)))
    return counts


def _why(ref: FrameRef, rank: int, levels: Levels, cfg: SelectConfig) -> dict[str, Any]:
    f = ref.devi["max_devi_f"]
    reason = f"candidate: {levels.f_lo:.4g} <= max_devi_f {f:.4g} < {levels.f_hi:.4g} eV/Å"
    if levels.v_hi is not None:
        reason += f", max_devi_v {ref.devi['max_devi_v']:.4g} < {levels.v_hi:.4g} eV/atom"
    scope = f"group {ref.group}" if cfg.balance else "all groups"
    how = {"random": "random draw", "highest": f"highest {cfg.draw_by}",
           "weighted": f"draw weighted by {cfg.draw_by}^{cfg.draw_power:g}",
           "diversity": f"{cfg.draw_by}-weighted farthest-point sampling"}
    if cfg.max_select is not None:
        reason += f"; {how[cfg.strategy]} #{rank + 1} in {scope}"
    return {"frame": ref.key, "task": ref.task, "group": ref.group, "step": ref.step, "max_devi_f": f,
            "avg_devi_f": ref.devi.get("avg_devi_f", math.nan),
            "max_devi_v": ref.devi["max_devi_v"], "rank": rank, "reason": reason}
