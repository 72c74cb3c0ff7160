"""bench.py's data: the bench tar extracted once, then layouts of hard links for the phases (the measured
classes, a copy of them for the platform, which adds to its data root, and a 1/5 subset)."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from common import OPTIONAL, Record, files_of, link_layout


@dataclass
class BenchData(Record):
    main: str  # every measured class
    small: str  # the 1/5 subset
    main_platform: str  # platform_full's own copy of `main`
    classes: list[str]
    images: int
    small_classes: list[str]
    small_images: int
    new_class_source: str  # the class copied as the "new class": one not in the measured set when there is one
    new_class_from: str
    extract_seconds: float | None = field(default=None, metadata=OPTIONAL)

    def reported(self) -> dict:
        """What the report says of the data (not the temporary folders)."""
        hidden = {"main", "small", "main_platform", "new_class_source"}
        return {key: value for key, value in self.to_json().items() if key not in hidden}


def extract(tar: Path, target: Path) -> Path:
    with tarfile.open(tar) as archive:
        archive.extractall(target, filter="data")
    roots = [p for p in target.iterdir() if (p / "Training").is_dir()]
    if len(roots) != 1:
        raise SystemExit(f"{tar} does not contain one Fruits-360 layout root")
    return roots[0]


def subsets(full: Path, work: Path, subset: int | None) -> BenchData:
    """The measured data root (all classes or the first `subset`) and its 1/5 subset (RSS reference)."""
    classes = sorted(p.name for p in (full / "Training").iterdir())
    if subset:
        classes = classes[:subset]
    counts = {c: {s: len(files_of(full, c, s)) for s in ("Training", "Test")} for c in classes}
    total = sum(sum(v.values()) for v in counts.values())
    everything = {c: {"Training": None, "Test": None} for c in classes}
    main = link_layout(full, work / "main", everything)
    # platform_full adds a class and images to its data root: its own copy, so other phases never see them
    link_layout(full, work / "main_platform", everything)
    # About total/5 images: the first classes in order (at least 2, which feature_quality needs), each
    # keeping its Training:Test proportion (full set: 24 classes x ~79 = 1,904 images).
    wanted = total // 5
    per_class = max(sum(counts[c].values()) for c in classes)
    chosen = classes[: min(len(classes), max(2, -(-wanted // per_class)))]
    plan, left = {}, wanted
    for index, label in enumerate(chosen):
        n = min(sum(counts[label].values()), -(-left // (len(chosen) - index)))
        train = round(n * counts[label]["Training"] / sum(counts[label].values()))
        plan[label] = {"Training": train, "Test": n - train}
        left -= n
    small = link_layout(full, work / "small", plan)
    spare = [c for c in classes if c not in plan]
    return BenchData(
        main=str(main),
        small=str(small),
        main_platform=str(work / "main_platform"),
        classes=classes,
        images=total,
        small_classes=list(plan),
        small_images=sum(sum(v.values()) for v in plan.values()),
        new_class_source=str(full),
        new_class_from=spare[0] if spare else classes[-1],
    )
