"""`fruits-platform materialize`: register the classes of a data root and materialize the whole asset
graph through Dagster (recorded in $DAGSTER_HOME, so the UI shows the runs afterwards)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PER_CLASS_FIRST = ["raw_images", "mobilenet_features"]
GLOBAL = ["feature_model"]
PER_CLASS_AFTER = ["scaled_features", "pca_features"]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


class CliError(Exception):
    pass


def contiguous_ranges(ordered: list[str], selected: set[str]) -> list[list[str]]:
    """Group `selected` keys into runs of consecutive keys of `ordered` (a run covers a key range)."""
    ranges, current = [], []
    for key in ordered:
        if key in selected:
            current.append(key)
        elif current:
            ranges.append(current)
            current = []
    return ranges + ([current] if current else [])


def _configure_environment(args) -> None:
    """The CLI's options become the same environment variables the code location reads."""
    os.environ["FRUITS_DATA_ROOT"] = args.data_root
    os.environ["FRUITS_OUTPUT_ROOT"] = args.output_root
    for name, value in [
        ("FRUITS_WEIGHTS", args.weights),
        ("FRUITS_IMAGE_SIZE", args.image_size),
        ("FRUITS_PCA_K", args.pca_k),
        ("FRUITS_PCA_VARIANCE", args.variance_threshold),
    ]:
        if value is not None:
            os.environ[name] = str(value)
    if not os.getenv("DAGSTER_HOME"):
        home = Path(".dagster_home").resolve()
        home.mkdir(exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)


def _first_error_line(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data:
            error = event.step_failure_data.error
            while error.cause is not None and "Error occurred while executing" in error.message:
                error = error.cause
            return f"{event.step_key}: {error.message.strip().splitlines()[0]}"
    return "the run failed"


def materialize_command(args) -> int:
    if not Path(args.data_root).exists() and not args.data_root.startswith("s3://"):
        raise CliError(f"data root not found: {args.data_root}")
    _configure_environment(args)

    from dagster import DagsterInstance, materialize

    from fruits_platform.definitions import defs
    from fruits_platform.partitions import fruit_classes, split_usable
    from fruits_platform.resources import build_resources
    from fruits_platform.sources import list_classes

    found, refused = split_usable(list_classes(args.data_root))
    wanted = [name.strip() for name in args.classes.split(",")] if args.classes else found
    unknown = [name for name in wanted if name not in found]
    if unknown:
        raise CliError(f"class(es) not found in {args.data_root}: {', '.join(map(repr, unknown))}")
    if not wanted:
        raise CliError(f"no class folder found under {args.data_root}/Training or /Test")

    instance = DagsterInstance.get()
    known = instance.get_dynamic_partitions(fruit_classes.name)
    instance.add_dynamic_partitions(fruit_classes.name, [name for name in sorted(wanted) if name not in known])
    ranges = contiguous_ranges(instance.get_dynamic_partitions(fruit_classes.name), set(wanted))
    assets = [defs.get_assets_def(key) for key in PER_CLASS_FIRST + GLOBAL + PER_CLASS_AFTER]
    resources = build_resources()

    def run(selection: list[str], keys: list[str] | None):
        tags = {RANGE_START: keys[0], RANGE_END: keys[-1]} if keys else {}
        result = materialize(assets, selection=selection, instance=instance, resources=resources, tags=tags,
                             raise_on_error=False)
        if not result.success:
            raise CliError(f"run {result.run_id} failed at {_first_error_line(result)}")
        return result

    if len(ranges) == 1:  # the usual case: the whole graph in one run, one SparkSession
        results = [run(PER_CLASS_FIRST + GLOBAL + PER_CLASS_AFTER, ranges[0])]
    else:
        results = [run(PER_CLASS_FIRST, keys) for keys in ranges]
        results.append(run(GLOBAL, None))
        results += [run(PER_CLASS_AFTER, keys) for keys in ranges]

    print(f"materialized {len(wanted)} class(es) in {len(results)} run(s) (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    for result in results:
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            metadata = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
            wanted_keys = ["images_ok", "images_rejected", "images_embedded", "images_reused", "pca_k",
                           "explained_variance_total", "weights_source", "runtime_seconds"]
            details = ", ".join(f"{k}={metadata[k]}" for k in wanted_keys if k in metadata)
            print(f"  {materialization.asset_key.to_user_string():<20} {details}")
    for name, reason in refused.items():
        print(f"  skipped class folder {name!r}: {reason}")
    print(f"outputs: {args.output_root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fruits-platform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    mat = commands.add_parser("materialize", help="register classes and materialize every asset")
    mat.add_argument("--data-root", required=True, help="Fruits-360 layout: DIR/{Training,Test}/<Class>/*.jpg")
    mat.add_argument("--output-root", required=True, help="assets are written to DIR/<asset_name>/")
    mat.add_argument("--classes", help='comma-separated class names, e.g. "Apple Golden 1,Banana" (default: all)')
    mat.add_argument("--weights", help="imagenet (default) | PATH | s3://... | random:<seed>")
    mat.add_argument("--image-size", type=int, help="model input size: 96, 128, 160, 192 or 224 (default)")
    mat.add_argument("--pca-k", type=int, help="fixed number of components (default: by variance threshold)")
    mat.add_argument("--variance-threshold", type=float, help="explained-variance target (default 0.95)")
    mat.set_defaults(handler=materialize_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # anything unexpected still ends with one clear line
        print(f"error: {type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
