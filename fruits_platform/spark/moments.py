"""The moments (count, sum, X^T X) of an array column, in one Spark pass: each task sums its rows' and sends
one d x d matrix to the driver (`fruits_platform.ml.moments` turns them into the scaler and the axes)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame

from fruits_platform.ml.moments import Moments

SCHEMA = "count long, dimension long, total binary, cross binary"


def _partial_moments(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    summed = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        values = batch.column(0).flatten().to_numpy(zero_copy_only=False)
        part = Moments.of(values.reshape(batch.num_rows, -1))
        summed = part if summed is None else summed + part
    if summed is not None:
        yield pa.RecordBatch.from_pydict(
            {
                "count": [summed.count],
                "dimension": [len(summed.total)],
                "total": [summed.total.tobytes()],
                "cross": [summed.cross.tobytes()],
            }
        )


def moments(frame: DataFrame, column: str) -> Moments:
    """The moments of the vectors in `column` (an array of floats, all of one length) over the frame's rows;
    a count of 0 when it has none."""
    parts = frame.select(column).mapInArrow(_partial_moments, SCHEMA).collect()
    if not parts:
        return Moments(0, np.zeros(0), np.zeros((0, 0)))
    dimensions = {row["dimension"] for row in parts}
    if len(dimensions) != 1:
        raise ValueError(f"the vectors of {column} differ in length: {sorted(dimensions)}")
    d = dimensions.pop()
    unpacked = (
        Moments(row["count"], np.frombuffer(row["total"]), np.frombuffer(row["cross"]).reshape(d, d)) for row in parts
    )
    return functools.reduce(operator.add, unpacked)
