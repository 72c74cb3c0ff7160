"""Materialize the whole asset graph for some classes through Dagster, in this process
(one SparkSession for everything). Used by the `fruits-platform` command and the tests."""

from __future__ import annotations

from dagster import AssetKey, DagsterInstance, execute_job, materialize, reconstructable
from sqlalchemy.exc import IntegrityError

from fruits_platform.concurrency import process_tags
from fruits_platform.jobs import EMBEDDING, REFRESH
from fruits_platform.partitions import fruit_classes, range_tags, split_usable
from fruits_platform.sources import list_classes


class MaterializationError(RuntimeError):
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


def register_classes(
    instance: DagsterInstance, data_root: str, wanted: list[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """Register the class folders of `data_root` (or the `wanted` ones) as partitions.

    Returns the selected classes and the folder names refused as keys, with the reason."""
    found, refused = split_usable(list_classes(data_root))
    selected = found if wanted is None else wanted
    unknown = [name for name in selected if name not in found]
    if unknown:
        raise MaterializationError(f"class(es) not found in {data_root}: {', '.join(map(repr, unknown))}")
    if not selected:
        raise MaterializationError(f"no usable class folder under {data_root}/Training or {data_root}/Test")
    add_classes(instance, sorted(selected))
    return selected, refused


def add_classes(instance: DagsterInstance, keys: list[str], attempts: int = 3) -> None:
    """Add the `keys` not registered yet, in this order. Another process (a command on another host, the
    daemon's sensor) may add some of the same keys at the same moment: its insert wins, and ours is retried
    with the keys still missing."""
    for attempt in range(attempts):
        known = set(instance.get_dynamic_partitions(fruit_classes.name))
        missing = [key for key in keys if key not in known]
        if not missing:
            return
        try:
            instance.add_dynamic_partitions(fruit_classes.name, missing)
            return
        except IntegrityError:
            if attempt == attempts - 1:
                raise


SPARK_ERRORS = {"Py4JJavaError", "PythonException"}


def spark_cause(message: str) -> str | None:
    """The innermost cause in the message of an error Spark raised through Py4J (whose first line only names the
    JVM call or says "see below"): a Python worker's exception, else the last `Caused by:`, else the JVM
    exception's own line."""
    lines = message.strip().splitlines()
    tracebacks = [i for i, line in enumerate(lines) if line.endswith("Traceback (most recent call last):")]
    if tracebacks:  # the worker's exception is the first unindented line after its traceback
        raised = next((line for line in lines[tracebacks[-1] + 1 :] if line and not line[0].isspace()), None)
        if raised:
            return raised
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by: ")]
    causes = causes[-1:] or [line.removeprefix(": ") for line in lines if line.startswith(": ")][:1]
    return causes[0] if causes else None


def interrupted(error) -> bool:
    """Whether `error` is an interruption (Ctrl-C or SIGTERM) or was raised while one was handled: a clean-up
    that fails after it (a py4j call on the interrupted connection) must not hide why the step stopped."""
    while error is not None:
        if error.cls_name == "DagsterExecutionInterruptedError":
            return True
        error = error.cause or error.context
    return False


def first_error_line(result) -> str:
    """The run's first error in one line: the user code's own message (not Dagster's wrappers), and where."""
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is None:
            continue
        while error.cause is not None and (
            "Error occurred while" in error.message or "RetryRequested" in error.message
        ):
            error = error.cause
        message = error.message.strip().splitlines()[0].removeprefix("dagster._core.definitions.events.Failure: ")
        if error.cls_name in SPARK_ERRORS:
            message = spark_cause(error.message) or message
        if interrupted(error):
            message = "interrupted (the run is marked failed; every output keeps its previous version)"
        return f"{event.step_key or 'run start'}: {message}"
    return "the run failed"


def asset_names() -> list[str]:
    """Every asset of the code location in the pipeline's order: each before the assets it feeds, the longest
    chain first (raw_images ... pca_features, then the assets that only read them)."""
    from fruits_platform.definitions import defs  # imported late: it reads the settings the command sets first

    graph = defs.resolve_asset_graph()
    height: dict[AssetKey, int] = {}  # the longest path from the asset to one nothing reads
    for key in reversed(graph.toposorted_asset_keys):
        height[key] = 1 + max((height[child] for child in graph.get(key).child_keys), default=-1)
    return [key.to_user_string() for key in sorted(height, key=lambda key: (-height[key], key.to_user_string()))]


def materialize_classes(
    instance: DagsterInstance,
    resources: dict | None,
    classes: list[str],
    log_level: str = "INFO",
    evaluate: bool = True,
    app_model: bool = False,
) -> list:
    """Materialize the graph for `classes` (registered already) the way Dagster runs it from the UI and the
    daemon. When `classes` include every class embedded so far (the usual case): a run of every asset over
    them, as a backfill of all partitions runs (one run when they were registered in a row, else one per key
    range). Otherwise what the sensor and the automation request: runs embedding `classes`, then runs refitting
    `feature_model` and refreshing every embedded class (a refit changes every class's features). Without
    `evaluate`, no feature_quality. Returns the run results.

    With `resources`, the assets run in this process with them (`materialize`); without, the code
    location's own job and resources run (`execute_job` on a reconstructable job, which is what the
    EMR step launcher needs)."""
    from fruits_platform.definitions import defs, fruit_features_job  # late, as in asset_names

    graph = defs.resolve_asset_graph()
    registered = instance.get_dynamic_partitions(fruit_classes.name)
    embedded = set(instance.get_materialized_partitions(AssetKey("mobilenet_features")))
    every_class = set(classes) | embedded
    skipped = (set() if evaluate else {AssetKey("feature_quality")}) | (set() if app_model else {AssetKey("app_model")})
    everything = graph.get_all_asset_keys() - skipped
    ranges = contiguous_ranges(registered, every_class)
    if every_class == set(classes) and len(ranges) == 1:
        plan = [(everything, ranges[0])]
    else:
        plan = [(EMBEDDING.resolve(graph), keys) for keys in contiguous_ranges(registered, set(classes))]
        plan += [(REFRESH.resolve(graph) - skipped, keys) for keys in ranges]
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}

    def run(selection: set[AssetKey], keys: list[str]):
        tags = {**range_tags(keys), **process_tags()}
        if resources is None:
            result = execute_job(
                reconstructable(fruit_features_job),
                instance=instance,
                asset_selection=sorted(selection),
                tags=tags,
                run_config=run_config,
                raise_on_error=False,
            )
        else:
            result = materialize(
                defs.assets,
                selection=sorted(selection),
                instance=instance,
                resources=resources,
                tags=tags,
                raise_on_error=False,
                run_config=run_config,
            )
        if not result.success:
            raise MaterializationError(f"run {result.run_id} failed at {first_error_line(result)}")
        return result

    return [run(selection, keys) for selection, keys in plan]


# Figures that each partition of a multi-class run carries for its own class: the run's are their sums.
PER_CLASS_COUNTS = ("dagster/row_count", "images_ok", "images_rejected", "images_embedded", "images_reused")


def latest_metadata(results, asset_name: str) -> dict:
    """Plain values of the last run of `asset_name` among `results`: its last materialization's, with the
    per-class counts summed over the classes the run materialized."""
    found = {}
    for result in results:
        events = [
            {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
            for event in result.get_asset_materialization_events()
            if event.materialization.asset_key.to_user_string() == asset_name
        ]
        if events:
            found = events[-1]
            found.update({k: sum(e[k] for e in events) for k in PER_CLASS_COUNTS if k in found and len(events) > 1})
    return found
